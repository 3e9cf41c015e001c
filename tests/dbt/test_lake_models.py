"""How dbt writes the lake (dbt_project/macros/materializations.sql): no catalog change for a model
whose shape is the same, `create or replace` for one whose query or columns change.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import lakes

from sisbridge import warehouse
from sisbridge.transform import DBT_PROJECT_DIR, run_build
from tests.dbt.dbt_invoke import invoke_dbt


def _lake_rows(school_id: str, sql: str) -> list[tuple]:
    with warehouse.connect(school_id, read_only=True) as con:
        return con.execute(sql).fetchall()


def _project(tmp_path: Path, models: dict[str, str], materialized: str = "table") -> Path:
    """A dbt project with these models, the sisbridge profile and the project's materializations."""
    project = tmp_path / "project"
    (project / "models").mkdir(parents=True, exist_ok=True)
    (project / "macros").mkdir(exist_ok=True)
    shutil.copy(DBT_PROJECT_DIR / "profiles.yml", project)
    shutil.copy(DBT_PROJECT_DIR / "macros" / "materializations.sql", project / "macros")
    (project / "dbt_project.yml").write_text(
        f"name: lake_models\nprofile: sisbridge\nmodels:\n  lake_models:\n    +materialized: {materialized}\n"
    )
    for old in (project / "models").glob("*.sql"):
        old.unlink()
    for name, sql in models.items():
        (project / "models" / f"{name}.sql").write_text(sql)
    return project


def _dbt_run(project: Path, school_id: str, tmp_path: Path) -> None:
    args = ["run", "--project-dir", str(project), "--profiles-dir", str(project), "--target", "prod"]
    invoke_dbt(args, school_id, DBT_TARGET_PATH=str(tmp_path / "target"))


def _catalog_changes(school_id: str, after: int) -> list[dict]:
    """The catalog entries the lake's snapshots after `after` created or dropped."""
    rows = _lake_rows(
        school_id,
        f"select changes from ducklake_snapshots('lake') where snapshot_id > {after} order by snapshot_id",
    )
    return [
        {kind: entries for kind, entries in changes.items() if kind.endswith(("_created", "_dropped"))}
        for (changes,) in rows
    ]


def _last_snapshot(school_id: str) -> int:
    return _lake_rows(school_id, "select max(snapshot_id) from ducklake_snapshots('lake')")[0][0]


def test_a_rebuild_of_the_same_shapes_changes_no_catalog_entry_and_the_same_rows_come_out(built_week_1):
    school = built_week_1
    before = _last_snapshot(school.school_id)
    rows = "select * from lake.marts.users order by external_id"
    expected = _lake_rows(school.school_id, rows)

    run_build(school, "week-1 again")

    assert _lake_rows(school.school_id, rows) == expected
    assert not any(_catalog_changes(school.school_id, before))


def test_a_model_whose_query_or_columns_change_is_replaced(tmp_path, monkeypatch):
    monkeypatch.setenv("SISBRIDGE_HOME", str(tmp_path / "home"))
    school_id = "shapesu"
    lakes.wipe(school_id)

    def build(table: str, view: str) -> None:
        project = _project(tmp_path, {"t": table, "v": "{{ config(materialized='view') }} " + view})
        _dbt_run(project, school_id, tmp_path)

    def columns(name: str) -> list[tuple]:
        return _lake_rows(school_id, f"describe lake.main.{name}")

    build("select 1 as x", "select 1 as x")
    first = _last_snapshot(school_id)
    build("select 2 as x", "select 1 as x")  # new rows, same shapes
    assert _lake_rows(school_id, "select * from lake.main.t") == [(2,)]
    assert not any(_catalog_changes(school_id, first))

    second = _last_snapshot(school_id)
    build("select 3 as x, 'a' as y", "select 2 as x")  # a new column, a new query
    assert [column[:2] for column in columns("t")] == [("x", "INTEGER"), ("y", "VARCHAR")]
    assert _lake_rows(school_id, "select * from lake.main.v") == [(2,)]
    changes = _catalog_changes(school_id, second)
    assert any("tables_created" in change for change in changes)
    assert any("views_created" in change for change in changes)

    third = _last_snapshot(school_id)
    build("select 4::bigint as x, 'a' as y", "select 2 as x")  # a column's type changes
    assert [column[:2] for column in columns("t")] == [("x", "BIGINT"), ("y", "VARCHAR")]
    assert any("tables_created" in change for change in _catalog_changes(school_id, third))
