with

source as (

    select * from {{ source('config', 'user_types') }}

),

final as (

    select
        -- The file's values match the config case-insensitively after trimming.
        lower({{ clean_text('source_value') }}) as source_key,
        source_value,
        user_type

    from source

)

select * from final
