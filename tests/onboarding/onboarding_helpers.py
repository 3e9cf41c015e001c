"""moto's server with IAM enforcement on, and `sisbridge` run as a user runs it: the clients and workspace."""

from __future__ import annotations

import json
import socket
import subprocess
import sys
import urllib.request
from dataclasses import dataclass
from pathlib import Path

import boto3

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
