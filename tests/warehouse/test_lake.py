"""The warehouse is a DuckLake per school, on the production setup: a PostgreSQL catalog and moto's S3.

The session's servers and the `sisbridge_lake` connections come from tests/airflow_env.py.
"""

from __future__ import annotations

import os
import subprocess
import sys

import duckdb
import lakes
import pytest

from sisbridge import audit, warehouse
from tests.cli.cli_helpers import STUDENTS, roster, summary, upload

READER = """
import sys
from sisbridge import warehouse

con = warehouse.connect(sys.argv[1], read_only=True)
con.execute("begin")
query = "select count(*), count(*) filter (status = 'succeeded') from audit.sync_runs"
print("counts:", *con.execute(query).fetchone(), flush=True)
sys.stdin.readline()  # the sync has finished
print("counts:", *con.execute(query).fetchone(), flush=True)
con.execute("commit")
print("counts:", *con.execute(query).fetchone(), flush=True)
"""


def _next_counts(stream) -> str:
    """The reader's next `counts:` line (Airflow may log other lines to its stdout); "" at its end."""
    for line in iter(stream.readline, ""):
        if line.startswith("counts:"):
            return line.strip()
    return ""


def _lake_connections() -> dict[str, str]:
    return {
        name: os.environ[name] for name in ("AIRFLOW_CONN_SISBRIDGE_LAKE", "AIRFLOW_CONN_SISBRIDGE_LAKE_AWS")
    }


@pytest.mark.e2e
def test_an_auditor_holding_a_transaction_neither_blocks_nor_fails_a_sync_and_keeps_its_snapshot(
    shell, s3_endpoint
):
    school_id = "lake_audited"
    lakes.wipe(school_id)
    shell.write_school(school_id)
    upload(s3_endpoint, school_id, roster())
    with audit.warehouse(school_id):
        pass  # the school's lake exists, as after any earlier run
    warehouse.release(school_id)

    # The auditor is its own process, with a read transaction open for the whole sync.
    reader = subprocess.Popen(
        [sys.executable, "-c", READER, school_id],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert _next_counts(reader.stdout) == "counts: 0 0"
        # The sync is `sisbridge sync` from a plain shell that has the production lake's connections.
        synced = shell.sync(
            school_id, env={**shell.connection_env(school_id, s3_endpoint), **_lake_connections()}
        )
        out, err = reader.communicate("go\n", timeout=120)
    finally:
        reader.kill()

    assert (synced.returncode, synced.stderr) == (0, ""), synced.stdout + synced.stderr
    assert summary(synced.stdout)[2] == "succeeded"
    assert reader.returncode == 0, err
    # Inside its transaction the auditor still saw the lake as it was; after it, the new run.
    assert [line for line in out.splitlines() if line.startswith("counts:")] == ["counts: 0 0", "counts: 1 1"]
    assert shell.store_users(school_id) == sorted(student[2] for student in STUDENTS)
    # Nothing of the warehouse is on the worker's disk: the lake is in PostgreSQL and S3.
    assert not (shell.sisbridge_home / "lake" / "schools" / school_id).exists()
    shell.assert_home_untouched()


def test_a_connection_for_one_school_cannot_see_or_read_another_schools_lake():
    for school_id in ("tenant_a", "tenant_b"):
        lakes.wipe(school_id)
    with audit.warehouse("tenant_b") as con:
        con.execute("create schema marts")
        con.execute("create table marts.users as select 'b@b.edu' as email")
        audit.upsert_run(con, "b-run", school_id="tenant_b", status="succeeded")
    with audit.warehouse("tenant_a") as con:
        audit.upsert_run(con, "a-run", school_id="tenant_a", status="succeeded")
    lake = warehouse.settings()
    b_data = lake.school_data_path("tenant_b")

    for read_only in (False, True):
        con = warehouse.connect("tenant_a", read_only=read_only)
        try:
            assert con.execute("select run_id from audit.sync_runs").fetchall() == [("a-run",)]
            tables = con.execute(
                "select table_schema || '.' || table_name from information_schema.tables "
                "where table_catalog = 'lake' and table_schema = 'marts'"
            ).fetchall()
            assert tables == []
            with pytest.raises(duckdb.CatalogException, match="marts.users|users"):
                con.execute("select * from marts.users")
            if read_only:
                # An auditor's connection cannot read B's files, nor attach B's lake.
                with pytest.raises(duckdb.Error, match="disabled|Permission"):
                    con.execute(f"select * from read_parquet('{b_data}**/*.parquet')")
                with pytest.raises(duckdb.Error):
                    con.execute(lake.attach_sql("tenant_b", read_only=True).replace(" as lake", " as other"))
        finally:
            con.close()
    # Each school's catalog is its own PostgreSQL schema; its files its own prefix.
    assert lake.metadata_schema("tenant_a") != lake.metadata_schema("tenant_b")
    assert "metadata_schema 'school_tenant_a'" in lake.attach_sql("tenant_a")
    assert lake.school_data_path("tenant_a") == "s3://sisbridge-lake/schools/tenant_a/"


def test_the_settings_reach_dbt_subprocesses_through_the_environment_only(monkeypatch):
    lake = warehouse.settings()
    assert (lake.kind, lake.data_path) == (warehouse.POSTGRES, "s3://sisbridge-lake/")
    assert (lake.s3_key_id, lake.s3_use_ssl, lake.s3_url_style) == ("lake-access-key", False, "path")
    monkeypatch.setenv(warehouse.LAKE_ENV, lake.to_env())
    monkeypatch.delenv("AIRFLOW_CONN_SISBRIDGE_LAKE")
    assert warehouse.settings() == lake
    # No lake connection and no handed-over settings: the embedded lake under SISBRIDGE_HOME.
    monkeypatch.delenv(warehouse.LAKE_ENV)
    assert warehouse.settings().kind == warehouse.EMBEDDED
    monkeypatch.setenv(warehouse.LAKE_ENV, "{not json")
    with pytest.raises(warehouse.LakeError, match="SISBRIDGE_LAKE is not a valid lake setting"):
        warehouse.settings()


def test_a_lake_opened_ahead_is_the_instance_the_next_connect_uses():
    # `sisbridge sync` opens the school's lake on a thread while Airflow parses the DAG.
    school_id = "lake_ahead"
    lakes.wipe(school_id)
    warehouse.release(school_id)
    opening = warehouse.open_in_background(school_id)
    assert opening is not None
    opening.join(timeout=120)
    assert not opening.is_alive()
    key = (school_id, warehouse.settings().to_env())
    ahead = warehouse._instances[key]
    con = warehouse.connect(school_id)
    try:
        assert warehouse._instances[key] is ahead
        # The school's first connect creates its catalog (its first snapshot): that happened ahead.
        assert con.execute("select count(*) from ducklake_snapshots('lake')").fetchone()[0] >= 1
    finally:
        con.close()
        warehouse.release(school_id)


def test_a_lake_that_cannot_open_ahead_is_left_to_the_task_that_connects(monkeypatch, caplog):
    monkeypatch.setenv(
        "AIRFLOW_CONN_SISBRIDGE_LAKE", "postgres://nobody@127.0.0.1:9/lake?data_path=s3%3A%2F%2Fx%2F"
    )
    with caplog.at_level("INFO", logger="sisbridge.warehouse"):
        opening = warehouse.open_in_background("lake_unreachable")
        if opening is not None:
            opening.join(timeout=120)
    assert "the warehouse of lake_unreachable was not opened ahead" in caplog.text
    with pytest.raises(warehouse.LakeError, match="lake_unreachable"):
        warehouse.connect("lake_unreachable")
