with

users as (

    select * from {{ ref('int_users_enriched') }}

),

final as (

    select
        external_id,
        email,
        user_id,
        user_login,
        first_name,
        last_name,
        user_type,
        graduation_year,
        is_email_opt_out,
        is_delete_requested,
        line_number

    from users

)

select * from final
