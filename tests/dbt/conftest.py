"""A small school warehouse written as the pipeline writes it, and two weekly runs on it."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime

import lakes
import pytest

from sisbridge import warehouse
from sisbridge.audit import utcnow
from sisbridge.config import SchoolConfig
from sisbridge.transform import record_transform_findings, run_build, run_snapshot
from sisbridge.userstore.schema import STATE_USER_COLUMNS, TARGET_MEMBERSHIPS, TARGET_USERS
from tests.dbt.dbt_helpers import load_week, make_school, open_warehouse


def simulate_push(school: SchoolConfig, run_id: str) -> None:
    """What a successful push leaves behind: the target state becomes the applied baseline."""
    with open_warehouse(school) as con:
        con.execute("delete from state.applied_users")
        con.execute(
            f"insert into state.applied_users select {', '.join(STATE_USER_COLUMNS)}, ? as applied_run_id "
            f"from ({TARGET_USERS})",
            [run_id],
        )
        con.execute("delete from state.applied_memberships")
        con.execute(f"insert into state.applied_memberships select * from {TARGET_MEMBERSHIPS}")


def query(school: SchoolConfig, sql: str, params=None) -> list[tuple]:
    with warehouse.connect(school.school_id, read_only=True) as con:
        return con.execute(sql, params or []).fetchall()


WEEK_1 = [
    # line 2
    {
        "first_name": " Ada ",
        "last_name": "Lovelace",
        "email": " ADA@Example.edu ",
        "graduation": "2025-08-31",
        "stakeholders": "Undergraduate",
        "email_opt_out": "no",
        "PROGRAM": "Econ; Physics",
        "AFFINITY": "Chess",
    },
    # line 3
    {
        "first_name": "Alan",
        "last_name": "Turing",
        "email": "alan@example.edu",
        "graduation": "09/01/2025",
        "stakeholders": "alumni",
        "AFFINITY": "Running",
    },
    # line 4
    {"first_name": "Grace", "last_name": "Hopper", "email": "grace@example.edu", "graduation": "1934"},
    # line 5: loading/quality rejected it
    {"first_name": "Bad", "last_name": "Row", "email": "not-an-email", "graduation": "2030"},
    # line 6
    {
        "first_name": "Edsger",
        "last_name": "Dijkstra",
        "email": "edsger@example.edu",
        "graduation": "soon",
        "stakeholders": "Faculty",
    },
    # line 7
    {
        "first_name": "Hedy",
        "last_name": "Lamarr",
        "email": "hedy@example.edu",
        "graduation": "2026",
        "email_opt_out": "1",
    },
]

WEEK_2 = [
    # line 2: new class year, opts out, joins Rowing
    {
        "first_name": "Ada",
        "last_name": "Lovelace",
        "email": "ada@example.edu",
        "graduation": "2026",
        "stakeholders": "Undergraduate",
        "email_opt_out": "YES",
        "PROGRAM": "Econ",
        "AFFINITY": "Chess; Rowing",
    },
    # line 3: a new email, under an email identifier
    {
        "first_name": "Alan",
        "last_name": "Turing",
        "email": "aturing@example.edu",
        "graduation": "09/01/2025",
        "stakeholders": "Alumni",
        "AFFINITY": "Running",
    },
    # line 4: asks to be deleted
    {"first_name": "Grace", "last_name": "Hopper", "email": "grace@example.edu", "delete_flag": "true"},
    # line 5: 'no' never opts back in
    {
        "first_name": "Hedy",
        "last_name": "Lamarr",
        "email": "hedy@example.edu",
        "graduation": "2026",
        "email_opt_out": "no",
    },
    # line 6: inactive in the baseline, back in the file
    {
        "first_name": "Barbara",
        "last_name": "Liskov",
        "email": "barbara@example.edu",
        "graduation": "1961",
        "stakeholders": "Alumni",
    },
    # line 7: new
    {
        "first_name": "Katherine",
        "last_name": "Johnson",
        "email": "katherine@example.edu",
        "graduation": "2027",
        "stakeholders": "Undergraduate",
    },
    # line 8: DELETE for a user the store never had
    {"first_name": "No", "last_name": "Body", "email": "nobody@example.edu", "delete_flag": "Yes"},
]


@dataclass
class TwoWeeks:
    school: SchoolConfig
    week_1_changes: list[tuple] = field(default_factory=list)
    week_1_findings: int = 0
    snapshot_times: list[datetime] = field(default_factory=list)

    def query(self, sql: str, params=None) -> list[tuple]:
        return query(self.school, sql, params)


def _changes(school: SchoolConfig) -> list[tuple]:
    with open_warehouse(school) as con:
        return con.execute(
            "select change_id, external_id, change_type, field, old_value, new_value, line_number "
            "from marts.user_changes order by change_id"
        ).fetchall()


@pytest.fixture(scope="package")
def two_weeks(tmp_path_factory) -> TwoWeeks:
    """Week 1 and week 2 built, each followed by a simulated push and the snapshot; marts hold week 2."""
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("SISBRIDGE_HOME", str(tmp_path_factory.mktemp("sisbridge_home")))
        school = make_school()
        lakes.wipe(school.school_id)
        result = TwoWeeks(school)
        with open_warehouse(school) as con:
            # Barbara left earlier and was deactivated by a previous run.
            con.execute(
                "insert into state.applied_users values ('barbara@example.edu', 'barbara@example.edu', "
                "null, null, 'Barbara', 'Liskov', 'Alumni', 1961, 'inactive', false, 'week-0')"
            )
        for run_id, records, errors in (("week-1", WEEK_1, {5: "email_invalid"}), ("week-2", WEEK_2, {})):
            load_week(school, run_id, records, errors)
            run_build(school, run_id)
            with open_warehouse(school) as con:
                findings = record_transform_findings(con, run_id)
            if run_id == "week-1":
                result.week_1_changes = _changes(school)
                result.week_1_findings = findings
            simulate_push(school, run_id)
            run_snapshot(school, run_id)
            result.snapshot_times.append(utcnow())
        yield result


@pytest.fixture
def built_week_1(tmp_path, monkeypatch) -> SchoolConfig:
    """A school whose week-1 file is loaded and built (no push, no snapshot)."""
    monkeypatch.setenv("SISBRIDGE_HOME", str(tmp_path))
    school = make_school(school_id="unitu")
    lakes.wipe(school.school_id)
    load_week(school, "week-1", WEEK_1, {5: "email_invalid"})
    run_build(school, "week-1")
    return school


@pytest.fixture
def duplicate_emails(tmp_path, monkeypatch) -> SchoolConfig:
    """A school whose file has two records for one email, loaded with no row rejected."""
    monkeypatch.setenv("SISBRIDGE_HOME", str(tmp_path))
    school = make_school(school_id="dupu")
    lakes.wipe(school.school_id)
    record = {"first_name": "Ada", "last_name": "Lovelace", "email": "ada@example.edu"}
    load_week(school, "run-1", [record, {**record, "email": " ADA@example.edu"}])
    return school
