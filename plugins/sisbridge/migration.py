"""`sisbridge migrate-warehouse`: a school's DuckDB warehouse file from before the lake, into its lake.

Before the DuckLake each school's warehouse was one DuckDB file, `$SISBRIDGE_HOME/warehouse/<id>.duckdb`.
`migrate` copies every table of such a file (raw, config, intermediate, marts, the SCD2 snapshot with
dbt's columns, audit and state) into the school's lake in one lake commit, tagged with the run id
`migration`, and checks each table's row count before it commits. The file is only read.

Views (dbt's staging models and two marts) hold no data and name the old file's catalog in their SQL:
they are not copied; the school's next sync rebuilds them with everything else dbt makes.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import duckdb

from sisbridge import audit, warehouse
from sisbridge.config import safe_component, sisbridge_home

RUN_ID = "migration"
SOURCE = "legacy"


class MigrationError(RuntimeError):
    """The file cannot be migrated, or the copy did not match; nothing was written. One line."""


class MigrationRefused(MigrationError):
    """The school's lake has runs already (and `replace` was not asked for)."""


@dataclass(frozen=True)
class CopiedTable:
    schema: str
    name: str
    rows: int

    @property
    def qualified(self) -> str:
        return f"{self.schema}.{self.name}"


@dataclass(frozen=True)
class Migration:
    school_id: str
    source: Path
    tables: tuple[CopiedTable, ...]
    # The old file's views, as schema.name: not copied (module docstring).
    views: tuple[str, ...]
    replaced_runs: int


def default_source(school_id: str) -> Path:
    """Where the code before the lake kept the school's warehouse."""
    return sisbridge_home() / "warehouse" / f"{safe_component(school_id)}.duckdb"


def _ident(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


def _relations(con: duckdb.DuckDBPyConnection, catalog: str) -> tuple[list[tuple[str, str]], list]:
    """The (schema, name) of the catalog's tables and of its views, sorted."""
    rows = con.execute(
        """
        select table_schema, table_name, table_type from information_schema.tables
        where table_catalog = ? and table_schema not in ('information_schema', 'pg_catalog')
        order by table_schema, table_name
        """,
        [catalog],
    ).fetchall()
    tables = [(schema, name) for schema, name, kind in rows if kind == "BASE TABLE"]
    views = [(schema, name) for schema, name, kind in rows if kind == "VIEW"]
    return tables, views


def _runs_in_lake(con: duckdb.DuckDBPyConnection) -> int:
    tables, _ = _relations(con, warehouse.ALIAS)
    if ("audit", "sync_runs") not in tables:
        return 0
    return con.execute(f"select count(*) from {warehouse.ALIAS}.audit.sync_runs").fetchone()[0]


def _attach(con: duckdb.DuckDBPyConnection, source: Path) -> None:
    try:
        path = "'" + str(source).replace("'", "''") + "'"
        con.execute(f"attach {path} as {SOURCE} (read_only)")
    except duckdb.Error as exc:
        first = str(exc).strip().splitlines()[0]
        raise MigrationError(f"{source}: cannot open it as a DuckDB warehouse: {first}") from None


def _check_source(con: duckdb.DuckDBPyConnection, school_id: str, source: Path) -> tuple[list, list]:
    """The attached file's tables and views; MigrationError when it is not this school's warehouse."""
    tables, views = _relations(con, SOURCE)
    if ("audit", "sync_runs") not in tables:
        raise MigrationError(f"{source}: not a sisbridge warehouse (it has no audit.sync_runs table)")
    others = con.execute(
        f"select distinct school_id from {SOURCE}.audit.sync_runs where school_id <> ? order by 1",
        [school_id],
    ).fetchall()
    if others:
        raise MigrationError(
            f"{source}: its runs are of school {others[0][0]!r}, not {school_id!r}; nothing was written"
        )
    return tables, views


def check_source(school_id: str, source_path: Path | str) -> Path:
    """The file as an absolute path, once it is known to be this school's warehouse; else MigrationError.

    Needs no lake (nor Airflow): the command checks its input before it reads any connection.
    """
    source = Path(source_path).absolute()
    if not source.is_file():
        raise MigrationError(f"{source}: no such file")
    con = duckdb.connect(":memory:")
    try:
        _attach(con, source)
        _check_source(con, school_id, source)
    finally:
        con.close()
    return source


def migrate(
    school_id: str,
    source_path: Path | str,
    *,
    lake: warehouse.LakeSettings | None = None,
    replace: bool = False,
) -> Migration:
    """Copy the old warehouse file's tables into the school's lake, in one commit; see the module doc.

    Refused (MigrationRefused, nothing written) when the lake has `audit.sync_runs` rows, unless
    `replace`: then the lake's tables and views in the schemas the file has are dropped first.
    """
    source = check_source(school_id, source_path)
    con = warehouse.connect(school_id, lake=lake)
    try:
        _attach(con, source)
        try:
            return _copy(con, school_id, source, replace=replace)
        finally:
            con.execute(f"use {warehouse.ALIAS}")
            con.execute(f"detach {SOURCE}")
    finally:
        con.close()


def _copy(con: duckdb.DuckDBPyConnection, school_id: str, source: Path, *, replace: bool) -> Migration:
    tables, views = _check_source(con, school_id, source)
    schemas = sorted({schema for schema, _ in tables + views})
    lake = warehouse.ALIAS
    with audit.transaction(con, run_id=RUN_ID, message=f"migrated from {source.name}"):
        runs = _runs_in_lake(con)
        if runs and not replace:
            raise MigrationRefused(
                f"the lake of {school_id!r} has {runs} sync runs already; nothing was written "
                "(--replace drops its tables and copies the file's)"
            )
        lake_tables, lake_views = _relations(con, lake)
        for schema, name in lake_views:
            if schema in schemas:
                con.execute(f"drop view {lake}.{_ident(schema)}.{_ident(name)}")
        for schema, name in lake_tables:
            if schema in schemas:
                con.execute(f"drop table {lake}.{_ident(schema)}.{_ident(name)}")
        for schema in schemas:
            con.execute(f"create schema if not exists {lake}.{_ident(schema)}")
        # The auditors' and baseline tables get today's definitions (a file of an older version may
        # lack a column); the columns they share are copied by name.
        con.execute(f"use {lake}")
        con.execute(audit.schema_ddl())
        copied = []
        for schema, name in tables:
            target = f"{lake}.{_ident(schema)}.{_ident(name)}"
            origin = f"{SOURCE}.{_ident(schema)}.{_ident(name)}"
            try:
                if (schema, name) in audit.TABLES:
                    con.execute(f"insert into {target} by name select * from {origin}")
                else:
                    con.execute(f"create table {target} as select * from {origin}")
            except duckdb.Error as exc:
                first = str(exc).strip().splitlines()[0]
                raise MigrationError(
                    f"{schema}.{name}: cannot copy it into the lake ({first}); nothing was written"
                ) from None
            expected = con.execute(f"select count(*) from {origin}").fetchone()[0]
            rows = con.execute(f"select count(*) from {target}").fetchone()[0]
            if rows != expected:
                raise MigrationError(
                    f"{schema}.{name}: {rows} rows in the lake after the copy, {expected} in {source}; "
                    "nothing was written"
                )
            copied.append(CopiedTable(schema, name, rows))
    return Migration(
        school_id=school_id,
        source=source,
        tables=tuple(copied),
        views=tuple(f"{schema}.{name}" for schema, name in views),
        replaced_runs=runs,
    )


def report(result: Migration) -> str:
    """What `sisbridge migrate-warehouse` prints: one line per table with its rows."""
    width = max(len(table.qualified) for table in result.tables)
    lines = [
        f"migrated {result.source} into the warehouse of {result.school_id} "
        f"(one lake commit, run id {RUN_ID!r}); rows per table, checked against the file:"
    ]
    lines += [f"  {table.qualified:<{width}}  {table.rows:>9,}" for table in result.tables]
    if result.views:
        lines.append(f"views not copied, the next sync rebuilds them: {', '.join(result.views)}")
    if result.replaced_runs:
        lines.append(f"replaced what the lake had ({result.replaced_runs} sync runs)")
    return "\n".join(lines)
