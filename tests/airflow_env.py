"""Pytest plugin, loaded before any test module (`-p tests.airflow_env`).

Airflow reads its configuration when it is first imported, so the throwaway homes must be in the
environment before any test or library imports it.

It also starts the warehouse's production setup once per session: a PostgreSQL server (the lake's
catalog, database `lake`) and moto's S3 server in its own process (the lake's data, bucket
`sisbridge-lake`), reached through the `sisbridge_lake` and `sisbridge_lake_aws` connections. A CLI
test runs `sisbridge` with a clean environment, so it gets the embedded lake, as a user does.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
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


# The session's servers: `pg` (tests/pgserver.PgServer, shared with the store tests) and `s3` (the
# endpoint URL of moto's server).
servers: dict = {}
_moto: subprocess.Popen | None = None


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _start_moto() -> str:
    global _moto
    port = _free_port()
    log = (_HOME / "moto.log").open("w")
    moto_server = Path(sys.executable).parent / "moto_server"
    _moto = subprocess.Popen(
        [str(moto_server), "-H", "127.0.0.1", "-p", str(port)],
        env={"PATH": os.environ["PATH"]},
        stdout=log,
        stderr=log,
    )
    deadline = time.monotonic() + 30
    while True:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
            return f"http://127.0.0.1:{port}"
        except OSError:
            if _moto.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"moto_server did not start; see {log.name}") from None
            time.sleep(0.1)


def _start_lake() -> None:
    """PostgreSQL (database `lake`) and S3 (bucket `sisbridge-lake`) for the lake; its connections."""
    from lakes import production_lake
    from pgserver import start_server

    servers["pg"] = pg = start_server()
    servers["s3"] = endpoint = _start_moto()
    os.environ.update(production_lake(pg, endpoint))


def pytest_configure(config) -> None:
    # The DAGs render their dbt model tasks from dbt's manifest; a fresh clone has none yet.
    from sisbridge.localrun import ensure_dbt_manifest

    ensure_dbt_manifest()
    if (
        config.pluginmanager.hasplugin("xdist")
        and config.getoption("numprocesses", None)
        and not hasattr(config, "workerinput")
    ):
        return  # pytest-xdist's controller runs no test: each worker starts its own servers
    _start_lake()


def pytest_unconfigure(config) -> None:
    if _moto is not None:
        _moto.terminate()
        _moto.wait(timeout=30)
    if "pg" in servers:
        from pgserver import remove_server

        remove_server(servers["pg"])
    shutil.rmtree(_HOME, ignore_errors=True)
