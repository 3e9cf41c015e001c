"""A dbt-duckdb plugin that attaches one school's lake as `lake` (profiles.yml lists it).

dbt cannot INSTALL DuckDB's extensions from the network here, and the lake's settings carry
secrets that must not appear in a profile or on a command line. So the plugin loads the
extensions from their wheels and attaches the lake of `SISBRIDGE_SCHOOL_ID` with the settings in
`SISBRIDGE_LAKE` (sisbridge.warehouse.dbt_env sets both). Without a school (`dbt parse`, `dbt ls`,
sqlfluff, the lineage docs) it attaches an in-memory database as `lake`, so those need no lake.
"""

from __future__ import annotations

import os
import threading

from dbt.adapters.duckdb.impl import DuckDBAdapter
from dbt.adapters.duckdb.plugins import BasePlugin

from sisbridge import extensions, warehouse

# The node types that only read: dbt's data tests (without store_failures) and unit tests, whose
# fixtures are temporary tables outside the lake.
_READ_ONLY = frozenset({"test", "unit_test"})
_LAKE_WRITES = threading.Lock()


def _takes_the_lock(config) -> bool:
    node = getattr(config, "model", None)
    if node is None:
        return False
    return str(node.resource_type) not in _READ_ONLY or bool(node.config.get("store_failures"))


def _serialize_lake_writes() -> None:
    """Let one node at a time write to the lake, while the data tests run on every thread.

    DuckLake 1.5.5 loses or corrupts catalog entries when two transactions of one DuckDB instance
    create relations in a lake at the same time (duckdb/ducklake#1404, #1248): with two threads,
    a view that a model had just created was missing for its tests. So the models and the snapshot
    take one lock for their whole materialization, through dbt-duckdb's model hooks (which it
    already uses to serialize models in foreign-key relationships), and the tests do not. dbt creates
    missing schemas on its threads too: each creation takes the lock.

    The embedded lake's SQLite catalog takes no commit while another transaction reads it ("database
    is locked"): there dbt runs on one thread (`warehouse.dbt_env`).
    """
    if getattr(DuckDBAdapter, "_sisbridge_lake_writes", False):
        return
    pre_model_hook, post_model_hook = DuckDBAdapter.pre_model_hook, DuckDBAdapter.post_model_hook

    def pre(self, config):
        # dbt hands what this returns to the post-hook: whether the node holds the lock, and
        # dbt-duckdb's own context.
        locked = _takes_the_lock(config)
        if locked:
            _LAKE_WRITES.acquire()
        try:
            return locked, pre_model_hook(self, config)
        except BaseException:
            if locked:
                _LAKE_WRITES.release()
            raise

    def post(self, config, context):
        locked, inner = context
        try:
            post_model_hook(self, config, inner)
        finally:
            if locked:
                _LAKE_WRITES.release()

    create_schema = DuckDBAdapter.create_schema

    def create_schema_alone(self, relation) -> None:
        with _LAKE_WRITES:
            create_schema(self, relation)

    DuckDBAdapter.pre_model_hook, DuckDBAdapter.post_model_hook = pre, post
    DuckDBAdapter.create_schema = create_schema_alone
    DuckDBAdapter._sisbridge_lake_writes = True


class Plugin(BasePlugin):
    def initialize(self, plugin_config) -> None:
        _serialize_lake_writes()

    def configure_connection(self, conn) -> None:
        school_id = os.environ.get("SISBRIDGE_SCHOOL_ID")
        if not school_id:
            conn.execute(f"attach if not exists ':memory:' as {warehouse.ALIAS}")
        else:
            lake = warehouse.settings()
            if lake.kind == warehouse.EMBEDDED:
                warehouse.prepare_embedded(lake, school_id)
            extensions.load(conn, *lake.extensions())
            secret = lake.secret_sql()
            if secret:
                conn.execute(secret)
            conn.execute(lake.attach_sql(school_id))
        conn.execute(f"use {warehouse.ALIAS}")

    def configure_cursor(self, cursor) -> None:
        # Each cursor starts in DuckDB's default database. `sisbridge dbt` (docs/analytics-engineering.md)
        # moves it into the lake, so that `dbt show --inline "select ... from marts.users"` reads the lake
        # unqualified. The pipeline's SQL names `lake` in full, and a `use` costs a catalog lookup for
        # each of the build's 125 nodes.
        if os.environ.get(warehouse.DBT_USE_LAKE_ENV) == "1":
            cursor.execute(f"use {warehouse.ALIAS}")
