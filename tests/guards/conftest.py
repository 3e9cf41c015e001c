"""A school's warehouse in a temporary DuckDB file, with the tables the guards read."""

from __future__ import annotations

import duckdb
import pytest

from sisbridge import audit
from sisbridge.loading import RAW_TABLES


@pytest.fixture
def con(tmp_path):
    connection = duckdb.connect(str(tmp_path / "harbor.duckdb"))
    audit.ensure_schema(connection)
    connection.execute(RAW_TABLES)
    connection.execute("create schema marts")
    connection.execute(
        "create table marts.user_changes (change_id varchar, external_id varchar, change_type varchar, "
        "field varchar, old_value varchar, new_value varchar, line_number integer)"
    )
    yield connection
    connection.close()
