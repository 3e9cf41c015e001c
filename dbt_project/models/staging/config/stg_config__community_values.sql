with

source as (

    select * from {{ source('config', 'community_values') }}

),

final as (

    select
        upper({{ clean_text('column_name') }}) as column_name,
        -- The file's values match the config case-insensitively after trimming.
        lower({{ clean_text('source_value') }}) as source_key,
        source_value,
        community

    from source

)

select * from final
