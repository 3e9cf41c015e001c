"""Every query in docs/auditing.md, run against a warehouse after two weekly runs."""

from __future__ import annotations

import re
from datetime import datetime
from pathlib import Path

import pytest

from sisbridge import audit, warehouse

AUDITING_DOC = Path(__file__).resolve().parents[2] / "docs" / "auditing.md"
WEEK_1_AT = datetime(2026, 11, 21, 23, 5)
WEEK_2_AT = datetime(2026, 11, 28, 23, 5)


def doc_queries() -> dict[str, str]:
    """The SQL block under each '### ' heading of the auditing guide."""
    text = AUDITING_DOC.read_text(encoding="utf-8")
    sections = re.split(r"^### ", text, flags=re.MULTILINE)[1:]
    queries = {}
    for section in sections:
        title, _, body = section.partition("\n")
        match = re.search(r"```sql\n(.*?)```", body, flags=re.DOTALL)
        assert match, f"section {title!r} of {AUDITING_DOC.name} has no sql block"
        queries[title.strip()] = match.group(1)
    return queries


@pytest.fixture(scope="module")
def audited(two_weeks):
    """The two runs recorded as the pipeline records them, plus a held run and a rejected one."""
    con = warehouse.connect(two_weeks.school.school_id)
    audit.ensure_schema(con)
    file = {"file_key": "roster.csv", "file_version_id": "v1", "file_sha256": "ab12", "file_bytes": 100}
    audit.upsert_run(con, "week-1", school_id="tinyu", started_at=WEEK_1_AT, status="succeeded", **file)
    audit.upsert_run(con, "week-2", school_id="tinyu", started_at=WEEK_2_AT, status="succeeded", **file)
    for run_id, changes, applied_at in (
        ("week-1", two_weeks.week_1_changes, WEEK_1_AT),
        ("week-2", con.execute("select * from marts.user_changes order by change_id").fetchall(), WEEK_2_AT),
    ):
        con.executemany(
            "insert into audit.applied_changes values (?, ?, ?, ?, ?, ?, ?)",
            [(run_id, *change[1:6], applied_at) for change in changes],
        )
    audit.upsert_run(
        con,
        "week-3",
        school_id="tinyu",
        started_at=datetime(2026, 12, 5, 23, 5),
        status="held",
        status_reason="the guard held the run for approval",
        guard_reasons=["6 of 7 users removed (86%), above max_removed_pct 10"],
        rows_in_file=1,
        rows_rejected=0,
        **file,
    )
    audit.upsert_run(
        con,
        "week-4",
        school_id="tinyu",
        started_at=datetime(2026, 12, 12, 23, 5),
        status="rejected",
        status_reason="2 of 3 rows rejected (67%), above max_rejected_pct 5",
        rows_in_file=3,
        rows_rejected=2,
        **file,
    )
    audit.record_findings(
        con,
        "week-4",
        "quality",
        [
            audit.Finding("email_invalid", "EMAIL 'ada@' is not a valid email address", line_number=3),
            audit.Finding("name_missing", "FIRST_NAME is blank", line_number=2),
            audit.Finding("user_type_unmapped", "USER_TYPE 'Staff' is unmapped", "warning", line_number=4),
        ],
    )
    yield con
    con.close()


def run_doc_query(con, title: str, **params) -> list[tuple]:
    return con.execute(doc_queries()[title], params).fetchall()


def test_the_guide_has_the_five_queries():
    assert list(doc_queries()) == [
        "A user's full history",
        "Every change applied to a user",
        "The roster as of a date",
        "All changes of a run",
        "Runs that were held or rejected, and why",
    ]


def test_a_users_full_history(audited, two_weeks):
    ada = run_doc_query(audited, "A user's full history", external_id="ada@example.edu")
    assert [row[:10] for row in ada] == [
        (
            "ada@example.edu",
            "ada@example.edu",
            "Ada",
            "Lovelace",
            "Undergraduate Students",
            2025,
            "active",
            False,
            False,
            "week-1",
        ),
        (
            "ada@example.edu",
            "ada@example.edu",
            "Ada",
            "Lovelace",
            "Undergraduate Students",
            2026,
            "active",
            True,
            False,
            "week-2",
        ),
    ]
    # Each version ends where the next begins, inside the week it was snapshot.
    assert ada[0][11] == ada[1][10]
    assert ada[0][10] <= two_weeks.snapshot_times[0] < ada[1][10] <= two_weeks.snapshot_times[1]
    assert ada[1][11] is None
    grace = run_doc_query(audited, "A user's full history", external_id="grace@example.edu")
    assert [(row[6], row[8], row[9]) for row in grace] == [
        ("active", False, "week-1"),
        ("active", True, "week-1"),
    ]


def test_every_change_applied_to_a_user(audited):
    assert run_doc_query(audited, "Every change applied to a user", external_id="ada@example.edu") == [
        (WEEK_1_AT, "week-1", "roster.csv", "v1", "create", None, None, None),
        (WEEK_2_AT, "week-2", "roster.csv", "v1", "opt_out", "email_opt_out", "false", "true"),
        (WEEK_2_AT, "week-2", "roster.csv", "v1", "update", "communities:Affinity", "Chess", "Chess; Rowing"),
        (WEEK_2_AT, "week-2", "roster.csv", "v1", "update", "graduation_year", "2025", "2026"),
    ]


def test_the_roster_as_of_a_date(audited, two_weeks):
    between_the_weeks = run_doc_query(audited, "The roster as of a date", as_of=two_weeks.snapshot_times[0])
    assert [(row[0], row[5], row[6], row[7]) for row in between_the_weeks] == [
        ("ada@example.edu", 2025, "active", False),
        ("alan@example.edu", 2026, "active", False),
        ("barbara@example.edu", 1961, "inactive", False),
        ("edsger@example.edu", None, "active", False),
        ("grace@example.edu", 1934, "active", False),
        ("hedy@example.edu", 2026, "active", True),
    ]
    after_week_2 = run_doc_query(audited, "The roster as of a date", as_of=two_weeks.snapshot_times[1])
    assert [(row[0], row[6]) for row in after_week_2] == [
        ("ada@example.edu", "active"),
        ("alan@example.edu", "inactive"),
        ("aturing@example.edu", "active"),
        ("barbara@example.edu", "active"),
        ("edsger@example.edu", "inactive"),
        ("hedy@example.edu", "active"),
        ("katherine@example.edu", "active"),
    ]
    before_any_run = run_doc_query(audited, "The roster as of a date", as_of=datetime(2020, 1, 1))
    assert before_any_run == []


def test_all_changes_of_a_run(audited):
    rows = run_doc_query(audited, "All changes of a run", run_id="week-2")
    assert [row[:5] for row in rows] == [
        ("ada@example.edu", "opt_out", "email_opt_out", "false", "true"),
        ("ada@example.edu", "update", "communities:Affinity", "Chess", "Chess; Rowing"),
        ("ada@example.edu", "update", "graduation_year", "2025", "2026"),
        ("alan@example.edu", "deactivate", None, None, None),
        ("aturing@example.edu", "create", None, None, None),
        ("barbara@example.edu", "reactivate", None, None, None),
        ("edsger@example.edu", "deactivate", None, None, None),
        ("grace@example.edu", "delete", None, None, None),
        ("katherine@example.edu", "create", None, None, None),
    ]
    assert {row[5] for row in rows} == {WEEK_2_AT}


def test_runs_held_or_rejected_and_why(audited):
    assert run_doc_query(audited, "Runs that were held or rejected, and why") == [
        (
            "week-3",
            datetime(2026, 12, 5, 23, 5),
            "held",
            "the guard held the run for approval",
            ["6 of 7 users removed (86%), above max_removed_pct 10"],
            "roster.csv",
            1,
            0,
            0,
            None,
        ),
        (
            "week-4",
            datetime(2026, 12, 12, 23, 5),
            "rejected",
            "2 of 3 rows rejected (67%), above max_rejected_pct 5",
            None,
            "roster.csv",
            3,
            2,
            2,
            ["line 2: FIRST_NAME is blank", "line 3: EMAIL 'ada@' is not a valid email address"],
        ),
    ]


def _stages_written_by_the_code() -> set[str]:
    """Every stage name under which the package writes findings.

    That is the `stage` of each `record_findings(con, run_id, stage, ...)` call, and of each stage
    result that carries findings for `stages.record`: `StageResult(stage, findings, ...)` unless its
    findings are None, and `ended(stage, status, reason, findings)`. A literal is taken
    as is; a name or `module.NAME` is looked up in the module that holds the call. `stages.record`'s
    own call (`result.stage`) is what these results go through.
    """
    import ast
    import importlib

    def value(module, node):
        if isinstance(node, ast.Constant):
            return node.value
        if isinstance(node, ast.Name):
            return getattr(module, node.id)
        return getattr(getattr(module, ast.unparse(node.value)), node.attr)

    package = Path(audit.__file__).parent
    stages = set()
    for path in sorted(package.glob("*.py")):
        module = importlib.import_module(f"sisbridge.{path.stem}")
        for node in ast.walk(ast.parse(path.read_text("utf-8"))):
            if not isinstance(node, ast.Call):
                continue
            name = node.func.attr if isinstance(node.func, ast.Attribute) else getattr(node.func, "id", "")
            args = node.args
            if name == "record_findings" and len(args) >= 3 and ast.unparse(args[2]) != "result.stage":
                stages.add(value(module, args[2]))
            elif name == "StageResult" and len(args) >= 2:
                if not (isinstance(args[1], ast.Constant) and args[1].value is None):
                    stages.add(value(module, args[0]))
            elif name == "ended" and len(args) >= 4:
                stages.add(value(module, args[0]))
    return stages


def test_the_guide_lists_every_stage_that_writes_findings():
    text = AUDITING_DOC.read_text(encoding="utf-8")
    row = re.search(r"^\| `audit\.rejected_rows` \| .*?`stage` \(([^)]*)\)", text, flags=re.MULTILINE)
    in_table = re.findall(r"`(\w+)`", row.group(1))
    in_list = re.findall(r"^- `(\w+)`: ", text, flags=re.MULTILINE)
    written = _stages_written_by_the_code()
    assert written == {"load", "drift", "identity", "quality", "transform"}
    assert sorted(in_table) == sorted(in_list) == sorted(written)
