"""The loader against third-party corpora: csv-spectrum, csvlint, DuckDB's CSV tests, SDS exports."""

from __future__ import annotations

import json

import pytest

from sisbridge import loading
from tests.loading.helpers import FIXTURES, community_records, make_school, roster, rules

SPECTRUM = FIXTURES / "csv-spectrum"


@pytest.mark.parametrize("case", sorted(p.stem for p in (SPECTRUM / "csvs").glob("*.csv")))
def test_csv_spectrum_case_loads_exactly_the_expected_rows(case, con):
    expected = json.loads((SPECTRUM / "json" / f"{case}.json").read_text(encoding="utf-8"))
    header = tuple(expected[0])
    result = loading.load_file(SPECTRUM / "csvs" / f"{case}.csv", make_school(header), con)

    assert not result.rejected
    assert result.header == header
    assert result.rows_loaded == result.rows_in_file == len(expected)
    assert [cells for _, cells in community_records(con, header)] == [
        [row[name] for name in header] for row in expected
    ]


def test_csv_spectrum_line_numbers_point_at_record_starts(con):
    result = loading.load_file(SPECTRUM / "csvs" / "newlines_crlf.csv", make_school(("A", "B", "C")), con)

    assert not result.findings
    # "Once upon\r\na time" spans lines 3-4, so the next record starts on line 5.
    assert [line for line, _ in community_records(con, ("a", "b", "c"))] == [2, 3, 5]


# Every file of the two folders, with the outcome the school would see.
OUTCOMES = {
    "csvlint/cr-line-endings.csv": ("loaded", 2),
    "csvlint/crlf-line-endings.csv": ("loaded", 2),
    "csvlint/inconsistent-line-endings-unquoted.csv": ("loaded", 2),
    "csvlint/inconsistent-line-endings.csv": ("loaded", 2),
    # Latin-1 text, and a trailing comma that leaves the 7th header name blank.
    "csvlint/invalid-byte-sequence.csv": ("rejected", "empty_header"),
    # Line 4 is `"1","2","3" `: text after a closing quote.
    "csvlint/invalid_many_rows.csv": ("rejected", "text_after_quote"),
    "csvlint/lf-line-endings.csv": ("loaded", 2),
    "csvlint/spreadsheet.xls": ("rejected", "binary_content"),
    "csvlint/spreadsheet.xlsx": ("rejected", "binary_content"),
    # A title row above the header becomes the header, with two blank names.
    "csvlint/title-row.csv": ("rejected", "empty_header"),
    "csvlint/valid.csv": ("loaded", 2),
    "csvlint/valid_many_rows.csv": ("loaded", 6),
    "csvlint/windows-line-endings.csv": ("loaded", 1),
    "duckdb-csv/auto__utf8bom.csv": ("loaded", 2),
    "duckdb-csv/empty.csv": ("rejected", "file_empty"),
    "duckdb-csv/encodings__latin1.csv": ("loaded", 12),
    "duckdb-csv/encodings__utf16.csv": ("loaded", 20),
    "duckdb-csv/header_only.csv": ("rejected", "header_only"),
    # A UTF-16 BOM then "bla", "bla", U+FFFD: valid UTF-16 despite the name.
    "duckdb-csv/invalid_utf8.csv": ("loaded", 2),
    "duckdb-csv/mixed_new_line.csv": ("loaded", 2),
    "duckdb-csv/nullbyte.csv": ("rejected", "nul_bytes"),
    "duckdb-csv/test__mixed_line_endings.csv": ("loaded", 2),
    "duckdb-csv/test__quoted_newline.csv": ("loaded", 1),
    "duckdb-csv/test__unterminated.csv": ("rejected", "unterminated_quote"),
    "duckdb-csv/test__windows_newline.csv": ("loaded", 19999),
}


def test_outcome_table_lists_every_file_of_both_folders():
    folders = ("csvlint", "duckdb-csv")
    on_disk = {
        f"{folder}/{path.name}"
        for folder in folders
        for path in (FIXTURES / folder).iterdir()
        if not path.name.startswith("LICENSE")
    }
    assert on_disk == set(OUTCOMES)


@pytest.mark.parametrize("name", sorted(OUTCOMES))
def test_corpus_file_has_its_expected_outcome(name, con):
    outcome, detail = OUTCOMES[name]
    result = loading.load_file(FIXTURES / name, make_school(), con)
    loaded = con.execute("select count(*) from raw.roster").fetchone()[0]

    if outcome == "loaded":
        assert not result.rejected
        assert result.rows_loaded == result.rows_in_file == loaded == detail
        assert not [f for f in result.findings if f.severity == "error"]
    else:
        assert result.rejected
        assert loaded == 0
        errors = [f for f in result.findings if f.severity == "error"]
        assert errors and {f.rule for f in errors} == {detail}
        assert all(f.message.startswith(name.split("/")[1] + ": ") for f in errors)


def test_line_endings_variants_load_the_same_rows(con):
    seen, school = set(), make_school(("FOO", "BSR", "BAR", "BAZ"))
    for name in ("cr-line-endings", "lf-line-endings", "inconsistent-line-endings", "crlf-line-endings"):
        loading.load_file(FIXTURES / "csvlint" / f"{name}.csv", school, con)
        seen.add(tuple(con.execute("select line_number, raw_value from raw.roster_communities").fetchall()))
    assert seen == {((2, "Biff"), (2, "Baff"), (2, "Boff"), (3, "Qux"), (3, "Teaspoon"), (3, "Doge"))}


def test_latin1_file_is_read_as_windows_1252_with_a_warning(con):
    result = loading.load_file(FIXTURES / "duckdb-csv" / "encodings__latin1.csv", make_school(("NAME",)), con)

    assert result.encoding == "windows-1252"
    assert [f for f in result.findings if f.rule != "unknown_column"] == [
        loading.Finding(
            rule="encoding_fallback",
            severity="warning",
            line_number=2,
            value="0xE9",
            message=(
                "encodings__latin1.csv: line 2: the file is not valid UTF-8 (byte 0xE9), so it was read as "
                "Windows-1252; check that accented names look right, and save the file as UTF-8 next time."
            ),
        )
    ]
    names = [cells[0] for _, cells in community_records(con, ("name",))]
    assert names[:3] == ["José Álvarez", "Müller", "François Dupont"]


def test_utf16_file_starts_with_the_same_rows_as_its_latin1_twin(con):
    school = make_school(("NAME", "AGE"))
    loading.load_file(FIXTURES / "duckdb-csv" / "encodings__latin1.csv", school, con)
    latin1 = community_records(con, ("name", "age"))
    result = loading.load_file(FIXTURES / "duckdb-csv" / "encodings__utf16.csv", school, con)

    assert result.encoding == "utf-16"
    assert not result.findings
    utf16 = community_records(con, ("name", "age"))
    assert len(utf16) == 20
    assert utf16[:12] == latin1
    assert utf16[12] == (14, ["Dvořák Novak", "60"])


SDS_CLASSIC = {
    "First Name": "FIRST_NAME",
    "Last Name": "LAST_NAME",
    "Username": "USER_LOGIN",
    "Secondary Email": "EMAIL",
    "Student Number": "USER_ID",
    "Graduation Year": "GRADUATION",
}


def test_sds_classic_export_loads_through_header_aliases(con):
    school = make_school(("GRADE",), header_aliases=SDS_CLASSIC)
    result = loading.load_file(FIXTURES / "sds-samples" / "sds-classic-100-students.csv", school, con)

    assert not result.rejected
    assert result.rows_loaded == result.rows_in_file == 86
    ignored = ["SIS ID", "School SIS ID", "Password", "State ID", "Middle Name", "Status", "Birthdate"]
    assert rules(result) == [("unknown_column", "warning", 1)] * len(ignored)
    assert [f.column_name for f in result.findings] == ignored
    rows = roster(con, "first_name", "last_name", "email", "user_id", "user_login", "graduation")
    assert rows[0] == (2, "Ora", "Klein", "", "13001", "OKlein", "2019")
    assert rows[-1] == (87, "Ramiro", "Skeen", "", "13091", "RSkeen", "2019")
    assert con.execute("select raw_value from raw.roster_communities where line_number = 2").fetchall() == [
        ("9",)
    ]
    kinds = con.execute("select canonical_name, kind from raw.file_columns order by position").fetchall()
    assert kinds[2:5] == [("FIRST_NAME", "standard"), ("LAST_NAME", "standard"), ("USER_LOGIN", "standard")]
    assert kinds[10] == ("GRADE", "community")


def test_sds_v2_users_export_loads_through_header_aliases(con):
    aliases = {
        "sourcedId": "USER_ID",
        "username": "USER_LOGIN",
        "givenName": "FIRST_NAME",
        "familyName": "LAST_NAME",
        "email": "EMAIL",
    }
    result = loading.load_file(FIXTURES / "sds-samples" / "sds-v2.1-users.csv", make_school((), aliases), con)

    assert (result.rows_loaded, result.rejected) == (8, False)
    assert [f.column_name for f in result.findings] == ["password", "activeDirectoryMatchId", "phone", "sms"]
    rows = roster(con, "user_id", "user_login", "first_name", "last_name", "email", "stakeholders")
    assert rows[1] == (3, "114002", "jean.craig@outlook.com", "Jean", "Craig", "jean.craig@outlook.com", None)
