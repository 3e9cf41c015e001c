"""The real Airflow 3 on 127.0.0.1: api-server, scheduler, dag-processor and triggerer, in a temp home.

Each component runs as its own process, as in production. The metadata DB is SQLite and the executor
LocalExecutor, so the stack needs nothing but the virtualenv.
"""

from __future__ import annotations

import json
import os
import secrets
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

COMPONENTS = ("api-server", "scheduler", "dag-processor", "triggerer")
ADMIN = "admin"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@dataclass
class AirflowStack:
    home: Path
    env: dict[str, str]
    port: int
    password: str
    processes: dict[str, subprocess.Popen] = field(default_factory=dict)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def log(self, component: str) -> Path:
        return self.home / f"{component}.out"

    def start(self, components: tuple[str, ...] = COMPONENTS) -> None:
        """Migrate the metadata DB, start `components` and wait for the api-server to answer."""
        airflow = [sys.executable, "-m", "airflow"]
        subprocess.run(
            [*airflow, "db", "migrate"],
            env=self.env,
            check=True,
            stdout=self.log("db-migrate").open("w"),
            stderr=subprocess.STDOUT,
        )
        for component in components:
            args = [*airflow, component]
            if component == "api-server":
                args += ["--host", "127.0.0.1", "--port", str(self.port), "--workers", "1"]
            self.processes[component] = subprocess.Popen(
                args,
                env=self.env,
                stdout=self.log(component).open("w"),
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        self.wait_until(self._healthy, timeout=180, what="the api-server to answer /api/v2/monitor/health")

    def stop(self) -> None:
        for process in self.processes.values():
            if process.poll() is None:
                os.killpg(process.pid, 15)
        for process in self.processes.values():
            try:
                process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                os.killpg(process.pid, 9)
                process.wait(timeout=10)

    def _healthy(self) -> bool:
        self._check_alive()
        try:
            with urllib.request.urlopen(f"{self.url}/api/v2/monitor/health", timeout=5) as response:
                return response.status == 200
        except (urllib.error.URLError, ConnectionError, TimeoutError):
            return False

    def _check_alive(self) -> None:
        for name, process in self.processes.items():
            if process.poll() is not None:
                tail = self.log(name).read_text(errors="replace")[-3000:]
                raise RuntimeError(f"airflow {name} exited with {process.returncode}:\n{tail}")

    def wait_until(self, condition, *, timeout: float, what: str, every: float = 2.0):
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            self._check_alive()
            result = condition()
            if result:
                return result
            time.sleep(every)
        raise TimeoutError(f"waited {timeout:.0f} s for {what}")

    def token(self) -> str:
        body = json.dumps({"username": ADMIN, "password": self.password}).encode()
        request = urllib.request.Request(
            f"{self.url}/auth/token", data=body, headers={"Content-Type": "application/json"}
        )
        with urllib.request.urlopen(request, timeout=30) as response:
            return json.load(response)["access_token"]

    def api(self, method: str, path: str, payload: dict | None = None) -> tuple[int, dict]:
        """Call the REST API (`/api/v2/...`) as the admin; return the status and the JSON body."""
        request = urllib.request.Request(
            f"{self.url}/api/v2/{path}",
            method=method,
            data=None if payload is None else json.dumps(payload).encode(),
            headers={"Authorization": f"Bearer {self.token()}", "Content-Type": "application/json"},
        )
        try:
            with urllib.request.urlopen(request, timeout=30) as response:
                return response.status, json.load(response)
        except urllib.error.HTTPError as exc:
            return exc.code, json.loads(exc.read() or b"{}")


def airflow_env(home: Path, port: int, password_file: Path, extra: dict[str, str]) -> dict[str, str]:
    """The environment every component shares: one home, one metadata DB, one JWT secret."""
    env = {key: value for key, value in os.environ.items() if not key.startswith("AIRFLOW")}
    env.update(
        {
            "AIRFLOW_HOME": str(home),
            "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN": f"sqlite:///{home / 'airflow.db'}",
            "AIRFLOW__CORE__EXECUTOR": "LocalExecutor",
            # Two cores: run two tasks at a time at most.
            "AIRFLOW__CORE__PARALLELISM": "2",
            "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
            "AIRFLOW__CORE__UNIT_TEST_MODE": "False",
            "AIRFLOW__CORE__EXECUTION_API_SERVER_URL": f"http://127.0.0.1:{port}/execution/",
            "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_USERS": f"{ADMIN}:admin",
            "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_PASSWORDS_FILE": str(password_file),
            "AIRFLOW__CORE__FERNET_KEY": "",
            "AIRFLOW__API_AUTH__JWT_SECRET": secrets.token_urlsafe(32),
            "AIRFLOW__API__SECRET_KEY": secrets.token_urlsafe(32),
            "AIRFLOW__API__BASE_URL": f"http://127.0.0.1:{port}",
            "AIRFLOW__DAG_PROCESSOR__REFRESH_INTERVAL": "5",
            "AIRFLOW__SCHEDULER__ENABLE_HEALTH_CHECK": "False",
            # Only the run the test triggers: no catch-up run for the last cron slot on unpause.
            "AIRFLOW__SCHEDULER__USE_JOB_SCHEDULE": "False",
            "DO_NOT_TRACK": "1",
        }
    )
    env.update(extra)
    return env


def make_stack(home: Path, extra_env: dict[str, str]) -> AirflowStack:
    home.mkdir(parents=True, exist_ok=True)
    port = free_port()
    password = secrets.token_urlsafe(12)
    password_file = home / "passwords.json"
    password_file.write_text(json.dumps({ADMIN: password}))
    return AirflowStack(home, airflow_env(home, port, password_file, extra_env), port, password)
