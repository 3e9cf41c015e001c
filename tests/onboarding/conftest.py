"""moto's server with IAM enforcement on, a platform admin key, and a clean workspace for `sisbridge`.

The clients and the workspace's runner are in tests/onboarding/onboarding_helpers.py.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import time

import pytest

from tests.onboarding.onboarding_helpers import BOOTSTRAP_CALLS, MOTO_SERVER, Moto, Workspace, free_port


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
