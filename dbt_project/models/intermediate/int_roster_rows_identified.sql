with

roster as (

    select * from {{ ref('stg_sis__roster') }}

),

school as (

    select * from {{ ref('stg_config__school') }}

),

findings as (

    select * from {{ ref('stg_audit__rejected_rows') }}

),

this_run as (

    -- The run that pinned the file being transformed.
    select run_id from {{ ref('stg_sis__file') }}

),

rows_with_errors as (

    -- Rows that loading or quality rejected in this run never reach the users.
    select distinct findings.line_number
    from findings
    inner join this_run
        on findings.run_id = this_run.run_id
    where
        findings.severity = 'error'
        and findings.line_number is not null

),

final as (

    select
        roster.line_number,
        case school.identifier
            when 'email' then roster.email
            when 'user_id' then roster.user_id
            when 'user_login' then roster.user_login
        end as external_id,
        roster.email,
        roster.user_id,
        roster.user_login,
        roster.first_name,
        roster.last_name,
        roster.graduation,
        roster.stakeholders,
        roster.is_email_opt_out_requested,
        roster.is_delete_requested,
        rows_with_errors.line_number is not null as has_row_error

    from roster
    cross join school
    left join rows_with_errors
        on roster.line_number = rows_with_errors.line_number

)

select * from final
