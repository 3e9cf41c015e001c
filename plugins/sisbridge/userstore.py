"""The uConnect user store: its schema, the push of a run's change set, and the rollback of a push.

The store is PostgreSQL in production and SQLite as the embedded default, reached through SQLAlchemy
Core. A push applies the change set in batches, one transaction per batch: each batch sets its users
and their memberships to the run's target state, so replaying a batch is harmless, and the store
records which batches are done, so a retried push never captures a second "before" image. On
PostgreSQL two batches (`SISBRIDGE_PUSH_WORKERS`) are applied at a time, so that the warehouse's
work for one overlaps the store's work for the other.

Email preferences (DESIGN.md, "Email preferences") live in `_OPT_OUT_RULE` and `_INSERT_USERS` only:
- a new user starts with `email_opt_out` equal to the file's flag;
- an existing user whose preferences are not customized is opted out when the flag is yes;
- nothing ever opts a user back in, and a user with customized preferences keeps every preference.
The SIS fields of a customized user (names, email, type, year, status, memberships) still follow the
file: the rule protects the preferences the user chose, not the school's record of the student.
"""

from __future__ import annotations

import contextlib
import io
import json
import logging
import re
import tempfile
import threading
import time
from collections.abc import Generator, Sequence
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

import sqlalchemy as sa

from sisbridge import normalize
from sisbridge.audit import get_run, upsert_run, utcnow
from sisbridge.config import SchoolConfig, push_workers

log = logging.getLogger(__name__)

DEFAULT_CONN_ID = "uconnect_user_store"
# Users per store transaction: bounds the row locks held and the memory of one batch.
DEFAULT_BATCH_SIZE = 20_000

metadata = sa.MetaData()

users = sa.Table(
    "users",
    metadata,
    sa.Column("school_id", sa.Text, primary_key=True),
    sa.Column("external_id", sa.Text, primary_key=True),
    sa.Column("email", sa.Text),
    sa.Column("user_id", sa.Text),
    sa.Column("user_login", sa.Text),
    sa.Column("first_name", sa.Text),
    sa.Column("last_name", sa.Text),
    sa.Column("user_type", sa.Text),
    sa.Column("graduation_year", sa.Integer),
    sa.Column("status", sa.Text, nullable=False),
    sa.Column("email_opt_out", sa.Boolean, nullable=False, server_default=sa.false()),
    sa.Column("email_prefs_customized", sa.Boolean, nullable=False, server_default=sa.false()),
    sa.Column("created_at", sa.DateTime, nullable=False),
    sa.Column("updated_at", sa.DateTime, nullable=False),
    sa.CheckConstraint("status in ('active', 'inactive')", name="users_status_check"),
)

user_communities = sa.Table(
    "user_communities",
    metadata,
    sa.Column("school_id", sa.Text, primary_key=True),
    sa.Column("external_id", sa.Text, primary_key=True),
    sa.Column("community_group", sa.Text, primary_key=True),
    sa.Column("community", sa.Text, primary_key=True),
    sa.ForeignKeyConstraint(
        ["school_id", "external_id"],
        ["users.school_id", "users.external_id"],
        ondelete="CASCADE",
    ),
)

# Written in the same transaction as each batch, so "done" in this table means "committed".
push_batches = sa.Table(
    "sisbridge_push_batches",
    metadata,
    sa.Column("school_id", sa.Text, primary_key=True),
    sa.Column("run_id", sa.Text, primary_key=True),
    sa.Column("batch_no", sa.Integer, primary_key=True),
    sa.Column("batch_size", sa.Integer, nullable=False),
    sa.Column("users_in_batch", sa.Integer, nullable=False),
    sa.Column("applied_at", sa.DateTime, nullable=False),
)

# Columns the sync owns; `email_prefs_customized` belongs to the platform and is never written.
SIS_FIELDS = (
    "email",
    "user_id",
    "user_login",
    "first_name",
    "last_name",
    "user_type",
    "graduation_year",
    "status",
)

_WAREHOUSE_SCHEMA = """
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
    external_id varchar not null,
    email varchar,
    user_id varchar,
    user_login varchar,
    first_name varchar,
    last_name varchar,
    user_type varchar,
    graduation_year integer,
    status varchar not null,
    email_opt_out boolean not null,
    applied_run_id varchar not null
);
create table if not exists audit.push_baseline_memberships (
    run_id varchar not null,
    external_id varchar not null,
    community_group varchar not null,
    community varchar not null
);
"""

# The applied baseline's columns: the SIS fields this sync owns, keyed by external_id.
_STATE_USER_COLUMNS = ("external_id", *SIS_FIELDS, "email_opt_out")
_MEMBERSHIP_COLUMNS = ("external_id", "community_group", "community")

_STAGE_USERS = "sisbridge_stage_users"
_STAGE_MEMBERS = "sisbridge_stage_members"
_STAGE_BEFORE = "sisbridge_stage_before"
_STAGE_COLUMNS = {
    _STAGE_USERS: (
        ("external_id", "text"),
        ("in_target", "boolean"),
        ("email", "text"),
        ("user_id", "text"),
        ("user_login", "text"),
        ("first_name", "text"),
        ("last_name", "text"),
        ("user_type", "text"),
        ("graduation_year", "integer"),
        ("status", "text"),
        ("target_opt_out", "boolean"),
        ("file_opt_out", "boolean"),
    ),
    _STAGE_MEMBERS: (("external_id", "text"), ("community_group", "text"), ("community", "text")),
    _STAGE_BEFORE: (
        ("external_id", "text"),
        ("existed", "boolean"),
        ("email", "text"),
        ("user_id", "text"),
        ("user_login", "text"),
        ("first_name", "text"),
        ("last_name", "text"),
        ("user_type", "text"),
        ("graduation_year", "integer"),
        ("status", "text"),
        ("email_opt_out", "boolean"),
        ("email_prefs_customized", "boolean"),
        ("created_at", "timestamp"),
    ),
}
_TIMESTAMP_FORMAT = "%Y-%m-%d %H:%M:%S.%f"

# SQLSTATEs after which the same statement can succeed later: serialization failure, deadlock,
# lock timeout, too many connections, admin/crash shutdown, cannot connect now.
_TRANSIENT_SQLSTATES = {"40001", "40P01", "55P03", "53300", "57P01", "57P02", "57P03"}


class StoreError(RuntimeError):
    """A user store operation failed; the message says which one and why."""


class TransientStoreError(StoreError):
    """The store was unreachable or busy; retrying the same push later is safe."""


class PermanentStoreError(StoreError):
    """Retrying will not help (bad schema, missing change set, constraint violation)."""


class RollbackRefused(RuntimeError):
    """A rollback that would not restore a consistent state (for example, a later run was applied)."""


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


def _is_transient(exc: BaseException) -> bool:
    if isinstance(exc, sa.exc.DBAPIError) and exc.connection_invalidated:
        return True
    orig = exc.orig if isinstance(exc, sa.exc.DBAPIError) else exc
    sqlstate = getattr(orig, "pgcode", None) or getattr(orig, "sqlstate", None)
    if sqlstate:
        return sqlstate in _TRANSIENT_SQLSTATES or sqlstate.startswith("08")
    name = type(orig).__name__
    message = str(orig).lower()
    if type(orig).__module__.startswith("sqlite3"):
        return "locked" in message or "busy" in message
    # psycopg2 raises OperationalError/InterfaceError without a SQLSTATE when the link itself broke.
    return name in ("OperationalError", "InterfaceError")


def _first_line(exc: BaseException) -> str:
    orig = exc.orig if isinstance(exc, sa.exc.DBAPIError) else exc
    text = str(orig).strip() or type(orig).__name__
    return text.splitlines()[0]


@contextlib.contextmanager
def _store_errors(what: str) -> Generator[None, None, None]:
    """Turn database errors into TransientStoreError / PermanentStoreError naming the operation."""
    import sqlite3

    import psycopg2

    try:
        yield
    except (sa.exc.DBAPIError, psycopg2.Error, sqlite3.Error) as exc:
        if _is_transient(exc):
            raise TransientStoreError(f"user store unavailable while {what}: {_first_line(exc)}") from exc
        raise PermanentStoreError(f"user store rejected {what}: {_first_line(exc)}") from exc
    except sa.exc.SQLAlchemyError as exc:
        raise PermanentStoreError(f"user store error while {what}: {exc}") from exc


def store_engine(uri: str) -> sa.Engine:
    """An engine for an Airflow-style URI: postgres:// or postgresql:// (psycopg2), or sqlite:///path."""
    scheme, sep, rest = uri.partition("://")
    if not sep:
        raise PermanentStoreError(f"user store URI {uri!r} has no scheme (postgresql:// or sqlite:///)")
    scheme = scheme.lower()
    if scheme in ("postgres", "postgresql", "postgresql+psycopg2"):
        return sa.create_engine(f"postgresql+psycopg2://{rest}", pool_pre_ping=True)
    if scheme == "sqlite":
        engine = sa.create_engine(f"sqlite://{rest}")
        _make_sqlite_transactional(engine)
        return engine
    raise PermanentStoreError(f"user store URI scheme {scheme!r} is not supported (use postgresql or sqlite)")


def _make_sqlite_transactional(engine: sa.Engine) -> None:
    # pysqlite delays BEGIN until the first write; a batch must hold the write lock from its first
    # read so that its "before" image and its changes see the same rows (SQLAlchemy's own recipe).
    @sa.event.listens_for(engine, "connect")
    def _on_connect(dbapi_connection, _record) -> None:
        dbapi_connection.isolation_level = None
        cursor = dbapi_connection.cursor()
        cursor.execute("pragma foreign_keys = on")
        cursor.execute("pragma busy_timeout = 30000")
        cursor.close()

    @sa.event.listens_for(engine, "begin")
    def _on_begin(connection) -> None:
        connection.exec_driver_sql("begin immediate")


def engine_from_connection(conn_id: str = DEFAULT_CONN_ID) -> sa.Engine:
    """The store engine for an Airflow connection of type postgres or sqlite."""
    from airflow.sdk import BaseHook

    conn = BaseHook.get_connection(conn_id)
    if conn.conn_type in ("postgres", "postgresql"):
        url = sa.URL.create(
            "postgresql+psycopg2",
            username=conn.login or None,
            password=conn.password or None,
            host=conn.host or None,
            port=conn.port or None,
            database=conn.schema or None,
        )
        return sa.create_engine(url, pool_pre_ping=True)
    if conn.conn_type == "sqlite":
        # Airflow keeps `sqlite:////abs/path` in `schema` and a quoted `sqlite://%2Fabs%2Fpath` in `host`.
        path = conn.host or conn.schema
        if not path:
            raise PermanentStoreError(f"connection {conn_id!r}: a sqlite connection needs a file path")
        return store_engine(f"sqlite:///{path}")
    raise PermanentStoreError(
        f"connection {conn_id!r} has type {conn.conn_type!r}; the user store must be postgres or sqlite"
    )


def ensure_schema(engine: sa.Engine) -> None:
    """Create the store tables (users, user_communities, push progress) where they are missing."""
    with _store_errors("creating the store tables"), engine.begin() as conn:
        if _is_postgres(conn):
            # Two schools' first pushes may start together; only one may create the tables.
            conn.exec_driver_sql("select pg_advisory_xact_lock(hashtext('sisbridge.userstore.schema'))")
        metadata.create_all(conn)


def _normalize(value: str | None) -> str | None:
    """Emails and logins are trimmed and lowercased wherever they are stored or compared."""
    return normalize.key("email", value)


def _normalize_id(school: SchoolConfig, value: str) -> str:
    return normalize.key(school.identifier, value)


def _is_postgres(conn: sa.Connection | sa.Engine) -> bool:
    return conn.dialect.name == "postgresql"


_COPY_SPECIAL = re.compile(r"[\\\t\n\r]")
_COPY_ESCAPES = {"\\": "\\\\", "\t": "\\t", "\n": "\\n", "\r": "\\r"}


def _copy_text(value) -> str:
    """One field in PostgreSQL's COPY text format."""
    if value is None:
        return "\\N"
    if value is True or value is False:
        return "t" if value else "f"
    if isinstance(value, datetime):
        return value.strftime(_TIMESTAMP_FORMAT)
    text = value if isinstance(value, str) else str(value)
    return _COPY_SPECIAL.sub(lambda match: _COPY_ESCAPES[match.group()], text)


def _stage(conn: sa.Connection, table: str, rows: Sequence[tuple]) -> None:
    """Create a session-private staging table and fill it: COPY on PostgreSQL, executemany on SQLite."""
    columns = _STAGE_COLUMNS[table]
    column_ddl = ", ".join(f"{name} {kind}" for name, kind in columns)
    if _is_postgres(conn):
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
                tuple(v.strftime(_TIMESTAMP_FORMAT) if isinstance(v, datetime) else v for v in row)
                for row in rows
            ]
            conn.exec_driver_sql(f"insert into {table} values ({placeholders})", sqlite_rows)


def _params(school_id: str, now: datetime) -> dict:
    return {"school": school_id, "now": now}


def _text(sql: str) -> sa.TextClause:
    clause = sa.text(sql)
    if ":now" in sql:
        clause = clause.bindparams(sa.bindparam("now", type_=sa.DateTime()))
    return clause


# Every statement below is scoped with `school_id = :school`: a push never touches another school.
# `users_stage` is the staged users of the statement (a push's target, or a rollback's before image)
# and `present` its column saying whether the user should exist afterwards.
_MEMBERSHIPS_DIFFER = f"""
    exists (
        select 1 from {_STAGE_MEMBERS} m
        where m.external_id = s.external_id
          and not exists (
              select 1 from user_communities c
              where c.school_id = :school and c.external_id = m.external_id
                and c.community_group = m.community_group and c.community = m.community))
    or exists (
        select 1 from user_communities c
        where c.school_id = :school and c.external_id = s.external_id
          and not exists (
              select 1 from {_STAGE_MEMBERS} m
              where m.external_id = c.external_id
                and m.community_group = c.community_group and m.community = c.community))
"""

_FIELDS_DIFFER = " or ".join(f"users.{field} is distinct from s.{field}" for field in SIS_FIELDS)

# The opt-out rule: customized preferences are never touched, a yes flag opts out, nothing opts in.
_OPT_OUT_RULE = """
    case
        when users.email_prefs_customized then users.email_opt_out
        when s.file_opt_out then true
        else users.email_opt_out
    end
"""

_UPDATE_USERS = f"""
update users set
    {", ".join(f"{field} = s.{field}" for field in SIS_FIELDS)},
    email_opt_out = {_OPT_OUT_RULE},
    updated_at = :now
from {_STAGE_USERS} as s
where users.school_id = :school
  and users.external_id = s.external_id
  and s.in_target
  and (
      {_FIELDS_DIFFER}
      or (s.file_opt_out and not users.email_opt_out and not users.email_prefs_customized)
      or {_MEMBERSHIPS_DIFFER}
  )
"""

# A new user's opt-out is the file's flag; `email_prefs_customized` is left to its default.
_INSERT_USERS = f"""
insert into users (school_id, external_id, {", ".join(SIS_FIELDS)}, email_opt_out, created_at, updated_at)
select :school, s.external_id, {", ".join(f"s.{field}" for field in SIS_FIELDS)},
       coalesce(s.file_opt_out, s.target_opt_out), :now, :now
from {_STAGE_USERS} as s
where s.in_target
on conflict (school_id, external_id) do nothing
"""


def _delete_stale_memberships(users_stage: str, *, postgres: bool) -> str:
    # On PostgreSQL a join with the staged users (one row per user, indexed on external_id) lets
    # either side drive the delete through an index; SQLite has no DELETE ... USING. A DISTINCT
    # subquery here has no index: for a school new to the store, whose memberships the planner
    # estimates at none, it was rescanned for every membership of the batches before (O(n^2)).
    scope = (
        f"""using {users_stage} as staged
    where user_communities.school_id = :school
      and user_communities.external_id = staged.external_id"""
        if postgres
        else f"""where school_id = :school
      and external_id in (select external_id from {users_stage})"""
    )
    return f"""
    delete from user_communities
    {scope}
      and not exists (
          select 1 from {_STAGE_MEMBERS} m
          where m.external_id = user_communities.external_id
            and m.community_group = user_communities.community_group
            and m.community = user_communities.community)
    """


def _delete_users(users_stage: str, present: str) -> str:
    return f"""
    delete from users
    where school_id = :school
      and external_id in (select external_id from {users_stage} where not {present})
    """


def _insert_memberships(users_stage: str, present: str) -> str:
    return f"""
    insert into user_communities (school_id, external_id, community_group, community)
    select :school, m.external_id, m.community_group, m.community
    from {_STAGE_MEMBERS} as m
    where m.external_id in (select external_id from {users_stage} where {present})
    on conflict do nothing
    """


def _read_before(conn: sa.Connection, school_id: str, stage: str) -> tuple[dict, dict]:
    """The store rows and memberships of the staged users, locked until the transaction ends."""
    staged = sa.select(sa.table(stage, sa.column("external_id")).c.external_id)
    query = sa.select(users).where(users.c.school_id == school_id, users.c.external_id.in_(staged))
    if _is_postgres(conn):
        query = query.with_for_update()
    rows = {row.external_id: row._asdict() for row in conn.execute(query)}
    members: dict[str, list] = {}
    query = (
        sa.select(
            user_communities.c.external_id, user_communities.c.community_group, user_communities.c.community
        )
        .where(user_communities.c.school_id == school_id, user_communities.c.external_id.in_(staged))
        .order_by(
            user_communities.c.external_id, user_communities.c.community_group, user_communities.c.community
        )
    )
    for external_id, group, community in conn.execute(query):
        members.setdefault(external_id, []).append([group, community])
    return rows, members


def _ensure_warehouse_tables(con) -> None:
    con.execute(_WAREHOUSE_SCHEMA)


def _require_change_set(con) -> None:
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


def _stored_result(con, run_id: str) -> PushResult | None:
    row = con.execute(
        """
        select creates, updates, reactivations, deactivations, deletes, opt_outs, batches
        from audit.push_runs where run_id = ?
        """,
        [run_id],
    ).fetchone()
    return None if row is None else PushResult(*row)


def _done_batches(engine: sa.Engine, school_id: str, run_id: str) -> dict[int, int]:
    query = sa.select(push_batches.c.batch_no, push_batches.c.batch_size).where(
        push_batches.c.school_id == school_id, push_batches.c.run_id == run_id
    )
    with _store_errors("reading the push progress"), engine.connect() as conn:
        return dict(conn.execute(query).all())


# A push refreshes the store's statistics when the planner undercounts the school's users by more
# than this factor (and the school has at least _STALE_MIN_USERS users).
_STALE_FACTOR = 10
_STALE_MIN_USERS = 10_000


def _refresh_stale_statistics(engine: sa.Engine, school_id: str, applied_users: int) -> bool:
    """ANALYZE the store tables if their statistics miss most of the school's users; True if it did.

    `applied_users` is the size of the school's applied baseline, which is what the store holds for
    it (counting the store instead would read all of a large school's rows at every push).
    Statistics taken before a school's first push count its users as a handful. With those, the
    planner drives a batch's statements from the school's stored users instead of the staged ones:
    every batch reads all of the school's users and memberships (a 1M-user week-2 push took 23 s
    instead of 6 s). Autovacuum catches up eventually; a push cannot rely on that.
    """
    if applied_users < _STALE_MIN_USERS:
        return False
    with _store_errors("checking the store's statistics"), engine.begin() as conn:
        if not _is_postgres(conn):
            return False
        plan = conn.execute(
            sa.text("explain (format json) select 1 from users where school_id = :school"),
            {"school": school_id},
        ).scalar_one()
        plan = json.loads(plan) if isinstance(plan, str) else plan
        estimated = plan[0]["Plan"]["Plan Rows"]
        if estimated * _STALE_FACTOR >= applied_users:
            return False
        log.info(
            "store statistics count %s users for school %s, whose baseline has %s: analyzing the store",
            estimated,
            school_id,
            applied_users,
        )
        conn.exec_driver_sql("analyze users, user_communities")
        return True


# The push's users, cut into batches once: the store's normalized id, whether the user stays, the
# target fields (emails and logins normalized) and the file's opt-out flag. Printable ASCII normalizes
# the same in DuckDB as in Python; other values go through `_normalize` (table `_push_norm`).
_PUSH_USER_COLUMNS = tuple(name for name, _ in _STAGE_COLUMNS[_STAGE_USERS])
_PRINTABLE_ASCII = "'[ -~]*'"


def _normalized_sql(column: str, alias: str, *, lower: bool = True) -> str:
    fast = normalize.key_sql("email" if lower else "user_id", column)
    return f"coalesce({alias}.{'lowered' if lower else 'stripped'}, {fast})"


def _prepare_push(con, school: SchoolConfig, batch_size: int) -> int:
    """Number the change set's users into batches and stage their target state; returns the batch count."""
    con.execute(
        """
        create or replace temp table _push_ids as
        select external_id, ((row_number() over (order by external_id) - 1) // ?)::integer as batch_no
        from (select distinct external_id from marts.user_changes)
        """,
        [batch_size],
    )
    odd = con.execute(
        f"""
        select distinct value from (
            select i.external_id as value from _push_ids as i
            union all
            select t.email from _push_ids as i
            join intermediate.int_users_target_state as t on t.external_id = i.external_id
            union all
            select t.user_login from _push_ids as i
            join intermediate.int_users_target_state as t on t.external_id = i.external_id
        )
        where value is not null and not regexp_full_match(value, {_PRINTABLE_ASCII})
        """
    ).fetchall()
    con.execute("create or replace temp table _push_norm (raw varchar, stripped varchar, lowered varchar)")
    if odd:
        con.executemany(
            "insert into _push_norm values (?, ?, ?)",
            [(value, normalize.clean(value), _normalize(value)) for (value,) in odd],
        )
    lower_id = school.identifier in ("email", "user_login")
    con.execute(
        f"""
        create or replace temp table _push_users as
        select i.batch_no,
               {_normalized_sql("i.external_id", "ni", lower=lower_id)} as external_id,
               t.external_id is not null as in_target,
               {_normalized_sql("t.email", "ne")} as email,
               t.user_id,
               {_normalized_sql("t.user_login", "nl")} as user_login,
               t.first_name, t.last_name, t.user_type, t.graduation_year, t.status,
               t.email_opt_out as target_opt_out,
               u.is_email_opt_out as file_opt_out,
               i.external_id as warehouse_id
        from _push_ids as i
        left join intermediate.int_users_target_state as t on t.external_id = i.external_id
        left join marts.users as u on u.external_id = i.external_id
        left join _push_norm as ni on ni.raw = i.external_id
        left join _push_norm as ne on ne.raw = t.email
        left join _push_norm as nl on nl.raw = t.user_login
        order by i.batch_no, i.external_id
        """
    )
    con.execute(
        """
        create or replace temp table _push_members as
        select u.batch_no, u.external_id, m.community_group, m.community
        from _push_users as u
        join intermediate.int_memberships_target_state as m on m.external_id = u.warehouse_id
        order by all
        """
    )
    return con.execute("select coalesce(max(batch_no) + 1, 0) from _push_ids").fetchone()[0]


def _batch_query(table: str, batch_no: int) -> str:
    """The select of one batch of `_push_users` or `_push_members`, in the stage table's column order."""
    columns = _PUSH_USER_COLUMNS if table == "_push_users" else _MEMBERSHIP_COLUMNS
    # batch_no is an int from range(): safe to inline, and COPY takes no parameters.
    return f"select {', '.join(columns)} from {table} where batch_no = {int(batch_no)}"


def _duckdb_literal(path) -> str:
    return "'" + str(path).replace("'", "''") + "'"


def _export_batch(con, batch_no: int, workdir: Path) -> Path:
    """Write one batch's staged users and memberships as CSV into its own folder; returns the folder.

    Every non-null value is quoted, so an empty string stays empty and only NULL is unquoted-empty.
    The batch's workers read these files, not the session's temp tables, which no other DuckDB
    connection can see.
    """
    batch_dir = workdir / f"batch-{int(batch_no)}"
    batch_dir.mkdir()
    for source, stage in (("_push_users", _STAGE_USERS), ("_push_members", _STAGE_MEMBERS)):
        con.execute(
            f"copy ({_batch_query(source, batch_no)}) to {_duckdb_literal(batch_dir / f'{stage}.csv')} "
            "(format csv, header false, force_quote *)"
        )
    return batch_dir


def _stage_csv_sql(batch_dir: Path, table: str) -> str:
    """A read_csv of a batch's exported stage table, with the stage table's columns and types."""
    kinds = {"text": "varchar", "boolean": "boolean", "integer": "integer"}
    return _read_csv_sql(
        batch_dir / f"{table}.csv", {name: kinds[kind] for name, kind in _STAGE_COLUMNS[table]}
    )


def _stage_batch(cur, conn: sa.Connection, batch_dir: Path) -> int:
    """Stage one batch's users and memberships in the store session; returns the number of users."""
    if not _is_postgres(conn):
        rows = {
            stage: cur.execute(f"select * from {_stage_csv_sql(batch_dir, stage)}").fetchall()
            for stage in (_STAGE_USERS, _STAGE_MEMBERS)
        }
        for stage, stage_rows in rows.items():
            _stage(conn, stage, stage_rows)
        return len(rows[_STAGE_USERS])
    # Every statement of a batch is driven by its staged users through the store's primary keys. Left
    # to itself the planner hashes the whole users and user_communities tables once per batch
    # instead: linear in the school's size for every batch, and it spills with the default work_mem.
    conn.exec_driver_sql("set local enable_hashjoin = off")
    conn.exec_driver_sql("set local enable_mergejoin = off")
    # PostgreSQL reads the batch's files with COPY: no value passes through Python.
    for stage in (_STAGE_USERS, _STAGE_MEMBERS):
        _copy_into_stage(conn, stage, batch_dir / f"{stage}.csv")
    return conn.exec_driver_sql(f"select count(*) from {_STAGE_USERS}").scalar_one()


def _copy_into_stage(conn: sa.Connection, table: str, path) -> None:
    column_ddl = ", ".join(f"{name} {kind}" for name, kind in _STAGE_COLUMNS[table])
    conn.exec_driver_sql(f"create temp table {table} ({column_ddl}) on commit drop")
    cursor = conn.connection.dbapi_connection.cursor()
    try:
        with open(path, encoding="utf-8", newline="") as source:
            cursor.copy_expert(f"copy {table} from stdin (format csv)", source)
    finally:
        cursor.close()
    columns = ", ".join(name for name, _ in _STAGE_COLUMNS[table][: 1 if table == _STAGE_USERS else 3])
    conn.exec_driver_sql(f"create index on {table} ({columns})")
    # Temp tables get no statistics on their own; without them the planner guesses badly.
    conn.exec_driver_sql(f"analyze {table}")


# The before image of the staged users that exist in the store: one row per user with all its columns
# (keys sorted; timestamps in _TIMESTAMP_FORMAT) and its memberships as [[group, community], ...]. The store
# hands over plain rows and DuckDB builds the JSON: building it in PostgreSQL cost more than the batch's
# statements.
_BEFORE_JSON_COLUMNS = tuple(sorted(column.name for column in users.columns))
_TIMESTAMP_COLUMNS = ("created_at", "updated_at")
_BEFORE_USERS_FILE = "before_users.csv"
_BEFORE_MEMBERS_FILE = "before_members.csv"
# The staged users' store rows are locked and copied into a temp table in one pass, driven by the
# staged users (one row each, indexed); the before images are read from that copy, and memberships
# are looked up only for the users the store has (a school's first push is all new users). The
# lateral subquery keeps the staged users as the driving side: with a plain join the planner, whose
# statistics still count a new school's users as a handful, scanned all of the school's stored users
# for every batch (quadratic over a first push: 0.6 s a batch at 600,000 users).
_STAGE_BEFORE_USERS = "sisbridge_before_users"
_PG_LOCK_BEFORE_USERS = f"""
create temp table {_STAGE_BEFORE_USERS} on commit drop as
select u.* from {_STAGE_USERS} as s
cross join lateral (
    select * from users
    where users.school_id = :school and users.external_id = s.external_id
    for update
) as u
"""
_PG_BEFORE_USERS = f"""
select {
    ", ".join(
        f"to_char({name}, 'YYYY-MM-DD HH24:MI:SS.US')" if name in _TIMESTAMP_COLUMNS else name
        for name in _BEFORE_JSON_COLUMNS
    )
}
from {_STAGE_BEFORE_USERS}
"""
_PG_BEFORE_MEMBERS = f"""
select c.external_id, c.community_group, c.community
from {_STAGE_BEFORE_USERS} as u
join user_communities as c on c.school_id = u.school_id and c.external_id = u.external_id
"""


def _duckdb_type(column: sa.Column) -> str:
    if column.name in _TIMESTAMP_COLUMNS:
        return "varchar"  # already in _TIMESTAMP_FORMAT
    if isinstance(column.type, sa.Integer):
        return "integer"
    if isinstance(column.type, sa.Boolean):
        return "boolean"
    return "varchar"


def _csv_field(value) -> str:
    """A CSV field as PostgreSQL's COPY writes it with FORCE_QUOTE *: NULL alone is left unquoted."""
    if value is None:
        return ""
    if isinstance(value, bool):
        value = "true" if value else "false"
    elif isinstance(value, datetime):
        value = value.strftime(_TIMESTAMP_FORMAT)
    return '"' + str(value).replace('"', '""') + '"'


def _write_csv(path, rows) -> None:
    with open(path, "w", encoding="utf-8", newline="") as target:
        for row in rows:
            target.write(",".join(_csv_field(value) for value in row) + "\n")


def _read_before_to_file(conn: sa.Connection, school_id: str, batch_dir: Path) -> int:
    """Lock the staged users' store rows and write their rows and memberships as CSV into `batch_dir`.

    Returns how many of the staged users the store already has.
    """
    users_path, members_path = batch_dir / _BEFORE_USERS_FILE, batch_dir / _BEFORE_MEMBERS_FILE
    if _is_postgres(conn):
        conn.execute(sa.text(_PG_LOCK_BEFORE_USERS), {"school": school_id})
        cursor = conn.connection.dbapi_connection.cursor()
        try:
            for query, path in ((_PG_BEFORE_USERS, users_path), (_PG_BEFORE_MEMBERS, members_path)):
                with open(path, "w", encoding="utf-8", newline="") as target:
                    cursor.copy_expert(f"copy ({query}) to stdout (format csv, force_quote *)", target)
        finally:
            cursor.close()
        return conn.exec_driver_sql(f"select count(*) from {_STAGE_BEFORE_USERS}").scalar_one()
    rows, members = _read_before(conn, school_id, _STAGE_USERS)
    _write_csv(users_path, ([row[name] for name in _BEFORE_JSON_COLUMNS] for row in rows.values()))
    _write_csv(
        members_path,
        (
            (external_id, group, community)
            for external_id, pairs in members.items()
            for group, community in pairs
        ),
    )
    return len(rows)


def _read_csv_sql(path, columns: dict[str, str]) -> str:
    column_types = ", ".join(f"'{name}': '{kind}'" for name, kind in columns.items())
    return f"""read_csv(
                {_duckdb_literal(path)}, columns = {{{column_types}}}, header = false,
                auto_detect = false, delim = ',', quote = '"', escape = '"', new_line = '\\n',
                allow_quoted_nulls = false
            )"""


def _save_before(cur, run_id: str, batch_no: int, batch_dir: Path, at) -> None:
    """Keep the batch's prior store state in the warehouse before the batch commits (for rollback).

    Every user of the batch gets a row; `user_row` is null for a user the store did not have.
    """
    user_columns = {column.name: _duckdb_type(column) for column in users.columns}
    before_users = _read_csv_sql(
        batch_dir / _BEFORE_USERS_FILE, {name: user_columns[name] for name in _BEFORE_JSON_COLUMNS}
    )
    before_members = _read_csv_sql(
        batch_dir / _BEFORE_MEMBERS_FILE,
        {"external_id": "varchar", "community_group": "varchar", "community": "varchar"},
    )
    user_row = "json_object(" + ", ".join(f"'{name}', b.{name}" for name in _BEFORE_JSON_COLUMNS) + ")"
    cur.execute("begin")
    try:
        cur.execute("delete from audit.applied_before where run_id = ? and batch_no = ?", [run_id, batch_no])
        cur.execute(
            f"""
            insert into audit.applied_before
            select ?, ?, s.external_id,
                   case when b.external_id is not null then {user_row} end,
                   coalesce(m.memberships, '[]')::json, ?
            from {_stage_csv_sql(batch_dir, _STAGE_USERS)} as s
            left join {before_users} as b on b.external_id = s.external_id
            left join (
                select external_id,
                       to_json(list([community_group, community] order by community_group, community))
                           as memberships
                from {before_members}
                group by external_id
            ) as m on m.external_id = s.external_id
            order by s.external_id
            """,
            [run_id, batch_no, at],
        )
        cur.execute("commit")
    except BaseException:
        cur.execute("rollback")
        raise


def _apply_batch(
    cur, engine, school: SchoolConfig, run_id: str, batch_no: int, batch_size: int, batch_dir: Path
) -> None:
    """Set one batch of users and their memberships to the target state, in one store transaction.

    `cur` is a DuckDB connection to the school's warehouse (the before images go there) and
    `batch_dir` the batch's exported stage files.
    """
    now = utcnow()
    params = _params(school.school_id, now)
    with engine.begin() as conn:
        count = _stage_batch(cur, conn, batch_dir)
        existing = _read_before_to_file(conn, school.school_id, batch_dir)
        _save_before(cur, run_id, batch_no, batch_dir, now)
        if existing:
            # Users first, while the old memberships are still there to compare against. A batch of
            # new users only (a school's first push) has nothing to update or delete: each of these
            # statements would probe the store's indexes once per staged user and find nothing.
            conn.execute(_text(_UPDATE_USERS), params)
            conn.execute(_text(_delete_stale_memberships(_STAGE_USERS, postgres=_is_postgres(conn))), params)
            conn.execute(_text(_delete_users(_STAGE_USERS, "in_target")), params)
        conn.execute(_text(_INSERT_USERS), params)
        conn.execute(_text(_insert_memberships(_STAGE_USERS, "in_target")), params)
        _record_batch(conn, school.school_id, run_id, batch_no, batch_size, count, now)


def _record_batch(conn, school_id: str, run_id: str, batch_no: int, batch_size: int, count: int, at) -> None:
    conn.execute(
        push_batches.insert().values(
            school_id=school_id,
            run_id=run_id,
            batch_no=batch_no,
            batch_size=batch_size,
            users_in_batch=count,
            applied_at=at,
        )
    )


def push(
    con,
    engine: sa.Engine,
    school: SchoolConfig,
    run_id: str,
    *,
    batch_size: int = DEFAULT_BATCH_SIZE,
    workers: int | None = None,
) -> PushResult:
    """Apply the run's change set to the store in batches; then advance the baseline and the audit.

    `workers` batches are applied at a time, each in its own store transaction (default
    `push_workers()`; always one on SQLite, which has one writer).
    """
    if batch_size < 1:
        raise ValueError("batch_size must be at least 1")
    workers = push_workers() if workers is None else workers
    if workers < 1:
        raise ValueError("workers must be at least 1")
    _ensure_warehouse_tables(con)
    done_result = _stored_result(con, run_id)
    if done_result is not None:
        return done_result
    _require_change_set(con)
    ensure_schema(engine)
    if not _is_postgres(engine):
        workers = 1
    done = _done_batches(engine, school.school_id, run_id)
    if done:
        # A retry must cut the change set exactly as the first attempt did.
        batch_size = next(iter(done.values()))
    else:
        # No batch committed: before images of an earlier attempt were never applied.
        con.execute("delete from audit.applied_before where run_id = ?", [run_id])
    phases: dict[str, float] = {}
    try:
        with _timed(phases, "prepare"):
            batches = _prepare_push(con, school, batch_size)
        if batches > len(done):
            with _timed(phases, "statistics"):
                applied_users = con.execute("select count(*) from state.applied_users").fetchone()[0]
                _refresh_stale_statistics(engine, school.school_id, applied_users)
        with tempfile.TemporaryDirectory(prefix="sisbridge-push-") as workdir:
            with _timed(phases, "export"):
                batch_dirs = {
                    batch_no: _export_batch(con, batch_no, Path(workdir))
                    for batch_no in range(batches)
                    if batch_no not in done
                }
            with _timed(phases, f"{len(batch_dirs)} batches"):
                _apply_batches(con, engine, school, run_id, batches, batch_size, batch_dirs, workers)
        with _timed(phases, "finish"):
            result = _finish_push(con, school, run_id, batch_size, batches)
        log.info(
            "push of run %s took %s",
            run_id,
            ", ".join(f"{phase} {seconds:.2f} s" for phase, seconds in phases.items()),
        )
        return result
    finally:
        for table in ("_push_ids", "_push_norm", "_push_users", "_push_members", "_push_changed"):
            con.execute(f"drop table if exists temp.{table}")


@contextlib.contextmanager
def _timed(phases: dict[str, float], phase: str) -> Generator[None, None, None]:
    """Add the wall time of the block to phases[phase] (for the push's log line)."""
    started = time.perf_counter()
    try:
        yield
    finally:
        phases[phase] = phases.get(phase, 0.0) + time.perf_counter() - started


def _apply_batches(
    con,
    engine: sa.Engine,
    school: SchoolConfig,
    run_id: str,
    batches: int,
    batch_size: int,
    batch_dirs: dict[int, Path],
    workers: int,
) -> None:
    """Apply the given batches in order, `workers` at a time; raise the first failed batch's error.

    Batches touch disjoint users, and each commits on its own with its row in the batch table, so
    their order does not matter. After a failure no further batch starts; the ones already running
    finish (commit or roll back), and a retry applies whatever did not commit.
    """

    def apply(cur, batch_no: int) -> None:
        with _store_errors(f"applying batch {batch_no + 1} of {batches} of run {run_id}"):
            _apply_batch(cur, engine, school, run_id, batch_no, batch_size, batch_dirs[batch_no])

    order = sorted(batch_dirs)
    if workers == 1 or len(order) < 2:
        for batch_no in order:
            apply(con, batch_no)
        return
    pending = iter(order)
    taking = threading.Lock()
    failed = threading.Event()
    errors: dict[int, BaseException] = {}

    def work(cur) -> None:
        try:
            while not failed.is_set():
                with taking:
                    batch_no = next(pending, None)
                if batch_no is None:
                    return
                try:
                    apply(cur, batch_no)
                except BaseException as exc:
                    errors[batch_no] = exc
                    failed.set()
        finally:
            cur.close()

    # One DuckDB connection per worker (a connection is not shared between threads); the store
    # connections come from the engine's pool, one per worker.
    threads = [
        threading.Thread(target=work, args=(con.cursor(),), name=f"sisbridge-push-{n}", daemon=True)
        for n in range(min(workers, len(order)))
    ]
    try:
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
    finally:
        failed.set()
    if errors:
        first = min(errors)
        for batch_no, exc in sorted(errors.items()):
            if batch_no != first:
                log.warning("batch %d of run %s also failed: %s", batch_no + 1, run_id, _first_line(exc))
        raise errors[first]


def _finish_push(con, school: SchoolConfig, run_id: str, batch_size: int, batches: int) -> PushResult:
    """Advance the baseline and write the audit, in one warehouse transaction.

    Only the users whose baseline row or memberships differ from the target are rewritten (stamped
    with this run's id), and their previous baseline rows are kept in `audit.push_baseline_*`.
    """
    now = utcnow()
    users_cols = ", ".join(_STATE_USER_COLUMNS)
    members_cols = ", ".join(_MEMBERSHIP_COLUMNS)
    con.execute("begin")
    try:
        # The users whose baseline row or memberships differ from the target, in either direction.
        # `is distinct from` compares NULLs as equal; one join per table, keyed on the user.
        differs = " or ".join(f"a.{column} is distinct from t.{column}" for column in _STATE_USER_COLUMNS[1:])
        con.execute(
            f"""
            create or replace temp table _push_changed as
            select coalesce(a.external_id, t.external_id) as external_id
            from state.applied_users as a
            full join intermediate.int_users_target_state as t on a.external_id = t.external_id
            where a.external_id is null or t.external_id is null or {differs}
            union
            select coalesce(a.external_id, t.external_id)
            from state.applied_memberships as a
            full join intermediate.int_memberships_target_state as t
                on a.external_id = t.external_id
                and a.community_group = t.community_group
                and a.community = t.community
            where a.external_id is null or t.external_id is null
            """
        )
        for table, columns in (
            ("users", f"{users_cols}, applied_run_id"),
            ("memberships", members_cols),
        ):
            con.execute(f"delete from audit.push_baseline_{table} where run_id = ?", [run_id])
            con.execute(
                f"""
                insert into audit.push_baseline_{table} (run_id, {columns})
                select ?, {columns} from state.applied_{table}
                where external_id in (select external_id from _push_changed)
                """,
                [run_id],
            )
        _set_baseline_rows(
            con,
            "_push_changed",
            f"""
            select {users_cols}, ? as applied_run_id from intermediate.int_users_target_state
            where external_id in (select external_id from _push_changed)
            """,
            [run_id],
            f"""
            select distinct {members_cols} from intermediate.int_memberships_target_state
            where external_id in (select external_id from _push_changed)
            """,
        )
        con.execute("delete from audit.applied_changes where run_id = ?", [run_id])
        # An opt-out the store did not take (customized, or already opted out) was not applied.
        con.execute(
            """
            insert into audit.applied_changes
                (run_id, external_id, change_type, field, old_value, new_value, applied_at)
            select ?, c.external_id, c.change_type, c.field, c.old_value, c.new_value, ?
            from marts.user_changes as c
            left join audit.applied_before as b
                on b.run_id = ? and b.external_id = c.external_id
            where c.change_type <> 'opt_out'
               or b.user_row is null
               or not (coalesce((b.user_row->>'email_prefs_customized')::boolean, false)
                       or coalesce((b.user_row->>'email_opt_out')::boolean, false))
            order by c.change_id
            """,
            [run_id, now, run_id],
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
                school.school_id,
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
        con.execute("commit")
    except BaseException:
        con.execute("rollback")
        raise
    return result


def _set_baseline_rows(
    con, ids: str, users_query: str, users_params: list, members_query: str, members_params=()
) -> None:
    """Make the baseline of the users in temp table `ids` equal the given rows (none: not there).

    Rows are updated in place, and only the rows that go away are deleted: a large school's weekly
    change then rewrites a tenth of the baseline, not all of it.
    """
    con.execute(f"create or replace temp table _baseline_users as {users_query}", users_params)
    con.execute(f"create or replace temp table _baseline_members as {members_query}", list(members_params))
    columns = (*_STATE_USER_COLUMNS, "applied_run_id")
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
    members = ", ".join(_MEMBERSHIP_COLUMNS)
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


def _refuse_unless_rollable(con, school: SchoolConfig, run_id: str) -> None:
    pushed = con.execute(
        "select completed_at from audit.push_runs where run_id = ? and school_id = ?",
        [run_id, school.school_id],
    ).fetchone()
    if pushed is None:
        raise RollbackRefused(f"run {run_id} of {school.school_id} was never pushed to the store")
    run = get_run(con, run_id)
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


_RESTORE_UPDATE = f"""
update users set
    {", ".join(f"{field} = s.{field}" for field in SIS_FIELDS)},
    email_opt_out = case when users.email_prefs_customized then users.email_opt_out else s.email_opt_out end,
    created_at = s.created_at,
    updated_at = :now
from {_STAGE_BEFORE} as s
where users.school_id = :school
  and users.external_id = s.external_id
  and s.existed
  and (
      {_FIELDS_DIFFER}
      or users.created_at is distinct from s.created_at
      or (users.email_opt_out is distinct from s.email_opt_out and not users.email_prefs_customized)
      or {_MEMBERSHIPS_DIFFER}
  )
"""

# Recreating a user the run deleted restores the row as it was, platform flags included.
_RESTORE_INSERT = f"""
insert into users (school_id, external_id, {", ".join(SIS_FIELDS)}, email_opt_out,
                   email_prefs_customized, created_at, updated_at)
select :school, s.external_id, {", ".join(f"s.{field}" for field in SIS_FIELDS)}, s.email_opt_out,
       s.email_prefs_customized, s.created_at, :now
from {_STAGE_BEFORE} as s
where s.existed
on conflict (school_id, external_id) do nothing
"""


def rollback(
    con, engine: sa.Engine, school: SchoolConfig, run_id: str, rollback_run_id: str | None = None
) -> dict:
    """Restore the store and the baseline to their state before `run_id`; refuse if a later run applied.

    The rollback gets its own `audit.sync_runs` row (default id `rollback__<run_id>`).
    """
    rollback_run_id = rollback_run_id or f"rollback__{run_id}"
    _ensure_warehouse_tables(con)
    _refuse_unless_rollable(con, school, run_id)
    started_at = utcnow()
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
        if row is None:
            stage_before.append((external_id, False, *([None] * 11)))
        else:
            created_at = datetime.strptime(row["created_at"], _TIMESTAMP_FORMAT)
            values = [row[field] for field in (*SIS_FIELDS, "email_opt_out", "email_prefs_customized")]
            stage_before.append((external_id, True, *values, created_at))
        stage_members.extend((external_id, group, community) for group, community in json.loads(memberships))
    params = _params(school.school_id, started_at)
    with _store_errors(f"rolling back run {run_id}"), engine.begin() as conn:
        _stage(conn, _STAGE_BEFORE, stage_before)
        _stage(conn, _STAGE_MEMBERS, stage_members)
        # Lock the rows; the before image of a rollback is not kept (it restores a known state).
        _read_before(conn, school.school_id, _STAGE_BEFORE)
        restored = conn.execute(_text(_RESTORE_UPDATE), params).rowcount
        conn.execute(_text(_delete_stale_memberships(_STAGE_BEFORE, postgres=_is_postgres(conn))), params)
        removed = conn.execute(_text(_delete_users(_STAGE_BEFORE, "existed")), params).rowcount
        recreated = conn.execute(_text(_RESTORE_INSERT), params).rowcount
        conn.execute(_text(_insert_memberships(_STAGE_BEFORE, "existed")), params)
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
    con.execute("begin")
    try:
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
        _set_baseline_rows(
            con,
            "_rollback_ids",
            f"""
            select {", ".join(_STATE_USER_COLUMNS)}, applied_run_id
            from audit.push_baseline_users where run_id = ?
            """,
            [run_id],
            f"""
            select distinct {", ".join(_MEMBERSHIP_COLUMNS)}
            from audit.push_baseline_memberships where run_id = ?
            """,
            [run_id],
        )
        con.execute("drop table temp._rollback_ids")
        upsert_run(con, run_id, school_id=school.school_id, status="rolled_back")
        upsert_run(
            con,
            rollback_run_id,
            school_id=school.school_id,
            status="succeeded",
            status_reason=f"rollback of run {run_id}",
            started_at=started_at,
            finished_at=utcnow(),
            details={"rollback_of": run_id, **summary},
        )
        con.execute("commit")
    except BaseException:
        con.execute("rollback")
        raise
