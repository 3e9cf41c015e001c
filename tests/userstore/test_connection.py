"""The store engine comes from the Airflow connection `uconnect_user_store` (postgres or sqlite)."""

from __future__ import annotations

import pytest
from userstore.userstore_helpers import expected_row, person, school, stage_run, store_users

from sisbridge.userstore import PermanentStoreError, engine_from_connection, ensure_schema, push, store_engine


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


def test_a_store_made_by_an_earlier_version_loses_the_keys_of_its_before_image_tables(pg_url, warehouse):
    """Earlier versions gave the before-image tables primary keys; the push drops them and works."""
    engine = store_engine(pg_url)
    with engine.begin() as conn:
        conn.exec_driver_sql(
            """
            create table sisbridge_push_before_memberships (
                run_id text, school_id text, external_id text, community_group text, community text,
                primary key (run_id, school_id, external_id, community_group, community))
            """
        )
    ensure_schema(engine)
    stage_run(warehouse, [person("a@acme.edu")], {"a@acme.edu": [("Affinity", "Chess")]})
    push(warehouse, engine, school(), "run-1")
    stage_run(warehouse, [person("a@acme.edu")], {"a@acme.edu": [("Affinity", "Go")]})

    push(warehouse, engine, school(), "run-2")

    with engine.connect() as conn:
        keys = conn.exec_driver_sql(
            "select conrelid::regclass::text from pg_constraint where contype = 'p' "
            "and connamespace = 'public'::regnamespace order by 1"
        ).scalars()
        assert list(keys) == ["sisbridge_push_batches", "user_communities", "users"]
    assert warehouse.execute(
        "select external_id, community from audit.applied_before_memberships where run_id = 'run-2'"
    ).fetchall() == [("a@acme.edu", "Chess")]
    engine.dispose()
