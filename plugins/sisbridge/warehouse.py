"""The warehouse: one DuckLake per school (docs/architecture.md, "The warehouse").

A DuckLake is a SQL catalog database plus Parquet data files. In production the catalog is the
PostgreSQL database of the Airflow connection `sisbridge_lake` (each school has its own
`METADATA_SCHEMA`, `school_<id>`) and the data lives under its `data_path` extra (each school under
`schools/<id>/`), in S3 when the path is `s3://…` with the credentials of its `aws_conn_id`. Without
that connection each school gets an embedded lake under `$SISBRIDGE_HOME/lake/schools/<id>/`: a
SQLite catalog (in WAL mode, so that a reader never makes a writer's commit fail) with its data
beside it.

`connect(school_id)` gives a DuckDB connection in which the lake is attached as `lake` and is the
default database, so `audit.sync_runs`, `marts.users` or `snapshots.users_snapshot` resolve as
written. This module is a lower floor: it imports nothing of sisbridge but config and extensions.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import sqlite3
import threading
from dataclasses import asdict, dataclass, replace
from pathlib import Path

import duckdb

from sisbridge import extensions
from sisbridge.config import safe_component, sisbridge_home, warehouse_memory_limit

log = logging.getLogger(__name__)

LAKE_CONN_ID = "sisbridge_lake"
# The resolved settings as JSON: how a dbt subprocess (Cosmos) receives them, never on a command line.
LAKE_ENV = "SISBRIDGE_LAKE"
# Set by `sisbridge dbt` only: each of dbt's cursors uses the lake as its default database, so that
# `dbt show --inline` reads it unqualified (sisbridge.dbt_lake).
DBT_USE_LAKE_ENV = "SISBRIDGE_DBT_USE_LAKE"
ALIAS = "lake"
COMMIT_AUTHOR = "sisbridge"
# The fleet lake (sisbridge.fleet): the cross-school view of the runs. School ids start with a
# letter, so this never names a school.
FLEET = "_fleet"

POSTGRES, EMBEDDED, SCRATCH = "postgres", "embedded", "scratch"
# A write of up to this many rows goes into the catalog instead of a new Parquet file (DuckLake's data
# inlining): the audit rows a run writes one at a time never become hundreds of tiny files. Kept small:
# with DuckLake 1.5.5 a commit's cost grows with the square of the rows it inlines (9 tables of 500
# rows took 0.9 s to commit, of 100 rows 60 ms; a Parquet file of any of those sizes, a few ms), and
# at 1,000 the push's commit was most of a small school's push.
INLINE_ROWS = 50


class LakeError(RuntimeError):
    """The lake's settings are wrong or its catalog cannot be reached; the message says which."""


@dataclass(frozen=True)
class LakeSettings:
    """Where the schools' lakes are. `kind`: postgres (production), embedded (SQLite), scratch (a file)."""

    kind: str
    # postgres: a libpq connection string to the catalog database.
    catalog_dsn: str | None = None
    # postgres: the root of the data files (`s3://bucket/prefix/` or a local folder); embedded and
    # scratch: the folder that holds every school's catalog (and, embedded, its data).
    data_path: str = ""
    s3_key_id: str | None = None
    s3_secret: str | None = None
    s3_session_token: str | None = None
    s3_endpoint: str | None = None
    s3_region: str | None = None
    s3_url_style: str = "path"
    s3_use_ssl: bool = True

    def to_env(self) -> str:
        return json.dumps(asdict(self), sort_keys=True)

    @classmethod
    def from_env(cls, value: str) -> LakeSettings:
        try:
            fields = json.loads(value)
            return cls(**fields)
        except (ValueError, TypeError) as exc:
            raise LakeError(f"{LAKE_ENV} is not a valid lake setting: {exc}") from None

    def describe(self) -> str:
        """Where the lake is, for people (no secrets)."""
        if self.kind == POSTGRES:
            catalog = _dsn_without_password(self.catalog_dsn)
            return f"DuckLake, catalog in PostgreSQL ({catalog}), data in {self.data_path}"
        if self.kind == EMBEDDED:
            return f"embedded DuckLake (SQLite catalogs) in {self.data_path}"
        return f"scratch DuckDB files in {self.data_path}"

    # One school's lake.
    def school_data_path(self, school_id: str) -> str:
        if self.kind == POSTGRES:
            if school_id == FLEET:
                return f"{self.data_path.rstrip('/')}/fleet/"
            return f"{self.data_path.rstrip('/')}/schools/{safe_component(school_id)}/"
        return str(self.school_dir(school_id) / "data") + "/"

    def school_dir(self, school_id: str) -> Path:
        if school_id == FLEET:
            return Path(self.data_path) / "fleet"
        return Path(self.data_path) / "schools" / safe_component(school_id)

    def metadata_schema(self, school_id: str) -> str:
        if school_id == FLEET:
            return "sisbridge_fleet"
        return f"school_{safe_component(school_id)}".lower()

    def extensions(self) -> tuple[str, ...]:
        if self.kind == SCRATCH:
            return ()
        names = ["ducklake", "postgres_scanner" if self.kind == POSTGRES else "sqlite_scanner"]
        if self.school_data_path("x").startswith("s3://"):
            names.append("httpfs")
        return tuple(names)

    def attach_sql(
        self, school_id: str, *, read_only: bool = False, snapshot: int | None = None, alias: str = ALIAS
    ) -> str:
        """`ATTACH` of the school's lake as `alias` (with its catalog created when missing).

        snapshot: the lake as it was at that snapshot id (DuckLake's time travel; read-only).
        """
        options = ["READ_ONLY"] if read_only else []
        if snapshot is not None:
            options.append(f"SNAPSHOT_VERSION {int(snapshot)}")
        if self.kind == SCRATCH:
            path = self.school_dir(school_id).with_suffix(".duckdb")
            return f"attach {_literal(str(path))} as {alias}" + (" (read_only)" if read_only else "")
        if self.kind == POSTGRES:
            target = f"ducklake:postgres:{self.catalog_dsn}"
            options.append(f"metadata_schema {_literal(self.metadata_schema(school_id))}")
        else:
            target = f"ducklake:sqlite:{self.school_dir(school_id) / 'catalog.sqlite'}"
        options.append(f"data_path {_literal(self.school_data_path(school_id))}")
        if not read_only:
            options.append(f"data_inlining_row_limit {INLINE_ROWS}")
        return f"attach {_literal(target)} as {alias} ({', '.join(options)})"

    def secret_sql(self) -> str | None:
        """A DuckDB secret for the S3 data path (temporary: it lives in this DuckDB instance only)."""
        if "httpfs" not in self.extensions():
            return None
        bucket = self.data_path.split("/")[2]
        parts = [
            "type s3",
            "provider config",
            f"scope {_literal(f's3://{bucket}')}",
            f"url_style {_literal(self.s3_url_style)}",
            f"use_ssl {str(self.s3_use_ssl).lower()}",
        ]
        for name, value in (
            ("key_id", self.s3_key_id),
            ("secret", self.s3_secret),
            ("session_token", self.s3_session_token),
            ("endpoint", self.s3_endpoint),
            ("region", self.s3_region),
        ):
            if value:
                parts.append(f"{name} {_literal(value)}")
        return f"create or replace secret sisbridge_lake_s3 ({', '.join(parts)})"


def _literal(value: str) -> str:
    return "'" + value.replace("'", "''") + "'"


def _dsn_without_password(dsn: str | None) -> str:
    return " ".join(part for part in (dsn or "").split() if not part.startswith("password="))


def _libpq_value(value) -> str:
    text = str(value)
    if text and not any(c in text for c in " '\\"):
        return text
    return "'" + text.replace("\\", "\\\\").replace("'", "\\'") + "'"


def libpq_dsn(**fields) -> str:
    """A libpq `key=value` connection string from the fields that are set."""
    return " ".join(
        f"{key}={_libpq_value(value)}" for key, value in fields.items() if value not in (None, "")
    )


def embedded_settings() -> LakeSettings:
    return LakeSettings(kind=EMBEDDED, data_path=str(sisbridge_home() / "lake"))


def scratch_settings(folder: Path) -> LakeSettings:
    """Plain DuckDB files in `folder`: `sisbridge check`'s throwaway warehouse (no extensions)."""
    return LakeSettings(kind=SCRATCH, data_path=str(Path(folder).absolute()))


def settings() -> LakeSettings:
    """The lake settings: `SISBRIDGE_LAKE`, else the `sisbridge_lake` connection, else embedded."""
    value = os.environ.get(LAKE_ENV)
    if value:
        return LakeSettings.from_env(value)
    conn = _lake_connection()
    if conn is None:
        return embedded_settings()
    return _from_connection(conn)


def _lake_connection():
    """The Airflow connection `sisbridge_lake`, or None when Airflow or the connection is absent."""
    if not (
        os.environ.get("AIRFLOW_CONN_SISBRIDGE_LAKE")
        or os.environ.get("AIRFLOW_HOME")
        or (Path.home() / "airflow").exists()
    ):
        return None  # no Airflow set up here: importing it would create ~/airflow for nothing
    try:
        from airflow.sdk import BaseHook
    except ImportError:
        return None
    try:
        return BaseHook.get_connection(LAKE_CONN_ID)
    except Exception as exc:  # noqa: BLE001 - Airflow raises its not-found error from several layers
        if "isn't defined" in str(exc) or type(exc).__name__ == "AirflowNotFoundException":
            return None
        raise


def _from_connection(conn) -> LakeSettings:
    if conn.conn_type not in ("postgres", "postgresql"):
        raise LakeError(
            f"connection {LAKE_CONN_ID!r} has type {conn.conn_type!r}; the lake's catalog is postgres"
        )
    extra = conn.extra_dejson
    data_path = extra.get("data_path")
    if not data_path:
        raise LakeError(
            f"connection {LAKE_CONN_ID!r} needs the extra data_path (s3://bucket/prefix/ or a folder)"
        )
    lake = LakeSettings(
        kind=POSTGRES,
        catalog_dsn=libpq_dsn(
            host=conn.host,
            port=conn.port,
            dbname=conn.schema,
            user=conn.login,
            password=conn.password,
        ),
        data_path=str(data_path),
    )
    if not lake.data_path.startswith("s3://"):
        return lake
    aws_conn_id = extra.get("aws_conn_id")
    if not aws_conn_id:
        return lake  # DuckDB's own credential chain (environment, instance profile)
    from airflow.providers.amazon.aws.hooks.base_aws import AwsBaseHook

    hook = AwsBaseHook(aws_conn_id=aws_conn_id, client_type="s3")
    credentials = hook.get_credentials()
    endpoint = hook.conn_config.endpoint_url or hook.conn_config.get_service_endpoint_url("s3")
    fields = {
        "s3_key_id": credentials.access_key,
        "s3_secret": credentials.secret_key,
        "s3_session_token": credentials.token,
        "s3_region": hook.conn_config.region_name or hook.region_name,
    }
    if endpoint:
        scheme, _, host = endpoint.partition("://")
        fields |= {"s3_endpoint": host.rstrip("/"), "s3_use_ssl": scheme != "http", "s3_url_style": "path"}
    else:
        fields |= {"s3_url_style": "vhost"}
    return replace(lake, **fields)


# One DuckDB instance per school and settings in this process, handing out cursors: loading the
# extensions (their signatures are checked over some 80 MB) and attaching costs a quarter of a second.
_instances: dict[tuple[str, str], duckdb.DuckDBPyConnection] = {}
# The fleet lake's name in a school's instance when it is attached there rather than to its own.
FLEET_ALIAS = "fleet_lake"
_lock = threading.Lock()
# A forked child never uses its parent's instances, and never destroys them either: their
# destructors wait on locks that threads of the parent held at the fork, which hangs the child.
_inherited: list[duckdb.DuckDBPyConnection] = []


def _forget_after_fork() -> None:
    global _lock
    _inherited.extend(_instances.values())
    _instances.clear()
    _lock = threading.Lock()


os.register_at_fork(after_in_child=_forget_after_fork)


def prepare_embedded(lake: LakeSettings, school_id: str) -> None:
    """Create the school's folder and put its SQLite catalog in WAL mode before DuckLake opens it.

    In SQLite's default (rollback journal) mode, a process that has read the catalog makes the
    writer's commit fail with "database is locked"; in WAL mode readers and one writer coexist.
    """
    folder = lake.school_dir(school_id)
    (folder / "data").mkdir(parents=True, exist_ok=True)
    catalog = sqlite3.connect(folder / "catalog.sqlite")
    try:
        catalog.execute("pragma journal_mode = wal")
    except sqlite3.DatabaseError as exc:
        raise LakeError(
            f"cannot open the warehouse of {school_id!r} ({lake.describe()}): "
            f"{folder / 'catalog.sqlite'}: {exc}"
        ) from exc
    finally:
        catalog.close()


def _open(
    lake: LakeSettings, school_id: str, *, read_only: bool, snapshot: int | None = None
) -> duckdb.DuckDBPyConnection:
    config = {"memory_limit": warehouse_memory_limit()}
    if lake.kind == EMBEDDED:
        if read_only and not (lake.school_dir(school_id) / "catalog.sqlite").exists():
            raise LakeError(f"school {school_id!r} has no warehouse yet in {lake.data_path}")
        prepare_embedded(lake, school_id)
    elif lake.kind == SCRATCH:
        if read_only and not lake.school_dir(school_id).with_suffix(".duckdb").exists():
            raise LakeError(f"school {school_id!r} has no warehouse yet in {lake.data_path}")
        lake.school_dir(school_id).parent.mkdir(parents=True, exist_ok=True)
    con = extensions.connect(":memory:", *lake.extensions(), config=config)
    try:
        secret = lake.secret_sql()
        if secret:
            con.execute(secret)
        con.execute(lake.attach_sql(school_id, read_only=read_only, snapshot=snapshot))
        con.execute(f"use {ALIAS}")
        if read_only:
            _lock_down(con, lake, school_id)
    except duckdb.Error as exc:
        con.close()
        first = str(exc).strip().splitlines()[0]
        raise LakeError(f"cannot open the warehouse of {school_id!r} ({lake.describe()}): {first}") from exc
    return con


def _lock_down(con: duckdb.DuckDBPyConnection, lake: LakeSettings, school_id: str) -> None:
    """An auditor's connection reads this school's lake and nothing else, and cannot change that."""
    data = lake.school_data_path(school_id)
    if lake.kind != SCRATCH:
        # Only the school's own data files stay readable once external access is off.
        con.execute("set allowed_directories = [?]", [data])
        con.execute("set enable_external_access = false")
    con.execute("set lock_configuration = true")


def connect(
    school_id: str, read_only: bool = False, *, lake: LakeSettings | None = None, snapshot: int | None = None
):
    """A DuckDB connection to the school's lake, attached as `lake` and in use.

    read_only: a new, locked-down DuckDB instance (an auditor's): the lake is attached READ_ONLY,
    only the school's data files are readable, and the configuration cannot be changed; close it
    when done; with `snapshot`, the lake as it was at that snapshot id. Otherwise a cursor on this
    process's instance for the school (close it when done; the instance stays for the next task).
    """
    lake = lake or settings()
    if snapshot is not None and not read_only:
        raise ValueError("a snapshot of the lake is read-only: connect(..., read_only=True, snapshot=...)")
    if read_only or lake.kind == SCRATCH:
        # A scratch file is never cached: `sisbridge check` deletes it afterwards.
        return _open(lake, school_id, read_only=read_only, snapshot=snapshot)
    key = (school_id, lake.to_env())
    with _lock:
        instance = _instances.get(key)
        if instance is None and school_id == FLEET:
            instance = _attach_fleet(lake, key)
        if instance is None:
            _instances[key] = _open(lake, school_id, read_only=False)
    cursor = _cursor(key)
    # None only when another thread released the instance in between: open it again.
    return cursor if cursor is not None else connect(school_id, lake=lake)


def _cursor(key: tuple[str, str]):
    """A cursor on the cached instance of `key`, in its lake; None when none is cached."""
    with _lock:
        if key not in _instances:
            return None
        cursor = _instances[key].cursor()
        alias = FLEET_ALIAS if _is_attached_fleet(key) else ALIAS
    cursor.execute(f"use {alias}")
    return cursor


def _is_attached_fleet(key: tuple[str, str]) -> bool:
    """Whether `key` is the fleet lake attached to a school's instance (call with `_lock` held)."""
    instance = _instances[key]
    return key[0] == FLEET and any(inst is instance for (sid, _), inst in _instances.items() if sid != FLEET)


def _attach_fleet(lake: LakeSettings, key: tuple[str, str]):
    """Attach the fleet lake to a school's instance already open here with the same settings.

    A task publishes its run's status to the fleet lake right after writing the school's: a second
    instance would load the extensions again. The school's own queries never name FLEET_ALIAS, and an
    auditor's read-only instance is never shared.
    """
    host = next((inst for (sid, env), inst in _instances.items() if env == key[1] and sid != FLEET), None)
    if host is None:
        return None
    if lake.kind == EMBEDDED:
        prepare_embedded(lake, FLEET)
    try:
        host.execute(lake.attach_sql(FLEET, alias=FLEET_ALIAS))
    except duckdb.Error as exc:
        first = str(exc).strip().splitlines()[0]
        raise LakeError(f"cannot open the fleet lake ({lake.describe()}): {first}") from exc
    _instances[key] = host
    return host


def cursor_if_open(school_id: str, lake: LakeSettings | None = None):
    """A cursor on this process's open instance of the school's lake, or None when none is open.

    For the pipeline's own reads after its tasks (the run's audit row for the notifiers and for
    `sisbridge sync`'s summary): opening a read-only instance loads the extensions again, about a
    quarter of a second each time.
    """
    return _cursor((school_id, (lake or settings()).to_env()))


def has_table(con, schema: str, table: str) -> bool:
    """Whether the connection's current database has `schema.table`."""
    row = con.execute(
        "select count(*) from information_schema.tables "
        "where table_catalog = current_database() and table_schema = ? and table_name = ?",
        [schema, table],
    ).fetchone()
    return bool(row[0])


def open_in_background(school_id: str, lake: LakeSettings | None = None) -> threading.Thread | None:
    """Start opening this process's instance of the school's lake on a thread; returns the thread.

    For a process that will use the lake soon and has other work first: `sisbridge sync` opens it
    while Airflow parses the DAG and senses the file, which the load task would otherwise wait for
    (loading the extensions, attaching the catalog, and creating it on a school's first run). A
    `connect` in between waits for it. The settings are read here, in the caller's thread, so that
    the thread only waits on DuckDB and imports nothing. A failure on the thread is only logged: the
    task that connects next meets it and reports it (None: not even the settings could be read).
    """
    try:
        lake = lake or settings()
    except Exception as exc:  # as below: the task that connects reports it
        log.info("the warehouse of %s was not opened ahead: %s", school_id, exc)
        return None

    def open_lake() -> None:
        try:
            connect(school_id, lake=lake).close()
        except Exception as exc:  # the load task's own connect raises it where the run records it
            log.info("the warehouse of %s was not opened ahead: %s", school_id, exc)

    thread = threading.Thread(target=open_lake, name="open-lake", daemon=True)
    thread.start()
    return thread


def release(school_id: str | None = None) -> None:
    """Close this process's cached instances (of one school, or all)."""
    with _lock:
        closing = {}
        for key in [key for key in _instances if school_id in (None, key[0])]:
            if _is_attached_fleet(key):  # the fleet lake leaves the school's instance, which stays
                with contextlib.suppress(duckdb.Error):
                    _instances.pop(key).execute(f"detach {FLEET_ALIAS}")
            else:
                instance = _instances.pop(key)
                closing[id(instance)] = instance
        # The fleet lake goes with the school's instance it was attached to.
        for key in [key for key, inst in _instances.items() if id(inst) in closing]:
            _instances.pop(key)
        for instance in closing.values():
            instance.close()


def dbt_env(school_id: str, lake: LakeSettings | None = None) -> dict[str, str]:
    """The environment through which dbt (`sisbridge.dbt_lake`) attaches the school's lake."""
    lake = lake or settings()
    return {LAKE_ENV: lake.to_env(), "SISBRIDGE_SCHOOL_ID": school_id}
