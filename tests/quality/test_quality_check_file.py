"""`sisbridge check`'s core: the real loader and the real checks in a throwaway warehouse."""

from __future__ import annotations

import csv
import json
import tempfile
from pathlib import Path

import pytest

from sisbridge import check
from sisbridge.config import SchoolConfig, Thresholds
from tests.corpora import CORPORA


@pytest.fixture(autouse=True)
def isolated(tmp_path, monkeypatch):
    """Run each check with its own temp root, home and working folder, to prove it leaves nothing."""
    scratch = tmp_path / "scratch"
    scratch.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(scratch))
    monkeypatch.setenv("SISBRIDGE_HOME", str(tmp_path / "home"))
    monkeypatch.chdir(tmp_path)
    yield
    assert list(scratch.iterdir()) == []
    assert not (tmp_path / "home").exists()


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "roster.csv"
    path.write_text(text, encoding="utf-8")
    return path


def findings_rows(out: Path) -> list[list[str]]:
    with (out / "findings.csv").open(newline="", encoding="utf-8-sig") as handle:
        return list(csv.reader(handle))[1:]


def test_an_accepted_file_exits_0_and_writes_the_report(tmp_path, capsys):
    path = write(tmp_path, "FIRST_NAME,LAST_NAME,EMAIL\nAnn,Lee,ann@acme.edu\nBob,Ray,bob@acme.edu\n")
    out = tmp_path / "out"
    assert check.check_file(path, check.default_school_config(), out) == 0
    assert capsys.readouterr().out.splitlines() == [
        "roster.csv: ACCEPTED",
        "school: check (default checks, no --school given); identifier email, duplicates reject_file, "
        "max_rejected_pct 5",
        "encoding utf-8; 2 data records: 2 accepted, 0 rejected, 0 with warnings",
        "no findings",
        f"report written to {out}",
    ]
    summary = json.loads((out / "summary.json").read_text(encoding="utf-8"))
    assert summary["status"] == "dry_run"
    assert summary["counts"]["rows_accepted"] == 2
    assert summary["file"]["bytes"] == path.stat().st_size
    assert findings_rows(out) == []
    assert (out / "data_docs" / "index.html").is_file()
    assert not (out / "changes.csv").exists()


def test_without_out_nothing_is_written(tmp_path, capsys):
    path = write(tmp_path, "FIRST_NAME,LAST_NAME,EMAIL\nAnn,Lee,ann@acme.edu\n")
    assert check.check_file(path, check.default_school_config(), None) == 0
    assert sorted(p.name for p in tmp_path.iterdir()) == ["roster.csv", "scratch"]
    assert "report written" not in capsys.readouterr().out


def test_a_repeated_email_in_another_case_rejects_the_file_under_reject_file(tmp_path, capsys):
    path = write(
        tmp_path,
        "FIRST_NAME,LAST_NAME,EMAIL\nAnn,Lee,ann@acme.edu\nBob,Ray,bob@acme.edu\nAnn,Lee,ANN@acme.edu\n",
    )
    out = tmp_path / "out"
    assert check.check_file(path, check.default_school_config(), out) == 1
    assert capsys.readouterr().out.splitlines()[:3] == [
        "roster.csv: REJECTED",
        "school: check (default checks, no --school given); identifier email, duplicates reject_file, "
        "max_rejected_pct 5",
        "encoding utf-8; 3 data records: 0 accepted, 0 rejected, 0 with warnings",
    ]
    assert findings_rows(out) == [
        [
            "2",
            "ann@acme.edu",
            "error",
            "duplicate_in_file",
            "EMAIL",
            "EMAIL 'ann@acme.edu' is on lines 2, 4 (compared trimmed, ignoring case); "
            "each user must have exactly one record",
            "ann@acme.edu",
        ]
    ]
    summary = json.loads((out / "summary.json").read_text(encoding="utf-8"))
    assert summary["status"] == "rejected"
    assert summary["status_reason"].startswith("EMAIL 'ann@acme.edu' is on lines 2, 4")


def test_a_repeated_email_rejects_both_rows_under_reject_rows_and_keeps_the_third(tmp_path, capsys):
    school = check.default_school_config().model_copy(
        update={"duplicates": "reject_rows", "thresholds": Thresholds(max_rejected_pct=100)}
    )
    path = write(
        tmp_path,
        "FIRST_NAME,LAST_NAME,EMAIL\nAnn,Lee,ann@acme.edu\nBob,Ray,bob@acme.edu\nAnn,Lee,ANN@acme.edu\n",
    )
    out = tmp_path / "out"
    assert check.check_file(path, school, out) == 0
    assert capsys.readouterr().out.splitlines()[2] == (
        "encoding utf-8; 3 data records: 1 accepted, 2 rejected, 0 with warnings"
    )
    assert [row[:5] for row in findings_rows(out)] == [
        ["2", "ann@acme.edu", "error", "duplicate_row", "EMAIL"],
        ["4", "ANN@acme.edu", "error", "duplicate_row", "EMAIL"],
    ]


def test_ragged_rows_from_the_loader_count_towards_the_share(tmp_path, capsys):
    records = "".join(f"F{i},L{i},u{i}@acme.edu\n" for i in range(18))
    path = write(tmp_path, f"FIRST_NAME,LAST_NAME,EMAIL\n{records}Cy,Dee\nDi,Eve,di@\n")
    out = tmp_path / "out"
    assert check.check_file(path, check.default_school_config(), out) == 1
    assert [(row[0], row[3]) for row in findings_rows(out)] == [
        ("", "too_many_rejected_rows"),
        ("20", "ragged_row"),
        ("21", "email_invalid"),
    ]
    assert (
        "encoding utf-8; 20 data records: 0 accepted, 2 rejected, 0 with warnings" in capsys.readouterr().out
    )


def test_a_file_the_loader_refuses_is_rejected_without_running_the_checks(tmp_path, capsys):
    path = write(tmp_path, "FIRST_NAME,LAST_NAME,EMAIL\n")
    out = tmp_path / "out"
    assert check.check_file(path, check.default_school_config(), out) == 1
    assert [row[3] for row in findings_rows(out)] == ["header_only"]
    assert not (out / "data_docs").exists()
    assert capsys.readouterr().out.startswith("roster.csv: REJECTED\n")


def test_a_real_school_data_sync_export_passes_with_a_header_mapping(tmp_path, capsys):
    # Microsoft School Data Sync v2.1 users.csv: 8 users, its own header names, extra columns. Its
    # `username` holds the email that SSO matches; its own `email` column, mostly empty, cannot be
    # aliased away to a made-up column (an alias must name a real one), so the school exports without it.
    settings = {
        "school_id": "sds",
        "name": "SDS sample",
        "s3": {"bucket": "uconnect-sis-sds", "key": "users.csv", "aws_conn_id": "sis_s3_sds"},
        "identifier": "user_id",
        "header_aliases": {
            "sourcedId": "USER_ID",
            "username": "EMAIL",
            "givenName": "FIRST_NAME",
            "familyName": "LAST_NAME",
        },
    }
    with pytest.raises(ValueError, match="header_aliases.email: the target 'CONTACT_EMAIL' is neither"):
        SchoolConfig.model_validate(
            {**settings, "header_aliases": {**settings["header_aliases"], "email": "CONTACT_EMAIL"}}
        )
    school = SchoolConfig.model_validate(settings)
    with (CORPORA / "sds-samples" / "sds-v2.1-users.csv").open(newline="", encoding="utf-8") as handle:
        rows = list(csv.reader(handle))
    drop = rows[0].index("email")
    path = tmp_path / "users.csv"
    with path.open("w", newline="", encoding="utf-8") as handle:
        csv.writer(handle).writerows([row[:drop] + row[drop + 1 :] for row in rows])
    assert check.check_file(path, school, None) == 0
    out = capsys.readouterr().out
    assert "encoding utf-8; 8 data records: 8 accepted, 0 rejected, 0 with warnings" in out
    assert "unknown_column (warning): 4" in out


def test_check_runs_the_dbt_stage_and_reports_its_warnings(tmp_path, capsys):
    school = SchoolConfig.model_validate(
        {
            "school_id": "tester",
            "name": "Tester University",
            "s3": {"bucket": "uconnect-sis-tester", "key": "roster.csv", "aws_conn_id": "sis_s3_tester"},
            "user_types": {"Undergraduate": "Undergraduate Students"},
            "communities": [{"column": "PROGRAM", "group": "Careers", "values": {"Econ": "Business"}}],
        }
    )
    path = write(
        tmp_path,
        "FIRST_NAME,LAST_NAME,EMAIL,GRADUATION,STAKEHOLDERS,PROGRAM\r\n"
        "Ada,Lovelace,ada@example.edu,2025-09-01,Undergraduate,Econ\r\n"
        "Alan,Turing,alan@example.edu,someday,Undergraduate,Econ;Poetry\r\n",
    )
    out = tmp_path / "out"

    assert check.check_file(path, school, out) == 0

    assert [(row[0], row[3], row[6]) for row in findings_rows(out)] == [
        ("3", "community_unmapped", "Poetry"),
        ("3", "graduation_unparseable", "someday"),
    ]
    assert "1 with warnings" in capsys.readouterr().out
    assert not (out / "changes.csv").exists()
