"""Load one school file into the `raw.*` tables of its warehouse (docs/architecture.md).

The file is checked and split into records by a byte-level pre-pass (numpy, `sisbridge.scanning`),
which keeps the line where every record starts; DuckDB's CSV reader then splits the fields. Python's
csv module takes over only when DuckDB refuses a file that the pre-pass found valid.
"""

from __future__ import annotations

import tempfile
from dataclasses import dataclass
from pathlib import Path

import duckdb

from sisbridge.audit import Finding
from sisbridge.config import RAW_COLUMNS, STANDARD_COLUMNS, SchoolConfig
from sisbridge.scanning import (
    FileRejected,
    ScannedFile,
    normalized_copy,
    parse_record,
    ragged_findings,
    scan_file,
)

RULES = {
    "file_empty": "The file has no content (or only blank lines); it is ignored.",
    "binary_content": "The file is a spreadsheet, archive or other binary file, not a CSV text file.",
    "undecodable_utf16": "The file starts with a UTF-16 byte order mark but is not valid UTF-16.",
    "nul_bytes": "The file contains NUL bytes, which never occur in a CSV text file.",
    "encoding_fallback": "The file is not valid UTF-8, so it was read as Windows-1252 (warning).",
    "unterminated_quote": "A quoted value opens and never closes before the end of the file.",
    "stray_quote": "A double quote appears inside a value that does not start with a quote.",
    "text_after_quote": "A quoted value is followed by more text before the next comma or line end.",
    "header_only": "The file has a header but no data record; it is ignored.",
    "empty_header": "A header name is blank.",
    "duplicate_header": "Two header names mean the same column (after trimming, case and aliases).",
    "unknown_column": "A column is neither standard nor a community column; it is ignored (warning).",
    "blank_line": "An empty line between records is skipped (warning).",
    "ragged_row": "A record has a different number of fields than the header; the row is rejected.",
}


@dataclass(frozen=True)
class LoadResult:
    encoding: str  # "utf-8", "utf-8-sig", "utf-16", or "windows-1252"
    header: tuple[str, ...]  # the file's header names as written (BOM stripped)
    rows_in_file: int  # data records in the file (ragged ones included)
    rows_loaded: int  # rows written to raw.roster
    findings: tuple[Finding, ...]  # file-level and row-level errors and warnings
    rejected: bool  # a file-level rule rejected the whole file (then raw.roster is empty)


_READ_CSV = """read_csv(
    $path, auto_detect = false, header = true, columns = {columns}, delim = ',', quote = '"',
    escape = '"', strict_mode = true, nullstr = '\n', allow_quoted_nulls = false, ignore_errors = {skip}
)"""
_LINES = "_sisbridge_lines"
_FIELDS = "_sisbridge_fields"
_JOINED = "_sisbridge_joined"


def _kept_fields(positions: dict) -> list[int]:
    """The fields the raw tables take (c0 also checks the alignment); the loader reads no others.

    DuckDB 1.5 reserves about 100 KiB of its memory limit per column that a CSV scan returns,
    whatever the row count, so a 10,000-column header alone passed the 1 GB default.
    """
    return sorted({0, *positions.values()})


def _insert_rows(con, relation: str, params: dict, positions: dict, school: SchoolConfig) -> None:
    """Fill raw.roster and raw.roster_communities from `relation` (fields c0, c1, ...) and the lines."""
    # Both sides of the positional join must have the same length: a row without a line number, or
    # a line number without a row, means DuckDB split the file differently, so stop with an error.
    aligned = (
        "coalesce(n.line_number, error(concat('unaligned row ', f.c0))) is not null "
        "and coalesce(f.c0, error(concat('unaligned line ', n.line_number))) is not null"
    )
    fields = ", ".join(f"f.c{i}" for i in _kept_fields(positions))
    # The file is read once into a temp table, and both raw tables are filled from it: reading the
    # CSV a second time for the community cells cost more than the copy.
    con.execute(
        f"create or replace temp table {_JOINED} as "
        f"select n.line_number, {fields} from {_LINES} as n positional join {relation} as f where {aligned}",
        params,
    )
    try:
        selects = ", ".join(
            f"c{positions[name]}" if name in positions else "null::varchar" for name in RAW_COLUMNS
        )
        con.execute(f"insert into raw.roster select line_number, {selects} from {_JOINED}")
        present = [name for name in school.community_columns if name in positions]
        if present:
            cells = ", ".join(f"c{positions[name]}" for name in present)
            con.execute(
                "insert into raw.roster_communities select line_number, unnest(names), unnest(cells) from "
                f"(select line_number, $names::varchar[] as names, [{cells}] as cells from {_JOINED})",
                {"names": present},
            )
    finally:
        con.execute(f"drop table if exists {_JOINED}")


def _read_with_python(con, scanned: ScannedFile, rows, kept: list[int]) -> None:
    import pandas as pd

    names = [f"c{i}" for i in kept]
    con.execute(f"create or replace temp table {_FIELDS} ({', '.join(f'{n} varchar' for n in names)})")
    batch = 50_000
    for offset in range(0, len(rows), batch):
        records = [
            [fields[i] for i in kept]
            for fields in (
                parse_record(scanned.data, int(scanned.starts[r]), int(scanned.ends[r]))
                for r in rows[offset : offset + batch]
            )
        ]
        frame = pd.DataFrame(records, columns=names, dtype=object)  # noqa: F841 - scanned by DuckDB
        con.execute(f"insert into {_FIELDS} select * from frame")


def _load_rows(con, scanned: ScannedFile, school: SchoolConfig, columns: list) -> tuple[int, list]:
    """Write the records that fit the header to raw.roster and raw.roster_communities.

    Returns the number of rows written and one `ragged_row` finding per record that does not fit.
    """
    import numpy as np
    import pandas as pd

    width = len(scanned.header)
    good = scanned.field_counts == width
    findings = ragged_findings(scanned, np.flatnonzero(~good))
    positions = {canonical: pos - 1 for pos, _, canonical, kind in columns if kind != "unknown"}
    con.register(_LINES, pd.DataFrame({"line_number": scanned.lines[good].astype(np.int32)}))
    ordered = con.execute("select current_setting('preserve_insertion_order')").fetchone()[0]
    con.execute("set preserve_insertion_order = true")  # the positional join relies on it
    try:
        with tempfile.TemporaryDirectory(prefix="sisbridge-load-") as directory:
            direct = scanned.source is not None and scanned.uniform_newlines
            source = scanned.source if direct else normalized_copy(scanned, good, directory)
            columns_sql = "{" + ", ".join(f"'c{i}': 'VARCHAR'" for i in range(width)) + "}"
            relation = _READ_CSV.format(columns=columns_sql, skip=str(direct and not good.all()).lower())
            try:
                _insert_rows(con, relation, {"path": str(source)}, positions, school)
            except duckdb.Error:
                # DuckDB refused a record the pre-pass found valid: split them with Python's csv instead.
                con.execute("delete from raw.roster; delete from raw.roster_communities")
                _read_with_python(con, scanned, np.flatnonzero(good), _kept_fields(positions))
                _insert_rows(con, _FIELDS, {}, positions, school)
                con.execute(f"drop table {_FIELDS}")
    finally:
        con.execute(f"set preserve_insertion_order = {str(ordered).lower()}")
        con.unregister(_LINES)
    return int(good.sum()), findings


# The raw tables, replaced on every load (docs/architecture.md, `raw`); tests build them with it too.
RAW_TABLES = f"""
create schema if not exists raw;
create or replace table raw.roster (
    line_number integer, {", ".join(f"{column} varchar" for column in RAW_COLUMNS.values())}
);
create or replace table raw.roster_communities (line_number integer, column_name varchar, raw_value varchar);
create or replace table raw.file_columns (
    position integer, source_name varchar, canonical_name varchar, kind varchar
);
create or replace table raw.file (
    run_id varchar, school_id varchar, file_key varchar, file_version_id varchar, file_etag varchar,
    file_sha256 varchar, file_bytes bigint, file_encoding varchar, rows_in_file integer
);
"""


def _header_findings(header: tuple[str, ...], line: int, school: SchoolConfig, name: str) -> tuple:
    """Classify the header's columns; return (columns, findings) where columns are file_columns rows."""
    columns, findings, seen = [], [], {}
    for position, source in enumerate(header, start=1):
        canonical = school.canonical_header(source)
        if not canonical:
            findings.append(
                Finding(
                    rule="empty_header",
                    line_number=line,
                    column_name=str(position),
                    value=source,
                    message=(
                        f"{name}: line {line}, column {position}: the header name is blank; name every "
                        "column, or remove the extra comma at the end of the header."
                    ),
                )
            )
        if canonical in STANDARD_COLUMNS:
            kind = "standard"
        elif canonical in school.community_columns:
            kind = "community"
        else:
            kind = "unknown"
        if canonical:
            seen.setdefault(canonical, []).append((position, source))
        columns.append((position, source, canonical, kind))
    for canonical, places in seen.items():
        if len(places) > 1:
            listed = " and ".join(f'column {position} "{source}"' for position, source in places)
            findings.append(
                Finding(
                    rule="duplicate_header",
                    line_number=line,
                    column_name=canonical,
                    value=", ".join(source for _, source in places),
                    message=(
                        f"{name}: line {line}: {listed} both mean {canonical}; keep one of them, or "
                        "rename the other."
                    ),
                )
            )
    if not findings:
        for position, source, _, kind in columns:
            if kind == "unknown":
                findings.append(
                    Finding(
                        rule="unknown_column",
                        severity="warning",
                        line_number=line,
                        column_name=source,
                        message=(
                            f'{name}: line {line}, column {position}: "{source}" is neither a standard '
                            "column nor a community column of this school, so it is ignored; remove it, "
                            "or ask uConnect to map it."
                        ),
                    )
                )
    return columns, findings


def load_file(
    path: Path,
    school: SchoolConfig,
    con: duckdb.DuckDBPyConnection,
    *,
    file_name: str | None = None,
    run_id: str = "",
    file_meta: dict | None = None,
) -> LoadResult:
    """Load one school file into the `raw.*` tables (replacing them) and report what was wrong with it.

    A file-level rule leaves raw.roster empty and sets `rejected`; a ragged row is left out and reported.
    """
    path = Path(path)
    name = file_name or path.name
    con.execute(RAW_TABLES)
    meta = {"file_key": name, "file_bytes": path.stat().st_size, **(file_meta or {})}
    header, rows_in_file, rows_loaded, rejected = (), 0, 0, True
    try:
        scanned = scan_file(path, file_name=name)
    except FileRejected as exc:
        encoding, header, findings = exc.encoding, exc.header, [*exc.warnings, exc.finding]
    else:
        encoding, header, rows_in_file = scanned.encoding, scanned.header, scanned.rows_in_file
        columns, header_findings = _header_findings(header, scanned.header_line, school, name)
        # One statement: executemany took about 6 ms a row, a minute for a 10,000-column header.
        con.execute(
            "insert into raw.file_columns select unnest($position), unnest($source), unnest($canonical), "
            "unnest($kind)",
            {
                name: [column[index] for column in columns]
                for index, name in enumerate(("position", "source", "canonical", "kind"))
            },
        )
        findings = scanned.findings + header_findings
        rejected = any(f.severity == "error" for f in header_findings)
        if not rejected:
            rows_loaded, ragged = _load_rows(con, scanned, school, columns)
            findings += ragged
    con.execute(
        "insert into raw.file values (?, ?, ?, ?, ?, ?, ?, ?, ?)",
        [
            run_id,
            school.school_id,
            meta.get("file_key"),
            meta.get("file_version_id"),
            meta.get("file_etag"),
            meta.get("file_sha256"),
            meta.get("file_bytes"),
            encoding,
            rows_in_file,
        ],
    )
    findings.sort(key=lambda f: -1 if f.line_number is None else f.line_number)
    return LoadResult(
        encoding=encoding,
        header=header,
        rows_in_file=rows_in_file,
        rows_loaded=rows_loaded,
        findings=tuple(findings),
        rejected=rejected,
    )
