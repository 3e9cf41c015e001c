"""A school's DAG, run with dag.test() against moto's S3 server and a SQLite store, week after week."""

from __future__ import annotations

import csv
import io
import os

import pytest

from sisbridge import audit
from sisbridge.localrun import run_dag
from sisbridge.sample_roster import EMAIL_HEADER
from tests.e2e.store_rows import store_rows

pytestmark = pytest.mark.e2e

# The columns of an email-identified school's sample roster.
HEADER = list(EMAIL_HEADER)
FILLERS = [
    [f"Filler{n}", "Student", f"filler{n:02d}@northwind.edu", "2027", "Undergraduate", "", "", "", ""]
    for n in range(1, 21)
]


def roster(*rows: list[str]) -> bytes:
    buffer = io.StringIO()
    csv.writer(buffer, lineterminator="\r\n").writerows([HEADER, *rows, *FILLERS])
    return buffer.getvalue().encode()


WEEK_1 = roster(
    [
        "Ada",
        "Lovelace",
        " Ada.Lovelace@Northwind.EDU ",
        "2026",
        "Undergraduate",
        "Econ; Biology",
        "Women in Tech",
        "",
        "",
    ],
    ["Alan", "Turing", "alan@northwind.edu", "09/15/2025", "Graduate", "Finance", "", "yes", ""],
    ["Grace", "Hopper", "grace@northwind.edu", "2024", "Alumni", "", "", "", ""],
    ["Bad", "Address", "not-an-email", "2026", "Undergraduate", "", "", "", ""],
    ["Linus", "Torvalds", "linus@northwind.edu", "2027", "Undergraduate", "Physics", "", "", ""],
)
WEEK_2 = roster(
    [
        "Ada",
        "Lovelace-Byron",
        "ada.lovelace@northwind.edu",
        "2026",
        "Undergraduate",
        "Econ;Biology",
        "Women in Tech",
        "",
        "",
    ],
    ["Grace", "Hopper", "grace@northwind.edu", "2024", "Alumni", "", "", "YES", ""],
    ["Linus", "Torvalds", "linus@northwind.edu", "2027", "Undergraduate", "Physics", "", "", "true"],
    ["Katherine", "Johnson", "katherine@northwind.edu", "2029", "Graduate", "Biology", "", "", ""],
    ["Nobody", "Known", "nobody@northwind.edu", "2029", "Graduate", "", "", "", "1"],
)


WEEK_1_MEMBERSHIPS = [
    ("ada.lovelace@northwind.edu", "Affinity", "Women in Tech"),
    ("ada.lovelace@northwind.edu", "Career Communities", "Business & Finance"),
    ("ada.lovelace@northwind.edu", "Career Communities", "Science"),
    ("alan@northwind.edu", "Career Communities", "Business & Finance"),
]


def by_id(users: list[dict]) -> dict[str, dict]:
    return {user["external_id"]: user for user in users}


def sis_fields(user: dict) -> tuple:
    return (
        user["email"],
        user["first_name"],
        user["last_name"],
        user["user_type"],
        user["graduation_year"],
        user["status"],
        bool(user["email_opt_out"]),
    )


@pytest.mark.parametrize("model_tasks", ["true", "false"])
def test_week_one_creates_exactly_the_accepted_users(school_env, store_url, monkeypatch, model_tasks):
    # The transform shown as one task per dbt model (Cosmos watchers) or as one task: the same build.
    from airflow.dag_processing.dagbag import DagBag

    monkeypatch.setenv("SISBRIDGE_DBT_MODEL_TASKS", model_tasks)
    dag = DagBag(dag_folder=os.environ["AIRFLOW__CORE__DAGS_FOLDER"]).get_dag("sis_sync__northwind")
    transform_tasks = [t for t in dag.task_ids if t.split(".")[0] == "transform"]
    assert (transform_tasks == ["transform"]) == (model_tasks == "false")
    _, s3 = school_env("northwind")
    s3.put_object(Bucket="uconnect-sis-northwind", Key="roster.csv", Body=WEEK_1)

    run = run_dag("northwind")

    assert run["status"] == "succeeded", run["status_reason"]
    assert (run["rows_in_file"], run["rows_accepted"], run["rows_rejected"]) == (25, 24, 1)
    assert (run["creates"], run["updates"], run["deactivations"], run["deletes"]) == (24, 0, 0, 0)
    users, memberships = store_rows(store_url, "northwind")
    users = by_id(users)
    assert len(users) == 24 and "not-an-email" not in users
    assert sis_fields(users["ada.lovelace@northwind.edu"]) == (
        "ada.lovelace@northwind.edu",
        "Ada",
        "Lovelace",
        "Undergraduate Students",
        2026,
        "active",
        False,
    )
    # 09/15/2025 is after the 8/31 cutoff: class of 2026. The file's opt-out flag applies to a new user.
    assert sis_fields(users["alan@northwind.edu"]) == (
        "alan@northwind.edu",
        "Alan",
        "Turing",
        "Graduate Students",
        2026,
        "active",
        True,
    )
    assert sis_fields(users["linus@northwind.edu"])[4] == 2027
    assert [m for m in memberships if not m[0].startswith("filler")] == WEEK_1_MEMBERSHIPS
    with audit.warehouse("northwind", read_only=True) as con:
        findings = {(f.line_number, f.rule, f.severity) for f in audit.findings_of_run(con, run["run_id"])}
    assert (5, "email_invalid", "error") in findings
    assert (6, "community_unmapped", "warning") in findings


def test_week_two_updates_deactivates_deletes_and_opts_out(school_env, store_url):
    _, s3 = school_env("northwind")
    s3.put_object(Bucket="uconnect-sis-northwind", Key="roster.csv", Body=WEEK_1)
    assert run_dag("northwind")["status"] == "succeeded"
    before = by_id(store_rows(store_url, "northwind")[0])

    s3.put_object(Bucket="uconnect-sis-northwind", Key="roster.csv", Body=WEEK_2)
    run = run_dag("northwind")

    assert run["status"] == "succeeded", run["status_reason"]
    assert (run["creates"], run["updates"], run["deactivations"], run["deletes"], run["opt_outs"]) == (
        1,
        1,
        1,
        1,
        1,
    )
    users, memberships = store_rows(store_url, "northwind")
    users = by_id(users)
    assert sis_fields(users["ada.lovelace@northwind.edu"])[2] == "Lovelace-Byron"
    assert users["alan@northwind.edu"]["status"] == "inactive"
    assert bool(users["grace@northwind.edu"]["email_opt_out"]) is True
    assert "linus@northwind.edu" not in users
    assert not any(m[0] == "linus@northwind.edu" for m in memberships)
    assert "nobody@northwind.edu" not in users  # DELETE never creates a user
    assert sis_fields(users["katherine@northwind.edu"]) == (
        "katherine@northwind.edu",
        "Katherine",
        "Johnson",
        "Graduate Students",
        2029,
        "active",
        False,
    )
    untouched = [k for k in before if k.startswith("filler")]
    assert all(users[k] == before[k] for k in untouched)


def test_header_only_file_changes_nothing(school_env, store_url):
    _, s3 = school_env("northwind")
    s3.put_object(Bucket="uconnect-sis-northwind", Key="roster.csv", Body=WEEK_1)
    assert run_dag("northwind")["status"] == "succeeded"
    before = store_rows(store_url, "northwind")

    s3.put_object(Bucket="uconnect-sis-northwind", Key="roster.csv", Body=b"FIRST_NAME,LAST_NAME,EMAIL\r\n")
    run = run_dag("northwind")

    assert run["status"] == "rejected"
    assert "header" in run["status_reason"].lower()
    assert store_rows(store_url, "northwind") == before


def test_same_content_again_is_unchanged(school_env, store_url):
    _, s3 = school_env("northwind")
    s3.put_object(Bucket="uconnect-sis-northwind", Key="roster.csv", Body=WEEK_1)
    first = run_dag("northwind")

    same_object = run_dag("northwind")  # nothing uploaded: the ETag and version quick check
    s3.put_object(Bucket="uconnect-sis-northwind", Key="roster.csv", Body=WEEK_1)  # re-upload, same bytes
    same_bytes = run_dag("northwind")  # a new version: downloaded, and its sha256 compared

    for run in (same_object, same_bytes):
        assert run["status"] == "unchanged"
        assert run["file_sha256"] == first["file_sha256"]
        assert "has not changed since" in run["status_reason"]
    assert same_object["file_version_id"] == first["file_version_id"] != same_bytes["file_version_id"]
    assert "(3 runs)" in same_bytes["status_reason"]
