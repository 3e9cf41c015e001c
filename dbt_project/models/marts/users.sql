-- The school's users as the store must hold them after the push: the change set's target, and what
-- the push writes to the store and to state.applied_users. A table: the change set and the push read it.
with

accepted_users as (

    select * from {{ ref('int_users_accepted') }}

),

roster_rows as (

    select * from {{ ref('int_roster_rows_identified') }}

),

applied_users as (

    select * from {{ ref('stg_state__applied_users') }}

),

school as (

    select * from {{ ref('stg_config__school') }}

),

file_columns as (

    select * from {{ ref('stg_sis__file_columns') }}

),

columns_in_file as (

    -- An optional column the file leaves out says nothing about it: existing users keep their value.
    select
        coalesce(bool_or(column_name = 'USER_ID'), false) as has_user_id,
        coalesce(bool_or(column_name = 'USER_LOGIN'), false) as has_user_login,
        coalesce(bool_or(column_name = 'GRADUATION'), false) as has_graduation,
        coalesce(bool_or(column_name in ('STAKEHOLDERS', 'USER_TYPE')), false) as has_user_type

    from file_columns

),

in_file as (

    -- Every identifier in the file, rejected rows included: a user whose row was rejected this
    -- week is not missing, so they are left as they are rather than deactivated or deleted.
    select distinct external_id
    from roster_rows
    where external_id is not null

),

from_file as (

    -- DELETE = yes leaves the user out: an existing user is deleted, an unknown one never created.
    select
        accepted_users.external_id,
        accepted_users.email,
        case
            when columns_in_file.has_user_id or applied_users.external_id is null then accepted_users.user_id
            else applied_users.user_id
        end as user_id,
        case
            when columns_in_file.has_user_login or applied_users.external_id is null
                then accepted_users.user_login
            else applied_users.user_login
        end as user_login,
        accepted_users.first_name,
        accepted_users.last_name,
        case
            when columns_in_file.has_user_type or applied_users.external_id is null
                then accepted_users.user_type
            else applied_users.user_type
        end as user_type,
        case
            when columns_in_file.has_graduation or applied_users.external_id is null
                then accepted_users.graduation_year
            else applied_users.graduation_year
        end as graduation_year,
        'active' as status,
        -- Opting out is one-way: the file can opt a user out, never back in.
        coalesce(applied_users.is_email_opt_out, false)
        or accepted_users.is_email_opt_out_requested as is_email_opt_out,
        accepted_users.is_email_opt_out_requested,
        accepted_users.line_number

    from accepted_users
    cross join columns_in_file
    left join applied_users
        on accepted_users.external_id = applied_users.external_id
    where not accepted_users.is_delete_requested

),

not_in_accepted_file as (

    select
        applied_users.*,
        in_file.external_id is null as is_missing,
        school.missing_users

    from applied_users
    cross join school
    left join accepted_users
        on applied_users.external_id = accepted_users.external_id
    left join in_file
        on applied_users.external_id = in_file.external_id
    where accepted_users.external_id is null

),

carried_over as (

    -- Missing active users follow the school's missing_users setting; everyone else stays as applied.
    select
        external_id,
        {%- for column in user_field_columns() %}
            {{ column }},
        {%- endfor %}
        case
            when is_missing and status = 'active' and missing_users = 'deactivate' then 'inactive'
            else status
        end as status,
        is_email_opt_out,
        -- Not in the accepted file: the file asks nothing of them and has no record of them.
        null::boolean as is_email_opt_out_requested,
        null::integer as line_number

    from not_in_accepted_file
    where not (is_missing and status = 'active' and missing_users = 'delete')

),

target_users as (

    select * from from_file
    union all
    select * from carried_over

),

final as (

    select
        external_id,
        email,
        user_id,
        user_login,
        first_name,
        last_name,
        user_type,
        graduation_year,
        status,
        is_email_opt_out,
        is_email_opt_out_requested,
        line_number

    from target_users

)

select * from final
