"""Every school's DAG imports quickly, is wired in the contract's order, and is safe to operate."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from sisbridge.config import load_schools

ROOT = Path(__file__).resolve().parents[2]
TASK_ORDER = ["wait_for_file", "load_raw", "validate", "transform", "guard", "approve", "push", "finalize"]


@pytest.fixture(scope="module")
def dagbag():
    from airflow.dag_processing.dagbag import DagBag

    return DagBag(dag_folder=str(ROOT / "dags"))


def test_every_school_yaml_has_an_importable_dag(dagbag):
    assert dagbag.import_errors == {}
    expected = {f"sis_sync__{school.school_id}" for school in load_schools()}
    assert set(dagbag.dag_ids) == expected and expected


def test_dags_are_tagged_retried_and_single_run(dagbag):
    for dag_id, dag in dagbag.dags.items():
        school_id = dag_id.removeprefix("sis_sync__")
        assert set(dag.tags) == {"sis", school_id}
        assert dag.max_active_runs == 1
        assert dag.catchup is False
        assert dag.doc_md and school_id in dag.doc_md
        for task in dag.tasks:
            assert task.owner == "data-platform"
            if task.task_id != "finalize":  # finalize only records; retrying it changes nothing
                assert task.retries >= 2, task.task_id


def _top_level(task_id: str) -> str:
    return task_id.split(".", 1)[0]


def test_tasks_run_in_the_contract_order(dagbag):
    for dag in dagbag.dags.values():
        tasks = {task.task_id: task for task in dag.tasks}
        assert {_top_level(t) for t in tasks} == set(TASK_ORDER)
        transform = [t for t in tasks if t.startswith("transform.")]
        assert len(transform) > 3, "each dbt model shows as its own task"
        # Each stage's tasks are downstream of every task of the stage before it.
        for earlier, later in zip(TASK_ORDER, TASK_ORDER[1:], strict=False):
            later_tasks = [t for t in tasks if _top_level(t) == later]
            for task_id in later_tasks:
                upstream = tasks[task_id].get_flat_relative_ids(upstream=True)
                assert any(_top_level(u) == earlier for u in upstream), (task_id, earlier)
        assert tasks["finalize"].trigger_rule == "all_done"


def test_schedule_and_timezone_come_from_the_config(dagbag):
    schools = {s.school_id: s for s in load_schools()}
    for dag_id, dag in dagbag.dags.items():
        school = schools[dag_id.removeprefix("sis_sync__")]
        assert dag.timetable.expression == school.schedule
        assert str(dag.timetable.timezone) == school.timezone


def test_dag_file_parses_without_connections_warehouse_or_network():
    env = {k: v for k, v in os.environ.items() if not k.startswith("AIRFLOW_CONN_")}
    env["SISBRIDGE_HOME"] = "/nonexistent/sisbridge-home"
    result = subprocess.run(
        [sys.executable, "-c", "import runpy; runpy.run_path('dags/sis_sync.py')"],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr[-2000:]
    assert not Path("/nonexistent/sisbridge-home").exists()
