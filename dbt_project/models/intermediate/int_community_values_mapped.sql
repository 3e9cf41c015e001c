with

community_values_split as (

    select * from {{ ref('int_community_values_split') }}

),

community_columns as (

    select * from {{ ref('stg_config__community_columns') }}

),

community_values as (

    select * from {{ ref('stg_config__community_values') }}

),

value_map as (

    -- Two config keys that differ only in case would otherwise match one value twice.
    select
        column_name,
        source_key,
        min(community) as community

    from community_values
    group by column_name, source_key

),

final as (

    select
        community_values_split.line_number,
        community_values_split.column_name,
        community_columns.community_group,
        community_values_split.community_value,
        -- Without a value map for the column, the cell values are the community names.
        case
            when community_columns.has_value_map then value_map.community
            else community_values_split.community_value
        end as community

    from community_values_split
    inner join community_columns
        on community_values_split.column_name = community_columns.column_name
    left join value_map
        on
            community_values_split.column_name = value_map.column_name
            and lower(community_values_split.community_value) = value_map.source_key

)

select * from final
