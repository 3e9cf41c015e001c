"""What an auditor reaches: read-only SQL over one school's warehouse, now or as a run left it.

`sisbridge sql` runs here. The connection is `warehouse.connect(school_id, read_only=True)`: the
school's lake attached READ_ONLY in a DuckDB instance of its own, with external access off. On top of
that, a query must be one SELECT that names only the lake's own tables: the catalog database behind
the lake (`__ducklake_metadata_lake`), DuckDB's system views and every table function outside a short
list are refused before the query runs, so no query can reach another school's catalog schema or
the catalog's connection string.
"""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Iterator, Sequence
from dataclasses import dataclass

from sisbridge import warehouse

# Table functions a query may call: generators and the lake's own history.
ALLOWED_TABLE_FUNCTIONS = frozenset(
    {
        "range",
        "generate_series",
        "unnest",
        "snapshots",
        "ducklake_snapshots",
        "table_info",
        "ducklake_table_info",
        "table_changes",
        "ducklake_table_changes",
        "ducklake_table_insertions",
        "ducklake_table_deletions",
    }
)
# Schemas and name prefixes that describe the DuckDB instance, not the school's tables.
_SYSTEM_SCHEMAS = frozenset({"information_schema", "pg_catalog"})
_SYSTEM_PREFIXES = ("duckdb_", "pragma_", "sqlite_", "__ducklake")


class QueryRefused(ValueError):
    """The query is not one SELECT over the school's own tables."""


class UnknownRun(LookupError):
    """No commit of the school's lake carries this run id."""


@dataclass(frozen=True)
class Result:
    columns: list[str]
    rows: list[tuple]


def check_read_query(con, query: str) -> None:
    """Refuse anything but one SELECT over the lake's own tables (raises QueryRefused)."""
    parsed = json.loads(con.execute("select json_serialize_sql(?)", [query]).fetchone()[0])
    if parsed.get("error"):
        message = parsed.get("error_message", "")
        if "Only SELECT statements" in message:
            raise QueryRefused(
                "only a SELECT (or WITH ... SELECT) query is allowed: the warehouse is read-only"
            )
        raise QueryRefused(f"the query does not parse: {message}")
    statements = parsed.get("statements", [])
    if len(statements) != 1:
        raise QueryRefused(f"one query at a time, not {len(statements)}")
    for node in _nodes(statements[0]):
        kind = node.get("type")
        if kind == "BASE_TABLE":
            _check_table(node)
        elif kind == "TABLE_FUNCTION":
            name = (node.get("function") or {}).get("function_name", "")
            if name.lower() not in ALLOWED_TABLE_FUNCTIONS:
                raise QueryRefused(
                    f"the table function {name}() is not allowed; the query may read the school's "
                    f"tables and {', '.join(sorted(ALLOWED_TABLE_FUNCTIONS))}"
                )


def _check_table(node: dict) -> None:
    catalog = (node.get("catalog_name") or "").lower()
    schema = (node.get("schema_name") or "").lower()
    table = (node.get("table_name") or "").lower()
    parts = (node.get("catalog_name"), node.get("schema_name"), node.get("table_name"))
    name = ".".join(part for part in parts if part)
    if catalog not in ("", warehouse.ALIAS):
        raise QueryRefused(f"{name}: only the school's warehouse ({warehouse.ALIAS}) can be read")
    if schema in _SYSTEM_SCHEMAS or any(part.startswith(_SYSTEM_PREFIXES) for part in (schema, table)):
        raise QueryRefused(f"{name}: the system tables are not part of the warehouse")


def _nodes(value) -> Iterator[dict]:
    """Every object in the serialized query, subqueries and CTEs included."""
    if isinstance(value, dict):
        yield value
        for child in value.values():
            yield from _nodes(child)
    elif isinstance(value, list):
        for child in value:
            yield from _nodes(child)


def run_snapshot(con, run_id: str) -> int:
    """The lake's snapshot as the run left it: the last commit tagged with its run id."""
    row = con.execute(
        f"select max(snapshot_id) from {warehouse.ALIAS}.snapshots() "
        "where json_extract_string(commit_extra_info, '$.run_id') = ?",
        [run_id],
    ).fetchone()
    if row is None or row[0] is None:
        raise UnknownRun(f"no run {run_id!r} in this warehouse (see: select run_id from audit.sync_runs)")
    return int(row[0])


def query(school_id: str, sql: str, *, as_of: str | None = None) -> Result:
    """Run one read-only query over the school's warehouse, now or as run `as_of` left it."""
    snapshot = None
    if as_of is not None:
        con = warehouse.connect(school_id, read_only=True)
        try:
            snapshot = run_snapshot(con, as_of)
        finally:
            con.close()
    con = warehouse.connect(school_id, read_only=True, snapshot=snapshot)
    try:
        check_read_query(con, sql)
        cursor = con.execute(sql)
        columns = [column[0] for column in cursor.description]
        return Result(columns, cursor.fetchall())
    finally:
        con.close()


def to_csv(result: Result) -> str:
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(result.columns)
    writer.writerows([_text(value) for value in row] for row in result.rows)
    return buffer.getvalue()


def to_table(result: Result) -> str:
    """Aligned columns with a header and a row count, as a terminal shows them."""
    cells = [result.columns, *[[_text(value) for value in row] for row in result.rows]]
    widths = [max(len(row[index]) for row in cells) for index in range(len(result.columns))]
    lines = [_line(cells[0], widths), _line(["-" * width for width in widths], widths)]
    lines += [_line(row, widths) for row in cells[1:]]
    count = len(result.rows)
    lines.append(f"({count} row{'' if count == 1 else 's'})")
    return "\n".join(lines) + "\n"


def _line(values: Sequence[str], widths: Sequence[int]) -> str:
    return "  ".join(value.ljust(width) for value, width in zip(values, widths, strict=True)).rstrip()


def _text(value) -> str:
    return "" if value is None else str(value)
