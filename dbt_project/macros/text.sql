{#- A yes/no cell: 1, yes or true (case-insensitive, trimmed) mean yes; anything else, blank included, means no. -#}
{% macro parse_flag(column) -%}
    coalesce(lower({{ clean_text(column) }}) in ('1', 'yes', 'true'), false)
{%- endmacro %}

{#- The school's extra graduation date formats, a list: SISBRIDGE_DATE_FORMATS holds it as JSON
    (sisbridge.transform.dbt_school_env). An environment variable rather than a var: dbt parses the
    whole project again when the vars differ from its saved parse's, but only the files that read an
    environment variable when that variable changes, so every school can start from one saved parse. -#}
{% macro school_date_formats() -%}
    {{ return(fromjson(env_var('SISBRIDGE_DATE_FORMATS', '[]'))) }}
{%- endmacro %}

{#- The strptime formats a GRADUATION date may use, as a DuckDB list literal: ISO dates always, then the
    school's extra formats (school_date_formats). Quotes are doubled so a value can never end the literal. -#}
{% macro graduation_date_formats() -%}
    {%- set formats = ['%Y-%m-%d'] -%}
    {%- for format in school_date_formats() -%}
        {%- if format not in formats -%}{%- do formats.append(format) -%}{%- endif -%}
    {%- endfor -%}
    [{%- for format in formats -%}'{{ format | replace("'", "''") }}'{{ ", " if not loop.last }}{%- endfor -%}]
{%- endmacro %}
