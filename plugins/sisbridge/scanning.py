"""The loader's byte-level pre-pass over a school file (numpy): encoding, quotes and records.

It decides whether the file is text at all and how it is encoded, checks its quoting, and splits it
into records, keeping the line where each one starts (`scan_file`). A file-level problem raises
`FileRejected` with the finding that names the file, line and rule; `sisbridge.loading` then loads
the records into `raw.*`.
"""

from __future__ import annotations

import codecs
import csv
import io
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from sisbridge.audit import Finding

if TYPE_CHECKING:
    import numpy as np

_MAGIC = (
    (b"\xd0\xcf\x11\xe0\xa1\xb1\x1a\xe1", "an Excel workbook (.xls) or another Office document"),
    (b"PK\x03\x04", "a ZIP archive, such as an Excel workbook (.xlsx)"),
    (b"PK\x05\x06", "an empty ZIP archive"),
    (b"\x1f\x8b", "a gzip-compressed file"),
    (b"%PDF-", "a PDF document"),
)
_UTF8_BOM = b"\xef\xbb\xbf"
_QUOTE, _COMMA, _LF, _CR = 34, 44, 10, 13
_VALUE_PREVIEW = 200


class FileRejected(Exception):
    """A file-level rule refused the whole file; `finding` says why and where."""

    def __init__(self, finding: Finding):
        super().__init__(finding.message)
        self.finding = finding
        self.encoding = ""  # "" when the file is not text at all
        self.header: tuple[str, ...] = ()
        self.warnings: tuple[Finding, ...] = ()


@dataclass
class ScannedFile:
    """A school file after the pre-pass: valid UTF-8 text split into records with their lines."""

    name: str
    encoding: str
    data: bytes  # UTF-8 bytes (with the BOM, if the file had one)
    source: Path | None  # the file on disk when `data` is its exact content
    header: tuple[str, ...]
    header_line: int
    header_span: tuple[int, int, int]  # start, end and stop of the header record
    starts: np.ndarray  # byte offset where each data record starts
    ends: np.ndarray  # byte offset where its content ends (before its line break)
    stops: np.ndarray  # byte offset just after its line break
    lines: np.ndarray  # the line where each data record starts
    field_counts: np.ndarray  # number of fields of each data record
    uniform_newlines: bool  # every record ends with LF, or every record ends with CRLF
    findings: list[Finding] = field(default_factory=list)

    @property
    def rows_in_file(self) -> int:
        return len(self.lines)


def _reject(rule: str, message: str, line: int | None = None, **extra) -> FileRejected:
    return FileRejected(Finding(rule=rule, message=message, line_number=line, **extra))


def _reject_as(encoding: str, rule: str, message: str, line: int | None = None) -> FileRejected:
    rejection = _reject(rule, message, line)
    rejection.encoding = encoding
    return rejection


def _line_at(data: bytes, pos: int) -> int:
    """The physical line (1-based; LF, CR and CRLF all end a line) that holds byte `pos`."""
    head = data[:pos]
    return 1 + head.count(b"\n") + head.count(b"\r") - head.count(b"\r\n")


def _c1_controls(error: UnicodeDecodeError) -> tuple[str, int]:
    # The five bytes Windows-1252 leaves undefined map to the C1 controls, as browsers do.
    return "".join(chr(b) for b in error.object[error.start : error.end]), error.end


def _first_invalid_utf8(data: bytes, start: int) -> int | None:
    """Offset of the first byte that is not valid UTF-8, or None; decodes in chunks to bound memory."""
    if data.isascii():
        return None
    chunk = 1 << 23
    pos = start
    while pos < len(data):
        end = min(pos + chunk, len(data))
        # Cut between characters: back off over at most three continuation bytes.
        for _ in range(3):
            if end < len(data) and 0x80 <= data[end] < 0xC0:
                end -= 1
        try:
            data[pos:end].decode("utf-8")
        except UnicodeDecodeError as exc:
            return pos + exc.start
        pos = end
    return None


def _decode(data: bytes, name: str) -> tuple[bytes, str, int, list[Finding]]:
    """Return the file as UTF-8 bytes, its encoding, the BOM length, and an encoding warning if any."""
    if not data:
        raise _reject(
            "file_empty", f"{name}: the file is empty; upload the roster CSV with a header and data."
        )
    for magic, what in _MAGIC:
        if data.startswith(magic):
            raise _reject(
                "binary_content",
                f"{name}: the file is {what}, not a CSV text file; export the roster as CSV (UTF-8).",
            )
    if data.startswith((b"\xff\xfe", b"\xfe\xff")):
        try:
            text = data.decode("utf-16")
        except UnicodeDecodeError as exc:
            good = data[: exc.start - exc.start % 2].decode("utf-16", errors="replace")
            line = 1 + len(re.findall(r"\r\n|\r|\n", good))
            raise _reject_as(
                "utf-16",
                "undecodable_utf16",
                f"{name}: line {line}: the file starts with a UTF-16 byte order mark but is not valid "
                f"UTF-16 ({exc.reason}); export the roster again, preferably as UTF-8.",
                line,
            ) from None
        data = text.encode("utf-8")
        encoding, bom = "utf-16", 0
    elif data.startswith(_UTF8_BOM):
        encoding, bom = "utf-8-sig", len(_UTF8_BOM)
    else:
        encoding, bom = "utf-8", 0
    nul = data.find(b"\x00")
    if nul >= 0:
        line = _line_at(data, nul)
        raise _reject_as(
            encoding,
            "nul_bytes",
            f"{name}: line {line}: the file contains NUL bytes, so it is not a CSV text file (a UTF-16 "
            "file without a byte order mark looks like this); export the roster as CSV (UTF-8).",
            line,
        )
    findings = []
    bad = _first_invalid_utf8(data, bom) if encoding != "utf-16" else None
    if bad is not None:
        line = _line_at(data, bad)
        byte = data[bad]
        codecs.register_error("sisbridge_c1", _c1_controls)
        data = data[bom:].decode("cp1252", errors="sisbridge_c1").encode("utf-8")
        encoding, bom = "windows-1252", 0
        findings.append(
            Finding(
                rule="encoding_fallback",
                severity="warning",
                line_number=line,
                value=f"0x{byte:02X}",
                message=(
                    f"{name}: line {line}: the file is not valid UTF-8 (byte 0x{byte:02X}), so it was read "
                    "as Windows-1252; "
                    "check that accented names look right, and save the file as UTF-8 next time."
                ),
            )
        )
    return data, encoding, bom, findings


def _outside_quotes(quotes, positions):
    """True for positions outside quoted values: after an even number of quotes (valid RFC 4180)."""
    import numpy as np

    return (np.searchsorted(quotes, positions) & 1) == 0


def _field_number(arr, quotes, record_start: int, pos: int) -> int:
    """1-based field of byte `pos` in the record that starts at `record_start`."""
    import numpy as np

    commas = record_start + np.flatnonzero(arr[record_start:pos] == _COMMA)
    return 1 + int(_outside_quotes(quotes, commas).sum())


def _is_separator(values):
    return (values == _COMMA) | (values == _LF) | (values == _CR)


def _check_quotes(data: bytes, arr, quotes, terms, bom: int, name: str) -> None:
    """Refuse quoting that RFC 4180 does not allow: stray quotes, text after a closing quote, no close."""
    import numpy as np

    if not len(quotes):
        return
    size = len(arr)
    opening, closing = quotes[0::2], quotes[1::2]
    before = arr[np.maximum(opening - 1, 0)]
    # An opening quote starts a field; one right after a closing quote is a doubled ("") quote.
    opens_ok = (opening == bom) | _is_separator(before) | (before == _QUOTE)
    after = arr[np.minimum(closing + 1, size - 1)]
    closes_ok = (closing == size - 1) | _is_separator(after) | (after == _QUOTE)
    bad_open = opening[~opens_ok]
    bad_close = closing[~closes_ok]
    candidates = [int(a[0]) for a in (bad_open, bad_close) if len(a)]

    def where(pos: int) -> tuple[int, int]:
        index = int(np.searchsorted(terms, pos))
        record_start = int(terms[index - 1]) + 1 if index else bom
        return _line_at(data, pos), _field_number(arr, quotes, record_start, pos)

    if candidates:
        pos = min(candidates)
        line, number = where(pos)
        if len(bad_open) and pos == bad_open[0]:
            raise _reject(
                "stray_quote",
                f"{name}: line {line}, field {number}: a double quote appears inside a value that does not "
                'start with a quote; put the whole value in double quotes and write the quote twice ("").',
                line,
            )
        opened = _line_at(data, int(quotes[np.searchsorted(quotes, pos) - 1]))
        since = f" (it opens on line {opened})" if opened != line else ""
        char = data[pos + 1 : pos + 5].decode("utf-8", errors="replace")[:1]
        raise _reject(
            "text_after_quote",
            f"{name}: line {line}, field {number}: a quoted value{since} is followed by {char!r} before the "
            'next comma or line end; quote the whole value, and write quotes inside it twice ("").',
            line,
            value=char,
        )
    if len(quotes) % 2:
        line, number = where(int(quotes[-1]))
        raise _reject(
            "unterminated_quote",
            f"{name}: line {line}, field {number}: a quoted value opens here and is never closed; add the "
            'closing double quote (a quote inside a value is written twice: "").',
            line,
        )


def parse_record(data: bytes, start: int, end: int) -> list[str]:
    """Split one record (already checked by the pre-pass) into its fields."""
    text = data[start:end].decode("utf-8")
    if len(text) >= csv.field_size_limit():
        csv.field_size_limit(len(text) + 1)  # a value is never longer than its record
    return next(csv.reader(io.StringIO(text, newline=""), strict=True), [""])


def scan_file(path: Path, *, file_name: str | None = None) -> ScannedFile:
    """Check one file's bytes and split it into records with their start lines; raise FileRejected."""
    name = file_name or Path(path).name
    data, encoding, bom, findings = _decode(Path(path).read_bytes(), name)
    try:
        return _scan(data, encoding, bom, findings, name, Path(path))
    except FileRejected as exc:
        exc.encoding, exc.warnings = encoding, tuple(findings)
        raise exc from None


def _scan(data: bytes, encoding: str, bom: int, findings: list, name: str, path: Path) -> ScannedFile:
    import numpy as np

    if re.compile(rb"\s*").fullmatch(data, bom):
        raise _reject(
            "file_empty",
            f"{name}: the file has only blank lines; upload the roster with its header and data.",
        )
    arr = np.frombuffer(data, dtype=np.uint8)
    size = len(arr)
    # A substring search is much faster than a numpy pass: skip the passes that would find nothing.
    quotes = np.flatnonzero(arr == _QUOTE) if b'"' in data else np.empty(0, np.int64)
    feeds = np.flatnonzero(arr == _LF)
    lone_returns = np.empty(0, np.int64)
    if b"\r" in data:
        returns = np.flatnonzero(arr == _CR)
        lone_returns = returns[arr[np.minimum(returns + 1, size - 1)] != _LF]
    breaks = np.union1d(feeds, lone_returns) if len(lone_returns) else feeds
    terms = breaks[_outside_quotes(quotes, breaks)] if len(quotes) else breaks
    _check_quotes(data, arr, quotes, terms, bom, name)

    crlf = (arr[terms] == _LF) & (terms > 0) & (arr[np.maximum(terms - 1, 0)] == _CR)
    starts = np.concatenate(([bom], terms + 1)).astype(np.int64)
    ends = np.concatenate((terms - crlf, [size])).astype(np.int64)
    stops = np.concatenate((terms + 1, [size])).astype(np.int64)
    if starts[-1] >= size:
        starts, ends, stops = starts[:-1], ends[:-1], stops[:-1]
    # When every line break ends a record, record i starts on line i + 1.
    lines = (
        np.arange(1, len(starts) + 1) if len(terms) == len(breaks) else np.searchsorted(breaks, starts) + 1
    )
    blank = starts == ends
    # Fields = commas in the record + 1, less the commas inside its quoted values.
    commas = np.flatnonzero(arr == _COMMA)
    # No comma lies between a record's end and the next start, so one search gives both bounds.
    field_counts = np.diff(np.searchsorted(commas, np.append(starts, size))) + 1
    if len(quotes):
        opening, closing = quotes[0::2], quotes[1::2]
        inside = np.searchsorted(commas, closing) - np.searchsorted(commas, opening)
        quoted = inside > 0
        owner = np.searchsorted(starts, opening[quoted], side="right") - 1
        field_counts -= np.bincount(owner, weights=inside[quoted], minlength=len(starts)).astype(np.int64)
    del commas

    first = int(np.argmax(~blank))
    for line in lines[blank]:
        findings.append(
            Finding(
                rule="blank_line",
                severity="warning",
                line_number=int(line),
                message=f"{name}: line {line}: blank line skipped; remove empty lines from the file.",
            )
        )
    header = tuple(parse_record(data, int(starts[first]), int(ends[first])))
    rows = np.flatnonzero(~blank)[1:]
    if not len(rows):
        rejection = _reject(
            "header_only",
            f"{name}: line {lines[first]}: the file has a header but no data record, so it is ignored "
            "(an empty upload never removes users); upload the full roster.",
            int(lines[first]),
        )
        rejection.header = header
        raise rejection
    # DuckDB reads one kind of line break per file, and skips blank lines without telling.
    uniform = bool(crlf.all()) or not (crlf.any() or (arr[terms] == _CR).any())
    return ScannedFile(
        name=name,
        encoding=encoding,
        data=data,
        source=path if encoding in ("utf-8", "utf-8-sig") else None,
        header=header,
        header_line=int(lines[first]),
        header_span=(int(starts[first]), int(ends[first]), int(stops[first])),
        starts=starts[rows],
        ends=ends[rows],
        stops=stops[rows],
        lines=lines[rows],
        field_counts=field_counts[rows],
        uniform_newlines=uniform and first == 0 and not blank.any(),
        findings=findings,
    )


def ragged_findings(scanned: ScannedFile, bad) -> list[Finding]:
    width = len(scanned.header)
    findings = []
    for index in bad:
        line, found = int(scanned.lines[index]), int(scanned.field_counts[index])
        record = scanned.data[int(scanned.starts[index]) : int(scanned.ends[index])]
        findings.append(
            Finding(
                rule="ragged_row",
                line_number=line,
                value=record[:_VALUE_PREVIEW].decode("utf-8", errors="replace"),
                message=(
                    f"{scanned.name}: line {line}: the record has {found} fields but the header has "
                    f"{width}; the row is rejected. Quote values that contain a comma, and give every "
                    "row one value per header column."
                ),
            )
        )
    return findings


def normalized_copy(scanned: ScannedFile, good, directory: str) -> Path:
    """Write the header and the good records as UTF-8 with LF line breaks, for DuckDB to read."""
    import numpy as np

    arr = np.frombuffer(scanned.data, dtype=np.uint8).copy()
    header_start, header_end, header_stop = scanned.header_span
    starts = np.concatenate(([header_start], scanned.starts[good]))
    ends = np.concatenate(([header_end], scanned.ends[good]))
    stops = np.concatenate(([header_stop], scanned.stops[good]))
    edges = np.zeros(len(arr) + 1, dtype=np.int8)
    edges[starts] += 1
    edges[ends] -= 1
    keep = np.cumsum(edges[:-1], dtype=np.int8).astype(bool)
    breaks = stops[stops > ends] - 1
    keep[breaks] = True
    arr[breaks] = _LF
    target = Path(directory) / "records.csv"
    arr[keep].tofile(target)
    return target


# nullstr is a line break, which no unquoted value can hold, and quoted values are never NULL:
# so an empty cell stays '' as in the file.
