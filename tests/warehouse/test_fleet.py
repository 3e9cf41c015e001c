"""The cross-school view: every school's latest run from the fleet lake, on the production setup."""

from __future__ import annotations

from datetime import datetime

import lakes
import pytest

from sisbridge import audit, fleet, warehouse

SCHOOLS = ("fleet_a", "fleet_b")


@pytest.fixture
def fresh_fleet():
    for school_id in (*SCHOOLS, warehouse.FLEET):
        lakes.wipe(school_id)
    yield
    for school_id in (*SCHOOLS, warehouse.FLEET):
        lakes.wipe(school_id)


def _run(school_id: str, run_id: str, day: int, *statuses: str, **counts) -> None:
    with audit.warehouse(school_id) as con:
        with audit.transaction(con, run_id=run_id):
            audit.upsert_run(
                con, run_id, school_id=school_id, status="running", started_at=datetime(2026, 11, day, 23)
            )
        for status in statuses:
            with audit.transaction(con, run_id=run_id):
                audit.upsert_run(con, run_id, status=status, **counts)


def test_the_latest_run_of_every_school_with_its_status_and_counts(fresh_fleet):
    assert fleet.latest_runs() == []  # nothing recorded yet: an empty view, not an error
    _run("fleet_a", "a-1", 21, "succeeded", rows_in_file=10, creates=10)
    _run("fleet_a", "a-2", 28, "held", rows_in_file=9, deactivations=1)
    _run("fleet_b", "b-1", 28, "rejected", rows_in_file=5, rows_rejected=5)

    latest = {row["school_id"]: row for row in fleet.latest_runs()}
    assert {school: (row["run_id"], row["status"]) for school, row in latest.items()} == {
        "fleet_a": ("a-2", "held"),
        "fleet_b": ("b-1", "rejected"),
    }
    assert (latest["fleet_a"]["rows_in_file"], latest["fleet_a"]["deactivations"]) == (9, 1)
    assert latest["fleet_b"]["rows_rejected"] == 5
    assert [row["run_id"] for row in fleet.runs("fleet_a")] == ["a-2", "a-1"]
    assert [row["status"] for row in fleet.runs("fleet_a")] == ["held", "succeeded"]


def test_a_status_rolled_back_with_its_transaction_never_reaches_the_fleet(fresh_fleet):
    _run("fleet_a", "a-1", 21, "succeeded")
    with audit.warehouse("fleet_a") as con, pytest.raises(RuntimeError):
        with audit.transaction(con, run_id="a-1"):
            audit.upsert_run(con, "a-1", status="failed")
            raise RuntimeError("the task died before its commit")
    assert [(row["run_id"], row["status"]) for row in fleet.runs("fleet_a")] == [("a-1", "succeeded")]


def test_schools_runs_with_the_same_run_id_stay_apart(fresh_fleet):
    # Airflow names scheduled runs by their date: every school's Saturday run has the same run id.
    run_id = "scheduled__2026-11-28T23:00:00+00:00"
    _run("fleet_a", run_id, 28, "succeeded", rows_in_file=10, creates=10)
    _run("fleet_b", run_id, 28, "rejected", rows_in_file=5, rows_rejected=5)

    latest = {row["school_id"]: (row["status"], row["rows_in_file"]) for row in fleet.latest_runs()}
    assert latest == {"fleet_a": ("succeeded", 10), "fleet_b": ("rejected", 5)}
    assert [row["status"] for row in fleet.runs("fleet_a")] == ["succeeded"]
    assert [row["status"] for row in fleet.runs("fleet_b")] == ["rejected"]
