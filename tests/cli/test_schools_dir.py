"""One default schools folder for the library, the DAG file and the command, from any folder."""

from __future__ import annotations

import subprocess
import sys

from tests.cli.cli_helpers import PROJECT_ROOT

PROJECT_SCHOOLS = PROJECT_ROOT / "config" / "schools"
DAGS = PROJECT_ROOT / "dags"


def python(shell, code: str, env: dict) -> str:
    done = subprocess.run(
        [sys.executable, "-c", code], cwd=shell.cwd, env=env, capture_output=True, text=True, timeout=300
    )
    assert done.returncode == 0, done.stderr
    return done.stdout.strip()


def test_without_sisbridge_schools_dir_everyone_reads_the_projects_config_schools(shell):
    del shell.env["SISBRIDGE_SCHOOLS_DIR"]
    expected_dags = sorted(f"sis_sync__{path.stem}" for path in PROJECT_SCHOOLS.glob("*.yaml"))
    assert expected_dags

    library = python(shell, "from sisbridge.config import schools_dir; print(schools_dir())", shell.env)
    # Airflow parses the DAG files from wherever its processes were started.
    dag_file = python(
        shell,
        "import runpy; from pathlib import Path; from sisbridge.dag_factory import schools_dir; "
        f"files = sorted(Path({str(DAGS)!r}).glob('sis_sync_*.py')); "
        "names = [n for f in files for n in runpy.run_path(str(f)) if n.startswith('sis_sync__')]; "
        "print(schools_dir()); print(sorted(names))",
        {**shell.env, "AIRFLOW_HOME": str(shell.root / "airflow")},
    ).splitlines()[-2:]  # after Airflow's own log lines
    command = shell.run("sync", "--school", "nosuch")

    assert library == str(PROJECT_SCHOOLS)
    assert dag_file == [str(PROJECT_SCHOOLS), str(expected_dags)]
    assert command.returncode == 2
    assert f"there is no nosuch.yaml in {PROJECT_SCHOOLS} (SISBRIDGE_SCHOOLS_DIR;" in command.stderr
    shell.assert_home_untouched()
