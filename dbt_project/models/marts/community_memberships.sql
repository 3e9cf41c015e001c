-- A view: the mart selects columns of int_community_memberships_assigned as they are, and writing
-- a copy of a large school's rows into the warehouse at every build cost more than reading the view.
{{ config(materialized='view') }}

with

assigned as (

    select * from {{ ref('int_community_memberships_assigned') }}

),

final as (

    select
        external_id,
        community_group,
        community

    from assigned

)

select * from final
