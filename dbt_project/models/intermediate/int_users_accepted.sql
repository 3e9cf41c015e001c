with

roster_rows as (

    select * from {{ ref('int_roster_rows_identified') }}

),

graduation_years as (

    select * from {{ ref('int_graduation_years_parsed') }}

),

user_types as (

    select * from {{ ref('int_user_types_mapped') }}

),

final as (

    select
        roster_rows.external_id,
        roster_rows.email,
        roster_rows.user_id,
        roster_rows.user_login,
        roster_rows.first_name,
        roster_rows.last_name,
        user_types.user_type,
        graduation_years.graduation_year,
        roster_rows.is_email_opt_out_requested,
        roster_rows.is_delete_requested,
        roster_rows.line_number

    from roster_rows
    left join graduation_years
        on roster_rows.line_number = graduation_years.line_number
    left join user_types
        on roster_rows.line_number = user_types.line_number
    where
        not roster_rows.has_row_error
        and roster_rows.external_id is not null

)

select * from final
