"""Identity checks (row errors) and schema drift (a warning), on a real warehouse."""

from __future__ import annotations

from sisbridge import audit, guards
from sisbridge.audit import Finding
from tests.guards.guard_helpers import applied, roster, school


def baseline(con) -> None:
    applied(
        con,
        ("S1", "ada@harbor.edu", "active"),
        ("S2", "alan@harbor.edu", "active"),
        ("S3", "grace@harbor.edu", "inactive"),
    )


def test_an_email_that_jumps_to_another_identifier_is_a_row_error(con):
    baseline(con)
    roster(
        con,
        (2, "ada@harbor.edu", "S1"),  # unchanged
        (3, " Ada@Harbor.EDU ", "S2"),  # an existing user takes ada's email
        (4, "grace@harbor.edu", " S9 "),  # grace's email moves to a new student number
        (5, "grace.new@harbor.edu", "S3"),  # a user may change to a free email
        (6, "linus@harbor.edu", "S10"),  # a new user with a new email
        (7, "", "S11"),  # blank emails are the quality gate's business
    )

    findings = guards.identity_findings(con, school(), "exports/roster.csv")

    assert findings == [
        Finding(
            "identity_email_taken",
            "exports/roster.csv: line 3: EMAIL 'ada@harbor.edu' belongs to the existing user USER_ID 'S1'; "
            "the user USER_ID 'S2' cannot take it. The row is ignored.",
            "error",
            3,
            "S2",
            "EMAIL",
            " Ada@Harbor.EDU ",
        ),
        Finding(
            "identity_email_moved",
            "exports/roster.csv: line 4: EMAIL 'grace@harbor.edu' moved from the existing user USER_ID 'S3' "
            "to the new USER_ID 'S9'; a user's identifier must not change. The row is ignored.",
            "error",
            4,
            "S9",
            "EMAIL",
            "grace@harbor.edu",
        ),
    ]


def test_logins_compare_ignoring_case(con):
    con.execute(
        "insert into state.applied_users (external_id, email, user_login, status, email_opt_out, "
        "applied_run_id) values ('ada', 'ada@harbor.edu', 'ada', 'active', false, 'run_0')"
    )
    con.execute(
        "insert into raw.roster (line_number, email, user_login) values (2, 'ada@harbor.edu', ' ADA '), "
        "(3, 'ada@harbor.edu', 'ada2')"
    )

    findings = guards.identity_findings(con, school(identifier="user_login"), "roster.csv")

    assert [(f.rule, f.line_number, f.identifier) for f in findings] == [("identity_email_moved", 3, "ada2")]


def test_schools_that_sign_in_by_email_have_no_identity_checks(con):
    baseline(con)
    roster(con, (2, "ada@harbor.edu", "S2"))

    assert guards.identity_findings(con, school(identifier="email"), "roster.csv") == []


def test_every_guard_rule_has_a_stable_name_and_level():
    assert set(guards.RULES) == {"identity_email_taken", "identity_email_moved", "schema_drift"}
    assert guards.ROW_RULES == {"identity_email_taken", "identity_email_moved"}


def _run(con, run_id: str, status: str, header: list[str] | None, minute: int) -> None:
    audit.upsert_run(
        con,
        run_id,
        school_id="harbor",
        status=status,
        header_columns=header,
        started_at=f"2026-11-0{minute} 23:00:00",
    )


def test_drift_compares_with_the_last_succeeded_run(con):
    _run(con, "run_1", "succeeded", ["FIRST_NAME", "LAST_NAME", "EMAIL", "USER_ID", "PROGRAM"], 1)
    _run(con, "run_2", "rejected", ["first_name", "last_name", "email"], 2)
    _run(con, "run_3", "running", None, 3)
    harbor = school(header_aliases={"Student Number": "USER_ID"})

    previous = guards.previous_header(con, "run_3")
    drift = guards.schema_drift(
        harbor,
        (" first_name", "Last_Name", "EMAIL", "Student Number", "AFFINITY", "GPA"),
        previous,
        "roster.csv",
    )

    assert previous == ("run_1", ("FIRST_NAME", "LAST_NAME", "EMAIL", "USER_ID", "PROGRAM"))
    assert drift == Finding(
        "schema_drift",
        "roster.csv: line 1: the header changed since the last accepted file (run run_1): "
        "added AFFINITY, GPA; removed PROGRAM",
        "warning",
        1,
        value="added AFFINITY, GPA; removed PROGRAM",
    )


def test_no_drift_for_case_spacing_or_alias_changes_nor_for_a_first_file(con):
    harbor = school(header_aliases={"Student Number": "USER_ID"})
    previous = ("run_1", ("FIRST_NAME", "LAST_NAME", "EMAIL", "USER_ID"))

    assert (
        guards.schema_drift(harbor, ("first_name ", "last_name", "Email", "Student Number"), previous, "f")
        is None
    )
    assert guards.schema_drift(harbor, ("FIRST_NAME",), None, "f") is None
    assert guards.previous_header(con, "run_1") is None
