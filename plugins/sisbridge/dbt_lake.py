"""A dbt-duckdb plugin that attaches one school's lake as `lake` (profiles.yml lists it).

dbt cannot INSTALL DuckDB's extensions from the network here, and the lake's settings carry
secrets that must not appear in a profile or on a command line. So the plugin loads the
extensions from their wheels and attaches the lake of `SISBRIDGE_SCHOOL_ID` with the settings in
`SISBRIDGE_LAKE` (sisbridge.warehouse.dbt_env sets both). Without a school (`dbt parse`, `dbt ls`,
sqlfluff, the lineage docs) it attaches an in-memory database as `lake`, so those need no lake.
"""

from __future__ import annotations

import os

from dbt.adapters.duckdb.plugins import BasePlugin

from sisbridge import extensions, warehouse


class Plugin(BasePlugin):
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
