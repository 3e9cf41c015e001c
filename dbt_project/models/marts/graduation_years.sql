with

accepted_users as (

    select * from {{ ref('int_users_accepted') }}

),

final as (

    -- Users the file asks to delete are leaving, so they no longer count towards a class.
    select
        graduation_year,
        count(*) as user_count

    from accepted_users
    where
        graduation_year is not null
        and not is_delete_requested
    group by graduation_year

)

select * from final
