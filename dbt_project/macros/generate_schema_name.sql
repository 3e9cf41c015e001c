{#- The warehouse contract uses the schema names verbatim: staging, intermediate, marts, snapshots.
    Under the `dev` target (`sisbridge dbt`, docs/analytics-engineering.md) each gets a `dev_` prefix:
    dev_staging, dev_intermediate, dev_marts, dev_snapshots. Sources keep their schemas (raw, config,
    state, audit), so a dev build reads the school's production inputs and writes none of its tables. -#}
{% macro generate_schema_name(custom_schema_name, node) -%}
    {%- set schema = target.schema if custom_schema_name is none else custom_schema_name | trim -%}
    {%- if target.name == 'dev' -%}
        dev_{{ schema }}
    {%- else -%}
        {{ schema }}
    {%- endif -%}
{%- endmacro %}
