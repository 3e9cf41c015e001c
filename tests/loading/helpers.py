"""Helpers for the loader tests: a school config, and the raw tables read back."""

from __future__ import annotations

from collections import defaultdict
from pathlib import Path

from sisbridge.config import SchoolConfig
from tests.corpora import CORPORA

PROJECT_ROOT = Path(__file__).resolve().parents[2]
FIXTURES = CORPORA
DATA = Path(__file__).resolve().parent / "data"


def make_school(communities=(), header_aliases=None) -> SchoolConfig:
    """A school whose community columns are `communities` (any header names that are not standard)."""
    return SchoolConfig(
        school_id="testu",
        name="Test University",
        s3={"bucket": "uconnect-sis-testu", "key": "roster.csv", "aws_conn_id": "sis_s3_testu"},
        header_aliases=header_aliases or {},
        communities=[{"column": name, "group": f"Group {name}"} for name in communities],
    )


def community_records(con, header: tuple[str, ...]) -> list[tuple[int, list[str]]]:
    """raw.roster_communities pivoted back to (line_number, cells in header order) per record."""
    cells = defaultdict(dict)
    for line, column, value in con.execute(
        "select line_number, column_name, raw_value from raw.roster_communities"
    ).fetchall():
        cells[line][column] = value
    names = [name.strip().upper() for name in header]
    return [(line, [row[name] for name in names]) for line, row in sorted(cells.items())]


def roster(con, *columns: str) -> list[tuple]:
    """raw.roster's line_number and the given columns, in line order."""
    selected = ", ".join(("line_number", *columns))
    return con.execute(f"select {selected} from raw.roster order by line_number").fetchall()


def rules(result) -> list[tuple[str, str, int | None]]:
    return [(f.rule, f.severity, f.line_number) for f in result.findings]
