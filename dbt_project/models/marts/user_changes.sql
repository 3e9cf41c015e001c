with

target_users as not materialized (

    select * from {{ ref('users') }}

),

applied_users as not materialized (

    select * from {{ ref('stg_state__applied_users') }}

),

target_memberships as not materialized (

    select * from {{ ref('community_memberships') }}

),

applied_memberships as not materialized (

    select * from {{ ref('stg_state__applied_memberships') }}

),

file_users as not materialized (

    select
        external_id,
        line_number
    from {{ ref('int_users_accepted') }}

),

paired as (

    -- The change set is the difference between the applied baseline and the target state. The join
    -- keeps only the keys, the statuses and one flag per user: carrying every old and new value of a
    -- large school through it made DuckDB spill to disk. The values are read back below, only for the
    -- users with a changed field.
    select
        coalesce(target_users.external_id, applied_users.external_id) as external_id,
        applied_users.external_id is not null as is_in_baseline,
        target_users.external_id is not null as is_in_target,
        applied_users.status as old_status,
        target_users.status as new_status,
        applied_users.is_email_opt_out as was_email_opt_out,
        target_users.is_email_opt_out,
        (
            {%- for column in user_field_columns() %}
                {% if not loop.first %}or {% endif -%}
                applied_users.{{ column }}::varchar is distinct from target_users.{{ column }}::varchar
            {%- endfor %}
        ) as has_field_change

    from target_users
    full outer join applied_users
        on target_users.external_id = applied_users.external_id

),

kept as (

    select * from paired
    where is_in_baseline and is_in_target

),

kept_with_field_changes as (

    select
        {% for column in user_field_columns() -%}
            applied_users.{{ column }}::varchar as old_{{ column }},
            target_users.{{ column }}::varchar as new_{{ column }},
        {% endfor -%}
        kept.external_id

    from kept
    inner join target_users
        on kept.external_id = target_users.external_id
    inner join applied_users
        on kept.external_id = applied_users.external_id
    where kept.has_field_change

),

lifecycle_changes as (

    select
        external_id,
        case
            when not is_in_baseline then 'create'
            when not is_in_target then 'delete'
            when old_status = 'inactive' and new_status = 'active' then 'reactivate'
            when old_status = 'active' and new_status = 'inactive' then 'deactivate'
        end as change_type,
        null as field,
        null as old_value,
        null as new_value

    from paired

),

field_changes as (

    {% for column in user_field_columns() -%}
        {% if not loop.first %}union all{% endif %}
        select
            external_id,
            '{{ column }}' as field,
            old_{{ column }} as old_value,
            new_{{ column }} as new_value
        from kept_with_field_changes
    {% endfor %}

),

updates as (

    select
        external_id,
        'update' as change_type,
        field,
        old_value,
        new_value

    from field_changes
    where old_value is distinct from new_value

),

opt_outs as (

    select
        external_id,
        'opt_out' as change_type,
        'email_opt_out' as field,
        'false' as old_value,
        'true' as new_value

    from kept
    where not was_email_opt_out and is_email_opt_out

),

membership_differences as (

    -- The (user, group) pairs whose set of communities differs between baseline and target: a
    -- membership on one side only. Only these pairs are aggregated below, which keeps a week with few
    -- changes cheap for a large school.
    select distinct
        coalesce(target_memberships.external_id, applied_memberships.external_id) as external_id,
        coalesce(target_memberships.community_group, applied_memberships.community_group) as community_group

    from target_memberships
    full outer join applied_memberships
        on
            target_memberships.external_id = applied_memberships.external_id
            and target_memberships.community_group = applied_memberships.community_group
            and target_memberships.community = applied_memberships.community
    where target_memberships.external_id is null or applied_memberships.external_id is null

),

old_communities as (

    select
        applied_memberships.external_id,
        applied_memberships.community_group,
        string_agg(applied_memberships.community, '; ' order by applied_memberships.community) as communities

    from applied_memberships
    inner join membership_differences
        on
            applied_memberships.external_id = membership_differences.external_id
            and applied_memberships.community_group = membership_differences.community_group
    group by applied_memberships.external_id, applied_memberships.community_group

),

new_communities as (

    select
        target_memberships.external_id,
        target_memberships.community_group,
        string_agg(target_memberships.community, '; ' order by target_memberships.community) as communities

    from target_memberships
    inner join membership_differences
        on
            target_memberships.external_id = membership_differences.external_id
            and target_memberships.community_group = membership_differences.community_group
    group by target_memberships.external_id, target_memberships.community_group

),

membership_updates as (

    select
        kept.external_id,
        'update' as change_type,
        'communities:' || membership_differences.community_group as field,
        old_communities.communities as old_value,
        new_communities.communities as new_value

    from membership_differences
    inner join kept
        on membership_differences.external_id = kept.external_id
    left join old_communities
        on
            membership_differences.external_id = old_communities.external_id
            and membership_differences.community_group = old_communities.community_group
    left join new_communities
        on
            membership_differences.external_id = new_communities.external_id
            and membership_differences.community_group = new_communities.community_group
    where old_communities.communities is distinct from new_communities.communities

),

all_changes as (

    select * from lifecycle_changes
    where change_type is not null
    union all
    select * from updates
    union all
    select * from membership_updates
    union all
    select * from opt_outs

),

final as (

    select
        row_number() over (
            order by
                case all_changes.change_type
                    when 'create' then 1
                    when 'reactivate' then 2
                    when 'update' then 3
                    when 'opt_out' then 4
                    when 'deactivate' then 5
                    when 'delete' then 6
                end,
                all_changes.external_id,
                all_changes.field
        ) as change_id,
        all_changes.external_id,
        all_changes.change_type,
        all_changes.field,
        all_changes.old_value,
        all_changes.new_value,
        file_users.line_number

    from all_changes
    left join file_users
        on all_changes.external_id = file_users.external_id

)

select * from final
