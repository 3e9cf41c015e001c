"""Property: whatever Python's csv.writer writes, with any line terminator and BOM, loads back as is."""

from __future__ import annotations

import csv
import io
import re
import tempfile
from pathlib import Path

import duckdb
from hypothesis import event, given, settings
from hypothesis import strategies as st

from sisbridge import loading
from tests.loading.helpers import community_records, make_school

# Any character but NUL (a file-level rejection) and U+FEFF (which the loader drops as a BOM in
# the header). Line breaks and quotes are drawn often, since they are what a CSV reader gets wrong.
CELLS = st.text(
    alphabet=st.one_of(
        st.sampled_from(',"\r\n \t;'),
        st.characters(blacklist_characters="\x00\ufeff", blacklist_categories=("Cs",)),
    ),
    max_size=12,
)


@st.composite
def rosters(draw):
    width = draw(st.integers(min_value=1, max_value=4))
    rows = draw(st.lists(st.lists(CELLS, min_size=width, max_size=width), min_size=1, max_size=8))
    return width, rows


@settings(max_examples=100, deadline=None)
@given(
    roster=rosters(),
    terminator=st.sampled_from(["\n", "\r\n", "\r"]),
    bom=st.booleans(),
    final_break=st.booleans(),
    quote_all=st.booleans(),
)
def test_what_csv_writer_writes_loads_back_identically(roster, terminator, bom, final_break, quote_all):
    width, rows = roster
    header = [f"COL{i}" for i in range(width)]
    # csv.writer's minimal quoting only quotes the line breaks of its own terminator: a lone CR in
    # an LF file (or LF in a CR file) is written bare, which RFC 4180 forbids. Quote all then.
    stray = set("\r\n") - set(terminator)
    if any(stray & set(cell) for row in rows for cell in row):
        quote_all = True
    out = io.StringIO()
    writer = csv.writer(
        out, lineterminator=terminator, quoting=csv.QUOTE_ALL if quote_all else csv.QUOTE_MINIMAL
    )
    writer.writerow(header)
    lines = []
    for row in rows:
        # The record starts on the line after all the line breaks written so far.
        lines.append(1 + len(re.findall(r"\r\n|\r|\n", out.getvalue())))
        writer.writerow(row)
    text = out.getvalue() if final_break else out.getvalue()[: -len(terminator)]

    with tempfile.TemporaryDirectory() as directory:
        path = Path(directory) / "roster.csv"
        path.write_bytes((b"\xef\xbb\xbf" if bom else b"") + text.encode("utf-8"))
        con = duckdb.connect()
        result = loading.load_file(path, make_school(header), con)

        assert (result.rejected, result.findings) == (False, ())
        assert result.encoding == ("utf-8-sig" if bom else "utf-8")
        assert result.header == tuple(header)
        assert result.rows_loaded == result.rows_in_file == len(rows)
        assert community_records(con, tuple(header)) == list(zip(lines, rows, strict=True))
        con.close()


# A header, then a body of tokens that matter; quotes mostly come as whole quoted values, so that
# many files are valid, and sometimes alone.
TOKENS = ["a", "b", " ", ",", ",", "\n", "\r", "\r\n", '"a,b"', '"x\ny"', '"\r"', '""', '"a""b"', '"']
TEXTS = st.builds(
    lambda header, eol, body: header + eol + "".join(body),
    st.sampled_from(["a", "a,b", "a,b,c", '"a,",b']),
    st.sampled_from(["\n", "\r\n", "\r"]),
    st.lists(st.sampled_from(TOKENS), max_size=20),
)


@settings(max_examples=150, deadline=None)
@given(text=TEXTS | st.text(alphabet=st.sampled_from('ab ,"\r\n'), max_size=40))
def test_any_text_is_refused_or_read_like_pythons_strict_csv_reader(text):
    """Differential check against Python's csv module (strict mode) on small messy texts."""
    reader = csv.reader(io.StringIO(text, newline=""), strict=True)
    records, python_error = [], False
    try:
        line = 0
        for record in reader:
            records.append((line + 1, record))
            line = reader.line_num
    except csv.Error:
        python_error = True
    records = [(line, record) for line, record in records if record]  # blank lines are skipped

    with tempfile.TemporaryDirectory() as directory:
        path = Path(directory) / "roster.csv"
        path.write_bytes(text.encode("utf-8"))
        header = records[0][1] if records else []
        communities = sorted({name.strip().upper() for name in header if name.strip()})
        con = duckdb.connect()
        result = loading.load_file(path, make_school(communities), con)
        event("rejected" if result.rejected else "accepted")
        if python_error:
            assert result.rejected
        if result.rejected:
            return
        # Accepted: the same header, and the same records at the same lines, ragged ones reported.
        width = len(header)
        assert result.header == tuple(header)
        assert community_records(con, result.header) == [
            (line, record) for line, record in records[1:] if len(record) == width
        ]
        assert [f.line_number for f in result.findings if f.rule == "ragged_row"] == [
            line for line, record in records[1:] if len(record) != width
        ]
        con.close()
