{#- The user attributes a push applies, from var('user_columns') (dbt_project.yml), in its order, less
    the names in `exclude`. The one list of them in dbt; tests/dbt/test_user_columns.py checks it
    against sisbridge.userstore.schema. -#}
{% macro user_columns(exclude=[]) -%}
    {%- set columns = [] -%}
    {%- for column in var('user_columns') -%}
        {%- if column not in exclude -%}{%- do columns.append(column) -%}{%- endif -%}
    {%- endfor -%}
    {{ return(columns) }}
{%- endmacro %}

{#- The SIS fields a file changes one by one (an `update` change each): every attribute but the status
    and the opt-out, which have change types of their own. -#}
{% macro user_field_columns() -%}
    {{ return(user_columns(exclude=['status', 'email_opt_out'])) }}
{%- endmacro %}
