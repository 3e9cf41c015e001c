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

school_map as (

    -- Without a user_types map, the file's value is the user type.
    select count(*) > 0 as has_map
    from user_type_map

),

cells as (

    -- A file may carry both STAKEHOLDERS and USER_TYPE: a non-blank USER_TYPE wins.
    select
        line_number,
        stakeholders,
        user_type as user_type_cell,
        coalesce(user_type, stakeholders) as source_value,
        case when user_type is not null then 'USER_TYPE' else 'STAKEHOLDERS' end as source_column

    from roster
    where coalesce(user_type, stakeholders) is not null

),

pieces as (

    select
        line_number,
        unnest(string_split_regex(source_value, '[;,]')) as piece

    from cells

),

piece_counts as (

    -- Non-blank pieces between ';' or ',' separators: more than one means several user types.
    select
        line_number,
        count({{ clean_text('piece') }}) as piece_count,
        min({{ clean_text('piece') }}) as only_piece

    from pieces
    group by line_number

),

resolved as (

    select
        cells.line_number,
        cells.stakeholders,
        cells.user_type_cell,
        cells.source_value,
        cells.source_column,
        piece_counts.piece_count,
        piece_counts.only_piece,
        school_map.has_map,
        chosen.user_type as mapped_user_type,
        -- What each column says, mapped where the map knows the value: they disagree when these differ.
        lower(coalesce(from_user_type.user_type, cells.user_type_cell)) as user_type_says,
        lower(coalesce(from_stakeholders.user_type, cells.stakeholders)) as stakeholders_say

    from cells
    cross join school_map
    inner join piece_counts
        on cells.line_number = piece_counts.line_number
    left join user_type_map as chosen
        on lower(cells.source_value) = chosen.source_key
    left join user_type_map as from_user_type
        on lower(cells.user_type_cell) = from_user_type.source_key
    left join user_type_map as from_stakeholders
        on lower(cells.stakeholders) = from_stakeholders.source_key

),

final as (

    select
        line_number,
        stakeholders,
        user_type_cell,
        source_value,
        source_column,
        case
            when has_map then mapped_user_type
            when piece_count = 1 then only_piece
        end as user_type,
        case
            when mapped_user_type is not null then null
            when piece_count > 1 then 'user_type_multiple'
            when has_map then 'user_type_unmapped'
        end as finding_rule,
        coalesce(user_type_says <> stakeholders_say, false) as is_conflict

    from resolved

)

select * from final
