"""The store engine comes from the Airflow connection `uconnect_user_store` (postgres or sqlite)."""

from __future__ import annotations

import pytest
from userstore.userstore_helpers import expected_row, person, school, stage_run, store_users

from sisbridge.userstore import PermanentStoreError, engine_from_connection, push


def test_sqlite_connection_from_the_environment(monkeypatch, tmp_path, warehouse):
    monkeypatch.setenv("AIRFLOW_CONN_UCONNECT_USER_STORE", f"sqlite:///{tmp_path / 'store.db'}")
    engine = engine_from_connection()
    stage_run(warehouse, [person("a@acme.edu")])

    push(warehouse, engine, school(), "run-1")

    assert engine.url.database == str(tmp_path / "store.db")
    assert store_users(engine) == [expected_row(person("a@acme.edu"))]


def test_postgres_connection_from_the_environment(monkeypatch, pg_url, warehouse):
    monkeypatch.setenv("AIRFLOW_CONN_UCONNECT_USER_STORE", pg_url.replace("postgresql://", "postgres://"))
    engine = engine_from_connection()
    stage_run(warehouse, [person("a@acme.edu")])

    push(warehouse, engine, school(), "run-1")

    assert store_users(engine) == [expected_row(person("a@acme.edu"))]
    engine.dispose()


def test_other_connection_types_are_refused(monkeypatch):
    monkeypatch.setenv("AIRFLOW_CONN_STORE_X", "mysql://u@h/db")

    with pytest.raises(PermanentStoreError, match="connection 'store_x' has type 'mysql'"):
        engine_from_connection("store_x")
