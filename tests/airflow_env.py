"""Pytest plugin, loaded before any test module (`-p tests.airflow_env`).

Airflow reads its configuration when it is first imported, so the throwaway homes must be in the
environment before any test or library imports it.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
_HOME = Path(tempfile.mkdtemp(prefix="sisbridge-tests-"))

os.environ["SISBRIDGE_HOME"] = str(_HOME / "home")
os.environ["SISBRIDGE_SCHOOLS_DIR"] = str(ROOT / "tests" / "data" / "schools")
os.environ["AIRFLOW_HOME"] = str(_HOME / "airflow")
os.environ["AIRFLOW__CORE__DAGS_FOLDER"] = str(ROOT / "dags")
os.environ["AIRFLOW__CORE__LOAD_EXAMPLES"] = "False"
os.environ["AIRFLOW__CORE__UNIT_TEST_MODE"] = "False"
os.environ["DO_NOT_TRACK"] = "1"
# No test may reach a real AWS account through ambient credentials.
for _name in ("AWS_PROFILE", "AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN"):
    os.environ.pop(_name, None)


def pytest_configure(config) -> None:
    # The DAGs render their dbt model tasks from dbt's manifest; a fresh clone has none yet.
    from sisbridge.cli import ensure_dbt_manifest

    ensure_dbt_manifest()


def pytest_unconfigure(config) -> None:
    shutil.rmtree(_HOME, ignore_errors=True)
