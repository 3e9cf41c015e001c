with

source as (

    select * from {{ source('config', 'date_formats') }}

),

final as (

    select format as date_format

    from source

)

select * from final
