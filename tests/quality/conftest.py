"""A school's warehouse with `raw.*` as the loader writes them (tests/raw_tables.py), so the checks can be
tested alone."""

from __future__ import annotations

import duckdb
import pytest

from sisbridge import audit
from sisbridge.config import load_school
from tests.raw_tables import fill_raw


@pytest.fixture
def build_raw():
    """The `fill_raw` helper, as a fixture so test modules need not import conftest."""
    return fill_raw


@pytest.fixture
def con(tmp_path):
    connection = duckdb.connect(str(tmp_path / "warehouse.duckdb"))
    audit.ensure_schema(connection)
    yield connection
    connection.close()


@pytest.fixture(scope="session")
def schools_dir():
    from pathlib import Path

    return Path(__file__).resolve().parents[2] / "config" / "schools"


@pytest.fixture(scope="session")
def acme(schools_dir):
    return load_school(schools_dir / "acme.yaml")


@pytest.fixture(scope="session")
def globex(schools_dir):
    return load_school(schools_dir / "globex.yaml")
