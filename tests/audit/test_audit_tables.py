"""The auditors' tables: one row per run, findings replaced per stage so a retried task never doubles them."""

from __future__ import annotations

import json

import lakes
import pytest

from sisbridge import audit


@pytest.fixture
def con():
    """A fresh lake for the school (PostgreSQL catalog, data in moto's S3), as the pipeline opens it."""
    lakes.wipe("acme")
    with audit.warehouse("acme") as connection:
        yield connection


@pytest.mark.parametrize("count", [3, 5000])  # the small path and the bulk path
def test_findings_are_stored_exactly_and_replaced_on_retry(con, count):
    findings = [
        audit.Finding(
            "unknown_column", f"column {i} is unknown", "warning", i + 1 if i % 3 else None, None, "C", "v"
        )
        for i in range(count)
    ]
    audit.record_findings(con, "run-1", "load", findings)
    audit.record_findings(con, "run-1", "load", findings)  # a retried task
    audit.record_findings(con, "run-1", "quality", [audit.Finding("email_invalid", "bad", line_number=2)])

    stored = audit.findings_of_run(con, "run-1")

    assert len(stored) == count + 1
    stored_unknown = [f for f in stored if f.rule == "unknown_column"]
    assert sorted(stored_unknown, key=repr) == sorted(findings, key=repr)


def test_a_run_row_is_created_once_and_updated_field_by_field(con):
    audit.upsert_run(con, "run-1", school_id="acme", status="running", rows_in_file=10)
    audit.upsert_run(con, "run-1", status="succeeded", creates=7, details={"note": "ok"})

    run = audit.get_run(con, "run-1")

    assert (run["school_id"], run["status"], run["rows_in_file"], run["creates"]) == (
        "acme",
        "succeeded",
        10,
        7,
    )
    assert run["details"] == '{"note": "ok"}'
    assert con.execute("select count(*) from audit.sync_runs").fetchone() == (1,)


def test_unknown_status_and_column_are_refused(con):
    with pytest.raises(ValueError, match="unknown status 'done'"):
        audit.upsert_run(con, "run-1", school_id="acme", status="done")
    with pytest.raises(ValueError, match="unknown sync_runs columns"):
        audit.upsert_run(con, "run-1", school_id="acme", colour="blue")
    with pytest.raises(ValueError, match="severity"):
        audit.Finding("x", "y", severity="fatal")


def test_the_schema_is_created_once_and_a_second_open_commits_nothing(con):
    # The fixture's open created it; opening again must not add a lake snapshot.
    snapshots = con.execute("select count(*) from lake.snapshots()").fetchone()[0]
    audit.ensure_schema(con)
    assert con.execute("select count(*) from lake.snapshots()").fetchone()[0] == snapshots
    tables = con.execute(
        "select table_schema || '.' || table_name from information_schema.tables "
        "where table_catalog = 'lake' order by all"
    ).fetchall()
    assert tables == [
        ("audit.applied_changes",),
        ("audit.auto_sync_approvals",),
        ("audit.rejected_rows",),
        ("audit.sync_runs",),
        ("state.applied_memberships",),
        ("state.applied_users",),
    ]


def test_a_runs_last_commit_is_tagged_with_its_run_id(con):
    audit.upsert_run(con, "run-7", school_id="acme", status="running")
    with audit.transaction(con, run_id="run-7", message="run run-7 finished"):
        audit.upsert_run(con, "run-7", status="succeeded")
    author, message, extra = con.execute(
        "select author, commit_message, commit_extra_info from lake.snapshots() "
        "order by snapshot_id desc limit 1"
    ).fetchone()
    assert (author, message, json.loads(extra)) == ("sisbridge", "run run-7 finished", {"run_id": "run-7"})


def test_a_failed_transaction_leaves_the_run_row_as_it_was(con):
    audit.upsert_run(con, "run-8", school_id="acme", status="running")
    with pytest.raises(ValueError), audit.transaction(con, run_id="run-8"):
        audit.upsert_run(con, "run-8", status="succeeded")
        raise ValueError("the write after it failed")
    assert audit.get_run(con, "run-8")["status"] == "running"
