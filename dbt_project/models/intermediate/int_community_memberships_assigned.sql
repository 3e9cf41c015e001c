with

users as (

    select * from {{ ref('int_users_accepted') }}

),

community_values as (

    select * from {{ ref('int_community_values_mapped') }}

),

final as (

    select distinct
        users.external_id,
        community_values.community_group,
        community_values.community

    from community_values
    inner join users
        on community_values.line_number = users.line_number
    where
        community_values.community is not null
        and not users.is_delete_requested

)

select * from final
