"""The push's tables in the school's warehouse: before images, push results, and the applied baseline.

Plain SQL over the DuckDB connection the caller hands over; every write here happens on that one
connection, never from several threads.
"""

from __future__ import annotations

from sisbridge.userstore.schema import (
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

WAREHOUSE_SCHEMA = f"""
create schema if not exists audit;
create table if not exists audit.applied_before (
    run_id varchar not null,
    batch_no integer not null,
    external_id varchar not null,
    user_row json,
    memberships json,
    captured_at timestamp not null
);
create table if not exists audit.push_runs (
    run_id varchar primary key,
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
"""


def ensure_warehouse_tables(con) -> None:
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
    con, ids: str, users_query: str, users_params: list, members_query: str, members_params=()
) -> None:
    """Make the baseline of the users in temp table `ids` equal the given rows (none: not there).

    Rows are updated in place, and only the rows that go away are deleted: a large school's weekly
    change then rewrites a tenth of the baseline, not all of it.
    """
    con.execute(f"create or replace temp table _baseline_users as {users_query}", users_params)
    con.execute(f"create or replace temp table _baseline_members as {members_query}", list(members_params))
    columns = (*STATE_USER_COLUMNS, "applied_run_id")
    con.execute(
        f"""
        delete from state.applied_users
        where external_id in (select external_id from {ids})
          and external_id not in (select external_id from _baseline_users)
        """
    )
    con.execute(
        f"""
        update state.applied_users
        set {", ".join(f"{column} = n.{column}" for column in columns[1:])}
        from _baseline_users as n
        where state.applied_users.external_id = n.external_id
        """
    )
    con.execute(
        f"""
        insert into state.applied_users ({", ".join(columns)})
        select {", ".join(columns)} from _baseline_users as n
        where n.external_id not in (select external_id from state.applied_users)
        """
    )
    members = ", ".join(MEMBERSHIP_COLUMNS)
    con.execute(
        f"""
        delete from state.applied_memberships
        using (
            select {members} from state.applied_memberships
            where external_id in (select external_id from {ids})
            except
            select {members} from _baseline_members
        ) as gone
        where state.applied_memberships.external_id = gone.external_id
          and state.applied_memberships.community_group = gone.community_group
          and state.applied_memberships.community = gone.community
        """
    )
    con.execute(
        f"""
        insert into state.applied_memberships ({members})
        select {members} from _baseline_members
        except
        select {members} from state.applied_memberships where external_id in (select external_id from {ids})
        """
    )
    con.execute("drop table temp._baseline_users")
    con.execute("drop table temp._baseline_members")
