with

source as (

    select * from {{ source('config', 'community_columns') }}

),

final as (

    select
        upper({{ clean_text('column_name') }}) as column_name,
        community_group,
        has_value_map

    from source

)

select * from final
