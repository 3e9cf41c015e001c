"""docker-compose.yaml cannot run here (no Docker engine); check what the DAGs need from it instead."""

from __future__ import annotations

import re
from pathlib import Path

import yaml

from sisbridge.config import load_schools

ROOT = Path(__file__).resolve().parents[2]
AIRFLOW_SERVICES = {"airflow-apiserver", "airflow-scheduler", "airflow-dag-processor", "airflow-triggerer"}


def compose() -> dict:
    return yaml.safe_load((ROOT / "docker-compose.yaml").read_text())


def env_example() -> dict[str, str]:
    lines = (ROOT / ".env.example").read_text().splitlines()
    return dict(line.split("=", 1) for line in lines if line and not line.startswith("#"))


def test_the_stack_has_airflow_postgres_and_minio():
    services = compose()["services"]
    assert AIRFLOW_SERVICES | {"postgres", "minio", "minio-create-buckets", "airflow-init"} <= set(services)
    assert services["postgres"]["image"].startswith("postgres:")
    assert services["minio"]["image"].startswith("minio/minio")


def test_airflow_runs_a_custom_image_built_from_requirements():
    services = compose()["services"]
    dockerfile = (ROOT / "Dockerfile").read_text()
    assert "-r /opt/sisbridge/requirements.txt" in dockerfile
    for name in AIRFLOW_SERVICES | {"airflow-init"}:
        service = services[name]
        assert service["build"] == "." and service["image"] == "sisbridge-airflow:latest"
        assert "_PIP_ADDITIONAL_REQUIREMENTS" not in service["environment"]


def test_code_config_and_warehouse_are_mounted_where_the_dag_looks():
    scheduler = compose()["services"]["airflow-scheduler"]
    mounts = {volume.split(":")[1]: volume.split(":")[0] for volume in scheduler["volumes"]}
    for folder in ("dags", "plugins", "dbt_project", "expectations", "config"):
        assert mounts[f"/opt/sisbridge/{folder}"] == f"./{folder}"
    env = scheduler["environment"]
    assert mounts[env["SISBRIDGE_HOME"]] == "warehouse"
    assert env["AIRFLOW__CORE__DAGS_FOLDER"] == "/opt/sisbridge/dags"
    assert env["SISBRIDGE_SCHOOLS_DIR"] == "/opt/sisbridge/config/schools"


def test_every_demo_school_has_a_connection_and_a_bucket():
    env = env_example()
    buckets_job = compose()["services"]["minio-create-buckets"]["entrypoint"]
    for school in load_schools(ROOT / "config" / "schools"):
        assert f"AIRFLOW_CONN_{school.s3.aws_conn_id.upper()}" in env
        assert school.s3.bucket in buckets_job
    assert env["AIRFLOW_CONN_UCONNECT_USER_STORE"].startswith("postgresql://")
    assert (ROOT / ".env") not in ROOT.iterdir() or ".env" in (ROOT / ".gitignore").read_text()


def test_no_secret_falls_back_to_a_default_everyone_knows():
    text = (ROOT / "docker-compose.yaml").read_text()
    defaults = re.findall(r"\$\{([A-Z0-9_]+):-", text)
    assert defaults == ["AIRFLOW_UID"]  # never a password, key or secret
    required = re.findall(r"\$\{([A-Z0-9_]+):\?", text)
    assert "AIRFLOW_JWT_SECRET" in required
    env = compose()["services"]["airflow-scheduler"]["environment"]
    assert env["AIRFLOW__API_AUTH__JWT_SECRET"].startswith("${AIRFLOW_JWT_SECRET:?")
    assert set(required) <= set(env_example())
