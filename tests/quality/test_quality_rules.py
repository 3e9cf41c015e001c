"""Each quality rule on its own minimal file, with the exact line numbers a school would read."""

from __future__ import annotations

from pathlib import Path

from sisbridge import audit, quality, stages
from sisbridge.audit import Finding

HEADER = ["FIRST_NAME", "LAST_NAME", "EMAIL"]


def stored(con, run_id="r1"):
    return con.execute(
        "select stage, line_number, severity, rule, column_name, value from audit.rejected_rows "
        "where run_id = ? order by line_number nulls first, rule",
        [run_id],
    ).fetchall()


def test_a_clean_file_is_accepted_without_findings(con, acme, build_raw):
    build_raw(con, acme, HEADER, [["Ann", "Lee", "ann@acme.edu"], ["Bob", "Ray", "bob@acme.edu"]])
    result = quality.validate(con, acme, "r1")
    assert result == quality.QualityResult(True, (), (), 0, 0, None)
    assert stored(con) == []


def test_missing_required_column_names_the_column_on_the_header_line(con, acme, build_raw):
    build_raw(con, acme, ["FIRST_NAME", "EMAIL"], [["Ann", "ann@acme.edu"]])
    result = quality.validate(con, acme, "r1")
    assert not result.accepted
    assert result.file_errors == (
        Finding(
            rule="missing_required_column",
            message="the header has no LAST_NAME column (required: FIRST_NAME, LAST_NAME, EMAIL)",
            line_number=1,
            column_name="LAST_NAME",
        ),
    )
    # Without the column every row would fail too; the missing header alone is reported.
    assert result.row_findings == ()
    assert stored(con) == [("quality", 1, "error", "missing_required_column", "LAST_NAME", None)]


def test_the_identifier_column_is_required_after_header_aliases(con, globex, build_raw):
    build_raw(con, globex, ["First Name", "Last Name", "email"], [["Ann", "Lee", "ann@globex.edu"]])
    result = quality.validate(con, globex, "r1")
    assert [(f.rule, f.line_number, f.column_name) for f in result.file_errors] == [
        ("missing_required_column", 1, "USER_ID")
    ]


def test_aliased_headers_satisfy_the_required_columns(con, globex, build_raw):
    build_raw(
        con,
        globex,
        ["First Name", "Last Name", " Email ", "Student Number"],
        [["Ann", "Lee", "ann@globex.edu", "S1"]],
    )
    assert quality.validate(con, globex, "r1").accepted


def test_a_header_without_data_records_is_rejected(con, acme, build_raw):
    build_raw(con, acme, HEADER, [])
    result = quality.validate(con, acme, "r1")
    assert not result.accepted
    assert result.file_errors == (
        Finding(rule="no_data_records", message="the file has a header but no data record"),
    )


def test_blank_email_rejects_the_row(con, acme, build_raw):
    build_raw(con, acme, HEADER, [["Ann", "Lee", "ann@acme.edu"], ["Bob", "Ray", "  "]] + ok_rows(30))
    result = quality.validate(con, acme, "r1")
    assert result.accepted
    assert result.row_findings == (
        Finding(rule="email_blank", message="EMAIL is blank", line_number=3, column_name="EMAIL", value="  "),
    )
    assert result.rows_rejected == 1


def test_invalid_email_names_the_value_and_the_reason(con, acme, build_raw):
    build_raw(con, acme, HEADER, [*ok_rows(30), ["Bob", "Ray", "bob@@acme.edu"]])
    result = quality.validate(con, acme, "r1")
    assert result.row_findings == (
        Finding(
            rule="email_invalid",
            message="EMAIL 'bob@@acme.edu' is not valid: "
            "The part after the @-sign contains invalid characters: '@'.",
            line_number=32,
            identifier="bob@@acme.edu",
            column_name="EMAIL",
            value="bob@@acme.edu",
        ),
    )


def test_blank_names_reject_the_row_with_the_line(con, acme, build_raw):
    build_raw(con, acme, HEADER, [*ok_rows(40), ["", "Lee", "ann@acme.edu"], ["Bob", " ", "bob@acme.edu"]])
    result = quality.validate(con, acme, "r1")
    assert [(f.rule, f.line_number, f.identifier, f.message) for f in result.row_findings] == [
        ("first_name_blank", 42, "ann@acme.edu", "FIRST_NAME is blank"),
        ("last_name_blank", 43, "bob@acme.edu", "LAST_NAME is blank"),
    ]
    assert result.rows_rejected == 2
    assert result.accepted


def test_blank_identifier_rejects_the_row(con, globex, build_raw):
    header = ["First Name", "Last Name", "EMAIL", "Student Number"]
    records = [[f"F{i}", f"L{i}", f"u{i}@globex.edu", f"S{i}"] for i in range(30)]
    records.insert(2, ["Cy", "Dee", "cy@globex.edu", " "])
    build_raw(con, globex, header, records)
    result = quality.validate(con, globex, "r1")
    assert result.row_findings == (
        Finding(
            rule="identifier_blank",
            message="Student Number (USER_ID) is blank",
            line_number=4,
            column_name="USER_ID",
            value=" ",
        ),
    )


def test_a_case_variant_duplicate_email_rejects_the_file_under_reject_file(con, acme, build_raw):
    records = [
        ["Ann", "Lee", "ann@acme.edu"],
        ["Bob", "Ray", "bob@acme.edu"],
        ["Ann", "Lee", " ANN@Acme.edu"],
    ]
    build_raw(con, acme, HEADER, records)
    result = quality.validate(con, acme, "r1")
    assert not result.accepted
    assert result.file_errors == (
        Finding(
            rule="duplicate_in_file",
            message="EMAIL 'ann@acme.edu' is on lines 2, 4 (compared trimmed, ignoring case); "
            "each user must have exactly one record",
            line_number=2,
            identifier="ann@acme.edu",
            column_name="EMAIL",
            value="ann@acme.edu",
        ),
    )
    assert result.row_findings == ()
    assert result.rows_rejected == 0


def test_a_case_variant_duplicate_email_rejects_both_rows_under_reject_rows(con, acme, build_raw):
    school = acme.model_copy(
        update={
            "duplicates": "reject_rows",
            "thresholds": acme.thresholds.model_copy(update={"max_rejected_pct": 100}),
        }
    )
    records = [
        ["Ann", "Lee", "ann@acme.edu"],
        ["Bob", "Ray", "bob@acme.edu"],
        ["Ann", "Lee", " ANN@Acme.edu"],
    ]
    build_raw(con, school, HEADER, records)
    result = quality.validate(con, school, "r1")
    assert result.accepted
    assert [(f.rule, f.line_number, f.identifier, f.value) for f in result.row_findings] == [
        ("duplicate_row", 2, "ann@acme.edu", "ann@acme.edu"),
        ("duplicate_row", 4, "ANN@Acme.edu", " ANN@Acme.edu"),
    ]
    assert result.row_findings[0].message == (
        "EMAIL 'ann@acme.edu' is on lines 2, 4 (compared trimmed, ignoring case); "
        "every line of the group is ignored"
    )
    assert result.rows_rejected == 2
    # Line 3 (Bob) has no finding: it is kept.
    assert [row[1] for row in stored(con)] == [2, 4]


def test_user_ids_compare_case_sensitively_and_logins_ignore_case(con, globex, build_raw):
    header = ["First Name", "Last Name", "EMAIL", "Student Number", "USER_LOGIN"]
    records = [
        ["Ann", "Lee", "ann@globex.edu", "S1", "ann"],
        ["Bob", "Ray", "bob@globex.edu", "s1", "bob"],
        ["Cy", "Dee", "cy@globex.edu", "S1 ", "BOB"],
    ]
    school = globex.model_copy(update={"duplicates": "reject_file"})
    build_raw(con, school, header, records)
    result = quality.validate(con, school, "r1")
    assert [(f.rule, f.column_name, f.line_number, f.message) for f in result.file_errors] == [
        (
            "duplicate_in_file",
            "USER_ID",
            2,
            "Student Number (USER_ID) 'S1' is on lines 2, 4 (compared trimmed); "
            "each user must have exactly one record",
        ),
        (
            "duplicate_in_file",
            "USER_LOGIN",
            3,
            "USER_LOGIN 'bob' is on lines 3, 4 (compared trimmed, ignoring case); "
            "each user must have exactly one record",
        ),
    ]


def ok_rows(count: int) -> list[list[str]]:
    return [[f"First{i}", f"Last{i}", f"user{i}@acme.edu"] for i in range(count)]


def test_rejected_share_at_the_threshold_is_accepted(con, acme, build_raw):
    # acme allows 5%: 1 bad row of 20 is exactly 5%.
    build_raw(con, acme, HEADER, [*ok_rows(19), ["Bad", "Row", "not-an-email"]])
    result = quality.validate(con, acme, "r1")
    assert result.accepted
    assert result.rows_rejected == 1


def test_rejected_share_above_the_threshold_rejects_the_file(con, acme, build_raw):
    build_raw(con, acme, HEADER, [*ok_rows(18), ["Bad", "Row", "not-an-email"], ["", "Row", "x@acme.edu"]])
    result = quality.validate(con, acme, "r1")
    assert not result.accepted
    assert result.file_errors == (
        Finding(
            rule="too_many_rejected_rows",
            message="2 of 20 data records (10.0%) have a row-level error; "
            "thresholds.max_rejected_pct allows 5%",
            value="10.0",
        ),
    )


def test_the_loaders_ragged_rows_count_towards_the_rejected_share(con, acme, build_raw):
    records = [*ok_rows(18), ["Bad", "Row", "not-an-email"], ["Ragged", "row"]]
    build_raw(con, acme, HEADER, records)
    ragged = Finding(rule="ragged_row", message="line 21 has 2 fields, the header has 3", line_number=21)
    audit.record_findings(con, "r1", "load", [ragged])
    result = quality.validate(con, acme, "r1")
    assert result.rows_rejected == 2
    assert [f.rule for f in result.file_errors] == ["too_many_rejected_rows"]


def test_warnings_from_other_stages_count_as_warned_rows(con, acme, build_raw):
    build_raw(
        con,
        acme,
        [*HEADER, "COLOR"],
        [["Ann", "Lee", "ann@acme.edu", "red"], *[[*r, ""] for r in ok_rows(3)]],
    )
    audit.record_findings(
        con,
        "r1",
        "load",
        [
            Finding(
                rule="unknown_column",
                message="COLOR is not a known column",
                severity="warning",
                line_number=1,
            )
        ],
    )
    audit.record_findings(
        con,
        "r1",
        "transform",
        [
            Finding(
                rule="graduation_unparseable", message="GRADUATION 'soon'", severity="warning", line_number=3
            )
        ],
    )
    result = quality.validate(con, acme, "r1")
    # The header's unknown column is about the file; only line 3 is a warned row.
    assert (result.accepted, result.rows_rejected, result.rows_warned) == (True, 0, 1)
    # The loader's unknown_column warning is not repeated by the quality stage.
    assert [row[:4] for row in stored(con)] == [
        ("load", 1, "warning", "unknown_column"),
        ("transform", 3, "warning", "graduation_unparseable"),
    ]


def test_a_retried_validation_does_not_double_its_findings(con, acme, build_raw):
    build_raw(con, acme, HEADER, [*ok_rows(40), ["Bob", "Ray", "bob@"]])
    quality.validate(con, acme, "r1")
    quality.validate(con, acme, "r1")
    assert stored(con) == [("quality", 42, "error", "email_invalid", "EMAIL", "bob@")]


def test_the_gate_stage_records_the_run_counts_once(con, acme, build_raw):
    audit.upsert_run(con, "r1", school_id="acme")
    build_raw(con, acme, HEADER, [*ok_rows(40), ["Bob", "Ray", "bob@"]])
    quality.validate(con, acme, "r1")
    # The GX gate records its findings; the run's counts are the stage's to record.
    assert audit.get_run(con, "r1")["rows_rejected"] is None
    gate = stages.record(con, "r1", stages.gate(con, acme, "r1"))
    run = audit.get_run(con, "r1")
    assert (gate.stop, run["rows_rejected"], run["rows_warned"], run["status"]) == (False, 1, 0, "running")
    assert con.execute("select count(*) from config.school").fetchone()[0] == 1


def test_a_file_the_gate_rejects_ends_the_run_with_no_accepted_rows(con, acme, build_raw):
    audit.upsert_run(con, "r1", school_id="acme")
    build_raw(con, acme, HEADER, [])
    gate = stages.record(con, "r1", stages.gate(con, acme, "r1"))
    run = audit.get_run(con, "r1")
    assert gate.stop
    assert (run["status"], run["rows_accepted"], run["rows_rejected"]) == ("rejected", 0, 0)
    assert run["status_reason"] == gate.reason and "no data record" in gate.reason


def test_data_docs_are_written_into_the_report_folder_only(con, acme, tmp_path, build_raw):
    report_dir = tmp_path / "report"
    build_raw(con, acme, HEADER, [["Ann", "Lee", "ann@acme.edu"], ["Bob", "Ray", "bob@"]])
    result = quality.validate(con, acme, "r1", report_dir=report_dir)
    assert result.data_docs == report_dir / "data_docs" / "index.html"
    index = result.data_docs.read_text(encoding="utf-8")
    for suite in ("file_structure", "required_values", "uniqueness"):
        assert suite in index
    pages = sorted(p.relative_to(report_dir).parts[:2] for p in report_dir.rglob("*.html"))
    assert {page[1] for page in pages if page[0] == "data_docs"} >= {"index.html", "validations"}
    assert not any(part == "uncommitted" for p in tmp_path.rglob("*") for part in p.parts)
    assert [p.name for p in tmp_path.iterdir() if not p.name.startswith("warehouse.duckdb")] == ["report"]


def test_every_suite_in_expectations_is_valid_gx_json():
    import great_expectations as gx

    for name in quality.SUITES:
        suite_dict = quality.load_suite(name)
        suite = gx.ExpectationSuite(**suite_dict)
        assert suite.name == name
        assert len(suite.expectations) == len(suite_dict["expectations"]) > 0
    assert sorted(p.stem for p in Path(quality.EXPECTATIONS_DIR).glob("*.json")) == sorted(quality.SUITES)


def test_a_large_duplicate_group_is_named_with_its_first_ten_lines(con, acme, build_raw):
    records = [[f"F{i}", f"L{i}", "same@acme.edu"] for i in range(12)]
    build_raw(con, acme, HEADER, records)
    result = quality.validate(con, acme, "r1")
    assert [f.message for f in result.file_errors if f.rule == "duplicate_in_file"] == [
        "EMAIL 'same@acme.edu' is on lines 2, 3, 4, 5, 6, 7, 8, 9, 10, 11 and 2 more "
        "(compared trimmed, ignoring case); each user must have exactly one record"
    ]


def test_a_retried_validation_keeps_one_page_in_the_data_docs(con, acme, tmp_path, build_raw):
    build_raw(con, acme, HEADER, [["Ann", "Lee", "ann@acme.edu"]])
    quality.validate(con, acme, "r1", report_dir=tmp_path / "report")
    quality.validate(con, acme, "r1", report_dir=tmp_path / "report")
    pages = list((tmp_path / "report" / "data_docs" / "validations").rglob("*.html"))
    assert sorted(
        page.relative_to(tmp_path / "report" / "data_docs" / "validations").parts[0] for page in pages
    ) == [
        "file_structure",
        "required_values",
        "uniqueness",
    ]


def test_a_warning_on_a_skipped_blank_line_is_not_a_warned_row(con, acme, build_raw):
    build_raw(con, acme, HEADER, [["Ann", "Lee", "ann@acme.edu"], ["Bob", "Ray", "bob@acme.edu"]])
    con.execute("update raw.roster set line_number = 4 where line_number = 3")
    blank = Finding(rule="blank_line", message="line 3 is empty", severity="warning", line_number=3)
    audit.record_findings(con, "r1", "load", [blank])
    assert quality.validate(con, acme, "r1").rows_warned == 0


def test_rows_warned_counts_data_rows_with_a_warning_and_no_row_error(con, acme, build_raw):
    """One definition for the gate, the guard and `sisbridge check`: a header warning (an unknown
    column), a warning on a line with no record and a warning on a rejected row are not warned rows."""
    build_raw(con, acme, HEADER, [*ok_rows(3)])
    findings = {
        "load": [
            Finding("unknown_column", "line 1: NICKNAME is ignored", "warning", 1),
            Finding("blank_line", "line 9: skipped", "warning", 9),
        ],
        "transform": [
            Finding("graduation_unparseable", "line 2", "warning", 2),
            Finding("graduation_unparseable", "line 3", "warning", 3),
            Finding("user_type_unmapped", "line 3", "warning", 3),
        ],
        "identity": [Finding("identity_email_taken", "line 3", "error", 3)],
    }
    for stage, stage_findings in findings.items():
        audit.record_findings(con, "r1", stage, stage_findings)

    assert quality.rows_warned(con, "r1") == 1
