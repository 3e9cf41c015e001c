"""The lake's weekly maintenance keeps a school's catalog and files bounded, and its history whole.

A year of weekly runs of a 10k school is written straight into its lake on the production setup
(PostgreSQL catalog, moto's S3; tests/airflow_env.py), each week committing what a run commits: its
run row, a new raw roster, the applied changes and the SCD2 versions of the changed users. Time is
simulated by moving the catalog's snapshot times back a week after each week. Then the maintenance
runs as the `sis_lake_maintenance` DAG runs it.
"""

from __future__ import annotations

from datetime import datetime, timedelta

import lakes
import psycopg2
import pytest

from sisbridge import audit, auditor, maintenance, warehouse

SCHOOL = "maint_u"
USERS = 10_000
CHANGED = 1_000  # a tenth of the school changes each week
RETENTION = timedelta(days=90)


def _week(con, week: int) -> None:
    run_id = f"week-{week:02d}"
    started = datetime(2026, 1, 3, 23) + timedelta(weeks=week)
    with audit.transaction(con, run_id=run_id):
        audit.upsert_run(con, run_id, school_id=SCHOOL, status="running", started_at=started)
    with audit.transaction(con, run_id=run_id):
        con.execute("delete from sim.roster")
        con.execute(
            "insert into sim.roster select i, 'user' || i || '@example.edu', 'v' || ? from range(?) t(i)",
            [week, USERS],
        )
    changed = [(week * CHANGED + n) % USERS for n in range(CHANGED)]
    with audit.transaction(con, run_id=run_id):
        con.execute(
            "insert into audit.applied_changes (run_id, external_id, change_type, field, old_value, "
            "new_value, applied_at) select ?, 'user' || i, 'update', 'last_name', 'v' || (? - 1), "
            "'v' || ?, ? from unnest(?) t(i)",
            [run_id, week, week, started, changed],
        )
        con.execute(
            "update sim.users_snapshot set valid_to = ? where valid_to is null and external_id in "
            "(select 'user' || i from unnest(?) t(i))",
            [started, changed],
        )
        con.execute(
            "insert into sim.users_snapshot select 'user' || i, 'v' || ?, ?, null from unnest(?) t(i)",
            [week, started, changed],
        )
        audit.upsert_run(con, run_id, status="succeeded", finished_at=started + timedelta(minutes=5))


def _a_week_passes(lake: warehouse.LakeSettings) -> None:
    with psycopg2.connect(lake.catalog_dsn) as conn, conn.cursor() as cur:
        cur.execute(
            f'update "{lake.metadata_schema(SCHOOL)}".ducklake_snapshot '
            "set snapshot_time = snapshot_time - interval '7 days'"
        )
    conn.close()


@pytest.fixture
def a_year_of_runs():
    lake = warehouse.settings()
    assert lake.kind == warehouse.POSTGRES  # the production setup
    lakes.wipe(SCHOOL)
    with audit.warehouse(SCHOOL) as con:
        con.execute("create schema sim")
        con.execute("create table sim.roster (n bigint, email varchar, version varchar)")
        con.execute(
            "create table sim.users_snapshot "
            "(external_id varchar, version varchar, valid_from timestamp, valid_to timestamp)"
        )
        con.execute(
            "insert into sim.users_snapshot "
            "select 'user' || i, 'v0', timestamp '2026-01-01', null from range(?) t(i)",
            [USERS],
        )
    yield lake
    lakes.wipe(SCHOOL)


def _run_weeks(lake, weeks) -> None:
    with audit.warehouse(SCHOOL) as con:
        for week in weeks:
            _week(con, week)
            _a_week_passes(lake)


def test_a_year_of_weekly_runs_stays_bounded_after_maintenance_and_keeps_its_history(a_year_of_runs):
    lake = a_year_of_runs
    _run_weeks(lake, range(1, 27))
    half_year = maintenance.maintain(SCHOOL, RETENTION)
    _run_weeks(lake, range(27, 53))
    year = maintenance.maintain(SCHOOL, RETENTION)

    before, after = year["before"], year["after"]
    # Unmaintained, half a year of runs leaves over a hundred snapshots (small writes are inlined in the
    # catalog, so files grow slower); maintained, the lake keeps the retention's thirteen weeks, so
    # the second half year ends where the first did.
    assert before["snapshots"] > 100, before
    assert after["snapshots"] <= 13 * 4 + 5, after
    assert after["files"] < before["files"] and after["catalog_rows"] < before["catalog_rows"], year
    assert after["files"] <= half_year["after"]["files"] * 1.25 + 10, (half_year, year)
    assert after["catalog_rows"] <= half_year["after"]["catalog_rows"] * 1.25 + 100, (half_year, year)

    with warehouse.connect(SCHOOL, read_only=True) as con:
        # Tables keep all their rows: the SCD2 history and the audit trail of every run.
        assert con.execute("select count(*) from sim.users_snapshot").fetchone() == (USERS + 52 * CHANGED,)
        assert con.execute(
            "select count(*), count(distinct run_id) from audit.applied_changes"
        ).fetchone() == (
            52 * CHANGED,
            52,
        )
        assert con.execute("select count(*) from audit.sync_runs where status = 'succeeded'").fetchone() == (
            52,
        )
        # Time travel reaches back as far as the retention, and no further.
        assert auditor.run_snapshot(con, "week-50") > auditor.run_snapshot(con, "week-45")
        with pytest.raises(auditor.UnknownRun):
            auditor.run_snapshot(con, "week-10")
        week_45 = auditor.run_snapshot(con, "week-45")
    with warehouse.connect(SCHOOL, read_only=True, snapshot=week_45) as con:
        assert con.execute("select distinct version from sim.roster").fetchall() == [("v45",)]
