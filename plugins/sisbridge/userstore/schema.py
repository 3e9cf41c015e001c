"""The store's tables, its engine, and the errors of its operations.

`users` is the only list of user columns in Python: the fields the sync owns (`SIS_FIELDS`), the
applied baseline's columns (`STATE_USER_COLUMNS`, which `sisbridge.audit` builds its table from) and the
before images are all read off it. dbt keeps its own copy in the project var `user_columns`; a test
checks that the two agree.
"""

from __future__ import annotations

import contextlib
import json
import logging
from collections.abc import Generator

import sqlalchemy as sa

log = logging.getLogger(__name__)

DEFAULT_CONN_ID = "uconnect_user_store"

metadata = sa.MetaData()


def _sis(name: str, kind, **kwargs) -> sa.Column:
    """A column the sync owns: written from the school's file, kept in the applied baseline."""
    return sa.Column(name, kind, info={"sis": True}, **kwargs)


users = sa.Table(
    "users",
    metadata,
    sa.Column("school_id", sa.Text, primary_key=True),
    sa.Column("external_id", sa.Text, primary_key=True),
    _sis("email", sa.Text),
    _sis("user_id", sa.Text),
    _sis("user_login", sa.Text),
    _sis("first_name", sa.Text),
    _sis("last_name", sa.Text),
    _sis("user_type", sa.Text),
    _sis("graduation_year", sa.Integer),
    _sis("status", sa.Text, nullable=False),
    # Written by the sync under the preference rule (statements.py), and kept in the baseline.
    sa.Column("email_opt_out", sa.Boolean, nullable=False, server_default=sa.false(), info={"state": True}),
    # Belongs to the platform: the sync never writes it.
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

# The store rows a batch is about to change, written in the batch's own transaction: a batch and its
# before images commit together. The push moves them into the warehouse's `audit.applied_before_*`
# once every batch is done, and then deletes them here. They have no key: they hold only the images
# of pushes in progress, read whole by run, and a key's index cost a fifth of a batch's time
# (`_drop_before_image_keys` takes it off the tables of stores made before).
push_before_users = sa.Table(
    "sisbridge_push_before_users",
    metadata,
    sa.Column("run_id", sa.Text, nullable=False),
    sa.Column("batch_no", sa.Integer, nullable=False),
    *(sa.Column(c.name, c.type, nullable=c.nullable and not c.primary_key) for c in users.columns),
)
push_before_memberships = sa.Table(
    "sisbridge_push_before_memberships",
    metadata,
    sa.Column("run_id", sa.Text, nullable=False),
    *(sa.Column(c.name, c.type, nullable=False) for c in user_communities.columns),
)
# The users whose memberships a batch changed: `sisbridge_push_before_memberships` holds all the
# memberships they had (none, for a user without). Memberships a batch leaves as they are are not
# copied, and a rollback leaves them alone.
push_before_member_users = sa.Table(
    "sisbridge_push_before_member_users",
    metadata,
    sa.Column("run_id", sa.Text, nullable=False),
    sa.Column("batch_no", sa.Integer, nullable=False),
    sa.Column("school_id", sa.Text, nullable=False),
    sa.Column("external_id", sa.Text, nullable=False),
)

# Columns the sync owns; `email_prefs_customized` belongs to the platform and is never written.
SIS_FIELDS = tuple(column.name for column in users.columns if column.info.get("sis"))
# The applied baseline's user columns (`state.applied_users`, less `applied_run_id`).
STATE_USER_COLUMNS = (
    "external_id",
    *(column.name for column in users.columns if column.info.get("sis") or column.info.get("state")),
)
MEMBERSHIP_COLUMNS = ("external_id", "community_group", "community")
# The push's target, as dbt builds it: the users and memberships the store must hold after the push.
TARGET_MEMBERSHIPS = "marts.community_memberships"
# dbt names the opt-out as it names every boolean (`is_email_opt_out`); the store and the applied
# baseline keep the contract's `email_opt_out`. This query is where the two names meet: the push reads
# `marts.users` only through it, as the baseline's columns plus `file_opt_out`, the file's own flag
# (null for a user the file does not list) that the preference rule applies to the store.
_MART_NAMES = {"email_opt_out": "is_email_opt_out"}
TARGET_USERS = (
    "select "
    + ", ".join(
        f"{_MART_NAMES[name]} as {name}" if name in _MART_NAMES else name for name in STATE_USER_COLUMNS
    )
    + ", is_email_opt_out_requested as file_opt_out from marts.users"
)
# A user row's columns as the warehouse keeps its before image (`audit.applied_before_users`): all
# but the key, which the school's own warehouse does not need.
BEFORE_IMAGE_COLUMNS = tuple(column.name for column in users.columns if not column.primary_key)
TIMESTAMP_COLUMNS = tuple(column.name for column in users.columns if isinstance(column.type, sa.DateTime))
TIMESTAMP_FORMAT = "%Y-%m-%d %H:%M:%S.%f"


def sql_type(column: sa.Column) -> str:
    """The column's type in plain SQL (DuckDB and PostgreSQL spell these alike)."""
    if isinstance(column.type, sa.Boolean):
        return "boolean"
    if isinstance(column.type, sa.Integer):
        return "integer"
    if isinstance(column.type, sa.DateTime):
        return "timestamp"
    return "varchar"


def state_users_ddl(table: str) -> str:
    """DuckDB DDL of the applied baseline's users table, built from `users`."""
    columns = [
        f"{name} {sql_type(users.c[name])}{'' if users.c[name].nullable else ' not null'}"
        for name in STATE_USER_COLUMNS
    ]
    body = ",\n    ".join([*columns, "applied_run_id varchar not null"])
    return f"create table if not exists {table} (\n    {body}\n);"


# SQLSTATEs after which the same statement can succeed later: serialization failure, deadlock,
# lock timeout, too many connections, admin/crash shutdown, cannot connect now.
_TRANSIENT_SQLSTATES = {"40001", "40P01", "55P03", "53300", "57P01", "57P02", "57P03"}


class StoreError(RuntimeError):
    """A user store operation failed; the message says which one and why."""


class TransientStoreError(StoreError):
    """The store was unreachable or busy; retrying the same push later is safe."""


class PermanentStoreError(StoreError):
    """Retrying will not help (bad schema, missing change set, constraint violation)."""


# DuckDB's postgres and sqlite extensions report a store they cannot reach with these words.
_DUCKDB_TRANSIENT = (
    "unable to connect",
    "connection refused",
    "server closed the connection",
    "terminating connection",
    "connection to server",
    "no connection to the server",
    "database is locked",
    "database is busy",
)


def _is_transient(exc: BaseException) -> bool:
    import duckdb

    if isinstance(exc, sa.exc.DBAPIError) and exc.connection_invalidated:
        return True
    orig = exc.orig if isinstance(exc, sa.exc.DBAPIError) else exc
    if isinstance(orig, duckdb.Error):
        message = str(orig).lower()
        return any(words in message for words in _DUCKDB_TRANSIENT)
    sqlstate = getattr(orig, "pgcode", None) or getattr(orig, "sqlstate", None)
    if sqlstate:
        return sqlstate in _TRANSIENT_SQLSTATES or sqlstate.startswith("08")
    name = type(orig).__name__
    message = str(orig).lower()
    if type(orig).__module__.startswith("sqlite3"):
        return "locked" in message or "busy" in message
    # psycopg2 raises OperationalError/InterfaceError without a SQLSTATE when the link itself broke.
    return name in ("OperationalError", "InterfaceError")


def first_line(exc: BaseException) -> str:
    orig = exc.orig if isinstance(exc, sa.exc.DBAPIError) else exc
    text = str(orig).strip() or type(orig).__name__
    return text.splitlines()[0]


@contextlib.contextmanager
def store_errors(what: str) -> Generator[None, None, None]:
    """Turn database errors into TransientStoreError / PermanentStoreError naming the operation.

    DuckDB's errors count only where DuckDB talks to the store (its postgres or sqlite extension).
    """
    import sqlite3

    import duckdb
    import psycopg2

    try:
        yield
    except (sa.exc.DBAPIError, psycopg2.Error, sqlite3.Error, duckdb.Error) as exc:
        if _is_transient(exc):
            raise TransientStoreError(f"user store unavailable while {what}: {first_line(exc)}") from exc
        raise PermanentStoreError(f"user store rejected {what}: {first_line(exc)}") from exc
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


def is_postgres(conn: sa.Connection | sa.Engine) -> bool:
    return conn.dialect.name == "postgresql"


def ensure_schema(engine: sa.Engine) -> None:
    """Create the store tables (users, user_communities, push progress) where they are missing."""
    with store_errors("creating the store tables"), engine.begin() as conn:
        if is_postgres(conn):
            # Two schools' first pushes may start together; only one may create the tables.
            conn.exec_driver_sql("select pg_advisory_xact_lock(hashtext('sisbridge.userstore.schema'))")
        metadata.create_all(conn)
        if is_postgres(conn):
            _drop_before_image_keys(conn)


def _drop_before_image_keys(conn: sa.Connection) -> None:
    """Take the primary keys off before-image tables made by earlier versions (PostgreSQL; once)."""
    keys = conn.execute(
        sa.text(
            """
            select conrelid::regclass::text, conname from pg_constraint
            where contype = 'p' and conrelid in (to_regclass(:users), to_regclass(:memberships))
            """
        ),
        {"users": push_before_users.name, "memberships": push_before_memberships.name},
    ).all()
    for table, key in keys:
        conn.exec_driver_sql(f'alter table {table} drop constraint "{key}"')


# A push refreshes the store's statistics when the planner undercounts the school's users by more
# than this factor (and the school has at least _STALE_MIN_USERS users).
_STALE_FACTOR = 10
_STALE_MIN_USERS = 10_000


def refresh_stale_statistics(engine: sa.Engine, school_id: str, applied_users: int) -> bool:
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
    with store_errors("checking the store's statistics"), engine.begin() as conn:
        if not is_postgres(conn):
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
