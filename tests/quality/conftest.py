"""Builds `raw.*` tables exactly as docs/architecture.md specifies, so the checks can be tested alone."""

from __future__ import annotations

import duckdb
import pytest

from sisbridge import audit
from sisbridge.config import STANDARD_COLUMNS, SchoolConfig, load_school

RAW_ROSTER_COLUMNS = (
    "first_name",
    "last_name",
    "email",
    "user_id",
    "user_login",
    "graduation",
    "stakeholders",
    "email_opt_out",
    "delete_flag",
    "user_type",
)


def _kind(school: SchoolConfig, canonical: str) -> str:
    if canonical in STANDARD_COLUMNS:
        return "standard"
    return "community" if canonical in school.community_columns else "unknown"


def fill_raw(con, school: SchoolConfig, header: list[str], records: list[list[str]], run_id: str = "r1"):
    """Fill raw.* from a header and records (data lines start at 2); a record of the wrong width is ragged."""
    canonical = [school.canonical_header(name) for name in header]
    kinds = [_kind(school, name) for name in canonical]
    con.execute("create schema if not exists raw")
    con.execute(
        "create or replace table raw.file_columns "
        "(position integer, source_name varchar, canonical_name varchar, kind varchar)"
    )
    con.executemany(
        "insert into raw.file_columns values (?, ?, ?, ?)",
        [(i + 1, h, c, k) for i, (h, c, k) in enumerate(zip(header, canonical, kinds, strict=True))],
    )
    con.execute(
        "create or replace table raw.roster (line_number integer, "
        + ", ".join(f"{column} varchar" for column in RAW_ROSTER_COLUMNS)
        + ")"
    )
    con.execute(
        "create or replace table raw.roster_communities "
        "(line_number integer, column_name varchar, raw_value varchar)"
    )
    for line, record in enumerate(records, start=2):
        if len(record) != len(header):
            continue
        cells = dict(zip(canonical, record, strict=True))
        values = [cells.get("DELETE" if c == "delete_flag" else c.upper()) for c in RAW_ROSTER_COLUMNS]
        con.execute(f"insert into raw.roster values (?{', ?' * len(RAW_ROSTER_COLUMNS)})", [line, *values])
        for name, kind in zip(canonical, kinds, strict=True):
            if kind == "community":
                con.execute("insert into raw.roster_communities values (?, ?, ?)", [line, name, cells[name]])
    con.execute(
        "create or replace table raw.file (run_id varchar, school_id varchar, file_key varchar, "
        "file_version_id varchar, file_etag varchar, file_sha256 varchar, file_bytes bigint, "
        "file_encoding varchar, rows_in_file integer)"
    )
    con.execute(
        "insert into raw.file values (?, ?, 'roster.csv', null, null, null, null, 'utf-8', ?)",
        [run_id, school.school_id, len(records)],
    )


@pytest.fixture
def build_raw():
    """The `fill_raw` helper, as a fixture so test modules need not import conftest."""
    return fill_raw


@pytest.fixture
def con(tmp_path):
    connection = duckdb.connect(str(tmp_path / "warehouse.duckdb"))
    audit.ensure_schema(connection)
    yield connection
    connection.close()


@pytest.fixture(scope="session")
def schools_dir():
    from pathlib import Path

    return Path(__file__).resolve().parents[2] / "config" / "schools"


@pytest.fixture(scope="session")
def acme(schools_dir):
    return load_school(schools_dir / "acme.yaml")


@pytest.fixture(scope="session")
def globex(schools_dir):
    return load_school(schools_dir / "globex.yaml")
