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
