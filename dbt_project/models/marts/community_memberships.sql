-- The memberships the store must hold after the push: the communities of the users in the mart
-- `users`. A table, read by the push and by the change set.
with

users as (

    select * from {{ ref('users') }}

),

accepted_users as (

    select * from {{ ref('int_users_accepted') }}

),

assigned as (

    select * from {{ ref('int_community_memberships_assigned') }}

),

applied_memberships as (

    select * from {{ ref('stg_state__applied_memberships') }}

),

file_columns as (

    select * from {{ ref('stg_sis__file_columns') }}

),

community_columns as (

    select * from {{ ref('stg_config__community_columns') }}

),

groups_in_file as (

    -- A community column the file does not have says nothing: those memberships stay as applied.
    select distinct community_columns.community_group
    from file_columns
    inner join community_columns
        on file_columns.column_name = community_columns.column_name
    where file_columns.column_kind = 'community'

),

file_users as (

    select external_id
    from accepted_users
    where not is_delete_requested

),

from_file as (

    select
        external_id,
        community_group,
        community

    from assigned
    where community_group in (select groups_in_file.community_group from groups_in_file)

),

from_baseline as (

    select
        applied_memberships.external_id,
        applied_memberships.community_group,
        applied_memberships.community

    from applied_memberships
    left join file_users
        on applied_memberships.external_id = file_users.external_id
    where
        file_users.external_id is null
        or applied_memberships.community_group not in (
            select groups_in_file.community_group from groups_in_file
        )

),

final as (

    -- Only users that remain in the store keep memberships.
    select memberships.*
    from (
        select * from from_file
        union
        select * from from_baseline
    ) as memberships
    inner join users
        on memberships.external_id = users.external_id

)

select * from final
