"""Safety end to end: onboarding dry runs, held runs, a reviewer's Approve and Reject, stale files.

Each DAG run costs about a minute, so each test walks one school through several weeks. Reviewers
answer through Airflow's own REST API (the route the Required Actions page calls), and an unanswered
request times out through the scheduler's own sweep.
"""

from __future__ import annotations

import csv
import io
import json
import os
import threading
import time
from pathlib import Path

import pytest

from sisbridge import audit, userstore
from sisbridge.config import reports_dir, safe_component
from sisbridge.localrun import run_dag
from tests.e2e.store_rows import store_rows

pytestmark = pytest.mark.e2e

ROOT = Path(__file__).resolve().parents[2]
HEADER = ["FIRST_NAME", "LAST_NAME", "EMAIL", "STAKEHOLDERS", "PROGRAM"]
USERS = [[f"First{n}", f"Last{n}", f"u{n:02d}@harbor.edu", "Undergraduate", "Econ"] for n in range(1, 21)]
SCHOOL_YAML = """
school_id: {school_id}
name: Harbor University
s3: {{bucket: uconnect-sis-{school_id}, key: roster.csv, aws_conn_id: sis_s3_{school_id}}}
{auto_sync}stale_after_runs: 1
approval_timeout_hours: 0.0003
user_types: {{Undergraduate: Undergraduate Students}}
communities:
  - {{column: PROGRAM, group: Career Communities}}
notifiers:
  - {{class: tests.guards.recording_notifier.RecordingNotifier, kwargs: {{path: "{alerts}"}}}}
"""


def roster(rows: list[list[str]], header: list[str] = HEADER) -> bytes:
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\r\n")
    writer.writerow(header)
    writer.writerows([row[: len(header)] for row in rows])
    return buffer.getvalue().encode()


@pytest.fixture
def schools(tmp_path, monkeypatch):
    """Two test schools in their own config folder: `harbor` syncs, `pier` is new (no auto_sync key)."""
    folder = tmp_path / "schools"
    folder.mkdir()
    alerts = tmp_path / "alerts.log"
    for school_id, auto_sync in (("harbor", "auto_sync: true\n"), ("pier", "")):
        text = SCHOOL_YAML.format(school_id=school_id, auto_sync=auto_sync, alerts=alerts)
        (folder / f"{school_id}.yaml").write_text(text, encoding="utf-8")
    monkeypatch.setenv("SISBRIDGE_SCHOOLS_DIR", str(folder))
    monkeypatch.setenv("AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_ALL_ADMINS", "True")
    return alerts


def upload(s3, school_id: str, body: bytes) -> None:
    s3.put_object(Bucket=f"uconnect-sis-{school_id}", Key="roster.csv", Body=body)


def read_csv(path: Path) -> list[dict]:
    with path.open(encoding="utf-8-sig", newline="") as handle:
        return list(csv.DictReader(handle))


def summary(run: dict) -> dict:
    return json.loads((reports_dir(run["school_id"], run["run_id"]) / "summary.json").read_text("utf-8"))


def audit_row(school_id: str, run_id: str) -> dict:
    with audit.warehouse(school_id, read_only=True) as con:
        return audit.get_run(con, run_id)


def _awaiting_approval(dag_id: str, stop: threading.Event):
    from airflow.models.taskinstance import TaskInstance
    from airflow.utils.session import create_session
    from airflow.utils.state import TaskInstanceState

    while not stop.is_set():
        with create_session() as session:
            ti = (
                session.query(TaskInstance)
                .filter_by(dag_id=dag_id, task_id="approve", state=TaskInstanceState.AWAITING_INPUT)
                .one_or_none()
            )
            if ti is not None:
                return ti.run_id, ti.trigger_timeout
        time.sleep(1)
    return None, None


def _answer(dag_id: str, answer: str | None, stop: threading.Event, responses: list) -> None:
    """Act as the reviewer: Approve or Reject through the REST API, or let the request time out."""
    run_id, deadline = _awaiting_approval(dag_id, stop)
    if run_id is None:
        return
    if answer is None:
        from airflow.jobs.job import Job
        from airflow.jobs.scheduler_job_runner import SchedulerJobRunner
        from airflow.sdk.timezone import utcnow

        while utcnow() <= deadline:
            time.sleep(0.5)
        SchedulerJobRunner(job=Job()).check_awaiting_input_timeouts()
        responses.append(("timeout", run_id))
        return
    from airflow.api_fastapi.app import create_app
    from fastapi.testclient import TestClient

    with TestClient(create_app(apps="core")) as client:
        response = client.patch(
            f"/api/v2/dags/{dag_id}/dagRuns/{run_id}/taskInstances/approve/-1/hitlDetails",
            json={"chosen_options": [answer]},
        )
    responses.append((response.status_code, response.json()))


def run_with_reviewer(school_id: str, answer: str | None) -> dict:
    """Run the DAG as the scheduler would (interactive approval) while a reviewer answers."""
    from airflow.dag_processing.dagbag import DagBag

    dag = DagBag(dag_folder=os.environ["AIRFLOW__CORE__DAGS_FOLDER"]).get_dag(f"sis_sync__{school_id}")
    stop, responses = threading.Event(), []
    reviewer = threading.Thread(target=_answer, args=(dag.dag_id, answer, stop, responses), daemon=True)
    reviewer.start()
    try:
        dag_run = dag.test()
    finally:
        stop.set()
        reviewer.join(60)
    assert responses, "the run never waited for a reviewer"
    if answer is not None:
        status_code, body = responses[0]
        assert status_code == 200, body
        assert body["chosen_options"] == [answer]
    return audit_row(school_id, dag_run.run_id)


def test_onboarding_school_gets_a_full_report_and_nothing_is_pushed(schools, school_env, store_url):
    _, s3 = school_env("pier")
    upload(s3, "pier", roster([row[:2] + [row[2].replace("harbor", "pier")] + row[3:] for row in USERS]))

    run = run_dag("pier")

    assert run["status"] == "dry_run"
    # No auto_sync key: a new school is in onboarding review, and every run is a dry run.
    assert run["status_reason"] == (
        "onboarding review (no auto_sync in the school's config): every run is a dry run until a "
        "reviewer approves one; nothing is pushed"
    )
    assert (run["rows_accepted"], run["creates"]) == (20, 20)
    changes = read_csv(reports_dir("pier", run["run_id"]) / "changes.csv")
    assert [(c["external_id"], c["change_type"]) for c in changes if c["field"] == ""] == [
        (f"u{n:02d}@pier.edu", "create") for n in range(1, 21)
    ]
    assert summary(run)["status"] == "dry_run"
    userstore.ensure_schema(userstore.store_engine(store_url))
    assert store_rows(store_url, "pier") == ([], [])


def test_a_mass_removal_is_held_under_sync_and_a_stale_file_is_flagged(schools, school_env, store_url):
    _, s3 = school_env("harbor")
    upload(s3, "harbor", roster(USERS))
    first = run_dag("harbor")
    assert (first["status"], first["creates"]) == ("succeeded", 20)
    before = store_rows(store_url, "harbor")

    # 15 of 20 users gone (75%), and the PROGRAM column dropped from the export.
    upload(s3, "harbor", roster(USERS[:5], HEADER[:4]))
    held = run_dag("harbor")

    assert held["status"] == "held"
    assert held["status_reason"] == "15 removals are 75.0% of 20 active users, over max_removed_pct = 10%"
    assert held["deactivations"] == 15
    assert store_rows(store_url, "harbor") == before
    report = summary(held)
    assert report["guard_reasons"] == [held["status_reason"]]
    assert report["safety"]["schema_drift"] == "removed PROGRAM"
    assert report["rules"]["schema_drift"] == {"severity": "warning", "count": 1}
    changes = read_csv(reports_dir("harbor", held["run_id"]) / "changes.csv")
    assert sorted(c["external_id"] for c in changes if c["change_type"] == "deactivate") == [
        f"u{n:02d}@harbor.edu" for n in range(6, 21)
    ]

    # The school uploads its first file again: nothing new since the last accepted file.
    upload(s3, "harbor", roster(USERS))
    unchanged = run_dag("harbor")

    assert unchanged["status"] == "unchanged"
    message = (
        "harbor (Harbor University): s3://uconnect-sis-harbor/roster.csv has not changed for 1 runs "
        "(stale_after_runs = 1); ask the school for a new export"
    )
    assert summary(unchanged)["safety"]["stale_file"] == message
    # The school's notifier heard of the held run and of the stale file.
    assert schools.read_text("utf-8").splitlines() == [
        f"Run {held['run_id']} of Harbor University (harbor) is held: {held['status_reason']}. "
        f"Report: s3://uconnect-sis-harbor/sisbridge-reports/{safe_component(held['run_id'])}/",
        f"Stale file: {message}",
    ]
    assert store_rows(store_url, "harbor") == before


def _changes_applied(school_id: str, run_id: str) -> list[tuple]:
    with audit.warehouse(school_id, read_only=True) as con:
        rows = con.execute(
            "select external_id, change_type, coalesce(field, ''), coalesce(old_value, ''), "
            "coalesce(new_value, '') from audit.applied_changes where run_id = ? order by all",
            [run_id],
        ).fetchall()
    return [tuple(row) for row in rows]


def test_a_reviewer_rejects_approves_or_lets_a_held_run_time_out(schools, school_env, store_url):
    _, s3 = school_env("harbor")
    upload(s3, "harbor", roster(USERS))
    assert run_dag("harbor")["status"] == "succeeded"
    week_one = store_rows(store_url, "harbor")

    upload(s3, "harbor", roster(USERS[:5]))
    rejected = run_with_reviewer("harbor", "Reject")

    assert rejected["status"] == "rejected_by_reviewer"
    assert rejected["status_reason"].startswith("rejected by ")
    assert store_rows(store_url, "harbor") == week_one

    upload(s3, "harbor", roster(USERS[:6]))
    approved = run_with_reviewer("harbor", "Approve")

    assert approved["status"] == "succeeded", approved["status_reason"]
    assert approved["deactivations"] == 14
    changes = read_csv(reports_dir("harbor", approved["run_id"]) / "changes.csv")
    assert _changes_applied("harbor", approved["run_id"]) == sorted(
        (c["external_id"], c["change_type"], c["field"], c["old_value"], c["new_value"]) for c in changes
    )
    users, memberships = store_rows(store_url, "harbor")
    assert [(u["external_id"], u["status"]) for u in users] == [
        (f"u{n:02d}@harbor.edu", "active" if n <= 6 else "inactive") for n in range(1, 21)
    ]
    week_two = (users, memberships)

    upload(s3, "harbor", roster(USERS[:2]))
    timed_out = run_with_reviewer("harbor", None)

    assert timed_out["status"] == "rejected_by_reviewer"
    assert timed_out["status_reason"] == "no reviewer answered within 0.0003 hours"
    assert store_rows(store_url, "harbor") == week_two
    # The school's notifier heard of each request (the subject is the one shown in the Airflow UI), and
    # of each run that ended rejected by the reviewer or by the timeout.
    subject = "Approve the roster sync of Harbor University? (1 threshold(s) crossed)"

    def request(run):
        return f"Run {run['run_id']} is waiting for a reviewer: {subject}"

    def outcome(run):
        report = f"s3://uconnect-sis-harbor/sisbridge-reports/{safe_component(run['run_id'])}/"
        return (
            f"Run {run['run_id']} of Harbor University (harbor) is rejected_by_reviewer: "
            f"{run['status_reason']}. Report: {report}"
        )

    assert schools.read_text("utf-8").splitlines() == [
        request(rejected),
        outcome(rejected),
        request(approved),
        request(timed_out),
        outcome(timed_out),
    ]


def test_a_new_schools_first_file_is_reviewed_and_its_approval_turns_auto_sync_on(
    schools, school_env, store_url
):
    _, s3 = school_env("pier")
    pier = [row[:2] + [row[2].replace("harbor", "pier")] + row[3:] for row in USERS]
    upload(s3, "pier", roster(pier[:18]))
    rejected = run_with_reviewer("pier", "Reject")

    assert rejected["status"] == "rejected_by_reviewer"
    assert rejected["status_reason"].startswith("rejected by ")
    assert rejected["status_reason"].endswith("; Harbor University stays in onboarding review")
    userstore.ensure_schema(userstore.store_engine(store_url))
    assert store_rows(store_url, "pier") == ([], [])

    # The school fixes its file; the reviewer approves this one.
    upload(s3, "pier", roster(pier[:19]))
    approved = run_with_reviewer("pier", "Approve")

    assert approved["status"] == "succeeded", approved["status_reason"]
    assert approved["creates"] == 19
    users, _ = store_rows(store_url, "pier")
    assert [(u["external_id"], u["status"]) for u in users] == [
        (f"u{n:02d}@pier.edu", "active") for n in range(1, 20)
    ]
    with audit.warehouse("pier", read_only=True) as con:
        approval = audit.auto_sync_approval(con)
    assert approval["run_id"] == approved["run_id"] and approval["approved_by"]
    assert approved["status_reason"] is None
    assert summary(approved)["safety"]["review"].startswith(f"approved by {approval['approved_by']} at ")

    # Next week, with no reviewer at all (the way `sisbridge sync` runs): it syncs on its own.
    upload(s3, "pier", roster(pier))
    next_week = run_dag("pier")

    assert (next_week["status"], next_week["creates"]) == ("succeeded", 1)
    assert len(store_rows(store_url, "pier")[0]) == 20
    subjects = [line for line in schools.read_text("utf-8").splitlines() if "waiting for a reviewer" in line]
    subject = "Enable auto sync for Harbor University with this file?"
    assert subjects == [
        f"Run {run['run_id']} is waiting for a reviewer: {subject}" for run in (rejected, approved)
    ]
