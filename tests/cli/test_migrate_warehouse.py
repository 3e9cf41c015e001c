"""`sisbridge migrate-warehouse`: a warehouse file made by the code before the lake, into the lake.

The file is `tests/data/legacy-warehouse/acme/` (EXPORT DATABASE of the DuckDB file that two weekly
demo syncs wrote; its README says how), rebuilt with IMPORT DATABASE. The command runs as a user runs
it, with the production-like lake: catalog in PostgreSQL, data in moto's S3.
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import duckdb
import lakes
import psycopg2
import pytest

from sisbridge import warehouse
from tests.cli.cli_helpers import PROJECT_ROOT

LEGACY = Path(__file__).resolve().parents[1] / "data" / "legacy-warehouse" / "acme"
SCHOOL = "acme"
SNAPSHOT_COLUMNS = ("dbt_scd_id", "dbt_updated_at", "dbt_valid_from", "dbt_valid_to")


@pytest.fixture
def lake_env() -> dict[str, str]:
    """The lake's two connections, as tests/airflow_env.py exports them (nothing else of Airflow)."""
    return {
        name: os.environ[name] for name in ("AIRFLOW_CONN_SISBRIDGE_LAKE", "AIRFLOW_CONN_SISBRIDGE_LAKE_AWS")
    }


@pytest.fixture
def legacy_file(shell) -> Path:
    """The old warehouse file where the old code kept it: $SISBRIDGE_HOME/warehouse/acme.duckdb."""
    # The demo school's own config, as the old code synced it.
    for name in (f"{SCHOOL}.yaml", f"{SCHOOL}_programs.csv"):
        shutil.copy(PROJECT_ROOT / "config" / "schools" / name, shell.schools / name)
    path = shell.sisbridge_home / "warehouse" / f"{SCHOOL}.duckdb"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.unlink(missing_ok=True)
    with duckdb.connect(str(path)) as con:
        con.execute(f"import database '{LEGACY}'")
    return path


@pytest.fixture
def empty_lake():
    lakes.wipe(SCHOOL)
    yield
    lakes.wipe(SCHOOL)


def tables_of(con, catalog: str) -> list[tuple[str, str]]:
    return con.execute(
        """
        select table_schema, table_name from information_schema.tables
        where table_catalog = ? and table_type = 'BASE TABLE'
        order by all
        """,
        [catalog],
    ).fetchall()


def contents(con, catalog: str) -> dict[str, tuple[list[str], list[tuple]]]:
    """Every table's columns and rows (sorted), by schema.name."""
    result = {}
    for schema, name in tables_of(con, catalog):
        cursor = con.execute(f'select * from "{catalog}"."{schema}"."{name}" order by all')
        rows = cursor.fetchall()
        result[f"{schema}.{name}"] = ([d[0] for d in cursor.description], rows)
    return result


def lake_snapshots() -> list[tuple]:
    """The lake's commits: (snapshot id, the tag of the commit)."""
    with warehouse.connect(SCHOOL, read_only=True) as con:
        rows = con.execute(
            f"select snapshot_id, commit_extra_info from ducklake_snapshots('{warehouse.ALIAS}') order by 1"
        ).fetchall()
    return [(snapshot_id, json.loads(extra) if extra else None) for snapshot_id, extra in rows]


def test_migrates_every_table_with_its_history_once(shell, lake_env, legacy_file, empty_lake):
    with duckdb.connect(str(legacy_file), read_only=True) as old:
        catalog = old.execute("select current_database()").fetchone()[0]
        before = contents(old, catalog)
        views = old.execute("select schema_name, view_name from duckdb_views() where not internal").fetchall()
    # The file really is a warehouse of two weekly runs, with users versioned by the snapshot.
    assert {
        "audit.sync_runs",
        "state.applied_users",
        "snapshots.users_snapshot",
        "marts.user_changes",
    } <= set(before)
    assert len(before["audit.sync_runs"][1]) == 2
    snapshot_columns, snapshot_rows = before["snapshots.users_snapshot"]
    valid_to = snapshot_columns.index("dbt_valid_to")
    assert set(SNAPSHOT_COLUMNS) <= set(snapshot_columns)
    assert any(row[valid_to] is not None for row in snapshot_rows)
    assert views

    result = shell.run("migrate-warehouse", "--school", SCHOOL, env=lake_env)

    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert lines[0].startswith(f"migrated {legacy_file} into the warehouse of {SCHOOL}")
    printed = {
        line.split()[0]: int(line.split()[1].replace(",", "")) for line in lines[1:] if line.startswith("  ")
    }
    assert printed == {name: len(rows) for name, (_, rows) in before.items()}
    assert f"views not copied, the next sync rebuilds them: {views[0][0]}.{views[0][1]}" in result.stdout
    with warehouse.connect(SCHOOL, read_only=True) as lake:
        after = contents(lake, warehouse.ALIAS)
    # Every table, its columns and every row (dbt's snapshot columns and all versions included), and
    # today's auditors' tables that the file's version did not have yet, empty.
    migrated = {**before, "audit.auto_sync_approvals": (["run_id", "approved_by", "approved_at"], [])}
    assert after == migrated
    # One lake commit after the lake's creation (snapshot 0), tagged as the migration.
    snapshots = lake_snapshots()
    assert [tag for _, tag in snapshots] == [None, {"run_id": "migration"}]

    again = shell.run("migrate-warehouse", "--school", SCHOOL, env=lake_env)

    assert again.returncode == 1
    assert again.stdout == ""
    assert again.stderr.splitlines() == [
        f"sisbridge migrate-warehouse: the lake of {SCHOOL!r} has 2 sync runs already; nothing was written "
        "(--replace drops its tables and copies the file's)"
    ]
    assert lake_snapshots() == snapshots
    with warehouse.connect(SCHOOL, read_only=True) as lake:
        assert contents(lake, warehouse.ALIAS) == migrated

    # The lake moves on (a run, a table the file does not have); --replace puts the file's back.
    with warehouse.connect(SCHOOL) as lake:
        lake.execute(
            "insert into audit.sync_runs (run_id, school_id, status) values ('later', ?, 'failed')", [SCHOOL]
        )
        lake.execute("create table marts.only_in_the_lake as select 1 as n")
    warehouse.release(SCHOOL)

    replaced = shell.run("migrate-warehouse", "--school", SCHOOL, "--replace", env=lake_env)

    assert replaced.returncode == 0, replaced.stderr
    assert "replaced what the lake had (3 sync runs)" in replaced.stdout
    with warehouse.connect(SCHOOL, read_only=True) as lake:
        assert contents(lake, warehouse.ALIAS) == migrated

    shell.assert_home_untouched()


def test_a_missing_or_foreign_file_is_one_line(shell, lake_env):
    shell.write_school(SCHOOL)
    missing = shell.root / "nowhere" / f"{SCHOOL}.duckdb"
    not_duckdb = shell.root / "roster.duckdb"
    not_duckdb.write_text("FIRST_NAME,LAST_NAME\n", encoding="utf-8")

    result = shell.run("migrate-warehouse", "--school", SCHOOL, "--from", str(missing), env=lake_env)
    foreign = shell.run("migrate-warehouse", "--school", SCHOOL, "--from", str(not_duckdb), env=lake_env)

    assert result.returncode == 1
    assert result.stdout == ""
    assert result.stderr.splitlines() == [f"sisbridge migrate-warehouse: {missing}: no such file"]
    assert foreign.returncode == 1
    assert foreign.stdout == ""
    [line] = foreign.stderr.splitlines()
    assert line.startswith(
        f"sisbridge migrate-warehouse: {not_duckdb}: cannot open it as a DuckDB warehouse: "
    )


def test_another_schools_file_is_refused(shell, lake_env, legacy_file):
    shutil.copy(PROJECT_ROOT / "config" / "schools" / "globex.yaml", shell.schools / "globex.yaml")
    lakes.wipe("globex")

    result = shell.run("migrate-warehouse", "--school", "globex", "--from", str(legacy_file), env=lake_env)

    assert result.returncode == 1
    assert result.stdout == ""
    assert result.stderr.splitlines() == [
        f"sisbridge migrate-warehouse: {legacy_file}: its runs are of school {SCHOOL!r}, not 'globex'; "
        "nothing was written"
    ]
    # The file is checked before the lake is opened: globex has no catalog in PostgreSQL, even now.
    lake = warehouse.settings()
    with psycopg2.connect(lake.catalog_dsn) as conn, conn.cursor() as cur:
        cur.execute(
            "select count(*) from information_schema.schemata where schema_name = %s",
            [lake.metadata_schema("globex")],
        )
        assert cur.fetchone()[0] == 0
    conn.close()
