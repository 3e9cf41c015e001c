-- The graduation date formats reach the models as SISBRIDGE_DATE_FORMATS (school_date_formats(); DuckDB's
-- strptime needs constant formats). Fails for every format that is in only one of it and config.date_formats.
with

config_formats as (

    select date_format from {{ ref('stg_config__date_formats') }}

),

env_formats as (

    select unnest([
        {%- for format in school_date_formats() -%}
            '{{ format | replace("'", "''") }}'{{ ", " if not loop.last }}
        {%- endfor -%}
    ]::varchar[]) as date_format

),

final as (

    select
        date_format,
        'only in config.date_formats' as problem
    from config_formats
    where date_format not in (select env_formats.date_format from env_formats)
    union all
    select
        date_format,
        'only in SISBRIDGE_DATE_FORMATS' as problem
    from env_formats
    where date_format not in (select config_formats.date_format from config_formats)

)

select * from final
