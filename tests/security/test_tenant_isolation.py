"""Each school's DAG uses only its own connection, bucket, key, warehouse and dbt folders."""

from __future__ import annotations

import json

import pytest

from sisbridge import landing, transform
from sisbridge.config import load_schools
from tests.security.security_helpers import PROJECT_ROOT


@pytest.fixture(scope="module")
def dags():
    from airflow.dag_processing.dagbag import DagBag

    bag = DagBag(dag_folder=str(PROJECT_ROOT / "dags"))
    assert bag.import_errors == {}
    return bag.dags


def other_schools_names(school, schools) -> set[str]:
    names = set()
    for other in schools:
        if other.school_id != school.school_id:
            other_env = transform.dbt_env(other.school_id, with_lake=False)
            names |= {other.s3.aws_conn_id, other.s3.bucket, other_env["DBT_TARGET_PATH"]}
    return names


def test_every_task_uses_its_own_schools_connection_bucket_and_warehouse(dags):
    schools = load_schools()
    assert len(schools) >= 2
    for school in schools:
        dag = dags[f"sis_sync__{school.school_id}"]
        sensor = dag.get_task("wait_for_file")
        assert (sensor.aws_conn_id, sensor.bucket_name, sensor.bucket_key) == (
            school.s3.aws_conn_id,
            school.s3.bucket,
            school.s3.key,
        )
        own_env = transform.dbt_env(school.school_id, with_lake=False)
        assert own_env["SISBRIDGE_SCHOOL_ID"] == school.school_id
        dbt_tasks = [task for task in dag.tasks if isinstance(getattr(task, "env", None), dict)]
        assert len(dbt_tasks) > 10  # the producer and every model's run and test task
        for task in dbt_tasks:
            assert {key: task.env[key] for key in own_env} == own_env, task.task_id
            # The lake's settings (which may hold secrets) are added when the task runs, not rendered.
            assert "SISBRIDGE_LAKE" not in task.env, task.task_id
            assert task._pre_execute_hook is transform.lake_pre_execute, task.task_id
        foreign = other_schools_names(school, schools)
        for task in dag.tasks:
            settings = json.dumps(
                {name: getattr(task, name, None) for name in (*task.template_fields, "env", "aws_conn_id")},
                default=str,
            )
            assert not [name for name in foreign if name in settings], task.task_id


def test_each_schools_s3_client_comes_from_its_own_connection(monkeypatch):
    schools = load_schools()
    endpoints = {}
    for number, school in enumerate(schools):
        endpoints[school.school_id] = f"http://127.0.0.1:{41000 + number}"
        connection = {
            "conn_type": "aws",
            "login": f"key-of-{school.school_id}",
            "password": f"secret-of-{school.school_id}",
            "extra": {"endpoint_url": endpoints[school.school_id], "region_name": "us-east-1"},
        }
        monkeypatch.setenv(f"AIRFLOW_CONN_{school.s3.aws_conn_id.upper()}", json.dumps(connection))

    for school in schools:
        client = landing.s3_client(school)
        credentials = client._request_signer._credentials
        assert client.meta.endpoint_url == endpoints[school.school_id]
        assert credentials.access_key == f"key-of-{school.school_id}"


def test_a_schools_s3_client_is_kept_until_its_connection_changes(monkeypatch):
    # `sisbridge sync` runs every task in one process: they share the client, never a stale one.
    school = load_schools()[0]

    def connect(access_key: str) -> None:
        connection = {
            "conn_type": "aws",
            "login": access_key,
            "password": f"secret-of-{access_key}",
            "extra": {"endpoint_url": "http://127.0.0.1:41999", "region_name": "us-east-1"},
        }
        monkeypatch.setenv(f"AIRFLOW_CONN_{school.s3.aws_conn_id.upper()}", json.dumps(connection))

    connect("first-key")
    first = landing.s3_client(school)
    assert landing.s3_client(school) is first
    connect("rotated-key")
    rotated = landing.s3_client(school)
    assert rotated is not first
    assert rotated._request_signer._credentials.access_key == "rotated-key"
