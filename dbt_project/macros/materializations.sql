{#-
  Tables and views in one statement and one lake commit, and no change to the lake's catalog when a
  model's shape has not changed.

  dbt-duckdb's own materializations build `<name>__dbt_tmp`, rename the old relation to
  `<name>__dbt_backup`, rename the new one into place, commit, and then drop the backup in a second
  commit, after catalog queries for indexes and foreign keys. On a DuckLake each of those steps is a
  catalog operation in PostgreSQL, and the second commit is one more lake snapshot per model.
  Here:
  - a table whose query gives the columns and types it has gets its rows replaced (`delete`, then
    `insert`, one transaction); otherwise, and the first time, `create or replace`;
  - a view whose query is the one it has is left as it is; otherwise `create or replace`.
  A change to the lake's catalog makes the next transaction of every connection reload it (about
  15 ms for a school's lake), and the build's tests run between the models; replacing rows does not.
  Both ways are atomic in DuckDB and in DuckLake: a reader keeps the relation of the snapshot it
  started with, and a failing model leaves the previous relation in place. The project uses no hooks
  on these models, no contracts, grants, indexes or persisted docs, which the adapter's versions would
  handle. With `SISBRIDGE_DBT_ALWAYS_REPLACE=1` every model takes `create or replace` (to compare, or
  to rewrite a relation whatever its shape).
-#}

{% materialization table, adapter='duckdb', supported_languages=['sql'] %}
  {{ return(sisbridge_replace_relation('table')) }}
{% endmaterialization %}

{% materialization view, adapter='duckdb' %}
  {{ return(sisbridge_replace_relation('view')) }}
{% endmaterialization %}

{% macro sisbridge_replace_relation(relation_type) %}
  {%- set target_relation = this.incorporate(type=relation_type) -%}
  {%- set existing_relation = load_cached_relation(this) -%}
  {{ run_hooks(pre_hooks, inside_transaction=False) }}
  {{ run_hooks(pre_hooks, inside_transaction=True) }}
  {% if existing_relation is not none and existing_relation.type != relation_type %}
    {{ adapter.drop_relation(existing_relation) }}
  {% endif %}
  {%- set unchanged = existing_relation is not none and existing_relation.type == relation_type
        and env_var('SISBRIDGE_DBT_ALWAYS_REPLACE', '') != '1'
        and sisbridge_same_shape(relation_type, target_relation, sql) -%}
  {% if unchanged and relation_type == 'view' %}
    {#- The same query: the lake keeps the view as it is, and its catalog does not change. -#}
    {% call statement('main') -%} select 1 {%- endcall %}
  {% elif unchanged %}
    {#- The same columns: the rows are replaced in one transaction, and the catalog does not change. -#}
    {% call statement('main') -%}
      delete from {{ target_relation }};
      insert into {{ target_relation }} select * from (
        {{ sql }}
      )
    {%- endcall %}
  {% else %}
    {% call statement('main') -%}
      create or replace {{ relation_type }} {{ target_relation }} as (
        {{ sql }}
      )
    {%- endcall %}
  {% endif %}
  {{ run_hooks(post_hooks, inside_transaction=True) }}
  {{ adapter.commit() }}
  {{ run_hooks(post_hooks, inside_transaction=False) }}
  {{ return({'relations': [target_relation]}) }}
{% endmacro %}

{#- Whether the model's new query gives the relation it has: for a view the same query as DuckDB
    writes it (a temporary view of the new query, read back), for a table the same columns and types
    in the same order. -#}
{% macro sisbridge_same_shape(relation_type, relation, sql) %}
  {%- if relation_type == 'view' -%}
    {%- call statement('sisbridge_probe', fetch_result=True) -%}
      create or replace temporary view sisbridge_probe as (
        {{ sql }}
      );
      select
        (select sql from duckdb_views() where temporary and view_name = 'sisbridge_probe'),
        (select sql from duckdb_views()
         where database_name = '{{ relation.database }}' and schema_name = '{{ relation.schema }}'
           and view_name = '{{ relation.identifier }}')
    {%- endcall -%}
    {%- set row = load_result('sisbridge_probe')['table'].rows[0] -%}
    {%- do run_query('drop view if exists temp.main.sisbridge_probe') -%}
    {#- "CREATE [TEMP ]VIEW <name> AS <query>;": compare the queries. -#}
    {{- return(row[1] is not none and row[0].split(' AS ', 1)[1] == row[1].split(' AS ', 1)[1]) -}}
  {%- else -%}
    {%- set new = run_query('describe (' ~ sql ~ ')') -%}
    {%- set old = run_query('describe ' ~ relation) -%}
    {%- set new_columns = new.rows | map(attribute=0) | list -%}
    {%- set new_types = new.rows | map(attribute=1) | list -%}
    {%- set old_columns = old.rows | map(attribute=0) | list -%}
    {%- set old_types = old.rows | map(attribute=1) | list -%}
    {{- return(new_columns == old_columns and new_types == old_types) -}}
  {%- endif -%}
{% endmacro %}
