"""The cross-school view of the runs: every school's latest run, with its status and counts.

Each school's lake is its own (no query made for one school can read another's), so the platform
team's view is a lake of its own, the fleet lake: metadata schema `sisbridge_fleet` beside the
schools' in the catalog, data under `<data_path>/fleet/`. Each time a run's status is written to its
school's `audit.sync_runs`, the run's row is appended to `runs.events` there, once its school's
transaction has committed. Appends from many schools' tasks at once do not conflict; the view picks
each run's newest event.

The school's own `audit.sync_runs` stays the record. The fleet lake is a copy of its status and
counts, for `fleet.latest_runs()` (one row per school) and `fleet.runs(school_id)` (a school's runs,
newest first); the fleet page reads these. So is each approval that turned a school's auto sync on
(`runs.auto_sync_approvals`, for `fleet.auto_sync_schools()`).
"""

from __future__ import annotations

import logging
import time
from datetime import UTC, datetime

import duckdb

from sisbridge import warehouse

log = logging.getLogger(__name__)

# The counts of changes a run applied (audit.sync_runs has them too: audit.RUN_COUNT_COLUMNS).
CHANGE_COUNTS = ("creates", "updates", "reactivations", "deactivations", "deletes", "opt_outs")
# What the fleet keeps of a run (the fields of DESIGN.md's fleet API).
FIELDS = (
    ("run_id", "school_id", "status", "status_reason", "started_at", "finished_at")
    + ("rows_in_file", "rows_rejected")
    + CHANGE_COUNTS
)
_TYPES = {
    "started_at": "timestamp",
    "finished_at": "timestamp",
    "status": "varchar not null",
    "run_id": "varchar not null",
    "school_id": "varchar not null",
    "status_reason": "varchar",
}
_DDL = (
    "create schema if not exists runs;\n"
    "create table if not exists runs.events (\n    "
    + ",\n    ".join(f"{name} {_TYPES.get(name, 'bigint')}" for name in FIELDS)
    + ",\n    recorded_at timestamp not null\n);"
)
_APPROVALS_DDL = """
create schema if not exists runs;
create table if not exists runs.auto_sync_approvals (
    school_id varchar not null,
    run_id varchar not null,
    approved_by varchar not null,
    approved_at timestamp not null,
    recorded_at timestamp not null
);
"""
# Concurrent first writes may race to create the table; DuckLake retries its own commit conflicts,
# and this retries the rest.
ATTEMPTS = 5


def _connect(read_only: bool = False):
    return warehouse.connect(warehouse.FLEET, read_only=read_only)


def publish(rows: list[dict]) -> None:
    """Append runs' rows (as in audit.sync_runs) to the fleet lake; a failure is logged, never raised.

    The run itself must not fail because the platform's view could not be written: the school's own
    audit row is the record, and the run's next status change writes its whole row again.
    """
    if not rows:
        return
    now = datetime.now(UTC).replace(tzinfo=None)
    values = [[row.get(name) for name in FIELDS] + [now] for row in rows]
    _append(_DDL, "runs.events", values, what=f"runs {[row.get('run_id') for row in rows]}")


def publish_auto_sync(school_id: str, run_id: str, approved_by: str, approved_at: datetime) -> None:
    """Tell the fleet that a reviewer's approval of run `run_id` turned the school's auto sync on.

    The school's `audit.auto_sync_approvals` is the record; a failure here is logged, never raised.
    """
    now = datetime.now(UTC).replace(tzinfo=None)
    values = [[school_id, run_id, approved_by, approved_at, now]]
    _append(_APPROVALS_DDL, "runs.auto_sync_approvals", values, what=f"the approval of run {run_id}")


def _append(ddl: str, table: str, values: list[list], *, what: str) -> None:
    placeholders = ", ".join("?" for _ in values[0])
    for attempt in range(1, ATTEMPTS + 1):
        try:
            con = _connect()
            try:
                con.execute(ddl)
                con.executemany(f"insert into {table} values ({placeholders})", values)
            finally:
                con.close()
            return
        except (duckdb.Error, warehouse.LakeError) as exc:
            if attempt == ATTEMPTS:
                log.warning("the fleet view missed %s: %s", what, exc)
                return
            time.sleep(0.2 * attempt)


_LATEST_EVENT = """
select * exclude (recorded_at, newest) from (
    select *, row_number() over (partition by school_id, run_id order by recorded_at desc) as newest
    from runs.events
) where newest = 1
"""


def _query(sql: str, params: list, table: str = "events") -> list[dict]:
    try:
        con = _connect(read_only=True)
    except warehouse.LakeError:
        return []  # no run has been recorded yet
    try:
        if not warehouse.has_table(con, "runs", table):
            return []
        cursor = con.execute(sql, params)
        names = [column[0] for column in cursor.description]
        return [dict(zip(names, row, strict=True)) for row in cursor.fetchall()]
    finally:
        con.close()


def latest_runs() -> list[dict]:
    """Every school's latest run (by start time), one row each, ordered by school id."""
    return _query(
        f"select * exclude (newest_run) from (select *, row_number() over "
        f"(partition by school_id order by started_at desc nulls last, run_id desc) as newest_run "
        f"from ({_LATEST_EVENT})) where newest_run = 1 order by school_id",
        [],
    )


def runs(school_id: str, limit: int = 100) -> list[dict]:
    """One school's runs, newest first."""
    return _query(
        f"select * from ({_LATEST_EVENT}) where school_id = ? "
        "order by started_at desc nulls last, run_id desc limit ?",
        [school_id, limit],
    )


def auto_sync_schools() -> set[str]:
    """The schools whose auto sync a reviewer turned on by approving a first file."""
    rows = _query("select distinct school_id from runs.auto_sync_approvals", [], "auto_sync_approvals")
    return {row["school_id"] for row in rows}
