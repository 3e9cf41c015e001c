"""The report a school reads: summary.json, findings.csv (safe in Excel), changes.csv, log summary."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import duckdb
import pytest

from sisbridge import audit, reports
from sisbridge.audit import Finding
from sisbridge.config import load_school

SCHOOLS = Path(__file__).resolve().parents[2] / "config" / "schools"


@pytest.fixture(scope="module")
def acme():
    return load_school(SCHOOLS / "acme.yaml")


@pytest.fixture
def con(tmp_path):
    connection = duckdb.connect(str(tmp_path / "warehouse.duckdb"))
    audit.ensure_schema(connection)
    yield connection
    connection.close()


def read_csv(path: Path) -> list[list[str]]:
    with path.open(newline="", encoding="utf-8-sig") as handle:
        return list(csv.reader(handle))


def add_user_changes(con, rows):
    con.execute("create schema if not exists marts")
    con.execute(
        "create table marts.user_changes (change_id varchar, external_id varchar, change_type varchar, "
        "field varchar, old_value varchar, new_value varchar, line_number integer)"
    )
    con.executemany("insert into marts.user_changes values (?, ?, ?, ?, ?, ?, ?)", rows)


def test_findings_csv_neutralises_cells_a_spreadsheet_would_run(con, acme, tmp_path):
    audit.upsert_run(con, "r1", school_id="acme", status="rejected")
    findings = [
        Finding("email_invalid", "EMAIL '=1+2' is not valid", line_number=2, identifier="=1+2", value="=1+2"),
        Finding(
            "first_name_blank", "FIRST_NAME is blank", line_number=3, identifier="+1@x.edu", value="+SUM(A1)"
        ),
        Finding("last_name_blank", "LAST_NAME is blank", line_number=4, identifier="-2@x.edu", value="-2+3"),
        Finding(
            "email_invalid", "@SUM(A1:A9) is not valid", line_number=5, identifier="@x", value="@SUM(A1:A9)"
        ),
        Finding("email_invalid", "tab", line_number=6, value="\t=cmd|' /C calc'!A0"),
        Finding("email_invalid", "cr", line_number=7, value="\r=cmd"),
        Finding("email_invalid", "plain", line_number=8, identifier="ann@acme.edu", value="a=b, -c"),
    ]
    audit.record_findings(con, "r1", "quality", findings)
    reports.write_reports(con, acme, "r1", tmp_path / "out")
    assert read_csv(tmp_path / "out" / "findings.csv") == [
        ["line", "identifier", "severity", "rule", "column", "message", "value"],
        ["2", "'=1+2", "error", "email_invalid", "", "EMAIL '=1+2' is not valid", "'=1+2"],
        ["3", "'+1@x.edu", "error", "first_name_blank", "", "FIRST_NAME is blank", "'+SUM(A1)"],
        ["4", "'-2@x.edu", "error", "last_name_blank", "", "LAST_NAME is blank", "'-2+3"],
        ["5", "'@x", "error", "email_invalid", "", "'@SUM(A1:A9) is not valid", "'@SUM(A1:A9)"],
        ["6", "", "error", "email_invalid", "", "tab", "'\t=cmd|' /C calc'!A0"],
        ["7", "", "error", "email_invalid", "", "cr", "'\r=cmd"],
        ["8", "ann@acme.edu", "error", "email_invalid", "", "plain", "a=b, -c"],
    ]
    # Excel only reads UTF-8 when the file starts with a byte order mark.
    assert (tmp_path / "out" / "findings.csv").read_bytes().startswith(b"\xef\xbb\xbf")


def test_summary_json_has_status_counts_encoding_and_a_count_per_rule(con, acme, tmp_path):
    audit.upsert_run(
        con,
        "r1",
        school_id="acme",
        status="rejected",
        status_reason="2 of 20 data records (10.0%) have a row-level error",
        file_key="roster.csv",
        file_encoding="utf-8",
        rows_in_file=20,
        rows_rejected=2,
        rows_warned=1,
    )
    audit.record_findings(
        con,
        "r1",
        "quality",
        [
            Finding("too_many_rejected_rows", "2 of 20", value="10.0"),
            Finding("email_invalid", "bad", line_number=3),
            Finding("email_invalid", "bad", line_number=9),
        ],
    )
    audit.record_findings(
        con, "r1", "transform", [Finding("graduation_unparseable", "soon", severity="warning", line_number=4)]
    )
    paths = reports.write_reports(con, acme, "r1", tmp_path / "out")
    assert [p.name for p in paths] == ["summary.json", "findings.csv"]
    summary = json.loads((tmp_path / "out" / "summary.json").read_text(encoding="utf-8"))
    assert summary["status"] == "rejected"
    assert summary["status_reason"] == "2 of 20 data records (10.0%) have a row-level error"
    assert summary["file"]["encoding"] == "utf-8"
    assert summary["file"]["key"] == "roster.csv"
    assert summary["counts"]["rows_in_file"] == 20
    assert summary["counts"]["rows_rejected"] == 2
    assert summary["counts"]["rows_warned"] == 1
    assert summary["findings"] == {"errors": 3, "warnings": 1}
    assert summary["rules"] == {
        "email_invalid": {"severity": "error", "count": 2},
        "graduation_unparseable": {"severity": "warning", "count": 1},
        "too_many_rejected_rows": {"severity": "error", "count": 1},
    }
    # The file-level finding comes first, then rows in line order, from every stage.
    assert [row[0] for row in read_csv(tmp_path / "out" / "findings.csv")[1:]] == ["", "3", "4", "9"]


CHANGES = [
    ("c2", "bob@acme.edu", "update", "last_name", "Ray", "=Rey", 3),
    ("c1", "ann@acme.edu", "create", None, None, None, 2),
    ("c3", "old@acme.edu", "deactivate", None, None, None, None),
]


@pytest.mark.parametrize("status", ["dry_run", "held", "succeeded"])
def test_changes_csv_holds_the_change_set_of_dry_held_and_pushed_runs(con, acme, tmp_path, status):
    audit.upsert_run(con, "r1", school_id="acme", status=status)
    add_user_changes(con, CHANGES)
    paths = reports.write_reports(con, acme, "r1", tmp_path / "out")
    assert tmp_path / "out" / "changes.csv" in paths
    assert read_csv(tmp_path / "out" / "changes.csv") == [
        ["change_id", "external_id", "change_type", "field", "old_value", "new_value", "line_number"],
        ["c1", "ann@acme.edu", "create", "", "", "", "2"],
        ["c2", "bob@acme.edu", "update", "last_name", "Ray", "'=Rey", "3"],
        ["c3", "old@acme.edu", "deactivate", "", "", "", ""],
    ]


def test_a_rejected_run_never_reports_a_previous_runs_change_set(con, acme, tmp_path):
    add_user_changes(con, CHANGES)
    audit.upsert_run(con, "r2", school_id="acme", status="rejected")
    (tmp_path / "out").mkdir()
    (tmp_path / "out" / "changes.csv").write_text("stale\n", encoding="utf-8")
    paths = reports.write_reports(con, acme, "r2", tmp_path / "out")
    assert [p.name for p in paths] == ["summary.json", "findings.csv"]
    assert not (tmp_path / "out" / "changes.csv").exists()


def test_the_data_docs_are_listed_for_the_validation_task_and_not_by_write_reports(con, acme, tmp_path):
    audit.upsert_run(con, "r1", school_id="acme", status="rejected")
    docs = tmp_path / "out" / "data_docs"
    (docs / "validations").mkdir(parents=True)
    (docs / "index.html").write_text("<html></html>", encoding="utf-8")
    (docs / "validations" / "v.html").write_text("<html></html>", encoding="utf-8")
    paths = reports.write_reports(con, acme, "r1", tmp_path / "out")
    # finalize uploads what it writes; validate uploads the Data Docs, on its own worker.
    assert [p.relative_to(tmp_path / "out").as_posix() for p in paths] == ["summary.json", "findings.csv"]
    assert [
        p.relative_to(tmp_path / "out").as_posix() for p in reports.data_docs_files(tmp_path / "out")
    ] == [
        "data_docs/index.html",
        "data_docs/validations/v.html",
    ]
    assert reports.data_docs_files(tmp_path / "none") == []


def test_write_reports_needs_the_runs_audit_row(con, acme, tmp_path):
    with pytest.raises(ValueError, match="run 'nope' has no row in audit.sync_runs"):
        reports.write_reports(con, acme, "nope", tmp_path)


def test_log_summary_counts_by_rule_and_shows_at_most_three_lines_each():
    findings = [
        Finding("email_invalid", f"EMAIL 'user{i}@' is not valid", line_number=i, identifier=f"user{i}@")
        for i in range(2, 8)
    ]
    findings.append(
        Finding("unknown_column", "COLOR is not a known column", severity="warning", line_number=1)
    )
    findings.append(Finding("too_many_rejected_rows", "6 of 6 data records have a row-level error"))
    text = reports.log_summary(findings)
    assert text.splitlines() == [
        "8 findings: 7 errors, 1 warning",
        "email_invalid (error): 6",
        "  line 2: EMAIL 'user2@' is not valid",
        "  line 3: EMAIL 'user3@' is not valid",
        "  line 4: EMAIL 'user4@' is not valid",
        "  ... and 3 more",
        "too_many_rejected_rows (error): 1",
        "  file: 6 of 6 data records have a row-level error",
        "unknown_column (warning): 1",
        "  line 1: COLOR is not a known column",
    ]
    assert "user5@" not in text
    assert reports.log_summary([]) == "no findings"
