{#- A yes/no cell: 1, yes or true (case-insensitive, trimmed) mean yes; anything else, blank included, means no. -#}
{% macro parse_flag(column) -%}
    coalesce(lower({{ clean_text(column) }}) in ('1', 'yes', 'true'), false)
{%- endmacro %}

{#- The strptime formats a GRADUATION date may use, as a DuckDB list literal: ISO dates always, then the
    school's extra formats from var('date_formats'). Quotes are doubled so a value can never end the literal. -#}
{% macro graduation_date_formats() -%}
    {%- set formats = ['%Y-%m-%d'] -%}
    {%- for format in var('date_formats', []) -%}
        {%- if format not in formats -%}{%- do formats.append(format) -%}{%- endif -%}
    {%- endfor -%}
    [{%- for format in formats -%}'{{ format | replace("'", "''") }}'{{ ", " if not loop.last }}{%- endfor -%}]
{%- endmacro %}
