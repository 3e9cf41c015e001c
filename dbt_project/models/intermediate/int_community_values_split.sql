with

roster_communities as (

    select * from {{ ref('stg_sis__roster_communities') }}

),

pieces as (

    select
        line_number,
        column_name,
        unnest(string_split(cell_value, ';')) as piece

    from roster_communities
    where cell_value is not null

),

final as (

    -- Pieces are trimmed and empty ones dropped; a value repeated in one cell counts once.
    select distinct
        line_number,
        column_name,
        {{ clean_text('piece') }} as community_value

    from pieces
    where {{ clean_text('piece') }} is not null

)

select * from final
