{#- dbt's snapshot staging query, with its five source CTEs not materialized. DuckDB materializes a CTE
    that is read more than once, with all its columns: for a million users it copied the source and
    the snapshot's current rows before joining them, and spilled to disk. Inlined, the joins read the
    tables directly. The query is dbt's own (default__snapshot_staging_table); only the CTE headers
    change, and a header that a later dbt writes differently is simply left as it is. -#}
{% macro duckdb__snapshot_staging_table(strategy, source_sql, target_relation) -%}
    {%- set staging = namespace(sql=dbt.default__snapshot_staging_table(strategy, source_sql, target_relation)) -%}
    {%- for cte in ['snapshot_query', 'snapshotted_data', 'insertions_source_data', 'updates_source_data', 'deletes_source_data'] -%}
        {%- set staging.sql = staging.sql | replace(cte ~ ' as (', cte ~ ' as not materialized (') -%}
    {%- endfor -%}
    {{ staging.sql }}
{%- endmacro %}
