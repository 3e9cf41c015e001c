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

community_values as (

    select * from {{ ref('int_community_values_mapped') }}

),

config_user_types as (

    select * from {{ ref('stg_config__user_types') }}

),

file_columns as (

    select * from {{ ref('stg_sis__file_columns') }}

),

accepted_rows as (

    -- A rejected row is already reported as an error; its warnings would only add noise.
    select
        line_number,
        external_id

    from roster_rows
    where not has_row_error

),

header_names as (

    -- Findings name the column as the school's file spells it.
    select
        column_name,
        min(source_name) as source_name

    from file_columns
    group by column_name

),

known_user_types as (

    select string_agg(source_value, ', ' order by source_value) as source_values
    from config_user_types

),

graduation_findings as (

    select
        graduation_years.line_number,
        graduation_years.finding_rule as rule,
        'GRADUATION' as column_name,
        graduation_years.graduation as cell_value,
        case graduation_years.finding_rule
            when 'graduation_unparseable'
                then
                    'is neither a year (YYYY) nor a date in an accepted format; the graduation year was left '
                    || 'empty. Send the class year, e.g. 2027, or a full date'
            else
                'gives the class year ' || graduation_years.class_year::varchar
                || ', outside 1900..2100; the graduation year was left empty. Correct the year'
        end as problem

    from graduation_years
    where graduation_years.finding_rule is not null

),

user_type_findings as (

    select
        user_types.line_number,
        user_types.finding_rule as rule,
        user_types.source_column as column_name,
        user_types.source_value as cell_value,
        case user_types.finding_rule
            when 'user_type_multiple'
                then
                    'holds more than one user type; the user type was left empty. '
                    || 'Send exactly one user type per user'
            else
                'is not a known user type; the user type was left empty. Send one of: '
                || coalesce(known_user_types.source_values, '(none configured)')
        end as problem

    from user_types
    cross join known_user_types
    where user_types.finding_rule is not null

),

user_type_conflicts as (

    select
        user_types.line_number,
        'user_type_conflict' as rule,
        'USER_TYPE' as column_name,
        user_types.user_type_cell as cell_value,
        'disagrees with ' || coalesce(stakeholders_name.source_name, 'STAKEHOLDERS')
        || ' value ''' || user_types.stakeholders || '''; the user type follows USER_TYPE. '
        || 'Send the same user type in both columns, or only one of them' as problem

    from user_types
    left join header_names as stakeholders_name
        on stakeholders_name.column_name = 'STAKEHOLDERS'
    where user_types.is_conflict

),

community_findings as (

    select
        line_number,
        'community_unmapped' as rule,
        column_name,
        community_value as cell_value,
        'is not mapped to a ' || community_group
        || ' community; the value was dropped and the row kept. '
        || 'Send a mapped value, or ask uConnect to map this one' as problem

    from community_values
    where community is null

),

all_findings as (

    select * from graduation_findings
    union all
    select * from user_type_findings
    union all
    select * from user_type_conflicts
    union all
    select * from community_findings

),

final as (

    select
        all_findings.line_number,
        accepted_rows.external_id as identifier,
        'warning' as severity,
        all_findings.rule,
        coalesce(header_names.source_name, all_findings.column_name)
        || ' value ''' || all_findings.cell_value || ''' '
        || all_findings.problem || '.' as message,
        all_findings.column_name,
        all_findings.cell_value as value

    from all_findings
    inner join accepted_rows
        on all_findings.line_number = accepted_rows.line_number
    left join header_names
        on all_findings.column_name = header_names.column_name

)

select * from final
