"""A temp warehouse and a user store, on SQLite and on a real PostgreSQL (each test runs on both)."""

from __future__ import annotations

import duckdb
import pytest

from sisbridge import audit
from sisbridge.userstore import ensure_schema, store_engine


@pytest.fixture
def warehouse(tmp_path):
    con = duckdb.connect(str(tmp_path / "acme.duckdb"))
    audit.ensure_schema(con)
    yield con
    con.close()


@pytest.fixture(params=["sqlite", "postgres"])
def engine(request, tmp_path):
    if request.param == "sqlite":
        engine = store_engine(f"sqlite:///{tmp_path / 'store.db'}")
    else:
        engine = store_engine(request.getfixturevalue("pg_url"))
    ensure_schema(engine)
    yield engine
    engine.dispose()
