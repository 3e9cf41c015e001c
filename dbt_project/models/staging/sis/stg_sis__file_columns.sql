with

source as (

    select * from {{ source('sis', 'file_columns') }}

),

final as (

    select
        position as column_position,
        source_name,
        canonical_name as column_name,
        kind as column_kind

    from source

)

select * from final
