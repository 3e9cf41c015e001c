{#-
  Tables and views in one statement and one lake commit.

  dbt-duckdb's own materializations build `<name>__dbt_tmp`, rename the old relation to
  `<name>__dbt_backup`, rename the new one into place, commit, and then drop the backup in a second
  commit, after catalog queries for indexes and foreign keys. On a DuckLake each of those steps is a
  catalog operation in PostgreSQL, and the second commit is one more lake snapshot per model.
  `create or replace` is atomic in DuckDB and in DuckLake: a reader keeps the relation of the snapshot
  it started with, and a failing model leaves the previous relation in place. The project uses no
  hooks on these models, no contracts, grants, indexes or persisted docs, which the adapter's
  versions would handle.
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
  {% call statement('main') -%}
    create or replace {{ relation_type }} {{ target_relation }} as (
      {{ sql }}
    )
  {%- endcall %}
  {{ run_hooks(post_hooks, inside_transaction=True) }}
  {{ adapter.commit() }}
  {{ run_hooks(post_hooks, inside_transaction=False) }}
  {{ return({'relations': [target_relation]}) }}
{% endmacro %}
