with

roster as (

    select * from {{ ref('stg_sis__roster') }}

),

parsed as (

    select
        line_number,
        graduation,
        case
            when regexp_full_match(graduation, '[0-9]{4}') then graduation::integer
        end as year_only,
        try_strptime(graduation, {{ graduation_date_formats() }}) as graduation_date

    from roster
    where graduation is not null

),

class_years as (

    select
        line_number,
        graduation,
        coalesce(
            year_only,
            -- The 8/31 cutoff: a date on or before Aug 31 of year Y is class Y; a later date is class Y + 1.
            year(graduation_date) + case when month(graduation_date) > 8 then 1 else 0 end
        ) as class_year

    from parsed

),

final as (

    select
        line_number,
        graduation,
        class_year,
        case when class_year between 1900 and 2100 then class_year end as graduation_year,
        case
            when class_year is null then 'graduation_unparseable'
            when class_year not between 1900 and 2100 then 'graduation_out_of_range'
        end as finding_rule

    from class_years

)

select * from final
