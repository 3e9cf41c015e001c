"""The CLI tests' fixtures: moto's S3 server, and a plain shell per test (tests/cli/cli_helpers.py)."""

from __future__ import annotations

from pathlib import Path

import pytest

from sisbridge import locals3
from tests.cli.cli_helpers import Shell, plain_env


@pytest.fixture(scope="session")
def s3_endpoint():
    with locals3.local_s3() as endpoint_url:
        yield endpoint_url


@pytest.fixture(scope="module")
def module_sisbridge_home(tmp_path_factory) -> Path:
    """One SISBRIDGE_HOME for a test module: its Airflow metadata DB is migrated once, by the first sync."""
    return tmp_path_factory.mktemp("sisbridge-home")


@pytest.fixture
def shell(tmp_path, module_sisbridge_home) -> Shell:
    folders = {name: tmp_path / name for name in ("home", "cwd", "schools", "tmp")}
    for folder in folders.values():
        folder.mkdir()
    env = plain_env(folders["home"], module_sisbridge_home, folders["schools"], folders["tmp"])
    return Shell(
        root=tmp_path,
        home=folders["home"],
        cwd=folders["cwd"],
        schools=folders["schools"],
        sisbridge_home=module_sisbridge_home,
        env=env,
    )
