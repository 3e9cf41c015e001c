"""One list of user columns for Python (the store's users table), one for dbt (a project var): they agree."""

from __future__ import annotations

import json
from pathlib import Path

import duckdb
import yaml

from sisbridge import audit
from sisbridge.localrun import ensure_dbt_manifest
from sisbridge.userstore import STATE_USER_COLUMNS, users

PROJECT = Path(__file__).resolve().parents[2] / "dbt_project"


def test_the_dbt_var_lists_the_users_tables_attributes_in_its_order():
    dbt_columns = yaml.safe_load((PROJECT / "dbt_project.yml").read_text())["vars"]["user_columns"]

    assert STATE_USER_COLUMNS[0] == "external_id"
    assert dbt_columns == list(STATE_USER_COLUMNS[1:])
    # Every one of them is a column of the store's users table.
    assert set(dbt_columns) <= set(users.columns.keys())


def test_the_snapshot_and_the_audit_baseline_follow_the_two_lists():
    manifest = json.loads(ensure_dbt_manifest().read_text())
    snapshot = manifest["nodes"]["snapshot.sisbridge.users_snapshot"]
    assert snapshot["config"]["check_cols"] == list(STATE_USER_COLUMNS[1:])

    con = duckdb.connect()
    audit.ensure_schema(con)
    baseline = [
        name
        for (name,) in con.execute(
            """
            select column_name from information_schema.columns
            where table_schema = 'state' and table_name = 'applied_users' order by ordinal_position
            """
        ).fetchall()
    ]
    assert baseline == [*STATE_USER_COLUMNS, "applied_run_id"]
