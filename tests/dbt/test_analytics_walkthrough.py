"""docs/analytics-engineering.md's loop, through the installed `sisbridge dbt` in a plain shell.

The school's production tables are the ones the package's `two_weeks` fixture builds with the
pipeline's transform (two small weeks, each pushed and snapshotted), in the session's lake
(PostgreSQL catalog, moto S3 data). The command runs with a clean environment: no Airflow variable
but the lake's two connections, a fresh HOME and cwd.
"""

from __future__ import annotations

import json
import os
import re
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from sisbridge import warehouse
from sisbridge.transform import DBT_PROJECT_DIR
from tests.dbt.dbt_helpers import SCHOOL_SETTINGS

SISBRIDGE = Path(sys.executable).parent / "sisbridge"
DOC = Path(__file__).resolve().parents[2] / "docs" / "analytics-engineering.md"
SCHOOL_ID = SCHOOL_SETTINGS["school_id"]
PROD_SCHEMAS = ("staging", "intermediate", "marts", "snapshots")
DEV_SCHEMAS = tuple(f"dev_{schema}" for schema in PROD_SCHEMAS)
# The doc's edit: a column added to the users mart.
EDIT = ("        last_name,\n", "        last_name,\n        first_name || ' ' || last_name as full_name,\n")


def fingerprint(schemas) -> dict[str, tuple]:
    """Each table's and view's definition, columns, row count and content hash in the given schemas."""
    with warehouse.connect(SCHOOL_ID, read_only=True) as con:
        relations = con.execute(
            "select schema_name, table_name, sql from duckdb_tables() where database_name = 'lake' "
            "union all select schema_name, view_name, sql from duckdb_views() where database_name = 'lake' "
            "and not internal"
        ).fetchall()
        result = {}
        for schema, name, sql in relations:
            if schema in schemas:
                relation = f'"{schema}"."{name}"'
                names = tuple(row[0] for row in con.execute(f"describe {relation}").fetchall())
                count, digest = con.execute(f"select count(*), sum(hash(t)) from {relation} as t").fetchone()
                result[f"{schema}.{name}"] = (sql, names, count, digest)
        return result


def doc_commands() -> list[list[str]]:
    """The `sisbridge dbt` commands of the doc's bash blocks (one command a block), as argument lists."""
    blocks = re.findall(r"```bash\n(.*?)```", DOC.read_text(encoding="utf-8"), flags=re.S)
    words = [shlex.split(block, comments=True) for block in blocks]
    return [command[1:] for command in words if command[:2] == [".venv/bin/sisbridge", "dbt"]]


@pytest.fixture
def shell(tmp_path) -> dict:
    folders = {name: tmp_path / name for name in ("home", "cwd", "schools", "tmp", "sisbridge-home")}
    for folder in folders.values():
        folder.mkdir()
    (folders["schools"] / f"{SCHOOL_ID}.yaml").write_text(yaml.safe_dump(SCHOOL_SETTINGS), encoding="utf-8")
    env = {
        "PATH": "/usr/local/bin:/usr/bin:/bin",
        "LANG": "C.UTF-8",
        "HOME": str(folders["home"]),
        "TMPDIR": str(folders["tmp"]),
        "SISBRIDGE_HOME": str(folders["sisbridge-home"]),
        "SISBRIDGE_SCHOOLS_DIR": str(folders["schools"]),
        # The lake of the tests' production setup (tests/airflow_env.py); nothing else of Airflow's.
        **{
            name: os.environ[name]
            for name in ("AIRFLOW_CONN_SISBRIDGE_LAKE", "AIRFLOW_CONN_SISBRIDGE_LAKE_AWS")
        },
    }
    return {"env": env, **folders}


def sisbridge(shell: dict, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [str(SISBRIDGE), *args],
        cwd=shell["cwd"],
        env=shell["env"],
        capture_output=True,
        text=True,
        timeout=300,
    )


def succeeded(result: subprocess.CompletedProcess) -> subprocess.CompletedProcess:
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    assert "Traceback" not in result.stderr
    return result


def test_the_walkthrough_builds_dev_schemas_and_leaves_production_alone(two_weeks, shell, tmp_path):
    production = fingerprint(PROD_SCHEMAS)
    assert {"marts.users", "intermediate.int_users_accepted", "snapshots.users_snapshot"} <= set(production)
    # The doc's own commands, on this school: unit tests, the edited model's build, the comparison.
    commands = doc_commands()
    unit, build, compare = (
        next(c for c in commands if predicate(c))
        for predicate in (
            lambda c: "test_type:unit" in c,
            lambda c: "build" in c and "--select" in c,
            lambda c: "show" in c and "--inline" in c,
        )
    )
    for command in (unit, build, compare):
        command[command.index("--school") + 1] = SCHOOL_ID

    result = succeeded(sisbridge(shell, *unit))
    assert int(re.search(r"PASS=(\d+)", result.stdout).group(1)) >= 5 and "ERROR=0" in result.stdout

    # The doc's edit, in a copy of the project (dbt's `--project-dir`), and the doc's build of that
    # one model: only dev_marts.users is written, from the sync's upstream models (deferred).
    project = tmp_path / "dbt_project"
    shutil.copytree(DBT_PROJECT_DIR, project, ignore=shutil.ignore_patterns("target", "logs"))
    model = project / "models" / "marts" / "users.sql"
    model.write_text(model.read_text(encoding="utf-8").replace(*EDIT), encoding="utf-8")
    succeeded(sisbridge(shell, *build, "--project-dir", str(project)))
    dev = fingerprint(DEV_SCHEMAS)
    assert set(dev) == {"dev_marts.users"}
    assert "full_name" in dev["dev_marts.users"][1] and "full_name" not in production["marts.users"][1]
    assert fingerprint(PROD_SCHEMAS) == production

    # The doc's comparison: no user differs on the columns both versions have.
    result = succeeded(sisbridge(shell, *compare))
    shown = json.loads(result.stdout[result.stdout.index("{") :])["show"]
    assert {row["side"]: row["users"] for row in shown} == {"only in dev": 0, "only in prod": 0}

    # A whole dev build from the repository's project: every model, data test and the snapshot,
    # into the dev_* schemas only.
    result = succeeded(sisbridge(shell, "dbt", "--school", SCHOOL_ID, "build"))
    assert "ERROR=0" in result.stdout
    dev = fingerprint(DEV_SCHEMAS)
    assert {name.split(".")[0] for name in dev} == set(DEV_SCHEMAS)
    assert {name.removeprefix("dev_") for name in dev} == set(production)
    assert dev["dev_marts.users"][1:] == production["marts.users"][1:]
    assert (
        dev["dev_snapshots.users_snapshot"][2]
        == two_weeks.query("select count(*) from state.applied_users")[0][0]
    )
    assert fingerprint(PROD_SCHEMAS) == production

    # `--target prod` warns on stderr; a --target among dbt's arguments is refused.
    result = sisbridge(shell, "dbt", "--school", SCHOOL_ID, "build", "--target", "prod")
    assert result.returncode == 2 and "--target" in result.stderr and "Traceback" not in result.stderr
    result = succeeded(
        sisbridge(shell, "dbt", "--school", SCHOOL_ID, "--target", "prod", "ls", "--select", "users")
    )
    assert "writes the sync's own tables" in result.stderr and "sisbridge.marts.users" in result.stdout
    assert fingerprint(PROD_SCHEMAS) == production
    # Nothing lands in the user's home or working directory.
    assert list(shell["home"].iterdir()) == [] and list(shell["cwd"].iterdir()) == []
