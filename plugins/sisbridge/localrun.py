"""Running a school's DAG here, now, in this process: what `sisbridge sync` and the demo share.

Airflow gets a home under SISBRIDGE_HOME and a migrated metadata DB (`prepare_airflow`), the DAGs'
dbt manifest is brought up to date (`ensure_dbt_manifest`), the DAG runs with `dag.test()`
(`run_dag`), and its audit row is printed (`format_summary`).
"""

from __future__ import annotations

import os
import subprocess
import sys
from datetime import timedelta
from pathlib import Path

from sisbridge.audit import RUN_COUNT_COLUMNS
from sisbridge.config import (
    PROJECT_ROOT,
    ConfigError,
    SchoolConfig,
    dag_id,
    load_school,
    safe_component,
    schools_dir,
    sisbridge_home,
)

# `sisbridge sync` keeps the DAG's retries, but not the scheduler's minutes between them: the
# user is waiting at a shell.
SYNC_RETRY_DELAY = timedelta(seconds=5)


class UsageError(Exception):
    """A mistake in the command line or its environment: exit code 2."""


def ensure_dbt_manifest() -> Path:
    """Write dbt's manifest (`dbt parse`) when any project file is newer: the DAGs render from it."""
    from sisbridge import transform

    project = PROJECT_ROOT / "dbt_project"
    manifest = project / "target" / "manifest.json"
    sources = [
        path
        for path in project.rglob("*")
        if path.suffix in (".sql", ".yml", ".csv") and "target" not in path.parts
    ]
    if manifest.exists() and all(path.stat().st_mtime <= manifest.stat().st_mtime for path in sources):
        return manifest
    env = {**os.environ, "DO_NOT_TRACK": "1", "DBT_TARGET_PATH": str(project / "target")}
    subprocess.run(
        # The prod target: `sisbridge dbt` defers to this manifest's relations (the sync's tables).
        # With the pipeline's profile and target, its saved parse (partial_parse.msgpack)
        # is one a school's first build on a worker can start from (transform.seed_parse).
        [
            transform.DBT_EXECUTABLE,
            "parse",
            "--project-dir",
            str(project),
            "--profiles-dir",
            str(project),
            *transform.parse_args(),
            "--quiet",
        ],
        check=True,
        env=env,
        cwd=project,
    )
    return manifest


def airflow_environment() -> None:
    """Point Airflow at SISBRIDGE_HOME and sisbridge's DAGs unless set; call it before importing Airflow."""
    # Airflow reads its home, DAGs folder and metadata DB once, when it is first imported; without a
    # home it creates `~/airflow`.
    os.environ.setdefault("SISBRIDGE_SCHOOLS_DIR", str(schools_dir()))
    os.environ.setdefault("AIRFLOW_HOME", str(sisbridge_home() / "airflow"))
    os.environ.setdefault("AIRFLOW__CORE__DAGS_FOLDER", str(PROJECT_ROOT / "dags"))
    os.environ.setdefault("AIRFLOW__CORE__LOAD_EXAMPLES", "False")
    os.environ.setdefault("DO_NOT_TRACK", "1")


def prepare_airflow() -> Path:
    """Give Airflow a home under SISBRIDGE_HOME and a migrated metadata DB, unless they exist already."""
    airflow_environment()
    ensure_dbt_manifest()
    home = Path(os.environ["AIRFLOW_HOME"])
    home.mkdir(parents=True, exist_ok=True)
    marker = home / ".sisbridge-migrated"
    if not marker.exists():
        migrate = subprocess.run(
            [sys.executable, "-m", "airflow", "db", "migrate"],
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        if migrate.returncode != 0:
            raise RuntimeError(
                f"airflow db migrate of {home} failed with exit code {migrate.returncode}:\n{migrate.stdout}"
            )
        marker.touch()
    return home


def school_config(school_id: str) -> SchoolConfig:
    """The school's config; UsageError naming the schools folder when there is no such school."""
    folder = schools_dir()
    path = folder / f"{safe_component(school_id)}.yaml"
    if not path.is_file():
        known = ", ".join(sorted(p.stem for p in folder.glob("*.yaml"))) or "none"
        raise UsageError(
            f"no school {school_id!r}: there is no {path.name} in {folder} "
            f"(SISBRIDGE_SCHOOLS_DIR; schools there: {known})"
        )
    return load_school(path)


def run_dag(school_id: str, *, force: bool = False) -> dict:
    """Run the school's DAG once, now, in-process with `dag.test()`; return the run's audit row."""
    school_config(school_id)  # a bad or missing config fails here, loudly
    prepare_airflow()  # before anything imports Airflow
    from airflow.dag_processing.dagbag import DagBag

    from sisbridge import warehouse
    from sisbridge.dag_factory import shard_file

    # Every task runs in this process: the school's lake opens while Airflow parses the DAG and the
    # sensor looks for the file, instead of in the load task.
    opening = warehouse.open_in_background(school_id)
    try:
        # Only the school's own DAG file: the others hold other schools' DAGs, hundreds of them at scale.
        bag = DagBag(dag_folder=str(shard_file(school_id)))
        if bag.import_errors:
            raise ConfigError("; ".join(f"{path}: {err}" for path, err in bag.import_errors.items()))
        dag = bag.get_dag(dag_id(school_id))
        if dag is None:
            raise UsageError(f"no DAG {dag_id(school_id)}: is there a {school_id}.yaml in {schools_dir()}?")
        for task in dag.tasks:
            task.retry_delay = min(task.retry_delay, SYNC_RETRY_DELAY)
            task.max_retry_delay = SYNC_RETRY_DELAY
        dag_run = dag.test(run_conf={"interactive_approval": False, "force": force})
    finally:
        if opening is not None:  # done long before, unless the run ended first: never exit mid-open
            opening.join()
    return _run_row(school_id, dag_run)


def _run_row(school_id: str, dag_run) -> dict:
    """The run's audit row; for a run that failed before writing one, what Airflow knows of it."""
    import duckdb

    from sisbridge import audit, warehouse

    reason = f"the DAG run {dag_run.state} before its audit row was written"
    try:
        with audit.reading(school_id) as con:
            row = audit.get_run(con, dag_run.run_id)
        if row is not None:
            return row
    except (duckdb.Error, OSError, warehouse.LakeError) as exc:
        if dag_run.state != "failed":
            raise
        reason = f"the DAG run failed and its warehouse cannot be read: {str(exc).strip().splitlines()[0]}"
    failed = sorted(ti.task_id for ti in dag_run.get_task_instances(state=["failed"]))
    if failed:
        reason += f"; failed tasks: {', '.join(failed)}"
    return {"school_id": school_id, "run_id": dag_run.run_id, "status": "failed", "status_reason": reason}


def format_summary(row: dict) -> str:
    counts = ", ".join(f"{field}={row.get(field) or 0}" for field in RUN_COUNT_COLUMNS)
    reason = f" ({row['status_reason']})" if row.get("status_reason") else ""
    return f"{row['school_id']} {row['run_id']}: {row['status']}{reason}\n  {counts}"
