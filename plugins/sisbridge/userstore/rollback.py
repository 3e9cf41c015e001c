"""The rollback of a push: the store and the applied baseline as they were before the run.

The before images in `audit.applied_before` say what each user of the run was in the store (or that
the user was not there); they are staged in the store in one transaction that puts them back, without
touching preferences a user customized since. The baseline is then restored from
`audit.push_baseline_*` in one warehouse transaction.
"""

from __future__ import annotations

import io
import json
import re
from collections.abc import Sequence
from datetime import datetime

import sqlalchemy as sa

from sisbridge import audit
from sisbridge.config import SchoolConfig
from sisbridge.userstore import before_images, statements
from sisbridge.userstore.baseline import ensure_warehouse_tables, set_baseline_rows
from sisbridge.userstore.schema import (
    MEMBERSHIP_COLUMNS,
    SIS_FIELDS,
    STATE_USER_COLUMNS,
    TIMESTAMP_FORMAT,
    is_postgres,
    store_errors,
)
from sisbridge.userstore.statements import STAGE_BEFORE, STAGE_COLUMNS, STAGE_MEMBERS
from sisbridge.warehouse import has_table


class RollbackRefused(RuntimeError):
    """A rollback that would not restore a consistent state (for example, a later run was applied)."""


_COPY_SPECIAL = re.compile(r"[\\\t\n\r]")
_COPY_ESCAPES = {"\\": "\\\\", "\t": "\\t", "\n": "\\n", "\r": "\\r"}


def _copy_text(value) -> str:
    """One field in PostgreSQL's COPY text format."""
    if value is None:
        return "\\N"
    if value is True or value is False:
        return "t" if value else "f"
    if isinstance(value, datetime):
        return value.strftime(TIMESTAMP_FORMAT)
    text = value if isinstance(value, str) else str(value)
    return _COPY_SPECIAL.sub(lambda match: _COPY_ESCAPES[match.group()], text)


def _stage(conn: sa.Connection, table: str, rows: Sequence[tuple]) -> None:
    """Create a session-private staging table and fill it: COPY on PostgreSQL, executemany on SQLite."""
    columns = STAGE_COLUMNS[table]
    column_ddl = ", ".join(f"{name} {kind}" for name, kind in columns)
    if is_postgres(conn):
        conn.exec_driver_sql(f"create temp table {table} ({column_ddl}) on commit drop")
        if not rows:
            return
        buffer = io.StringIO()
        for row in rows:
            buffer.write("\t".join(_copy_text(value) for value in row))
            buffer.write("\n")
        buffer.seek(0)
        cursor = conn.connection.dbapi_connection.cursor()
        try:
            cursor.copy_expert(f"copy {table} from stdin", buffer)
        finally:
            cursor.close()
        # Temp tables get no statistics on their own; without them the planner guesses badly.
        conn.exec_driver_sql(f"analyze {table}")
    else:
        conn.exec_driver_sql(f"drop table if exists temp.{table}")
        conn.exec_driver_sql(f"create temp table {table} ({column_ddl})")
        if rows:
            placeholders = ", ".join("?" for _ in columns)
            sqlite_rows = [
                tuple(v.strftime(TIMESTAMP_FORMAT) if isinstance(v, datetime) else v for v in row)
                for row in rows
            ]
            conn.exec_driver_sql(f"insert into {table} values ({placeholders})", sqlite_rows)


def _refuse_unless_rollable(con, school: SchoolConfig, run_id: str) -> None:
    pushed = con.execute(
        "select completed_at from audit.push_runs where run_id = ? and school_id = ?",
        [run_id, school.school_id],
    ).fetchone()
    if pushed is None:
        raise RollbackRefused(f"run {run_id} of {school.school_id} was never pushed to the store")
    run = audit.get_run(con, run_id)
    if run is not None and run["status"] == "rolled_back":
        raise RollbackRefused(f"run {run_id} of {school.school_id} is already rolled back")
    later = con.execute(
        """
        select p.run_id from audit.push_runs as p
        left join audit.sync_runs as r on r.run_id = p.run_id
        where p.school_id = ? and p.completed_at > ? and coalesce(r.status, '') <> 'rolled_back'
        union
        select r.run_id from audit.sync_runs as r
        where r.school_id = ? and r.status = 'succeeded' and r.run_id <> ?
          and r.started_at > (select started_at from audit.sync_runs where run_id = ?)
          and coalesce(r.details->>'rollback_of', '') = ''
        order by 1
        """,
        [school.school_id, pushed[0], school.school_id, run_id, run_id],
    ).fetchall()
    if later:
        names = ", ".join(row[0] for row in later)
        raise RollbackRefused(
            f"cannot roll back run {run_id} of {school.school_id}: later run(s) {names} were applied "
            "after it; roll those back first"
        )


def _staged_before_images(con, run_id: str) -> tuple[list[tuple], list[tuple]]:
    """The run's before images as rows of `STAGE_BEFORE` and `STAGE_MEMBERS`."""
    values = ", ".join((*SIS_FIELDS, "email_opt_out", "email_prefs_customized", "created_at"))
    stage_before = con.execute(
        f"""
        select external_id, existed, memberships_saved, {values} from audit.applied_before_users
        where run_id = ? order by batch_no, external_id
        """,
        [run_id],
    ).fetchall()
    if not stage_before and has_table(con, "audit", "applied_before"):
        return _legacy_before_images(con, run_id)
    stage_members = con.execute(
        """
        select external_id, community_group, community from audit.applied_before_memberships
        where run_id = ? order by all
        """,
        [run_id],
    ).fetchall()
    return stage_before, stage_members


def _legacy_before_images(con, run_id: str) -> tuple[list[tuple], list[tuple]]:
    """The before images of a run pushed when they were kept as JSON (`audit.applied_before`)."""
    before = con.execute(
        """
        select external_id, user_row, memberships from audit.applied_before
        where run_id = ? order by batch_no, external_id
        """,
        [run_id],
    ).fetchall()
    stage_before, stage_members = [], []
    for external_id, user_row, memberships in before:
        row = json.loads(user_row) if user_row is not None else None
        # These images kept every user's memberships.
        if row is None:
            stage_before.append((external_id, False, True, *([None] * (len(SIS_FIELDS) + 3))))
        else:
            created_at = datetime.strptime(row["created_at"], TIMESTAMP_FORMAT)
            values = [row[field] for field in (*SIS_FIELDS, "email_opt_out", "email_prefs_customized")]
            stage_before.append((external_id, True, True, *values, created_at))
        stage_members.extend((external_id, group, community) for group, community in json.loads(memberships))
    return stage_before, stage_members


def rollback(
    con, engine: sa.Engine, school: SchoolConfig, run_id: str, rollback_run_id: str | None = None
) -> dict:
    """Restore the store and the baseline to their state before `run_id`; refuse if a later run applied.

    The rollback gets its own `audit.sync_runs` row (default id `rollback__<run_id>`).
    """
    rollback_run_id = rollback_run_id or f"rollback__{run_id}"
    ensure_warehouse_tables(con)
    _refuse_unless_rollable(con, school, run_id)
    started_at = audit.utcnow()
    stage_before, stage_members = _staged_before_images(con, run_id)
    params = statements.params(school.school_id, started_at)
    text = statements.text
    with store_errors(f"rolling back run {run_id}"), engine.begin() as conn:
        _stage(conn, STAGE_BEFORE, stage_before)
        _stage(conn, STAGE_MEMBERS, stage_members)
        # Lock the rows; the before image of a rollback is not kept (it restores a known state).
        before_images.read_locked(conn, school.school_id, STAGE_BEFORE)
        restored = conn.execute(text(statements.RESTORE_UPDATE), params).rowcount
        conn.execute(
            text(statements.delete_stale_memberships(STAGE_BEFORE, postgres=is_postgres(conn))), params
        )
        removed = conn.execute(text(statements.delete_users(STAGE_BEFORE, "existed")), params).rowcount
        recreated = conn.execute(text(statements.RESTORE_INSERT), params).rowcount
        conn.execute(text(statements.insert_memberships(STAGE_BEFORE, "existed")), params)
    summary = {
        "run_id": run_id,
        "rollback_run_id": rollback_run_id,
        "restored": restored,
        "recreated": recreated,
        "removed": removed,
    }
    _restore_baseline(con, school, run_id, rollback_run_id, started_at, summary)
    return summary


def _restore_baseline(
    con, school: SchoolConfig, run_id: str, rollback_run_id: str, started_at, summary
) -> None:
    # One commit, tagged with the rollback's own run id: `sisbridge sql --as-of` can name it, and the
    # fleet view sees both runs' new statuses once it is committed.
    with audit.transaction(con, run_id=rollback_run_id, message=f"rollback of run {run_id}"):
        # The run rewrote exactly the users it stamped and those whose earlier rows it kept.
        con.execute(
            """
            create or replace temp table _rollback_ids as
            select external_id from state.applied_users where applied_run_id = ?
            union
            select external_id from audit.push_baseline_users where run_id = ?
            union
            select external_id from audit.push_baseline_memberships where run_id = ?
            """,
            [run_id, run_id, run_id],
        )
        # Runs with typed before images mark the users whose baseline memberships they changed; the
        # users they created have none to keep. Earlier runs kept every changed user's memberships.
        con.execute(
            """
            create or replace temp table _rollback_member_ids as
            select external_id from audit.push_baseline_member_users where run_id = ?
            union
            select external_id from state.applied_users where applied_run_id = ?
              and external_id not in (select external_id from audit.push_baseline_users where run_id = ?)
            """,
            [run_id, run_id, run_id],
        )
        marked = con.execute(
            "select count(*) from audit.applied_before_users where run_id = ?", [run_id]
        ).fetchone()[0]
        set_baseline_rows(
            con,
            "_rollback_ids",
            f"""
            select {", ".join(STATE_USER_COLUMNS)}, applied_run_id
            from audit.push_baseline_users where run_id = ?
            """,
            [run_id],
            f"""
            select distinct {", ".join(MEMBERSHIP_COLUMNS)}
            from audit.push_baseline_memberships where run_id = ?
            """,
            [run_id],
            member_ids="_rollback_member_ids" if marked else None,
        )
        for table in ("_rollback_ids", "_rollback_member_ids"):
            con.execute(f"drop table temp.{table}")
        audit.upsert_run(con, run_id, school_id=school.school_id, status="rolled_back")
        audit.upsert_run(
            con,
            rollback_run_id,
            school_id=school.school_id,
            status="succeeded",
            status_reason=f"rollback of run {run_id}",
            started_at=started_at,
            finished_at=audit.utcnow(),
            details={"rollback_of": run_id, **summary},
        )
