"""Every school's DAG imports quickly, is wired in the contract's order, and is safe to operate."""

from __future__ import annotations

import ast
import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from sisbridge import dag_factory
from sisbridge.config import load_schools

ROOT = Path(__file__).resolve().parents[2]
DAG_FILES = sorted((ROOT / "dags").glob("sis_sync_*.py"))
MAINTENANCE = "sis_lake_maintenance"
TASK_ORDER = ["wait_for_file", "load_raw", "validate", "transform", "guard", "approve", "push", "finalize"]


@pytest.fixture(scope="module")
def dagbag():
    from airflow.dag_processing.dagbag import DagBag

    return DagBag(dag_folder=str(ROOT / "dags"))


@pytest.fixture(scope="module")
def sync_dags(dagbag) -> dict:
    """The schools' sync DAGs (every DAG but the lake's maintenance)."""
    return {dag_id: dag for dag_id, dag in dagbag.dags.items() if dag_id != MAINTENANCE}


def test_every_school_yaml_has_an_importable_dag(dagbag):
    assert dagbag.import_errors == {}
    expected = {f"sis_sync__{school.school_id}" for school in load_schools()}
    assert set(dagbag.dag_ids) == expected | {MAINTENANCE} and expected


def test_the_lake_maintenance_runs_weekly_one_mapped_task_per_school(dagbag):
    dag = dagbag.dags[MAINTENANCE]
    assert dag.timetable.expression == "0 6 * * 0"
    assert (dag.max_active_runs, dag.catchup, set(dag.tags)) == (1, False, {"sis", "maintenance"})
    tasks = {task.task_id: task for task in dag.tasks}
    assert set(tasks) == {"schools", "maintain"}
    assert tasks["maintain"].get_flat_relative_ids(upstream=True) == {"schools"}
    assert type(tasks["maintain"]).__name__.endswith("MappedOperator")
    assert all(task.retries >= 2 for task in tasks.values())


def test_dags_are_tagged_retried_and_single_run(sync_dags):
    for dag_id, dag in sync_dags.items():
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


def test_tasks_run_in_the_contract_order(sync_dags):
    for dag in sync_dags.values():
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


def test_schedule_and_timezone_come_from_the_config(sync_dags):
    schools = {s.school_id: s for s in load_schools()}
    for dag_id, dag in sync_dags.items():
        school = schools[dag_id.removeprefix("sis_sync__")]
        assert dag.timetable.expression == school.schedule
        assert str(dag.timetable.timezone) == school.timezone


def test_dag_files_parse_without_connections_warehouse_or_network():
    env = {k: v for k, v in os.environ.items() if not k.startswith("AIRFLOW_CONN_")}
    env["SISBRIDGE_HOME"] = "/nonexistent/sisbridge-home"
    code = "import runpy, sys\nfor path in sys.argv[1:]:\n    runpy.run_path(path)"
    result = subprocess.run(
        [sys.executable, "-c", code, *map(str, DAG_FILES), str(ROOT / "dags" / f"{MAINTENANCE}.py")],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stderr[-2000:]
    assert not Path("/nonexistent/sisbridge-home").exists()


# --- The schools spread over several DAG files -----------------------------------------------------


def test_the_dag_files_are_the_shards_each_a_thin_stub():
    assert [path.name for path in DAG_FILES] == [f"sis_sync_{n:02d}.py" for n in range(dag_factory.SHARDS)]
    assert sorted(path.name for path in (ROOT / "dags").glob("*.py")) == sorted(
        [*(path.name for path in DAG_FILES), f"{MAINTENANCE}.py"]
    )
    for number, path in enumerate(DAG_FILES):
        body = ast.parse(path.read_text(encoding="utf-8")).body
        docstring, imported, call = (ast.unparse(node) for node in body)
        assert docstring.startswith("'Airflow DAG file"), path.name  # the dag-processor's safe mode
        assert imported == "from sisbridge.dag_factory import build_shard", path.name
        assert call == f"build_shard({number}, globals())", path.name


def test_a_school_s_dag_file_depends_on_its_id_alone():
    # Pinned: a new hash or number of files would move every school to another file.
    assert {school_id: dag_factory.shard_of(school_id) for school_id in ("acme", "globex", "northwind")} == {
        "acme": 32,
        "globex": 39,
        "northwind": 39,
    }
    assert dag_factory.shard_file("northwind") == ROOT / "dags" / "sis_sync_39.py"


def write_schools(folder: Path, school_ids, **settings) -> None:
    config = yaml.safe_load((ROOT / "tests" / "data" / "schools" / "northwind.yaml").read_text())
    config.update(settings)
    for school_id in school_ids:
        bucket = f"uconnect-sis-{school_id.replace('_', '-')}"
        s3 = {"bucket": bucket, "key": "roster.csv", "aws_conn_id": f"sis_s3_{school_id}"}
        config.update(school_id=school_id, s3=s3)
        (folder / f"{school_id}.yaml").write_text(yaml.safe_dump(config), encoding="utf-8")


def dags_by_file(monkeypatch, folder: Path) -> dict[str, list[str]]:
    """Parse each DAG file on its own, as the dag-processor does: its DAG ids, by file name."""
    from airflow.dag_processing.dagbag import DagBag

    monkeypatch.setenv("SISBRIDGE_SCHOOLS_DIR", str(folder))
    found = {}
    for path in DAG_FILES:
        bag = DagBag(dag_folder=str(path))
        assert bag.import_errors == {}, path.name
        assert {Path(dag.fileloc) for dag in bag.dags.values()} <= {path}
        found[path.name] = sorted(bag.dag_ids)
    return found


def test_every_school_is_defined_exactly_once_in_its_own_dag_file(tmp_path, monkeypatch):
    # One task for the transform keeps 120 schools cheap to parse; the DAG files do not depend on it.
    monkeypatch.setenv("SISBRIDGE_DBT_MODEL_TASKS", "false")
    school_ids = [f"school_{n:03d}" for n in range(120)]
    write_schools(tmp_path, school_ids)

    found = dags_by_file(monkeypatch, tmp_path)

    defined = [dag_id for dag_ids in found.values() for dag_id in dag_ids]
    assert sorted(defined) == sorted(f"sis_sync__{school_id}" for school_id in school_ids)
    for school_id in school_ids:
        assert f"sis_sync__{school_id}" in found[dag_factory.shard_file(school_id).name]
    assert sum(1 for dag_ids in found.values() if dag_ids) > dag_factory.SHARDS / 2


def test_adding_and_removing_schools_moves_no_other_school(tmp_path, monkeypatch):
    monkeypatch.setenv("SISBRIDGE_DBT_MODEL_TASKS", "false")
    write_schools(tmp_path, [f"school_{n:03d}" for n in range(40)])
    before = dags_by_file(monkeypatch, tmp_path)
    for n in range(0, 40, 3):
        (tmp_path / f"school_{n:03d}.yaml").unlink()
    write_schools(tmp_path, [f"newcomer_{n:03d}" for n in range(40)])

    after = dags_by_file(monkeypatch, tmp_path)

    kept = {f"sis_sync__school_{n:03d}" for n in range(40) if n % 3}
    assert {name: set(ids) & kept for name, ids in before.items()} == {
        name: set(ids) & kept for name, ids in after.items()
    }


def test_a_task_process_reads_only_its_own_school_s_config(tmp_path, monkeypatch):
    from airflow.dag_processing.dagbag import DagBag

    monkeypatch.setenv("SISBRIDGE_DBT_MODEL_TASKS", "false")
    write_schools(tmp_path, ["northwind", "globex"])  # globex shares northwind's DAG file
    write_schools(tmp_path, ["acme"], missing_users="purge")
    monkeypatch.setenv("SISBRIDGE_SCHOOLS_DIR", str(tmp_path))
    path = str(dag_factory.shard_file("northwind"))

    # The dag-processor builds the file's schools; a task of northwind's run builds northwind's only.
    assert sorted(DagBag(dag_folder=path).dag_ids) == ["sis_sync__globex", "sis_sync__northwind"]
    monkeypatch.setenv("_AIRFLOW_PARSING_CONTEXT_DAG_ID", "sis_sync__northwind")
    monkeypatch.setenv("_AIRFLOW_PARSING_CONTEXT_TASK_ID", "load_raw")
    bag = DagBag(dag_folder=path, safe_mode=False)
    assert (bag.import_errors, bag.dag_ids) == ({}, ["sis_sync__northwind"])
    assert len(bag.dags["sis_sync__northwind"].tasks) == len(TASK_ORDER)


def test_a_broken_config_fails_its_own_dag_file_only(tmp_path, monkeypatch):
    from airflow.dag_processing.dagbag import DagBag

    monkeypatch.setenv("SISBRIDGE_DBT_MODEL_TASKS", "false")
    write_schools(tmp_path, ["northwind", "globex"])
    write_schools(tmp_path, ["acme"], missing_users="purge")
    monkeypatch.setenv("SISBRIDGE_SCHOOLS_DIR", str(tmp_path))

    bag = DagBag(dag_folder=str(ROOT / "dags"))

    acme_file = str(dag_factory.shard_file("acme"))
    assert list(bag.import_errors) == [acme_file]
    assert f"{tmp_path / 'acme.yaml'}: missing_users" in bag.import_errors[acme_file]
    assert sorted(bag.dag_ids) == [MAINTENANCE, "sis_sync__globex", "sis_sync__northwind"]
