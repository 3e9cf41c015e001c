"""The auditors' tables in each school's warehouse (its DuckLake): sync runs, findings and applied changes.

Also the applied baseline (`state.*`): the school's users as last pushed to the store. The change
set of the next run is computed against it, and it only advances after a whole push succeeded.
"""

from __future__ import annotations

import contextlib
import json
from collections.abc import Iterable, Iterator
from dataclasses import asdict, dataclass
from datetime import UTC, datetime

import duckdb

from sisbridge import fleet
from sisbridge import warehouse as lake

STATUSES = (
    "running",
    "succeeded",
    "dry_run",
    "held",
    "rejected",
    "rejected_by_reviewer",
    "unchanged",
    "failed",
    "rolled_back",
)
CHANGE_TYPES = ("create", "update", "reactivate", "deactivate", "delete", "opt_out")
SEVERITIES = ("error", "warning")

_SCHEMA = """
create schema if not exists audit;
create schema if not exists state;

create table if not exists audit.sync_runs (
    run_id varchar not null,
    school_id varchar not null,
    started_at timestamp,
    finished_at timestamp,
    status varchar not null,
    status_reason varchar,
    file_key varchar,
    file_version_id varchar,
    file_etag varchar,
    file_sha256 varchar,
    file_bytes bigint,
    file_encoding varchar,
    header_columns varchar[],
    rows_in_file bigint,
    rows_accepted bigint,
    rows_rejected bigint,
    rows_warned bigint,
    creates bigint,
    updates bigint,
    reactivations bigint,
    deactivations bigint,
    deletes bigint,
    opt_outs bigint,
    guard_reasons varchar[],
    details json,
    config_sha256 varchar
);

create table if not exists audit.rejected_rows (
    run_id varchar not null,
    stage varchar not null,
    line_number bigint,
    identifier varchar,
    severity varchar not null,
    rule varchar not null,
    message varchar not null,
    column_name varchar,
    value varchar
);

create table if not exists audit.applied_changes (
    run_id varchar not null,
    external_id varchar not null,
    change_type varchar not null,
    field varchar,
    old_value varchar,
    new_value varchar,
    applied_at timestamp not null
);

create table if not exists audit.auto_sync_approvals (
    run_id varchar not null,
    approved_by varchar not null,
    approved_at timestamp not null
);
"""

# A DuckLake has no PRIMARY KEY or UNIQUE constraints. `audit.sync_runs` is only ever written by
# `upsert_run`, one row per run_id. The baseline's keys are checked at every run, by the unique tests
# on `stg_state__applied_users` and `stg_state__applied_memberships`, and it is only written by key.
_APPLIED_MEMBERSHIPS = """
create table if not exists state.applied_memberships (
    external_id varchar not null,
    community_group varchar not null,
    community varchar not null
);
"""


def _state_schema() -> dict[str, str]:
    """The baseline tables' DDL; `applied_users` is built from the store's users table (one list)."""
    from sisbridge.userstore.schema import state_users_ddl

    return {
        "applied_users": state_users_ddl("state.applied_users"),
        "applied_memberships": _APPLIED_MEMBERSHIPS,
    }


RUN_COUNT_COLUMNS = ("rows_in_file", "rows_accepted", "rows_rejected", "rows_warned") + fleet.CHANGE_COUNTS
RUN_FILE_COLUMNS = (
    "file_key",
    "file_version_id",
    "file_etag",
    "file_sha256",
    "file_bytes",
    "file_encoding",
    "header_columns",
)
_RUN_COLUMNS = (
    ("school_id", "started_at", "finished_at", "status", "status_reason")
    + RUN_FILE_COLUMNS
    + RUN_COUNT_COLUMNS
    + ("guard_reasons", "details", "config_sha256")
)


_BULK_ROWS = 200
_FINDING_COLUMNS = (
    "run_id",
    "stage",
    "line_number",
    "identifier",
    "severity",
    "rule",
    "message",
    "column_name",
    "value",
)


@dataclass(frozen=True)
class Finding:
    """One finding about a school file: a file-level or row-level error, or a warning."""

    rule: str
    message: str
    severity: str = "error"
    line_number: int | None = None
    identifier: str | None = None
    column_name: str | None = None
    value: str | None = None

    def __post_init__(self) -> None:
        if self.severity not in SEVERITIES:
            raise ValueError(f"severity must be one of {SEVERITIES}, not {self.severity!r}")


def utcnow() -> datetime:
    """Wall-clock time for audit timestamps only, never for logic."""
    return datetime.now(UTC).replace(tzinfo=None)


_TABLES = {
    ("audit", "sync_runs"),
    ("audit", "rejected_rows"),
    ("audit", "applied_changes"),
    ("audit", "auto_sync_approvals"),
    ("state", "applied_users"),
    ("state", "applied_memberships"),
}


def ensure_schema(con: duckdb.DuckDBPyConnection) -> None:
    """Create the audit and baseline schemas and tables that are missing, in one transaction.

    One query finds out whether anything is missing, so that a lake that has them (every task after
    a school's first) commits no snapshot for it.
    """
    present = set(
        con.execute(
            """
            select table_schema, table_name from information_schema.tables
            where table_catalog = current_database() and table_schema in ('audit', 'state')
            """
        ).fetchall()
    )
    if _TABLES <= present:
        return
    con.execute("begin")
    try:
        con.execute(_SCHEMA)
        for ddl in _state_schema().values():
            con.execute(ddl)
        con.execute("commit")
    except BaseException:
        con.execute("rollback")
        raise


@contextlib.contextmanager
def warehouse(school_id: str, *, read_only: bool = False) -> Iterator:
    """A connection to the school's warehouse (sisbridge.warehouse.connect), closed afterwards.

    Writable connections get the audit and baseline tables created when they are missing.
    """
    con = lake.connect(school_id, read_only=read_only)
    try:
        if not read_only:
            ensure_schema(con)
        yield con
    finally:
        con.close()


@contextlib.contextmanager
def reading(school_id: str) -> Iterator:
    """A connection that only reads the school's warehouse, closed afterwards.

    The process's own instance when a task here has it open, else a read-only one
    (sisbridge.warehouse.cursor_if_open).
    """
    con = lake.cursor_if_open(school_id) or lake.connect(school_id, read_only=True)
    try:
        yield con
    finally:
        con.close()


@contextlib.contextmanager
def transaction(con: duckdb.DuckDBPyConnection, *, run_id: str | None = None, message: str | None = None):
    """One transaction; with `run_id`, the lake snapshot it commits is tagged with the run.

    The tag (`ducklake_snapshots().commit_extra_info` = {"run_id": ...}) is how the lake's time travel
    finds the state a run left behind.
    """
    con.execute("begin")
    _unpublished[id(con)] = []
    try:
        if run_id is not None and _is_ducklake(con):
            con.execute(
                f"call {lake.ALIAS}.set_commit_message(?, ?, extra_info => ?)",
                [lake.COMMIT_AUTHOR, message or f"run {run_id}", json.dumps({"run_id": run_id})],
            )
        yield con
        con.execute("commit")
    except BaseException:
        con.execute("rollback")
        _unpublished.pop(id(con), None)
        raise
    fleet.publish(_unpublished.pop(id(con), []))


# Runs whose new status waits for their transaction to commit before the fleet view sees it.
_unpublished: dict[int, list[dict]] = {}


def _is_ducklake(con: duckdb.DuckDBPyConnection) -> bool:
    row = con.execute(
        "select type from duckdb_databases() where database_name = current_database()"
    ).fetchone()
    return row is not None and row[0] == "ducklake"


def upsert_run(con: duckdb.DuckDBPyConnection, run_id: str, **fields) -> None:
    """Create or update the `audit.sync_runs` row of a run; only the given fields change."""
    unknown = set(fields) - set(_RUN_COLUMNS)
    if unknown:
        raise ValueError(f"unknown sync_runs columns: {sorted(unknown)}")
    if "status" in fields and fields["status"] not in STATUSES:
        raise ValueError(f"unknown status {fields['status']!r}")
    if "details" in fields and not isinstance(fields["details"], str | None):
        fields["details"] = json.dumps(fields["details"], default=str, sort_keys=True)
    exists = con.execute("select 1 from audit.sync_runs where run_id = ?", [run_id]).fetchone()
    if exists is None:
        fields.setdefault("status", "running")
        if "school_id" not in fields:
            raise ValueError("a new sync_runs row needs school_id")
        columns = ["run_id", *fields]
        placeholders = ", ".join("?" for _ in columns)
        con.execute(
            f"insert into audit.sync_runs ({', '.join(columns)}) values ({placeholders})",
            [run_id, *fields.values()],
        )
    elif fields:
        assignments = ", ".join(f"{column} = ?" for column in fields)
        con.execute(
            f"update audit.sync_runs set {assignments} where run_id = ?",
            [*fields.values(), run_id],
        )
    if "status" in fields and _is_ducklake(con):  # not `sisbridge check`'s scratch file
        row = get_run(con, run_id)
        if id(con) in _unpublished:
            _unpublished[id(con)].append(row)
        else:
            fleet.publish([row])


def get_run(con: duckdb.DuckDBPyConnection, run_id: str) -> dict | None:
    cursor = con.execute("select * from audit.sync_runs where run_id = ?", [run_id])
    row = cursor.fetchone()
    if row is None:
        return None
    return dict(zip([d[0] for d in cursor.description], row, strict=True))


def run_details(run: dict | None) -> dict:
    """A run's `details` JSON (what the stages noted: drift, stale file, the review) as a dict."""
    return json.loads(run["details"]) if run and run["details"] else {}


def record_findings(
    con: duckdb.DuckDBPyConnection, run_id: str, stage: str, findings: Iterable[Finding]
) -> int:
    """Replace the findings of one stage of a run (so a retried task never doubles them)."""
    rows = [
        (
            run_id,
            stage,
            f.line_number,
            f.identifier,
            f.severity,
            f.rule,
            f.message,
            f.column_name,
            f.value,
        )
        for f in findings
    ]
    con.execute("delete from audit.rejected_rows where run_id = ? and stage = ?", [run_id, stage])
    if len(rows) > _BULK_ROWS:
        # DuckDB's executemany is one statement per row; a frame goes in as one set.
        import pandas as pd

        frame = pd.DataFrame(rows, columns=_FINDING_COLUMNS).astype({"line_number": "Int64"})
        con.register("findings_frame", frame)
        try:
            columns = ", ".join(_FINDING_COLUMNS)
            con.execute(f"insert into audit.rejected_rows select {columns} from findings_frame")
        finally:
            con.unregister("findings_frame")
    elif rows:
        con.executemany("insert into audit.rejected_rows values (?, ?, ?, ?, ?, ?, ?, ?, ?)", rows)
    return len(rows)


def findings_of_run(con: duckdb.DuckDBPyConnection, run_id: str) -> list[Finding]:
    rows = con.execute(
        """
        select rule, message, severity, line_number, identifier, column_name, value
        from audit.rejected_rows
        where run_id = ?
        order by line_number nulls first, severity, rule
        """,
        [run_id],
    ).fetchall()
    return [Finding(*row) for row in rows]


def record_auto_sync_approval(
    con: duckdb.DuckDBPyConnection, run_id: str, approved_by: str, approved_at: datetime
) -> None:
    """Record that a reviewer approved the school's first file in run `run_id`: auto sync is on.

    Written in the transaction that marks the run `succeeded`, so a push that failed turns nothing on.
    """
    con.execute("delete from audit.auto_sync_approvals where run_id = ?", [run_id])  # a retried push
    con.execute("insert into audit.auto_sync_approvals values (?, ?, ?)", [run_id, approved_by, approved_at])


def auto_sync_approval(con: duckdb.DuckDBPyConnection) -> dict | None:
    """The first approval that turned the school's auto sync on (run_id, approved_by, approved_at), if any."""
    cursor = con.execute("select * from audit.auto_sync_approvals order by approved_at limit 1")
    row = cursor.fetchone()
    return None if row is None else dict(zip([d[0] for d in cursor.description], row, strict=True))


def finding_as_dict(finding: Finding) -> dict:
    return asdict(finding)


# The audit and baseline tables, as (schema, name).
TABLES = frozenset(_TABLES)


def schema_ddl() -> str:
    """The statements that create the audit and baseline tables that are missing (unqualified names)."""
    return _SCHEMA + "".join(_state_schema().values())
