"""Fixtures for the loader tests: a fresh warehouse file, and a writer for small input files."""

from __future__ import annotations

from pathlib import Path

import duckdb
import pytest


@pytest.fixture
def con(tmp_path):
    connection = duckdb.connect(str(tmp_path / "warehouse.duckdb"))
    yield connection
    connection.close()


@pytest.fixture
def write(tmp_path):
    """Write bytes to a file in the test's folder and return its path."""

    def _write(content: bytes, name: str = "roster.csv") -> Path:
        path = tmp_path / name
        path.write_bytes(content)
        return path

    return _write
