with

source as (

    select * from {{ source('config', 'school') }}

),

final as (

    select
        school_id,
        identifier,
        missing_users

    from source

)

select * from final
