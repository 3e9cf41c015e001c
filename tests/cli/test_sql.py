"""`sisbridge sql`: an auditor's read-only query, now or as a run left the warehouse, from a plain shell.

The school's lake is on the production setup (PostgreSQL catalog, moto's S3; tests/airflow_env.py).
Two runs are written straight into it, each as the pipeline commits them (a commit tagged with the
run id), so the tests stay fast; the command is the installed `sisbridge`, in a shell that has only
the lake's connection variables.
"""

from __future__ import annotations

import csv
import io
import os

import lakes
import pytest

from sisbridge import audit, warehouse

SCHOOL = "ledger"
OTHER = "ledger_other"


def _lake_connections() -> dict[str, str]:
    names = ("AIRFLOW_CONN_SISBRIDGE_LAKE", "AIRFLOW_CONN_SISBRIDGE_LAKE_AWS")
    return {name: os.environ[name] for name in names}


def _write_run(school_id: str, run_id: str, status: str, *, rolls_back: str | None = None) -> None:
    with audit.warehouse(school_id) as con, audit.transaction(con, run_id=run_id):
        audit.upsert_run(con, run_id, school_id=school_id, status=status, rows_in_file=3)
        if rolls_back:
            audit.upsert_run(con, rolls_back, status="rolled_back")


@pytest.fixture(scope="module")
def two_runs():
    """Run r1 succeeded; run r2 then rolled it back. Another school has a run of its own."""
    for school_id in (SCHOOL, OTHER):
        lakes.wipe(school_id)
    _write_run(SCHOOL, "r1", "succeeded")
    _write_run(SCHOOL, "r2", "succeeded", rolls_back="r1")
    _write_run(OTHER, "secret-run", "succeeded")
    warehouse.release()
    yield
    for school_id in (SCHOOL, OTHER):
        lakes.wipe(school_id)


@pytest.fixture
def sql(shell, two_runs):
    shell.write_school(SCHOOL)
    shell.write_school(OTHER)

    def run(*args: str):
        return shell.run("sql", "--school", SCHOOL, *args, env=_lake_connections(), timeout=300)

    return run


def test_a_query_prints_a_table_and_csv_with_a_header(sql):
    query = "select run_id, status from audit.sync_runs order by run_id"
    table = sql(query)
    assert table.returncode == 0, table.stderr
    assert table.stdout.splitlines() == [
        "run_id  status",
        "------  -----------",
        "r1      rolled_back",
        "r2      succeeded",
        "(2 rows)",
    ]
    as_csv = sql("--csv", query)
    assert as_csv.returncode == 0, as_csv.stderr
    assert list(csv.reader(io.StringIO(as_csv.stdout))) == [
        ["run_id", "status"],
        ["r1", "rolled_back"],
        ["r2", "succeeded"],
    ]


def test_as_of_a_run_reads_the_warehouse_as_that_run_left_it(sql, shell):
    result = sql("--as-of", "r1", "--csv", "select run_id, status from audit.sync_runs order by run_id")
    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines() == ["run_id,status", "r1,succeeded"]

    unknown = sql("--as-of", "r9", "select 1")
    assert unknown.returncode == 1
    assert unknown.stderr.strip() == (
        "sisbridge sql: no run 'r9' in this warehouse (see: select run_id from audit.sync_runs)"
    )
    shell.assert_home_untouched()


@pytest.mark.parametrize(
    ("query", "refusal"),
    [
        ("delete from audit.sync_runs", "only a SELECT"),
        ("select 1; select 2", "one query at a time"),
        ("select * from read_csv('/etc/passwd')", "read_csv() is not allowed"),
        ("select path from duckdb_databases()", "duckdb_databases() is not allowed"),
        (
            "select * from __ducklake_metadata_lake.school_ledger_other.ducklake_table",
            "only the school's warehouse",
        ),
        ("select * from information_schema.schemata", "system tables"),
    ],
    ids=["delete", "two-statements", "a-file", "the-catalog-dsn", "another-schools-catalog", "system-views"],
)
def test_anything_but_one_select_over_the_school_s_tables_is_refused(sql, query, refusal):
    result = sql(query)
    assert result.returncode == 2
    assert result.stdout == ""
    [line] = result.stderr.splitlines()
    assert line.startswith("sisbridge sql: refused: ") and refusal in line, line
    with warehouse.connect(SCHOOL, read_only=True) as con:
        assert con.execute("select count(*) from audit.sync_runs").fetchone() == (2,)


def test_a_school_without_a_warehouse_or_an_unknown_school_is_one_line(shell, two_runs):
    shell.write_school("ledger_new")
    lakes.wipe("ledger_new")
    empty = shell.run("sql", "--school", "ledger_new", "select 1", env=_lake_connections(), timeout=300)
    assert empty.returncode == 1
    assert len(empty.stderr.splitlines()) == 1 and "ledger_new" in empty.stderr, empty.stderr
    unknown = shell.run("sql", "--school", "nobody", "select 1", env=_lake_connections())
    assert unknown.returncode == 2
    assert "no school 'nobody'" in unknown.stderr
