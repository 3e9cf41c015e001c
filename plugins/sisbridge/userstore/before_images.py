"""Before images: the store rows a push changed, as they were, so that a rollback can put them back.

A batch locks its users' store rows and copies them, with their memberships, into the store's
`sisbridge_push_before_*` tables in its own transaction (`capture`): the batch and its before images
commit together, and a retried batch captures them again from the same unchanged rows. Once every
batch is done, `move_to_warehouse` writes them into the warehouse's `audit.applied_before_users` (one row
per user of the change set, `existed` false for a user the store did not have) and
`audit.applied_before_memberships`, typed as in the store, inside the warehouse transaction that
finishes the push, and `forget` deletes them from the store.
"""

from __future__ import annotations

import sqlalchemy as sa

from sisbridge.userstore import statements
from sisbridge.userstore.schema import (
    BEFORE_IMAGE_COLUMNS,
    push_before_member_users,
    push_before_memberships,
    push_before_users,
    sql_type,
    user_communities,
    users,
)
from sisbridge.userstore.statements import STAGE_USERS

_USER_COLUMNS = ", ".join(column.name for column in users.columns)
_MEMBER_COLUMNS = ", ".join(column.name for column in user_communities.columns)

# The staged users' store rows are locked and copied in one pass, driven by the staged users (one row
# each, indexed); memberships are looked up only for the users the store has (a school's first push
# is all new users). The lateral subquery keeps the staged users as the driving side: with a plain
# join the planner, whose statistics still count a new school's users as a handful, scanned all of
# the school's stored users for every batch (quadratic over a first push).
_PG_SAVE_USERS = f"""
insert into {push_before_users.name} (run_id, batch_no, {_USER_COLUMNS})
select :run, :batch, u.* from {STAGE_USERS} as s
cross join lateral (
    select {_USER_COLUMNS} from users
    where users.school_id = :school and users.external_id = s.external_id
    for update
) as u
"""
# SQLite: the batch's transaction already holds the database's write lock (BEGIN IMMEDIATE).
_SQLITE_SAVE_USERS = f"""
insert into {push_before_users.name} (run_id, batch_no, {_USER_COLUMNS})
select :run, :batch, {_USER_COLUMNS} from users
where school_id = :school and external_id in (select external_id from {STAGE_USERS})
"""


def _store_memberships(users: str, columns: str, *, postgres: bool) -> str:
    """The store's memberships (`columns`) of the users that query `users` selects (`external_id`).

    On PostgreSQL driven by those users, as the users' lock-and-copy above.
    """
    if postgres:
        return f"""
        select c.* from ({users}) as s
        cross join lateral (
            select {columns} from user_communities
            where user_communities.school_id = :school and user_communities.external_id = s.external_id
        ) as c
        """
    return f"""
    select {columns} from user_communities
    where school_id = :school and external_id in ({users})
    """


def _save_members(*, postgres: bool) -> str:
    """Keep the store's memberships of the users whose memberships the batch changes, before it does."""
    changed = f"select distinct external_id from {statements.MEMBER_CHANGES}"
    return f"""
    insert into {push_before_memberships.name} (run_id, {_MEMBER_COLUMNS})
    select :run, m.* from ({_store_memberships(changed, _MEMBER_COLUMNS, postgres=postgres)}) as m
    """


# Those users are also marked: a rollback restores the memberships of these users only.
_MARK_MEMBER_USERS = f"""
insert into {push_before_member_users.name} (run_id, batch_no, school_id, external_id)
select distinct :run, :batch, :school, external_id from {statements.MEMBER_CHANGES}
"""


def capture(conn: sa.Connection, school_id: str, run_id: str, batch_no: int) -> int:
    """Lock the staged users' store rows and keep them and their memberships; returns how many exist.

    Of the memberships, only those of the users whose memberships the batch changes are kept.
    Also fills the batch's `statements.MEMBER_CHANGES`.
    """
    keys = {"school": school_id, "run": run_id, "batch": batch_no}
    # A batch's images commit with it, and its `sisbridge_push_batches` row tells a retry to skip it:
    # a batch that runs has none in the tables yet.
    postgres = conn.dialect.name == "postgresql"
    existing = conn.execute(sa.text(_PG_SAVE_USERS if postgres else _SQLITE_SAVE_USERS), keys).rowcount
    conn.exec_driver_sql(f"drop table if exists {statements.MEMBER_CHANGES}")
    conn.exec_driver_sql(statements.MEMBER_CHANGES_DDL + (" on commit drop" if postgres else ""))
    staged = _store_memberships(
        f"select external_id from {STAGE_USERS}", "external_id, community_group, community", postgres=postgres
    )
    conn.execute(sa.text(statements.insert_member_changes(staged)), keys)
    for statement in (_save_members(postgres=postgres), _MARK_MEMBER_USERS):
        conn.execute(sa.text(statement), keys)
    return existing


def _store_value(name: str, postgres: bool) -> str:
    """A before-image column as DuckDB reads it from the store, typed as in `users`."""
    if postgres:
        return f"b.{name}"
    # SQLite keeps SQLAlchemy's text timestamps and 0/1 booleans.
    return f"b.{name}::{sql_type(users.c[name])}"


def _clear(con, run_id: str) -> None:
    for table in ("users", "memberships"):
        con.execute(f"delete from audit.applied_before_{table} where run_id = ?", [run_id])


_COLUMNS = ", ".join(BEFORE_IMAGE_COLUMNS)
_INSERT_USERS = (
    "insert into audit.applied_before_users "
    f"(run_id, batch_no, external_id, existed, memberships_saved, {_COLUMNS}, captured_at)"
)


def record_absent(con, push_users: str, run_id: str, at) -> None:
    """Record that the store had none of the users of `push_users` (a school's first push)."""
    _clear(con, run_id)
    nulls = ", ".join("null" for _ in BEFORE_IMAGE_COLUMNS)
    con.execute(
        f"{_INSERT_USERS} select ?, batch_no, external_id, false, true, {nulls}, ? from {push_users}",
        [run_id, at],
    )


def move_to_warehouse(
    con, store: str, push_users: str, school_id: str, run_id: str, at, *, postgres: bool
) -> None:
    """Write the run's before images from the store (attached to `con` as `store`) into the warehouse.

    Runs inside the caller's warehouse transaction. Every user of `push_users` (the push's table of
    its change set, `transfer.Prepared.users`) gets a row of `audit.applied_before_users`; their
    memberships go into `audit.applied_before_memberships`.
    """
    images = con.execute(
        f"select count(*) from {store}.{push_before_users.name} where school_id = ? and run_id = ?",
        [school_id, run_id],
    ).fetchone()[0]
    if not images:
        # All new users: no image to read, nor a join of every user with one.
        record_absent(con, push_users, run_id, at)
        return
    _clear(con, run_id)
    values = ", ".join(_store_value(name, postgres) for name in BEFORE_IMAGE_COLUMNS)
    # A user the store did not have is removed with all its memberships by a rollback.
    con.execute(
        f"""
        {_INSERT_USERS}
        select ?, s.batch_no, s.external_id, b.external_id is not null,
               b.external_id is null or m.external_id is not null, {values}, ?
        from {push_users} as s
        left join (
            select * from {store}.{push_before_users.name}
            where school_id = ? and run_id = ?
        ) as b on b.external_id = s.external_id
        left join (
            select distinct external_id from {store}.{push_before_member_users.name}
            where school_id = ? and run_id = ?
        ) as m on m.external_id = s.external_id
        """,
        [run_id, at, school_id, run_id, school_id, run_id],
    )
    con.execute(
        f"""
        insert into audit.applied_before_memberships (run_id, external_id, community_group, community)
        select ?, external_id, community_group, community from {store}.{push_before_memberships.name}
        where school_id = ? and run_id = ?
        """,
        [run_id, school_id, run_id],
    )


def forget(conn: sa.Connection, school_id: str, run_ids: list[str]) -> None:
    """Delete the store's copy of these runs' before images (they are in the warehouse now)."""
    if not run_ids:
        return
    for table in _IMAGE_TABLES:
        conn.execute(table.delete().where(table.c.school_id == school_id, table.c.run_id.in_(run_ids)))


_IMAGE_TABLES = (push_before_users, push_before_memberships, push_before_member_users)


def runs_with_images(conn: sa.Connection, school_id: str) -> list[str]:
    query = sa.union(
        *(sa.select(table.c.run_id).where(table.c.school_id == school_id) for table in _IMAGE_TABLES)
    )
    return list(conn.execute(query).scalars())


def read_locked(conn: sa.Connection, school_id: str, stage: str) -> None:
    """Lock the store rows of the users in temp table `stage` until the transaction ends (rollback)."""
    staged = sa.select(sa.table(stage, sa.column("external_id")).c.external_id)
    query = sa.select(users.c.external_id).where(
        users.c.school_id == school_id, users.c.external_id.in_(staged)
    )
    if conn.dialect.name == "postgresql":
        query = query.with_for_update()
    conn.execute(query).all()
