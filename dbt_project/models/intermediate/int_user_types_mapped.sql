with

roster as (

    select * from {{ ref('stg_sis__roster') }}

),

user_types as (

    select * from {{ ref('stg_config__user_types') }}

),

user_type_map as (

    -- Two config keys that differ only in case would otherwise match one value twice.
    select
        source_key,
        min(user_type) as user_type

    from user_types
    group by source_key

),

cells as (

    select
        line_number,
        stakeholders,
        -- Non-blank pieces between ';' or ',' separators: more than one means several user types.
        len(regexp_extract_all(stakeholders, '[^;,]*[^;,\s][^;,]*')) as piece_count

    from roster
    where stakeholders is not null

),

final as (

    select
        cells.line_number,
        cells.stakeholders,
        user_type_map.user_type,
        case
            when user_type_map.user_type is not null then null
            when cells.piece_count > 1 then 'user_type_multiple'
            else 'user_type_unmapped'
        end as finding_rule

    from cells
    left join user_type_map
        on lower(cells.stakeholders) = user_type_map.source_key

)

select * from final
