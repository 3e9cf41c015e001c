with

source as (

    select * from {{ source('state', 'applied_memberships') }}

),

final as (

    select
        external_id,
        community_group,
        community

    from source

)

select * from final
