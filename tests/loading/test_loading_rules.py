"""Each loader rule, line numbers, encodings and the raw tables, on small files written by the tests."""

from __future__ import annotations

import codecs

import pytest

from sisbridge import loading
from sisbridge.audit import Finding
from sisbridge.config import load_school
from tests.loading.helpers import DATA, PROJECT_ROOT, community_records, make_school, roster, rules

CONFIG = PROJECT_ROOT / "config" / "schools"

SCHOOL = make_school(("PROGRAM",))
NAMES = ("first_name", "last_name", "email")


@pytest.mark.parametrize("eol", [b"\n", b"\r\n", b"\r"], ids=["lf", "crlf", "cr"])
def test_line_numbers_count_quoted_line_breaks_and_ragged_rows_are_rejected(eol, con, write):
    path = write(
        b"FIRST_NAME,LAST_NAME,EMAIL,PROGRAM" + eol
        + b'Ada,Lovelace,ada@uni.edu,"Econ' + eol + b'Math"' + eol
        + b"Alan,Turing,alan@uni.edu" + eol
        + b'"Grace' + eol + eol + b'B",Hopper,grace@uni.edu,Nursing' + eol
        + b'Linus,"Torvalds, Jr.",linus@uni.edu,Econ,extra' + eol
        + b"Katherine,Johnson,kj@uni.edu,"
    )  # fmt: skip
    result = loading.load_file(path, SCHOOL, con, file_name="acme/roster.csv")
    text = eol.decode()

    assert (result.rows_in_file, result.rows_loaded, result.rejected) == (5, 3, False)
    assert roster(con, *NAMES) == [
        (2, "Ada", "Lovelace", "ada@uni.edu"),
        (5, f"Grace{text}{text}B", "Hopper", "grace@uni.edu"),
        (9, "Katherine", "Johnson", "kj@uni.edu"),
    ]
    assert result.findings == (
        Finding(
            rule="ragged_row",
            line_number=4,
            value="Alan,Turing,alan@uni.edu",
            message=(
                "acme/roster.csv: line 4: the record has 3 fields but the header has 4; the row is "
                "rejected. Quote values that contain a comma, and give every row one value per header column."
            ),
        ),
        Finding(
            rule="ragged_row",
            line_number=8,
            value='Linus,"Torvalds, Jr.",linus@uni.edu,Econ,extra',
            message=(
                "acme/roster.csv: line 8: the record has 5 fields but the header has 4; the row is "
                "rejected. Quote values that contain a comma, and give every row one value per header column."
            ),
        ),
    )
    assert community_records(con, ("PROGRAM",)) == [
        (2, [f"Econ{text}Math"]),
        (5, ["Nursing"]),
        (9, [""]),
    ]


def test_blank_lines_are_skipped_with_a_warning_and_do_not_shift_line_numbers(con, write):
    path = write(b"\r\nFIRST_NAME,LAST_NAME\r\nAda,Lovelace\r\n\r\nAlan,Turing\r\n\r\n")
    result = loading.load_file(path, SCHOOL, con)

    assert rules(result) == [
        ("blank_line", "warning", 1),
        ("blank_line", "warning", 4),
        ("blank_line", "warning", 6),
    ]
    assert (
        result.findings[1].message
        == "roster.csv: line 4: blank line skipped; remove empty lines from the file."
    )
    assert roster(con, "first_name", "last_name") == [(3, "Ada", "Lovelace"), (5, "Alan", "Turing")]
    assert result.rows_in_file == 2


def test_raw_roster_keeps_values_as_written_and_nulls_only_missing_columns(con, write):
    path = write(b'user_type , First_Name,EMAIL,DELETE,Program\nAlumni,  Ada ,"",yes," Econ; Math "\n')
    result = loading.load_file(path, SCHOOL, con, run_id="run-7")

    assert not result.findings
    assert result.header == ("user_type ", " First_Name", "EMAIL", "DELETE", "Program")
    assert con.execute("select * from raw.roster").fetchall() == [
        (2, "  Ada ", None, "", None, None, None, None, None, "yes", "Alumni")
    ]
    assert con.execute("select * from raw.roster_communities").fetchall() == [(2, "PROGRAM", " Econ; Math ")]
    assert con.execute("select * from raw.file_columns order by position").fetchall() == [
        (1, "user_type ", "USER_TYPE", "standard"),
        (2, " First_Name", "FIRST_NAME", "standard"),
        (3, "EMAIL", "EMAIL", "standard"),
        (4, "DELETE", "DELETE", "standard"),
        (5, "Program", "PROGRAM", "community"),
    ]


def test_raw_file_records_the_landing_metadata(con, write):
    path = write(b"FIRST_NAME\nAda\nAlan\n")
    meta = {
        "file_key": "exports/roster.csv",
        "file_version_id": "v42",
        "file_etag": '"abc"',
        "file_sha256": "0" * 64,
        "file_bytes": 21,
    }
    loading.load_file(path, SCHOOL, con, run_id="run-1", file_meta=meta)

    assert con.execute("select * from raw.file").fetchall() == [
        ("run-1", "testu", "exports/roster.csv", "v42", '"abc"', "0" * 64, 21, "utf-8", 2)
    ]


def test_loading_again_replaces_every_raw_table(con, write):
    loading.load_file(write(b"FIRST_NAME,PROGRAM\nAda,Econ\nAlan,Math\n", "a.csv"), SCHOOL, con, run_id="a")
    result = loading.load_file(write(b"FIRST_NAME,PROGRAM\n", "b.csv"), SCHOOL, con, run_id="b")

    assert result.rejected
    assert result.header == ("FIRST_NAME", "PROGRAM")
    counts = [
        con.execute(f"select count(*) from raw.{table}").fetchone()[0]
        for table in ("roster", "roster_communities", "file_columns", "file")
    ]
    assert counts == [0, 0, 0, 1]
    assert con.execute("select run_id, rows_in_file from raw.file").fetchall() == [("b", 0)]


def test_unknown_column_is_a_warning_and_is_ignored(con, write):
    path = write(b"FIRST_NAME,Shoe Size,PROGRAM\nAda,38,Econ\n")
    result = loading.load_file(path, SCHOOL, con, file_name="roster.csv")

    assert not result.rejected
    assert result.findings == (
        Finding(
            rule="unknown_column",
            severity="warning",
            line_number=1,
            column_name="Shoe Size",
            message=(
                'roster.csv: line 1, column 2: "Shoe Size" is neither a standard column nor a community '
                "column of this school, so it is ignored; remove it, or ask uConnect to map it."
            ),
        ),
    )
    assert con.execute("select kind from raw.file_columns where position = 2").fetchone() == ("unknown",)
    assert roster(con, "first_name") == [(2, "Ada")]


def test_duplicate_headers_after_aliases_reject_the_file_and_name_both_columns(con, write):
    # USER_TYPE and STAKEHOLDERS are two columns (a non-blank USER_TYPE wins), not one column twice.
    school = make_school(header_aliases={"Given Name": "FIRST_NAME"})
    path = write(
        b"Given Name,LAST_NAME,email,First_Name,Email ,User_Type,STAKEHOLDERS\nA,B,c@d.e,A,c@d.e,X,X\n"
    )
    result = loading.load_file(path, school, con)

    assert result.rejected
    assert [(f.rule, f.column_name, f.message) for f in result.findings] == [
        (
            "duplicate_header",
            "FIRST_NAME",
            'roster.csv: line 1: column 1 "Given Name" and column 4 "First_Name" both mean FIRST_NAME; '
            "keep one of them, or rename the other.",
        ),
        (
            "duplicate_header",
            "EMAIL",
            'roster.csv: line 1: column 3 "email" and column 5 "Email " both mean EMAIL; '
            "keep one of them, or rename the other.",
        ),
    ]
    assert con.execute("select count(*) from raw.roster").fetchone() == (0,)
    assert con.execute("select count(*) from raw.file_columns").fetchone() == (7,)
    assert result.rows_in_file == 1


@pytest.mark.parametrize(
    "header", [b"FIRST_NAME,,EMAIL", b"FIRST_NAME,  ,EMAIL", b"FIRST_NAME,\xef\xbb\xbf,EMAIL"]
)
def test_blank_header_name_rejects_the_file(header, con, write):
    result = loading.load_file(write(header + b"\nAda,x,ada@uni.edu\n"), SCHOOL, con)

    assert result.rejected
    assert [(f.rule, f.line_number, f.column_name, f.message) for f in result.findings] == [
        (
            "empty_header",
            1,
            "2",
            "roster.csv: line 1, column 2: the header name is blank; name every column, or remove the "
            "extra comma at the end of the header.",
        )
    ]


ENCODED = "FIRST_NAME,LAST_NAME\r\nJosé,Núñez\r\nZoë,O’Neil\r\n"


@pytest.mark.parametrize(
    ("content", "encoding"),
    [
        (ENCODED.encode("utf-8"), "utf-8"),
        (codecs.BOM_UTF8 + ENCODED.encode("utf-8"), "utf-8-sig"),
        (ENCODED.encode("utf-16"), "utf-16"),
        (codecs.BOM_UTF16_BE + ENCODED.encode("utf-16-be"), "utf-16"),
        (codecs.BOM_UTF16_LE + ENCODED.encode("utf-16-le"), "utf-16"),
    ],
    ids=["utf-8", "utf-8-bom", "utf-16", "utf-16-be", "utf-16-le"],
)
def test_unicode_encodings_load_the_same_rows_without_findings(content, encoding, con, write):
    result = loading.load_file(write(content), SCHOOL, con)

    assert (result.encoding, result.findings, result.header) == (encoding, (), ("FIRST_NAME", "LAST_NAME"))
    assert roster(con, "first_name", "last_name") == [(2, "José", "Núñez"), (3, "Zoë", "O’Neil")]


def test_windows_1252_is_the_fallback_with_a_warning_on_the_first_bad_line(con, write):
    # 0x80 is the euro sign in Windows-1252; 0x81 is undefined there and is kept as U+0081.
    content = "FIRST_NAME,LAST_NAME\r\nAda,Lovelace\r\nJosé,Núñez €\r\n".encode("cp1252") + b"X\x81,Y\r\n"
    result = loading.load_file(write(content), SCHOOL, con)

    assert result.encoding == "windows-1252"
    assert rules(result) == [("encoding_fallback", "warning", 3)]
    assert result.findings[0].value == "0xE9"
    assert roster(con, "first_name", "last_name") == [
        (2, "Ada", "Lovelace"),
        (3, "José", "Núñez €"),
        (4, "X\x81", "Y"),
    ]


# One small file per file-level rule, with the line and the start of the message the school reads.
REJECTIONS = {
    "file_empty": (b"", None, "roster.csv: the file is empty;"),
    "header_only": (b"FIRST_NAME,EMAIL\r\n\r\n", 1, "roster.csv: line 1: the file has a header but no data"),
    "unterminated_quote": (
        b'FIRST_NAME,PROGRAM\nAda,Econ\nAlan,"Math\nGrace,Econ\n',
        3,
        "roster.csv: line 3, field 2: a quoted value opens here and is never closed;",
    ),
    "stray_quote": (
        b'FIRST_NAME,PROGRAM\nAda,Econ\nDwayne "The Rock",Econ\n',
        3,
        "roster.csv: line 3, field 1: a double quote appears inside a value that does not start with a",
    ),
    "text_after_quote": (
        b'FIRST_NAME,PROGRAM\n"Ada\nB" Jr,Econ\n',
        3,
        "roster.csv: line 3, field 1: a quoted value (it opens on line 2) is followed by ' ' before the next",
    ),
    "nul_bytes": (b"FIRST_NAME\nAda\nAl\x00an\n", 3, "roster.csv: line 3: the file contains NUL bytes"),
    "binary_content": (
        b"PK\x03\x04\x14\x00\x06\x00" + bytes(range(256)),
        None,
        "roster.csv: the file is a ZIP archive, such as an Excel workbook (.xlsx), not a CSV text file;",
    ),
    "undecodable_utf16": (
        codecs.BOM_UTF16_LE + "FIRST_NAME\r\nAda\r\n".encode("utf-16-le") + b"\x00\xdc",
        3,
        "roster.csv: line 3: the file starts with a UTF-16 byte order mark but is not valid UTF-16",
    ),
}


@pytest.mark.parametrize("rule", sorted(REJECTIONS))
def test_file_level_rule_rejects_the_whole_file_with_line_and_reason(rule, con, write):
    content, line, message = REJECTIONS[rule]
    result = loading.load_file(write(content), SCHOOL, con)

    assert result.rejected
    errors = [f for f in result.findings if f.severity == "error"]
    assert [(f.rule, f.line_number) for f in errors] == [(rule, line)]
    assert errors[0].message.startswith(message)
    assert con.execute("select count(*) from raw.roster").fetchone() == (0,)
    assert con.execute("select count(*) from raw.file").fetchone() == (1,)


@pytest.mark.parametrize(
    ("content", "what"),
    [
        (
            bytes.fromhex("d0cf11e0a1b11ae1") + bytes(64),
            "an Excel workbook (.xls) or another Office document",
        ),
        (b"\x1f\x8b\x08\x00" + bytes(64), "a gzip-compressed file"),
        (b"%PDF-1.7\n" + bytes(64), "a PDF document"),
    ],
)
def test_binary_uploads_are_named_for_what_they_are(content, what, con, write):
    result = loading.load_file(write(content, "roster.xls"), SCHOOL, con)

    assert [f.message for f in result.findings] == [
        f"roster.xls: the file is {what}, not a CSV text file; export the roster as CSV (UTF-8)."
    ]


@pytest.mark.parametrize("content", [b"\xef\xbb\xbf", b"\r\n\r\n  \n", codecs.BOM_UTF16_LE])
def test_a_file_with_nothing_but_a_bom_or_blank_lines_is_empty(content, con, write):
    result = loading.load_file(write(content), SCHOOL, con)

    assert (result.rejected, rules(result)) == (True, [("file_empty", "error", None)])


def test_every_rule_has_a_description_and_an_example_in_these_tests():
    row_and_header_rules = {"encoding_fallback", "blank_line", "ragged_row", "unknown_column"}
    header_rules = {"empty_header", "duplicate_header"}
    assert set(loading.RULES) == set(REJECTIONS) | row_and_header_rules | header_rules
    assert all(rule.isidentifier() and rule.islower() for rule in loading.RULES)


@pytest.mark.parametrize("ragged", [b"", b"Grace,Econ,extra\n"], ids=["all-fit", "one-ragged"])
def test_a_record_duckdb_refuses_is_read_exactly_by_the_fallback(ragged, con, write):
    # DuckDB refuses lines over 2 MB (or skips them, when it skips ragged rows too); the pre-pass
    # accepted the file, so Python's csv module reads it instead.
    long_value = "x" * 2_100_000
    path = write(b"FIRST_NAME,PROGRAM\n" + ragged + f'Ada,"{long_value}"\nAlan,"a,""b"""\n'.encode())
    result = loading.load_file(path, SCHOOL, con)
    first = 3 if ragged else 2

    assert result.rows_loaded == 2
    assert rules(result) == ([("ragged_row", "error", 2)] if ragged else [])
    assert community_records(con, ("PROGRAM",)) == [(first, [long_value]), (first + 1, ['a,"b"'])]
    assert roster(con, "first_name") == [(first, "Ada"), (first + 1, "Alan")]


def test_demo_school_roster_loads_with_its_real_config(con):
    school = load_school(CONFIG / "acme.yaml")
    result = loading.load_file(DATA / "acme_roster.csv", school, con, file_name="roster.csv", run_id="r1")

    assert (result.encoding, result.rows_in_file, result.rows_loaded) == ("utf-8-sig", 4, 3)
    assert rules(result) == [("unknown_column", "warning", 1), ("ragged_row", "error", 4)]
    assert result.findings[1].message.startswith("roster.csv: line 4: the record has 7 fields but the header")
    assert con.execute("select * from raw.roster order by line_number").fetchall() == [
        # The file's User_Type column is USER_TYPE, the last column of raw.roster.
        (2, "Ada", "Lovelace", "ada@acme.edu", None, None, "2026-05-15", None, "0", None, "Undergraduate"),
        (3, "Alan", "Turing, Jr.", "alan@acme.edu", None, None, "2027", None, "yes", None, "Graduate"),
        (5, "Katherine", "Johnson", "kj@acme.edu", None, None, "2024", None, "1", None, "Alumni"),
    ]
    assert con.execute(
        "select * from raw.roster_communities order by line_number, column_name"
    ).fetchall() == [
        (2, "AFFINITY", "Chess Club; Debate, Model UN"),
        (2, "PROGRAM", "Econ"),
        (3, "AFFINITY", ""),
        (3, "PROGRAM", "BAC-CHEM-1;Finance"),
        (5, "AFFINITY", "First Generation"),
        (5, "PROGRAM", "Math\r\nPhysics"),
    ]


def test_second_demo_school_export_loads_through_its_header_aliases(con):
    school = load_school(CONFIG / "globex.yaml")
    result = loading.load_file(DATA / "globex_students.csv", school, con, file_name="exports/students.csv")

    assert result.encoding == "windows-1252"
    assert rules(result) == [("encoding_fallback", "warning", 2)]
    assert con.execute("select * from raw.roster order by line_number").fetchall() == [
        (2, "José", "Núñez", "jose@globex.edu", "100234", None, "2026", "Undergraduate", None, "", None),
        (3, "Mei", "Chen", "mei@globex.edu", "100235", None, "2025", "Graduate", None, "YES", None),
    ]
    assert con.execute("select canonical_name from raw.file_columns order by position").fetchall() == [
        (name,)
        for name in (
            "USER_ID", "FIRST_NAME", "LAST_NAME", "EMAIL", "GRADUATION",
            "STAKEHOLDERS", "PROGRAM", "ACADEMIC_COLLEGE", "DELETE",
        )
    ]  # fmt: skip
