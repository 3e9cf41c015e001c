"""Airflow 3's services as separate processes on 127.0.0.1, the way a deployment runs them.

Scheduler, dag-processor, triggerer and api-server (and, for CeleryExecutor, a redis-server broker
and Celery workers), each a child process in its own session, with the metadata DB in PostgreSQL.
Used by the multi-host tests (tests/warehouse/test_hosts.py) and by `make bench-schools`
(bench/schools.py).
"""

from __future__ import annotations

import json
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
AIRFLOW = [sys.executable, "-m", "airflow"]
CONTROL_SERVICES = ("scheduler", "dag-processor", "triggerer", "api-server")
FINISHED = ("success", "failed")


class ClusterError(RuntimeError):
    """A service exited or a wait timed out; the message says which and where its log is."""


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def wait_for(check, what: str, timeout: float, interval: float = 2.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = check()
        if value:
            return value
        time.sleep(interval)
    raise ClusterError(f"timed out after {timeout:.0f}s waiting for {what}")


class Stack:
    """The Airflow services (and, for Celery, redis and the workers), each a child process we own."""

    def __init__(self, workdir: Path, env: dict) -> None:
        self.workdir, self.env, self.procs = workdir, env, {}

    def start(self, name: str, args: list[str], env: dict | None = None) -> None:
        """Start a service with the stack's environment (or `env`); its output goes to `<name>.log`."""
        log = (self.workdir / f"{name}.log").open("a")
        # A new session per service, so that stopping it also stops the task processes it started.
        self.procs[name] = subprocess.Popen(
            args,
            env=env or self.env,
            stdout=log,
            stderr=subprocess.STDOUT,
            cwd=ROOT,
            start_new_session=True,
        )

    def check_alive(self) -> None:
        dead = [name for name, proc in self.procs.items() if proc.poll() is not None]
        if dead:
            tails = "\n".join(f"--- {name}.log:\n{self.log_tail(name)}" for name in dead)
            raise ClusterError(f"{', '.join(dead)} exited; see the logs in {self.workdir}\n{tails}")

    def log_tail(self, name: str, chars: int = 3000) -> str:
        path = self.workdir / f"{name}.log"
        return path.read_text(errors="replace")[-chars:] if path.exists() else ""

    def stop(self, *names: str) -> None:
        """Stop the named services (all when none are named) and the processes they started."""
        procs = {name: proc for name, proc in self.procs.items() if not names or name in names}
        for proc in procs.values():
            if proc.poll() is None:
                os.killpg(proc.pid, signal.SIGTERM)
        for proc in procs.values():
            try:
                proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait(timeout=10)
        for name in procs:
            del self.procs[name]


class Api:
    """Airflow's REST API (v2); the simple auth manager lets everyone in as admin on this local stack."""

    def __init__(self, base_url: str) -> None:
        self.base_url = base_url

    def call(self, method: str, path: str, body: dict | None = None) -> dict:
        data = json.dumps(body).encode() if body is not None else None
        request = urllib.request.Request(
            f"{self.base_url}/api/v2{path}",
            data=data,
            method=method,
            headers={"Content-Type": "application/json"},
        )
        with urllib.request.urlopen(request, timeout=30) as response:
            return json.loads(response.read() or b"{}")

    def healthy(self) -> bool:
        try:
            return self.call("GET", "/monitor/health")["metadatabase"]["status"] == "healthy"
        except OSError:
            return False

    def trigger(self, dag_id: str) -> str:
        run = self.call(
            "POST", f"/dags/{dag_id}/dagRuns", {"logical_date": None, "conf": {"interactive_approval": False}}
        )
        return run["dag_run_id"]

    def run(self, dag_id: str, run_id: str) -> dict:
        return self.call("GET", f"/dags/{dag_id}/dagRuns/{urllib.request.quote(run_id, safe='')}")


def wait_runs(api: Api, stack: Stack, runs: dict[str, str], timeout: float) -> None:
    """Wait until each DAG run ({dag_id: run_id}) has finished, failing early when a service dies."""

    def all_finished() -> bool:
        stack.check_alive()
        return all(api.run(dag_id, run_id)["state"] in FINISHED for dag_id, run_id in runs.items())

    wait_for(all_finished, f"{len(runs)} DAG runs to finish", timeout, interval=3)


def create_databases(url: str, names: list[str]) -> None:
    import sqlalchemy as sa

    engine = sa.create_engine(url, isolation_level="AUTOCOMMIT")
    with engine.connect() as conn:
        for name in names:
            conn.execute(sa.text(f'create database "{name}"'))
    engine.dispose()


def parsed_dags(metadata_url: str, dag_ids: list[str]) -> bool:
    """Whether the dag-processor has serialized every one of `dag_ids`, unpaused."""
    import sqlalchemy as sa

    engine = sa.create_engine(metadata_url)
    try:
        with engine.connect() as conn:
            rows = conn.execute(
                sa.text("select dag_id from dag where dag_id = any(:ids) and not is_paused"), {"ids": dag_ids}
            ).fetchall()
    except sa.exc.ProgrammingError:
        return False
    finally:
        engine.dispose()
    return len(rows) == len(dag_ids)


def start_redis(workdir: Path, stack: Stack) -> str:
    """Debian's redis-server on a free port, as the Celery broker; returns its URL."""
    redis = shutil.which("redis-server")
    if redis is None:
        raise ClusterError(
            "redis-server is not installed: apt-get install redis-server (see docs/scaling.md)"
        )
    port = free_port()
    stack.start(
        "redis", [redis, "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--dir", str(workdir)]
    )
    return f"redis://127.0.0.1:{port}/0"


def service_env(workdir: Path, metadata_url: str, api_port: int, *, executor: str, base: dict) -> dict:
    """The environment every service shares: one Airflow home, one metadata DB in PostgreSQL, one secret.

    `metadata_url` is a `postgresql://` URL; `base` is the environment to start from.
    """
    return {
        **base,
        "AIRFLOW_HOME": str(workdir / "airflow"),
        "AIRFLOW__CORE__DAGS_FOLDER": str(ROOT / "dags"),
        "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
        "AIRFLOW__CORE__DAGS_ARE_PAUSED_AT_CREATION": "False",
        "AIRFLOW__CORE__EXECUTOR": executor,
        "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_ALL_ADMINS": "True",
        "AIRFLOW__CORE__EXECUTION_API_SERVER_URL": f"http://127.0.0.1:{api_port}/execution/",
        "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN": metadata_url.replace(
            "postgresql://", "postgresql+psycopg2://"
        ),
        # The throwaway cluster allows 50 connections: keep each service's pool small.
        "AIRFLOW__DATABASE__SQL_ALCHEMY_POOL_SIZE": "2",
        "AIRFLOW__DATABASE__SQL_ALCHEMY_MAX_OVERFLOW": "4",
        "AIRFLOW__API__PORT": str(api_port),
        "AIRFLOW__API__HOST": "127.0.0.1",
        "AIRFLOW__API__WORKERS": "1",
        "AIRFLOW__API_AUTH__JWT_SECRET": secrets.token_urlsafe(32),
        "AIRFLOW__API__SECRET_KEY": secrets.token_urlsafe(32),
        "AIRFLOW__SCHEDULER__ENABLE_HEALTH_CHECK": "False",
        "DO_NOT_TRACK": "1",
    }


def celery_env(broker_url: str, metadata_url: str) -> dict:
    """CeleryExecutor's broker (redis) and result backend (the metadata DB)."""
    return {
        "AIRFLOW__CELERY__BROKER_URL": broker_url,
        "AIRFLOW__CELERY__RESULT_BACKEND": "db+" + metadata_url,
    }


def migrate(env: dict) -> None:
    done = subprocess.run(
        [*AIRFLOW, "db", "migrate"], env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
    )
    if done.returncode != 0:
        raise ClusterError(f"airflow db migrate failed:\n{done.stdout[-3000:]}")


def start_control_plane(stack: Stack) -> None:
    for service in CONTROL_SERVICES:
        stack.start(service, [*AIRFLOW, service])
