"""The auditors' tables in each school's DuckDB warehouse: sync runs, findings and applied changes.

Also the applied baseline (`state.*`): the school's users as last pushed to the store. The change
set of the next run is computed against it, and it only advances after a whole push succeeded.
"""

from __future__ import annotations

import contextlib
import json
from collections.abc import Iterable, Iterator
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from pathlib import Path

import duckdb

from sisbridge.config import warehouse_memory_limit, warehouse_path

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
    run_id varchar primary key,
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
-- Warehouses made before the column existed.
alter table audit.sync_runs add column if not exists config_sha256 varchar;

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
"""

# The baseline tables carry no primary key. DuckDB keeps an ART index for a key and writes it out at
# every commit that touches the table: at a million users that cost about 2 s a push. Their keys are
# still checked at every run, by the unique tests on `stg_state__applied_users` and
# `stg_state__applied_memberships`, and the baseline is only ever written by key.
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


RUN_COUNT_COLUMNS = (
    "rows_in_file",
    "rows_accepted",
    "rows_rejected",
    "rows_warned",
    "creates",
    "updates",
    "reactivations",
    "deactivations",
    "deletes",
    "opt_outs",
)
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


def ensure_schema(con: duckdb.DuckDBPyConnection) -> None:
    con.execute(_SCHEMA)
    _drop_state_keys(con)
    for ddl in _state_schema().values():
        con.execute(ddl)


def _drop_state_keys(con: duckdb.DuckDBPyConnection) -> None:
    """Rebuild a baseline table that an older version created with a primary key, without it."""
    state_schema = _state_schema()
    keyed = [
        table
        for (table,) in con.execute(
            """
            select table_name from duckdb_constraints()
            where schema_name = 'state' and constraint_type = 'PRIMARY KEY'
            """
        ).fetchall()
        if table in state_schema
    ]
    for table in keyed:
        con.execute("begin")
        try:
            con.execute(f"alter table state.{table} rename to _{table}_keyed")
            con.execute(state_schema[table])
            con.execute(f"insert into state.{table} select * from state._{table}_keyed")
            con.execute(f"drop table state._{table}_keyed")
            con.execute("commit")
        except BaseException:
            con.execute("rollback")
            raise


@contextlib.contextmanager
def warehouse(school_id: str, *, read_only: bool = False, path: Path | None = None) -> Iterator:
    """Open the school's warehouse (creating it and its audit schema) and close it afterwards."""
    path = path or warehouse_path(school_id)
    if not read_only:
        path.parent.mkdir(parents=True, exist_ok=True)
    con = duckdb.connect(str(path), read_only=read_only, config={"memory_limit": warehouse_memory_limit()})
    try:
        if not read_only:
            ensure_schema(con)
        yield con
    finally:
        con.close()


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


def get_run(con: duckdb.DuckDBPyConnection, run_id: str) -> dict | None:
    cursor = con.execute("select * from audit.sync_runs where run_id = ?", [run_id])
    row = cursor.fetchone()
    if row is None:
        return None
    return dict(zip([d[0] for d in cursor.description], row, strict=True))


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


def finding_as_dict(finding: Finding) -> dict:
    return asdict(finding)
