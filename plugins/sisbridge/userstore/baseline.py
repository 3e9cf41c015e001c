"""The push's tables in the school's warehouse: before images, push results, and the applied baseline.

Plain SQL over the DuckDB connection the caller hands over; every write here happens on that one
connection, never from several threads.
"""

from __future__ import annotations

from sisbridge.userstore.schema import (
    BEFORE_IMAGE_COLUMNS,
    MEMBERSHIP_COLUMNS,
    STATE_USER_COLUMNS,
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

    for table in (
        "marts.user_changes",
        "marts.users",
        "intermediate.int_users_target_state",
        "intermediate.int_memberships_target_state",
    ):
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
