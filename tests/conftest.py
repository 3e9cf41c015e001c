"""Fixtures shared by every test folder: a real PostgreSQL server, one fresh database per test."""

from __future__ import annotations

import itertools

import pytest
from pgserver import PgServer

from tests import airflow_env

_database_numbers = itertools.count(1)


@pytest.fixture(scope="session")
def pg_server() -> PgServer:
    """The session's PostgreSQL 15 cluster, which also holds the lake's catalog (tests/airflow_env.py)."""
    return airflow_env.servers["pg"]


def _create_database(server: PgServer) -> str:
    import sqlalchemy as sa

    name = f"test_{next(_database_numbers)}"
    admin = sa.create_engine(server.url("postgres"), isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.exec_driver_sql(f"drop database if exists {name}")
        conn.exec_driver_sql(f"create database {name} template template0")
    admin.dispose()
    return server.url(name)


@pytest.fixture
def pg_url(pg_server: PgServer) -> str:
    """The URI of a new, empty PostgreSQL database for this test."""
    return _create_database(pg_server)


@pytest.fixture(scope="module")
def pg_module_url(pg_server: PgServer) -> str:
    """The URI of a new, empty PostgreSQL database shared by one test module."""
    return _create_database(pg_server)
