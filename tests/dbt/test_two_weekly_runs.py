"""The dbt project on a real DuckDB warehouse: two weekly runs of a small school."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from sisbridge import audit
from sisbridge.config import SchoolConfig
from sisbridge.transform import (
    BUILD_EXCLUDE,
    PARSE_SEED,
    TransformError,
    dbt_env,
    dbt_school_env,
    parse_args,
    run_build,
    run_unit_tests,
)


def test_week_1_creates_every_accepted_user(two_weeks):
    # Line 5 was rejected by quality, and Barbara, inactive and absent, is left alone.
    assert two_weeks.week_1_changes == [
        (1, "ada@example.edu", "create", None, None, None, 2),
        (2, "alan@example.edu", "create", None, None, None, 3),
        (3, "edsger@example.edu", "create", None, None, None, 6),
        (4, "grace@example.edu", "create", None, None, None, 4),
        (5, "hedy@example.edu", "create", None, None, None, 7),
    ]


def test_week_1_warnings_recorded_as_transform_findings(two_weeks):
    rows = two_weeks.query(
        "select line_number, identifier, severity, rule, message, column_name, value "
        "from audit.rejected_rows where run_id = 'week-1' and stage = 'transform' "
        "order by line_number, rule",
    )
    assert two_weeks.week_1_findings == 3
    assert rows == [
        (
            2,
            "ada@example.edu",
            "warning",
            "community_unmapped",
            "Program value 'Physics' is not mapped to a Career Communities community; the value was "
            "dropped and the row kept. Send a mapped value, or ask uConnect to map this one.",
            "PROGRAM",
            "Physics",
        ),
        (
            6,
            "edsger@example.edu",
            "warning",
            "graduation_unparseable",
            "GRADUATION value 'soon' is neither a year (YYYY) nor a date in an accepted format; the "
            "graduation year was left empty. Send the class year, e.g. 2027, or a full date.",
            "GRADUATION",
            "soon",
        ),
        (
            6,
            "edsger@example.edu",
            "warning",
            "user_type_unmapped",
            "USER_TYPE value 'Faculty' is not a known user type; the user type was left empty. "
            "Send one of: Alumni, Undergraduate.",
            "STAKEHOLDERS",
            "Faculty",
        ),
    ]


def test_week_2_change_set(two_weeks):
    assert two_weeks.query(
        "select change_id, external_id, change_type, field, old_value, new_value, line_number "
        "from marts.user_changes order by change_id",
    ) == [
        (1, "aturing@example.edu", "create", None, None, None, 3),
        (2, "katherine@example.edu", "create", None, None, None, 7),
        (3, "barbara@example.edu", "reactivate", None, None, None, 6),
        (4, "ada@example.edu", "update", "communities:Affinity", "Chess", "Chess; Rowing", 2),
        (5, "ada@example.edu", "update", "graduation_year", "2025", "2026", 2),
        (6, "ada@example.edu", "opt_out", "email_opt_out", "false", "true", 2),
        (7, "alan@example.edu", "deactivate", None, None, None, None),
        (8, "edsger@example.edu", "deactivate", None, None, None, None),
        (9, "grace@example.edu", "delete", None, None, None, 4),
    ]


def test_week_2_accepted_records(two_weeks):
    assert two_weeks.query(
        "select external_id, user_type, graduation_year, is_email_opt_out_requested, "
        "is_delete_requested, line_number from intermediate.int_users_accepted order by line_number"
    ) == [
        ("ada@example.edu", "Undergraduate Students", 2026, True, False, 2),
        ("aturing@example.edu", "Alumni", 2026, False, False, 3),
        ("grace@example.edu", None, None, False, True, 4),
        ("hedy@example.edu", None, 2026, False, False, 5),
        ("barbara@example.edu", "Alumni", 1961, False, False, 6),
        ("katherine@example.edu", "Undergraduate Students", 2027, False, False, 7),
        ("nobody@example.edu", None, None, False, True, 8),
    ]
    assert two_weeks.query("select * from marts.graduation_years order by graduation_year") == [
        (1961, 1),
        (2026, 3),
        (2027, 1),
    ]
    # The file's own communities; the mart community_memberships holds the target's.
    assert two_weeks.query("select * from intermediate.int_community_memberships_assigned order by all") == [
        ("ada@example.edu", "Affinity", "Chess"),
        ("ada@example.edu", "Affinity", "Rowing"),
        ("ada@example.edu", "Career Communities", "Business & Finance"),
        ("aturing@example.edu", "Affinity", "Running"),
    ]


def test_week_2_target_state_marts(two_weeks):
    # Hedy's 'no' does not opt her back in; the deactivated Alan keeps his communities; Grace, whom
    # the file deletes, and nobody@, whom it asks to delete but the store never had, are not there.
    assert two_weeks.query(
        "select external_id, status, is_email_opt_out, is_email_opt_out_requested, line_number "
        "from marts.users order by all",
    ) == [
        ("ada@example.edu", "active", True, True, 2),
        ("alan@example.edu", "inactive", False, None, None),
        ("aturing@example.edu", "active", False, False, 3),
        ("barbara@example.edu", "active", False, False, 6),
        ("edsger@example.edu", "inactive", False, None, None),
        ("hedy@example.edu", "active", True, False, 5),
        ("katherine@example.edu", "active", False, False, 7),
    ]
    assert two_weeks.query("select * from marts.community_memberships order by all") == [
        ("ada@example.edu", "Affinity", "Chess"),
        ("ada@example.edu", "Affinity", "Rowing"),
        ("ada@example.edu", "Career Communities", "Business & Finance"),
        ("alan@example.edu", "Affinity", "Running"),
        ("aturing@example.edu", "Affinity", "Running"),
    ]


def test_snapshot_versions_only_changed_users(two_weeks):
    rows = two_weeks.query(
        "select external_id, applied_run_id, status, dbt_is_deleted, dbt_valid_to is null "
        "from snapshots.users_snapshot order by external_id, dbt_valid_from",
    )
    assert rows == [
        ("ada@example.edu", "week-1", "active", "False", False),
        ("ada@example.edu", "week-2", "active", "False", True),
        ("alan@example.edu", "week-1", "active", "False", False),
        ("alan@example.edu", "week-2", "inactive", "False", True),
        ("aturing@example.edu", "week-2", "active", "False", True),
        ("barbara@example.edu", "week-1", "inactive", "False", False),
        ("barbara@example.edu", "week-2", "active", "False", True),
        ("edsger@example.edu", "week-1", "active", "False", False),
        ("edsger@example.edu", "week-2", "inactive", "False", True),
        ("grace@example.edu", "week-1", "active", "False", False),
        ("grace@example.edu", "week-1", "active", "True", True),
        ("hedy@example.edu", "week-1", "active", "False", True),
        ("katherine@example.edu", "week-2", "active", "False", True),
    ]


def test_build_failure_names_the_failing_test(duplicate_emails: SchoolConfig):
    # Two records with one email would be two users with one identifier: the build must stop.
    school = duplicate_emails
    with pytest.raises(TransformError) as failure:
        run_build(school, "run-1")
    assert str(failure.value).startswith("dbt build for dupu failed: ")
    assert "test.sisbridge.unique_int_users_accepted_external_id" in str(failure.value)
    # The warehouse is released: the caller can open it again at once.
    with audit.warehouse(school.school_id) as con:
        assert con.execute("select count(*) from intermediate.int_users_accepted").fetchone() == (2,)


def test_school_settings_reach_dbt_in_its_environment_not_its_vars():
    # dbt parses the whole project again whenever the vars differ from those of its saved parse: the
    # date formats travel as an environment variable, and the run's id not at all.
    school = SchoolConfig.model_validate(
        {
            "school_id": "tinyu",
            "name": "Tiny University",
            "s3": {"bucket": "uconnect-sis-tinyu", "key": "roster.csv", "aws_conn_id": "sis_s3_tinyu"},
            "graduation": {"date_formats": ["%m/%d/%Y", "%d.%m.%Y"]},
        }
    )
    assert json.loads(dbt_school_env(school)["SISBRIDGE_DATE_FORMATS"]) == ["%m/%d/%Y", "%d.%m.%Y"]
    assert "--vars" not in parse_args()


def test_first_build_on_a_new_worker_starts_from_the_projects_parse(built_week_1: SchoolConfig):
    # The school's dbt folders were empty (a new SISBRIDGE_HOME), and its date formats differ from the
    # project parse's (none): dbt still parsed only the files that read them, not the whole project.
    assert PARSE_SEED.is_file()
    log = (Path(dbt_env(built_week_1.school_id)["DBT_LOG_PATH"]) / "dbt.log").read_text(encoding="utf-8")
    assert log.count("Running with dbt=") == 1
    assert "Unable to do partial parsing" not in log
    assert json.loads(dbt_school_env(built_week_1)["SISBRIDGE_DATE_FORMATS"]) == ["%m/%d/%Y"]


def _run_results(school: SchoolConfig) -> dict:
    path = Path(dbt_env(school.school_id)["DBT_TARGET_PATH"]) / "run_results.json"
    return json.loads(path.read_text(encoding="utf-8"))


def test_weekly_build_leaves_out_unit_tests_and_snapshot(built_week_1: SchoolConfig):
    assert BUILD_EXCLUDE == ("resource_type:snapshot", "resource_type:unit_test")
    kinds = {result["unique_id"].split(".")[0] for result in _run_results(built_week_1)["results"]}
    assert kinds == {"model", "test"}


def test_dbt_unit_tests_pass(built_week_1: SchoolConfig):
    run_unit_tests(built_week_1, "week-1")
    results = _run_results(built_week_1)["results"]
    assert len(results) >= 16
    assert {result["unique_id"].split(".")[0] for result in results} == {"unit_test"}
    assert {result["status"] for result in results} == {"pass"}
