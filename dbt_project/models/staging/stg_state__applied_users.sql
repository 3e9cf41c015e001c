with

source as (

    select * from {{ source('state', 'applied_users') }}

),

final as (

    select
        external_id,
        {{ text_key('email') }} as email,
        user_id,
        {{ text_key('user_login') }} as user_login,
        first_name,
        last_name,
        user_type,
        graduation_year,
        status,
        email_opt_out as is_email_opt_out,
        applied_run_id

    from source

)

select * from final
