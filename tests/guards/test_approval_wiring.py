"""The approval task of every school's DAG: where it sits, what it defaults to, and how long it waits."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path

from airflow.providers.standard.operators.hitl import ApprovalOperator

from sisbridge.config import load_schools

ROOT = Path(__file__).resolve().parents[2]


def test_a_held_run_waits_for_a_reviewer_between_guard_and_push():
    from airflow.dag_processing.dagbag import DagBag

    dags = DagBag(dag_folder=str(ROOT / "dags")).dags
    for school in load_schools():
        dag = dags[f"sis_sync__{school.school_id}"]
        approve, push = dag.get_task("approve"), dag.get_task("push")
        assert isinstance(approve, ApprovalOperator)
        assert approve.defaults == ["Reject"]  # an unanswered request pushes nothing
        assert approve.response_timeout == timedelta(hours=school.approval_timeout_hours)
        assert approve.upstream_task_ids == {"guard"}
        assert push.upstream_task_ids == {"guard", "approve"}
        # Runs that were not held go from guard straight to push, past the skipped approval.
        assert push.trigger_rule == "none_failed_min_one_success"
        assert dag.get_task("guard").downstream_task_ids == {"approve", "push"}
