"""`raw.*` written as the loader writes them, for the tests of what reads them (the gate, dbt, the guard).

The tables come from the loader's own DDL (`sisbridge.loading.RAW_TABLES`) and the cells go to its
columns by canonical name (`sisbridge.config.RAW_COLUMNS`), so the tests cannot drift from the loader.
"""

from __future__ import annotations

from sisbridge.config import RAW_COLUMNS, STANDARD_COLUMNS, SchoolConfig
from sisbridge.loading import RAW_TABLES


def _kind(school: SchoolConfig, canonical: str) -> str:
    if canonical in STANDARD_COLUMNS:
        return "standard"
    return "community" if canonical in school.community_columns else "unknown"


def fill_raw(
    con,
    school: SchoolConfig,
    header: list[str],
    records: list[list[str]],
    run_id: str = "r1",
    *,
    canonical: list[str] | None = None,
    file_meta: dict | None = None,
) -> None:
    """Replace raw.* with a file of `header` and `records` (data lines start at 2).

    `canonical` names each header's column (by default the school's reading of the header, aliases
    included). A record of the wrong width is ragged: the loader leaves it out of raw.roster.
    `file_meta` sets raw.file's version, ETag, sha256 and bytes.
    """
    canonical = canonical or [school.canonical_header(name) for name in header]
    kinds = [_kind(school, name) for name in canonical]
    con.execute(RAW_TABLES)
    con.executemany(
        "insert into raw.file_columns values (?, ?, ?, ?)",
        [(i + 1, h, c, k) for i, (h, c, k) in enumerate(zip(header, canonical, kinds, strict=True))],
    )
    columns = ", ".join(RAW_COLUMNS.values())
    placeholders = ", ".join("?" for _ in RAW_COLUMNS)
    for line, record in enumerate(records, start=2):
        if len(record) != len(header):
            continue
        cells = dict(zip(canonical, record, strict=True))
        con.execute(
            f"insert into raw.roster (line_number, {columns}) values (?, {placeholders})",
            [line, *(cells.get(name) for name in RAW_COLUMNS)],
        )
        for name, kind in zip(canonical, kinds, strict=True):
            if kind == "community":
                con.execute("insert into raw.roster_communities values (?, ?, ?)", [line, name, cells[name]])
    meta = {"file_version_id": None, "file_etag": None, "file_sha256": None, "file_bytes": None}
    meta |= file_meta or {}
    con.execute(
        "insert into raw.file values (?, ?, 'roster.csv', ?, ?, ?, ?, 'utf-8', ?)",
        [run_id, school.school_id, *meta.values(), len(records)],
    )
