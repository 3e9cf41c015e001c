"""docs/analytics-engineering.md's loop, through the installed `sisbridge dbt` in a plain shell.

The school's production tables are built first the way the pipeline's transform builds them (a small
week, `run_build`), in the session's lake (PostgreSQL catalog, moto S3 data). The command then runs
with a clean environment: no Airflow variable but the lake's two connections, a fresh HOME and cwd.
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

import lakes
import pytest
import yaml

from sisbridge import warehouse
from sisbridge.config import SchoolConfig
from sisbridge.transform import DBT_PROJECT_DIR, run_build
from tests.dbt.conftest import WEEK_1, load_week

SISBRIDGE = Path(sys.executable).parent / "sisbridge"
DOC = Path(__file__).resolve().parents[2] / "docs" / "analytics-engineering.md"
SCHOOL_ID = "walku"
SETTINGS = {
    "school_id": SCHOOL_ID,
    "name": "Walkthrough University",
    "s3": {"bucket": "uconnect-sis-walku", "key": "roster.csv", "aws_conn_id": "sis_s3_walku"},
    "identifier": "email",
    "user_types": {"Undergraduate": "Undergraduate Students", "Alumni": "Alumni"},
    "graduation": {"date_formats": ["%m/%d/%Y"]},
    "communities": [
        {"column": "PROGRAM", "group": "Career Communities"},
        {"column": "AFFINITY", "group": "Affinity"},
    ],
}
PROD_SCHEMAS = ("staging", "intermediate", "marts", "snapshots")
# The doc's edit: a column added to the users mart.
EDIT = ("        last_name,\n", "        last_name,\n        first_name || ' ' || last_name as full_name,\n")


def fingerprint(schemas) -> dict[str, tuple]:
    """Every table's and view's definition, row count and content hash in the given schemas."""
    with warehouse.connect(SCHOOL_ID, read_only=True) as con:
        relations = con.execute(
            "select schema_name, table_name, sql from duckdb_tables() where database_name = 'lake' "
            "union all select schema_name, view_name, sql from duckdb_views() where database_name = 'lake' "
            "and not internal"
        ).fetchall()
        result = {}
        for schema, name, sql in relations:
            if schema in schemas:
                count, digest = con.execute(
                    f'select count(*), sum(hash(t)) from "{schema}"."{name}" as t'
                ).fetchone()
                result[f"{schema}.{name}"] = (sql, count, digest)
        return result


def columns(relation: str) -> list[str]:
    with warehouse.connect(SCHOOL_ID, read_only=True) as con:
        return [row[0] for row in con.execute(f"describe {relation}").fetchall()]


def doc_commands() -> list[list[str]]:
    """The `sisbridge dbt` commands of the doc's bash blocks (one command a block), as argument lists."""
    blocks = re.findall(r"```bash\n(.*?)```", DOC.read_text(encoding="utf-8"), flags=re.S)
    words = [shlex.split(block, comments=True) for block in blocks]
    return [command[1:] for command in words if command[:2] == [".venv/bin/sisbridge", "dbt"]]


@pytest.fixture(scope="module")
def production(tmp_path_factory) -> dict[str, tuple]:
    """The school's lake as a sync left it: raw, config and the models of its transform."""
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("SISBRIDGE_HOME", str(tmp_path_factory.mktemp("sync-home")))
        school = SchoolConfig.model_validate(SETTINGS)
        lakes.wipe(SCHOOL_ID)
        load_week(school, "week-1", WEEK_1, {5: "email_invalid"})
        run_build(school, "week-1")
        warehouse.release(SCHOOL_ID)
    yield fingerprint(PROD_SCHEMAS)
    lakes.wipe(SCHOOL_ID)


@pytest.fixture
def shell(tmp_path) -> dict:
    folders = {name: tmp_path / name for name in ("home", "cwd", "schools", "tmp", "sisbridge-home")}
    for folder in folders.values():
        folder.mkdir()
    (folders["schools"] / f"{SCHOOL_ID}.yaml").write_text(yaml.safe_dump(SETTINGS), encoding="utf-8")
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


def test_the_walkthrough_builds_dev_schemas_and_leaves_production_alone(production, shell, tmp_path):
    commands = doc_commands()
    # The doc's own commands, on this school: unit tests, the edited model's build, the comparison.
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
    passed = int(re.search(r"PASS=(\d+)", result.stdout).group(1))
    assert passed >= 5 and "ERROR=0" in result.stdout

    # A whole dev build: every model, data test and the snapshot, into dev_* schemas only.
    result = succeeded(sisbridge(shell, "dbt", "--school", SCHOOL_ID, "build"))
    assert "ERROR=0" in result.stdout
    dev = fingerprint(tuple(f"dev_{schema}" for schema in PROD_SCHEMAS))
    assert {name.split(".")[0] for name in dev} == {f"dev_{schema}" for schema in PROD_SCHEMAS}
    assert "dev_snapshots.users_snapshot" in dev
    assert dev["dev_marts.users"][1:] == production["marts.users"][1:]
    assert fingerprint(PROD_SCHEMAS) == production

    # The doc's edit, in a copy of the project (`--project-dir`), built under dev.
    project = tmp_path / "dbt_project"
    shutil.copytree(DBT_PROJECT_DIR, project, ignore=shutil.ignore_patterns("target", "logs"))
    model = project / "models" / "marts" / "users.sql"
    model.write_text(model.read_text(encoding="utf-8").replace(*EDIT), encoding="utf-8")
    succeeded(sisbridge(shell, *build, "--project-dir", str(project)))
    assert "full_name" in columns("dev_marts.users")
    assert "full_name" not in columns("marts.users")
    assert fingerprint(PROD_SCHEMAS) == production

    # The comparison of the doc: the users only in dev and only in production, by content.
    result = succeeded(sisbridge(shell, *compare, "--project-dir", str(project)))
    shown = json.loads(result.stdout[result.stdout.index("{") :])["show"]
    assert {row["side"]: row["users"] for row in shown} == {"only in dev": 0, "only in prod": 0}

    # --target prod warns on stderr; a --target among dbt's arguments is refused.
    result = sisbridge(shell, "dbt", "--school", SCHOOL_ID, "build", "--target", "prod")
    assert result.returncode == 2 and "--target" in result.stderr and "Traceback" not in result.stderr
    result = succeeded(
        sisbridge(shell, "dbt", "--school", SCHOOL_ID, "--target", "prod", "ls", "--select", "users")
    )
    assert "writes the sync's own tables" in result.stderr
    assert fingerprint(PROD_SCHEMAS) == production
    # Nothing lands in the user's home or working directory.
    assert list(shell["home"].iterdir()) == [] and list(shell["cwd"].iterdir()) == []
