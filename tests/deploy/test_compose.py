"""docker-compose.yaml cannot run here (no Docker engine); check what the DAGs need from it instead."""

from __future__ import annotations

import json
import os
import re
import secrets
import shutil
import subprocess
import sys
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


def test_code_and_config_are_mounted_where_the_dag_looks_and_no_volume_holds_the_warehouse():
    scheduler = compose()["services"]["airflow-scheduler"]
    mounts = {volume.split(":")[1]: volume.split(":")[0] for volume in scheduler["volumes"]}
    for folder in ("dags", "plugins", "dbt_project", "expectations", "config"):
        assert mounts[f"/opt/sisbridge/{folder}"] == f"./{folder}"
    env = scheduler["environment"]
    assert mounts[env["SISBRIDGE_HOME"]] == "sisbridge-home"  # scratch and reports
    assert env["AIRFLOW__CORE__DAGS_FOLDER"] == "/opt/sisbridge/dags"
    assert env["SISBRIDGE_SCHOOLS_DIR"] == "/opt/sisbridge/config/schools"


def test_every_demo_school_has_a_connection_and_a_bucket():
    env = env_example()
    buckets_job = compose()["services"]["minio-create-buckets"]["entrypoint"]
    for school in load_schools(ROOT / "config" / "schools"):
        assert f"AIRFLOW_CONN_{school.s3.aws_conn_id.upper()}" in env
        assert school.s3.bucket in buckets_job
    assert env["AIRFLOW_CONN_UCONNECT_USER_STORE"].startswith("postgresql://")


def test_the_warehouse_is_a_lake_in_the_stacks_postgresql_and_minio():
    from airflow.models.connection import Connection

    env = env_example()
    lake = Connection(conn_id="sisbridge_lake", uri=env["AIRFLOW_CONN_SISBRIDGE_LAKE"])
    assert (lake.conn_type, lake.host, lake.schema) == ("postgres", "postgres", "lake")
    assert lake.extra_dejson == {"data_path": "s3://sisbridge-lake/", "aws_conn_id": "sisbridge_lake_aws"}
    aws = json.loads(env["AIRFLOW_CONN_SISBRIDGE_LAKE_AWS"])
    assert (aws["conn_type"], aws["extra"]["endpoint_url"]) == ("aws", "http://minio:9000")
    assert "create database lake;" in (ROOT / "docker" / "postgres-init.sql").read_text()
    assert (
        "mc mb --ignore-existing local/sisbridge-lake"
        in compose()["services"]["minio-create-buckets"]["entrypoint"]
    )

    assert (ROOT / ".env") not in ROOT.iterdir() or ".env" in (ROOT / ".gitignore").read_text()


def test_no_secret_falls_back_to_a_default_everyone_knows():
    text = (ROOT / "docker-compose.yaml").read_text()
    defaults = re.findall(r"\$\{([A-Z0-9_]+):-", text)
    assert set(defaults) == {"AIRFLOW_UID"}  # never a password, key or secret
    required = re.findall(r"\$\{([A-Z0-9_]+):\?", text)
    assert "AIRFLOW_JWT_SECRET" in required
    env = compose()["services"]["airflow-scheduler"]["environment"]
    assert env["AIRFLOW__API_AUTH__JWT_SECRET"].startswith("${AIRFLOW_JWT_SECRET:?")
    assert set(required) <= set(env_example())


def interpolate(text: str, env: dict[str, str]) -> str:
    """What `docker compose` does to `${VAR}`, `${VAR:-default}` and `$$` in a value."""

    def value(match: re.Match) -> str:
        if match.group(0) == "$$":
            return "$"
        name, default = match.group(1), match.group(2)
        return env.get(name) or (default[2:] if default else "")

    return re.sub(r"\$\$|\$\{(\w+)(:-[^}]*)?\}", value, text)


def fresh_clone(tmp_path: Path) -> Path:
    """The files a fresh clone of this branch has: tracked and new ones, nothing that git ignores."""
    listed = subprocess.run(
        ["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"],
        cwd=ROOT,
        capture_output=True,
        check=True,
    ).stdout
    clone = tmp_path / "clone"
    for name in filter(None, listed.decode().split("\0")):
        if (ROOT / name).is_file():
            (clone / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(ROOT / name, clone / name)
    return clone


def container_env(service: dict, clone: Path, tmp_path: Path, database_url: str) -> dict[str, str]:
    """The service's environment, with the clone where the image has /opt/sisbridge (its mounts)."""
    env = {
        name: str(value).replace("/opt/sisbridge", str(clone))
        for name, value in service["environment"].items()
    }
    env |= {
        "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN": database_url.replace(
            "postgresql://", "postgresql+psycopg2://"
        ),
        "AIRFLOW__API_AUTH__JWT_SECRET": secrets.token_urlsafe(32),
        "AIRFLOW_HOME": str(tmp_path / "airflow-home"),
        "HOME": str(tmp_path / "home"),
        "LANG": "C.UTF-8",
        # The image's airflow and dbt, and its editable sisbridge install, whose plugins/ is the mount.
        "PATH": f"{Path(sys.executable).parent}:/usr/bin:/bin",
        "PYTHONPATH": str(clone / "plugins"),
    }
    return env


def dag_import(clone: Path, env: dict[str, str]) -> dict:
    """The DAG ids and import errors of the clone's dags/ folder, from a fresh Python process."""
    script = (
        "import json, sys; from airflow.dag_processing.dagbag import DagBag; "
        "bag = DagBag(dag_folder=sys.argv[1]); "
        "print(json.dumps({'dags': sorted(bag.dag_ids), 'errors': bag.import_errors}))"
    )
    result = subprocess.run(
        [sys.executable, "-c", script, str(clone / "dags")],
        cwd=clone,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    return json.loads(result.stdout.strip().splitlines()[-1])


def test_the_init_service_makes_the_dags_importable_on_a_fresh_clone(tmp_path, pg_url):
    clone = fresh_clone(tmp_path)
    service = compose()["services"]["airflow-init"]
    env = container_env(service, clone, tmp_path, pg_url)
    assert service["working_dir"] == "/opt/sisbridge"
    assert not (clone / "dbt_project" / "target").exists()
    before = dag_import(clone, env)
    assert before["dags"] == ["sis_lake_maintenance"] and "manifest" in json.dumps(before["errors"]).lower()

    # The init's exact command, as compose runs it: interpolated from .env, in its working_dir.
    command = [interpolate(part, {"AIRFLOW_UID": str(os.getuid())}) for part in service["command"]]
    result = subprocess.run(command, cwd=clone, env=env, capture_output=True, text=True, timeout=1200)

    assert result.returncode == 0, (result.stdout + result.stderr)[-5000:]
    assert (clone / "dbt_project" / "target" / "manifest.json").is_file()
    after = dag_import(clone, env)
    assert after == {"dags": ["sis_lake_maintenance", "sis_sync__acme", "sis_sync__globex"], "errors": {}}
