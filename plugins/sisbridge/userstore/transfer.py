"""From DuckDB to the store: the push's change set, cut into batches, copied in one pass.

The change set is read in the school's warehouse (a DuckDB connection the caller hands over) into
tables of an in-memory database attached for the push (`prepare`), numbered into batches. DuckDB
attaches the store through its postgres extension (or its sqlite extension, for the embedded store).
A school's first push copies its batches straight into the store's tables (`push.apply_new_batch`).
Otherwise both tables are copied into two transfer tables in the store, one pair per school
(`fill`; PostgreSQL takes them as a binary COPY), and each batch's transaction reads its rows from
there through temporary views (`stage_batch`). Nothing is written to local disk."""

from __future__ import annotations

import contextlib
import hashlib
import threading
import uuid
from collections.abc import Generator
from dataclasses import dataclass

import sqlalchemy as sa

from sisbridge import extensions, normalize, warehouse
from sisbridge.config import SchoolConfig
from sisbridge.userstore.schema import MEMBERSHIP_COLUMNS, TARGET_MEMBERSHIPS, TARGET_USERS, is_postgres
from sisbridge.userstore.statements import (
    MEMBER_CHANGES,
    STAGE_COLUMNS,
    STAGE_MEMBERS,
    STAGE_USERS,
)

# Printable ASCII normalizes the same in DuckDB as in Python; other values go through
# `normalize.key` in Python (table `_push_norm`).
_PRINTABLE_ASCII = "'[ -~]*'"
PUSH_USER_COLUMNS = tuple(name for name, _ in STAGE_COLUMNS[STAGE_USERS])


def transfer_tables(school_id: str) -> dict[str, str]:
    """The store's transfer tables of a school, by the stage table each one feeds.

    One pair per school, so that two schools pushing at once never share one; the name is a digest
    because a school id is not necessarily a valid SQL name.
    """
    digest = hashlib.sha256(school_id.encode()).hexdigest()[:16]
    return {
        STAGE_USERS: f"sisbridge_transfer_users_{digest}",
        STAGE_MEMBERS: f"sisbridge_transfer_members_{digest}",
    }


def _sql_literal(value: str) -> str:
    return "'" + value.replace("'", "''") + "'"


@contextlib.contextmanager
def attached(con, engine: sa.Engine) -> Generator[str, None, None]:
    """ATTACH the store into DuckDB connection `con` for the block; yields the catalog name.

    The extension comes from its signed wheel (`sisbridge.extensions`). The PostgreSQL password goes
    into a temporary DuckDB secret, never into the ATTACH string, which DuckDB quotes in its errors.
    """
    alias = f"sisbridge_store_{uuid.uuid4().hex[:12]}"
    secret = None
    url = engine.url
    if is_postgres(engine):
        extensions.load(con, "postgres_scanner")
        parts = {"host": url.host, "port": url.port, "dbname": url.database, "user": url.username}
        parts.update({key: value for key, value in url.query.items() if isinstance(value, str)})
        dsn = warehouse.libpq_dsn(**parts)
        options = "type postgres"
        if url.password is not None:
            secret = f"{alias}_secret"
            password = _sql_literal(str(url.password))
            con.execute(f"create temporary secret {secret} (type postgres, password {password})")
            options += f", secret {secret}"
        target = dsn
    else:
        extensions.load(con, "sqlite_scanner")
        if not url.database or url.database == ":memory:":
            raise ValueError("the push needs a SQLite store in a file, not in memory")
        target = url.database
        options = "type sqlite"
    try:
        con.execute(f"attach {_sql_literal(target)} as {alias} ({options})")
        try:
            yield alias
        finally:
            con.execute(f"detach {alias}")
    finally:
        if secret is not None:
            con.execute(f"drop temporary secret if exists {secret}")


def _normalized_sql(column: str, alias: str, *, lower: bool = True) -> str:
    fast = normalize.key_sql("email" if lower else "user_id", column)
    return f"coalesce({alias}.{'lowered' if lower else 'stripped'}, {fast})"


@dataclass(frozen=True)
class Prepared:
    """A push's change set in DuckDB, numbered into batches (`prepare`).

    Its tables live in an in-memory database attached for the push (`scratch`), so that every
    connection of the DuckDB instance sees them: the one the push was handed and the cursors that
    copy a school's first batches into the store (`push.apply_new_batch`). `users`: the store's
    normalized id, whether the user stays, the target fields (emails and logins normalized) and the
    file's opt-out flag; `members` the target users' memberships. They are not sorted: a batch's scan
    of them filters on `batch_no` (50 scans of 1.9M memberships take about 0.2 s).
    """

    scratch: str
    batches: int
    # Users per batch.
    sizes: dict[int, int]

    @property
    def users(self) -> str:
        return f"{self.scratch}.users"

    @property
    def members(self) -> str:
        return f"{self.scratch}.members"


@contextlib.contextmanager
def scratch(con) -> Generator[str, None, None]:
    """An in-memory database attached to `con` for the block (the push's working tables); yields its name."""
    name = f"sisbridge_push_{uuid.uuid4().hex[:12]}"
    con.execute(f"attach ':memory:' as {name}")
    try:
        yield name
    finally:
        con.execute(f"detach {name}")


def batch_size_for(users: int, batch_size: int, workers: int) -> int:
    """At most `batch_size` users a batch, in a number of batches that `workers` share evenly.

    Five batches of 20,000 on two workers take as long as six (the fifth runs alone); six of 16,667
    take a sixth less.
    """
    batches = -(-users // batch_size)
    if workers < 2 or batches < 2:
        return batch_size
    batches = -(-batches // workers) * workers
    return -(-users // batches)


def prepare(con, scratch: str, school: SchoolConfig, batch_size: int) -> Prepared:
    """Number the change set's users into batches of `batch_size` and build their target rows."""
    con.execute(
        f"""
        create table {scratch}.ids as
        select external_id, ((row_number() over (order by external_id) - 1) // ?)::integer as batch_no
        from (select distinct external_id from marts.user_changes)
        """,
        [batch_size],
    )
    odd = con.execute(
        f"""
        select distinct value from (
            select i.external_id as value from {scratch}.ids as i
            union all
            select t.email from {scratch}.ids as i
            join marts.users as t on t.external_id = i.external_id
            union all
            select t.user_login from {scratch}.ids as i
            join marts.users as t on t.external_id = i.external_id
        )
        where value is not null and not regexp_full_match(value, {_PRINTABLE_ASCII})
        """
    ).fetchall()
    con.execute(f"create table {scratch}.norm (raw varchar, stripped varchar, lowered varchar)")
    if odd:
        con.executemany(
            f"insert into {scratch}.norm values (?, ?, ?)",
            [(value, normalize.clean(value), normalize.key("email", value)) for (value,) in odd],
        )
    lower_id = school.identifier in ("email", "user_login")
    con.execute(
        f"""
        create table {scratch}.users as
        select i.batch_no,
               {_normalized_sql("i.external_id", "ni", lower=lower_id)} as external_id,
               t.external_id is not null as in_target,
               {_normalized_sql("t.email", "ne")} as email,
               t.user_id,
               {_normalized_sql("t.user_login", "nl")} as user_login,
               t.first_name, t.last_name, t.user_type, t.graduation_year, t.status,
               t.email_opt_out as target_opt_out,
               t.file_opt_out,
               i.external_id as warehouse_id
        from {scratch}.ids as i
        left join ({TARGET_USERS}) as t on t.external_id = i.external_id
        left join {scratch}.norm as ni on ni.raw = i.external_id
        left join {scratch}.norm as ne on ne.raw = t.email
        left join {scratch}.norm as nl on nl.raw = t.user_login
        """
    )
    con.execute(
        f"""
        create table {scratch}.members as
        select u.batch_no, u.external_id, m.community_group, m.community
        from {scratch}.users as u
        join {TARGET_MEMBERSHIPS} as m on m.external_id = u.warehouse_id
        where u.in_target  -- the batches count on it
        """
    )
    sizes = dict(con.execute(f"select batch_no, count(*) from {scratch}.ids group by batch_no").fetchall())
    for table in ("ids", "norm"):  # their memory goes back to the batches and the baseline
        con.execute(f"drop table {scratch}.{table}")
    return Prepared(scratch=scratch, batches=len(sizes), sizes=sizes)


def _create_transfer_tables(conn: sa.Connection, tables: dict[str, str]) -> None:
    unlogged = "unlogged " if is_postgres(conn) else ""
    for stage, table in tables.items():
        columns = ", ".join(f"{name} {kind}" for name, kind in STAGE_COLUMNS[stage])
        conn.exec_driver_sql(f"drop table if exists {table}")
        conn.exec_driver_sql(f"create {unlogged}table {table} (batch_no integer not null, {columns})")


def fill(con, store: str, engine: sa.Engine, prepared: Prepared, school_id: str, pending: list[int]) -> None:
    """Copy the pending batches of the change set into the school's transfer tables (`store`: attached).

    The tables are made anew (a retry copies only the batches that did not commit), filled by DuckDB,
    then indexed by batch. On PostgreSQL the users and the memberships are copied and indexed at the
    same time, each by a cursor and a store connection of its own (0.33 -> 0.23-0.30 s at 100k users).
    """
    tables = transfer_tables(school_id)
    with engine.begin() as conn:
        _create_transfer_tables(conn, tables)
    copies = (
        (prepared.users, STAGE_USERS, PUSH_USER_COLUMNS),
        (prepared.members, STAGE_MEMBERS, MEMBERSHIP_COLUMNS),
    )
    if not is_postgres(engine):  # one writer
        for source, stage, columns in copies:
            _fill_one(con, engine, store, tables[stage], source, stage, columns, pending)
        return
    errors: list[BaseException] = []

    def fill_on_a_cursor(source: str, stage: str, columns: tuple[str, ...]) -> None:
        try:
            with contextlib.closing(con.cursor()) as cursor:
                _fill_one(cursor, engine, store, tables[stage], source, stage, columns, pending)
        except BaseException as exc:
            errors.append(exc)

    threads = [
        threading.Thread(target=fill_on_a_cursor, args=copy, name=f"sisbridge-transfer-{copy[1]}")
        for copy in copies
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    if errors:
        raise errors[0]


def _fill_one(
    con,
    engine: sa.Engine,
    store: str,
    table: str,
    source: str,
    stage: str,
    columns: tuple[str, ...],
    pending: list[int],
) -> None:
    """Copy one table of the change set into its transfer table (`table` in the attached `store`).

    Then index it, on a store connection of its own.
    """
    if pending:
        batches = ", ".join(str(int(batch_no)) for batch_no in pending)
        # In batch order, so that a batch's rows lie together in the store (`prepare` leaves its
        # tables unsorted: a sort of a 1M-user change set held a third of the push's memory).
        con.execute(
            f"""
            insert into {store}.{table} (batch_no, {", ".join(columns)})
            select batch_no, {", ".join(columns)} from {source}
            where batch_no in ({batches})
            order by batch_no, external_id
            """
        )
    with engine.begin() as conn:
        # A batch reads its rows by batch number, and looks users and memberships up by key within
        # the batch: one index on (batch_no, key) serves both.
        keys = ", ".join(name for name, _ in STAGE_COLUMNS[stage][: 1 if stage == STAGE_USERS else 3])
        conn.exec_driver_sql(f"create index {table}_batch on {table} (batch_no, {keys})")
        if is_postgres(conn):
            conn.exec_driver_sql(f"analyze {table}")


def drop_transfer_tables(engine: sa.Engine, school_id: str) -> None:
    with engine.begin() as conn:
        for table in transfer_tables(school_id).values():
            conn.exec_driver_sql(f"drop table if exists {table}")


def stage_batch(conn: sa.Connection, school_id: str, batch_no: int) -> None:
    """Make the stage names show one batch of the transfer tables, for the transaction.

    The stages are temporary views over the transfer tables (`where batch_no = N`), not copies: the
    planner inlines them, so a batch's statements read the transfer tables through their
    (batch_no, key) index. Copying each batch into indexed, analyzed temp tables instead cost about
    a fifth of a batch's time. `unstage` drops the views before the transaction commits, so that
    no session keeps a view on a transfer table that a later push drops.
    """
    for stage, table in transfer_tables(school_id).items():
        columns = ", ".join(name for name, _ in STAGE_COLUMNS[stage])
        conn.exec_driver_sql(f"drop view if exists {stage}")
        conn.exec_driver_sql(
            f"create temp view {stage} as select {columns} from {table} where batch_no = {int(batch_no)}"
        )


def unstage(conn: sa.Connection) -> None:
    for stage in (STAGE_USERS, STAGE_MEMBERS):
        conn.exec_driver_sql(f"drop view if exists {stage}")
    conn.exec_driver_sql(f"drop table if exists {MEMBER_CHANGES}")
