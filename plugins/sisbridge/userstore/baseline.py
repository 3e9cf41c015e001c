"""The push's tables in the school's warehouse: before images, push results, and the applied baseline.

Plain SQL over the DuckDB connection the caller hands over; every write here happens on that one
connection, never from several threads.
"""

from __future__ import annotations

from dataclasses import dataclass

from sisbridge.userstore.schema import (
    BEFORE_IMAGE_COLUMNS,
    MEMBERSHIP_COLUMNS,
    STATE_USER_COLUMNS,
    TARGET_MEMBERSHIPS,
    TARGET_USERS,
    PermanentStoreError,
    sql_type,
    users,
)

_BASELINE_USER_COLUMNS = ",\n    ".join(
    f"{name} {sql_type(users.c[name])}{'' if users.c[name].nullable else ' not null'}"
    for name in STATE_USER_COLUMNS
)

_BEFORE_IMAGE_COLUMNS = ",\n    ".join(f"{name} {sql_type(users.c[name])}" for name in BEFORE_IMAGE_COLUMNS)

# The before images of a run (`before_images`): one row per user of its change set, with the store's
# row as it was (`existed` false and nulls for a user the store did not have), and the memberships
# of the users whose memberships the run changed (`memberships_saved`; a rollback leaves the others'
# memberships alone). Runs pushed before these tables kept theirs as JSON in `audit.applied_before`,
# with every user's memberships, which a rollback still reads.
WAREHOUSE_SCHEMA = f"""
create schema if not exists audit;
create table if not exists audit.applied_before_users (
    run_id varchar not null,
    batch_no integer not null,
    external_id varchar not null,
    existed boolean not null,
    memberships_saved boolean not null,
    {_BEFORE_IMAGE_COLUMNS},
    captured_at timestamp not null
);
create table if not exists audit.applied_before_memberships (
    run_id varchar not null,
    external_id varchar not null,
    community_group varchar not null,
    community varchar not null
);
create table if not exists audit.push_runs (
    run_id varchar not null,  -- one row per run (a DuckLake has no keys)
    school_id varchar not null,
    batch_size integer not null,
    batches integer not null,
    creates bigint not null,
    updates bigint not null,
    reactivations bigint not null,
    deactivations bigint not null,
    deletes bigint not null,
    opt_outs bigint not null,
    completed_at timestamp not null
);
create table if not exists audit.push_baseline_users (
    run_id varchar not null,
    {_BASELINE_USER_COLUMNS},
    applied_run_id varchar not null
);
create table if not exists audit.push_baseline_memberships (
    run_id varchar not null,
    external_id varchar not null,
    community_group varchar not null,
    community varchar not null
);
-- The users whose baseline memberships a run changed: `push_baseline_memberships` has all the
-- memberships they had. Runs pushed before this table (and before `applied_before_users`) kept the
-- memberships of every user they changed.
create table if not exists audit.push_baseline_member_users (
    run_id varchar not null,
    external_id varchar not null
);
"""


def ensure_warehouse_tables(con) -> None:
    """Create the push's tables that are missing, in one lake commit (none when they all exist)."""
    from sisbridge import audit

    with audit.transaction(con):
        con.execute(WAREHOUSE_SCHEMA)


def require_change_set(con) -> None:
    import duckdb

    for table in ("marts.user_changes", "marts.users", TARGET_MEMBERSHIPS):
        try:
            con.execute(f"select 1 from {table} limit 0")
        except duckdb.CatalogException as exc:
            raise PermanentStoreError(
                f"the warehouse has no {table}: the transform must build the change set before the push"
            ) from exc


def set_baseline_rows(
    con,
    ids: str,
    users_query: str,
    users_params: list,
    members_query: str,
    members_params=(),
    *,
    member_ids: str | None = None,
) -> None:
    """Make the baseline of the users in temp table `ids` equal the given rows (none: not there).

    A rollback puts a run's users back with it; their memberships only for the users in temp table
    `member_ids` (default: `ids`). The queries must return rows of those users only. The rows are
    deleted and the given ones inserted straight from the queries: the work is proportional to the
    users. The baseline tables have no key (see `sisbridge.audit`), so a delete costs no index
    maintenance.
    """
    columns = ", ".join((*STATE_USER_COLUMNS, "applied_run_id"))
    members = ", ".join(MEMBERSHIP_COLUMNS)
    for table, scope in (("applied_users", ids), ("applied_memberships", member_ids or ids)):
        con.execute(f"delete from state.{table} where external_id in (select external_id from {scope})")
    con.execute(f"insert into state.applied_users ({columns}) {users_query}", users_params)
    con.execute(f"insert into state.applied_memberships ({members}) {members_query}", list(members_params))


@dataclass(frozen=True)
class PushResult:
    """Users changed by a push, per change type (applied changes only), and the batches it took."""

    creates: int
    updates: int
    reactivations: int
    deactivations: int
    deletes: int
    opt_outs: int
    batches: int


def advance_baseline(con, run_id: str) -> None:
    """Set the baseline to the target, keeping the rows it replaces in `audit.push_baseline_*`.

    Only the users whose baseline row or memberships differ from the target are rewritten (stamped
    with this run's id).
    """
    users_cols = ", ".join(STATE_USER_COLUMNS)
    members_cols = ", ".join(MEMBERSHIP_COLUMNS)
    target_users = f"select {users_cols}, ? as applied_run_id from ({TARGET_USERS})"
    # dbt's build tests that the target memberships are unique (marts.community_memberships), and
    # the push runs only after a build whose tests passed.
    target_members = f"select {members_cols} from {TARGET_MEMBERSHIPS}"
    empty = con.execute(
        """
        select not exists (select 1 from state.applied_users)
           and not exists (select 1 from state.applied_memberships)
        """
    ).fetchone()[0]
    if empty:
        # A school's first push: every target user differs from the empty baseline, and there is no
        # earlier row to keep.
        con.execute(
            f"insert into state.applied_users ({users_cols}, applied_run_id) {target_users}", [run_id]
        )
        con.execute(f"insert into state.applied_memberships ({members_cols}) {target_members}")
        return
    # The memberships the run adds and removes, and the users whose baseline row or memberships
    # differ from the target, in either direction (`is distinct from` compares NULLs as equal).
    # One join, not two set differences: each of those hashes both tables (1.9M rows at 1M users).
    on_key = " and ".join(f"a.{column} = t.{column}" for column in MEMBERSHIP_COLUMNS)
    con.execute(
        f"""
        create or replace temp table _push_member_changes as
        select {", ".join(f"coalesce(a.{column}, t.{column}) as {column}" for column in MEMBERSHIP_COLUMNS)},
               a.external_id is null as adding
        from state.applied_memberships as a
        full join ({target_members}) as t on {on_key}
        where a.external_id is null or t.external_id is null
        """
    )
    differs = " or ".join(f"a.{column} is distinct from t.{column}" for column in STATE_USER_COLUMNS[1:])
    con.execute(
        f"""
        create or replace temp table _push_changed as
        select coalesce(a.external_id, t.external_id) as external_id
        from state.applied_users as a
        full join ({TARGET_USERS}) as t on a.external_id = t.external_id
        where a.external_id is null or t.external_id is null or {differs}
        union
        select external_id from _push_member_changes
        """
    )
    # The rows the run replaces: the changed users' baseline rows, and all the memberships of the
    # users whose memberships change (`audit.push_baseline_member_users`).
    for table, columns, ids in (
        ("users", f"{users_cols}, applied_run_id", "_push_changed"),
        ("memberships", members_cols, "_push_member_changes"),
    ):
        con.execute(f"delete from audit.push_baseline_{table} where run_id = ?", [run_id])
        con.execute(
            f"""
            insert into audit.push_baseline_{table} (run_id, {columns})
            select ?, {columns} from state.applied_{table}
            where external_id in (select external_id from {ids})
            """,
            [run_id],
        )
    con.execute("delete from audit.push_baseline_member_users where run_id = ?", [run_id])
    con.execute(
        """
        insert into audit.push_baseline_member_users (run_id, external_id)
        select distinct ?, external_id from _push_member_changes
        """,
        [run_id],
    )
    # The changed users' rows are replaced (stamped with the run); of the memberships, only those
    # that change are written.
    con.execute(
        "delete from state.applied_users where external_id in (select external_id from _push_changed)"
    )
    con.execute(
        f"""
        insert into state.applied_users ({users_cols}, applied_run_id)
        {target_users} where external_id in (select external_id from _push_changed)
        """,
        [run_id],
    )
    on_change = " and ".join(f"a.{column} = g.{column}" for column in MEMBERSHIP_COLUMNS)
    con.execute(
        f"""
        delete from state.applied_memberships as a using _push_member_changes as g
        where not g.adding and {on_change}
        """
    )
    con.execute(
        f"""
        insert into state.applied_memberships ({members_cols})
        select {members_cols} from _push_member_changes where adding
        """
    )


def record_changes(con, run_id: str, now) -> None:
    """Write the run's change set into `audit.applied_changes`; `record_audit` drops what was not applied."""
    con.execute("delete from audit.applied_changes where run_id = ?", [run_id])
    con.execute(
        """
        insert into audit.applied_changes
            (run_id, external_id, change_type, field, old_value, new_value, applied_at)
        select ?, external_id, change_type, field, old_value, new_value, ?
        from marts.user_changes order by change_id
        """,
        [run_id, now],
    )


def record_audit(con, run_id: str, school_id: str, batch_size: int, batches: int, now) -> PushResult:
    """Finish the run's applied changes and write its `audit.push_runs` row; returns the counts.

    Runs once the before images are in: an opt-out the store did not take (the user customized
    their preferences, or was opted out already) was not applied.
    """
    con.execute(
        """
        delete from audit.applied_changes
        where run_id = ? and change_type = 'opt_out' and external_id in (
            select external_id from audit.applied_before_users
            where run_id = ? and existed and (email_prefs_customized or email_opt_out))
        """,
        [run_id, run_id],
    )
    counts = dict(
        con.execute(
            """
            select change_type, count(distinct external_id)
            from audit.applied_changes where run_id = ? group by change_type
            """,
            [run_id],
        ).fetchall()
    )
    result = PushResult(
        creates=counts.get("create", 0),
        updates=counts.get("update", 0),
        reactivations=counts.get("reactivate", 0),
        deactivations=counts.get("deactivate", 0),
        deletes=counts.get("delete", 0),
        opt_outs=counts.get("opt_out", 0),
        batches=batches,
    )
    con.execute(
        "insert into audit.push_runs values (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
        [
            run_id,
            school_id,
            batch_size,
            batches,
            result.creates,
            result.updates,
            result.reactivations,
            result.deactivations,
            result.deletes,
            result.opt_outs,
            now,
        ],
    )
    return result
