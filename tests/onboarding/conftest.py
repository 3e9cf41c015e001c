"""moto's server with IAM enforcement on, a platform admin key, and `sisbridge` run as a user runs it."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
import urllib.request
from dataclasses import dataclass
from pathlib import Path

import boto3
import pytest

SISBRIDGE = Path(sys.executable).parent / "sisbridge"
MOTO_SERVER = Path(sys.executable).parent / "moto_server"
REGION = "us-east-1"
# The platform's own user is created while moto still accepts unsigned calls: create_user,
# put_user_policy and create_access_key. From the fourth call on, every call is signed and checked.
BOOTSTRAP_CALLS = 3


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@dataclass(frozen=True)
class Moto:
    endpoint_url: str
    platform_key: tuple[str, str]

    def client(self, service: str, key: tuple[str, str] | None = None):
        """A boto3 client signed with `key` (the platform's by default)."""
        access_key_id, secret = key or self.platform_key
        return boto3.client(
            service,
            endpoint_url=self.endpoint_url,
            region_name=REGION,
            aws_access_key_id=access_key_id,
            aws_secret_access_key=secret,
        )

    def allow_unsigned_requests(self, count: int) -> None:
        """Let the next `count` requests through without a signature; then enforcement resumes."""
        request = urllib.request.Request(
            f"{self.endpoint_url}/moto-api/reset-auth",
            data=str(count).encode(),
            method="POST",
            headers={"Content-Type": "text/plain"},  # a form body would be parsed away before moto reads it
        )
        with urllib.request.urlopen(request, timeout=10) as response:
            assert response.status == 200

    def connection(self, key: tuple[str, str] | None = None) -> str:
        """An Airflow `aws` connection (the JSON form of AIRFLOW_CONN_*) for this endpoint."""
        access_key_id, secret = key or self.platform_key
        return json.dumps(
            {
                "conn_type": "aws",
                "login": access_key_id,
                "password": secret,
                "extra": {"endpoint_url": self.endpoint_url, "region_name": REGION},
            }
        )


@pytest.fixture(scope="module")
def moto(tmp_path_factory) -> Moto:
    """moto's S3 and IAM server in its own process (its settings are read from its environment)."""
    port = free_port()
    log = (tmp_path_factory.mktemp("moto") / "moto.log").open("w")
    env = {"PATH": os.environ["PATH"], "INITIAL_NO_AUTH_ACTION_COUNT": str(BOOTSTRAP_CALLS)}
    server = subprocess.Popen(
        [str(MOTO_SERVER), "-H", "127.0.0.1", "-p", str(port)], env=env, stdout=log, stderr=log
    )
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
                break
            except OSError:
                if server.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError(f"moto_server did not start; see {log.name}") from None
                time.sleep(0.1)
        endpoint_url = f"http://127.0.0.1:{port}"
        iam = Moto(endpoint_url, ("bootstrap", "bootstrap")).client("iam")
        iam.create_user(UserName="platform")
        iam.put_user_policy(
            UserName="platform",
            PolicyName="administrator",
            PolicyDocument=json.dumps(
                {"Version": "2012-10-17", "Statement": [{"Effect": "Allow", "Action": "*", "Resource": "*"}]}
            ),
        )
        created = iam.create_access_key(UserName="platform")["AccessKey"]
        yield Moto(endpoint_url, (created["AccessKeyId"], created["SecretAccessKey"]))
    finally:
        server.terminate()
        server.wait(timeout=30)
        log.close()


@dataclass(frozen=True)
class Workspace:
    """A fresh HOME, working directory, SISBRIDGE_HOME and schools folder, all under `root`."""

    root: Path
    env: dict[str, str]

    @property
    def schools_dir(self) -> Path:
        return Path(self.env["SISBRIDGE_SCHOOLS_DIR"])

    def run(self, *args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
        """The installed `sisbridge` command, in a clean environment."""
        return subprocess.run(
            [str(SISBRIDGE), *args],
            env=env or self.env,
            cwd=self.root / "cwd",
            capture_output=True,
            text=True,
            timeout=300,
        )


@pytest.fixture(scope="module")
def workspace(tmp_path_factory, moto: Moto) -> Workspace:
    root = tmp_path_factory.mktemp("onboarding")
    for folder in ("home", "cwd", "sisbridge", "schools"):
        (root / folder).mkdir()
    env = {
        "PATH": os.environ["PATH"],
        "HOME": str(root / "home"),
        "SISBRIDGE_HOME": str(root / "sisbridge"),
        "SISBRIDGE_SCHOOLS_DIR": str(root / "schools"),
        "AIRFLOW_CONN_SISBRIDGE_PLATFORM_AWS": moto.connection(),
    }
    return Workspace(root, env)
