"""dbt builds on two threads, and one model at a time writes to the lake (duckdb/ducklake#1404).

With two models of one process creating relations in a DuckLake at once, DuckLake 1.5.5 lost catalog
entries: a view a model had just created was missing for its tests.
"""

from __future__ import annotations

import itertools
import json
import shutil
from pathlib import Path

import lakes

from sisbridge import transform, warehouse
from sisbridge.transform import DBT_PROJECT_DIR


def _lake_rows(school_id: str, sql: str) -> list[tuple]:
    with warehouse.connect(school_id, read_only=True) as con:
        return con.execute(sql).fetchall()


def test_the_build_uses_both_threads_and_every_model_lands_in_the_lake(built_week_1):
    school = built_week_1
    target = Path(transform.dbt_env(school.school_id, with_lake=False)["DBT_TARGET_PATH"])
    results = json.loads((target / "run_results.json").read_text())["results"]

    assert {result["status"] for result in results} <= {"success", "pass"}
    assert len({result["thread_id"] for result in results}) == 2
    models = {
        result["unique_id"].split(".")[-1] for result in results if result["unique_id"].startswith("model.")
    }
    relations = {
        name
        for (name,) in _lake_rows(
            school.school_id,
            "select table_name from information_schema.tables "
            "where table_catalog = 'lake' and table_schema in ('staging', 'intermediate', 'marts')",
        )
    }
    assert models and models <= relations


def test_two_models_that_could_run_at_once_write_one_after_the_other(tmp_path, monkeypatch):
    """Four independent, slow models on two threads: no model's transaction overlaps another's."""
    from dbt.cli.main import dbtRunner

    monkeypatch.setenv("SISBRIDGE_HOME", str(tmp_path / "home"))
    school_id = "threadsu"
    lakes.wipe(school_id)
    project = tmp_path / "project"
    (project / "models").mkdir(parents=True)
    (project / "macros").mkdir()
    shutil.copy(DBT_PROJECT_DIR / "profiles.yml", project)
    shutil.copy(DBT_PROJECT_DIR / "macros" / "materializations.sql", project / "macros")
    (project / "dbt_project.yml").write_text(
        "name: lake_threads\nprofile: sisbridge\nmodels:\n  lake_threads:\n    +materialized: table\n"
    )
    names = ("a", "b", "c", "d")
    for name in names:
        # current_timestamp is the start of the model's transaction.
        (project / "models" / f"{name}.sql").write_text(
            "select current_timestamp as started_at, "
            "(select count(*) from range(20000000) where range % 7 = 1) as n"
        )
    env = {**transform.dbt_env(school_id), "DBT_TARGET_PATH": str(tmp_path / "target")}
    with transform.environment(env):
        try:
            result = dbtRunner().invoke(
                ["run", "--project-dir", str(project), "--profiles-dir", str(project), "--target", "prod"]
            )
        finally:
            transform._release_warehouse()
    assert result.success, result.exception

    # Each model is one commit, a lake snapshot that records when it committed.
    committed = {}
    for when, changes in _lake_rows(
        school_id, "select snapshot_time, changes from ducklake_snapshots('lake')"
    ):
        for name in names:
            if any(f"main.{name}" in entry for entries in changes.values() for entry in entries):
                committed[name] = when
    spans = sorted(
        (_lake_rows(school_id, f"select started_at from lake.main.{name}")[0][0], committed[name])
        for name in names
    )
    for (_, first_end), (second_start, _) in itertools.pairwise(spans):
        assert second_start >= first_end
