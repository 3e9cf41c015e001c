"""The push refreshes the store's planner statistics when they miss most of a school's users."""

from __future__ import annotations

import importlib

import sqlalchemy as sa
from userstore.userstore_helpers import person, school, stage_run

from sisbridge.userstore import ensure_schema, push, schema, store_engine

ACME = school()


def _fill_store(engine, school_id: str, count: int) -> None:
    """`count` users for the school, written straight into the store, one membership each."""
    with engine.begin() as conn:
        conn.exec_driver_sql(
            f"""
            insert into users (school_id, external_id, email, first_name, last_name, status,
                               created_at, updated_at)
            select '{school_id}', 'u' || n || '@acme.edu', 'u' || n || '@acme.edu', 'Ada', 'Lovelace',
                   'active', now(), now()
            from generate_series(1, {count}) as n
            """
        )
        conn.exec_driver_sql(
            f"""
            insert into user_communities (school_id, external_id, community_group, community)
            select school_id, external_id, 'Affinity', 'Chess' from users where school_id = '{school_id}'
            """
        )


def _estimated_users(engine, school_id: str) -> float:
    with engine.connect() as conn:
        plan = conn.execute(
            sa.text("explain (format json) select 1 from users where school_id = :school"),
            {"school": school_id},
        ).scalar_one()
    return plan[0]["Plan"]["Plan Rows"]


def _stale_store(pg_url, users: int):
    """A store analyzed while empty, then given `users` users of acme: the statistics miss them."""
    engine = store_engine(pg_url)
    ensure_schema(engine)
    with engine.begin() as conn:
        conn.exec_driver_sql("analyze users, user_communities")
    _fill_store(engine, "acme", users)
    return engine


def test_statistics_that_miss_the_schools_users_are_refreshed(pg_url):
    engine = _stale_store(pg_url, 20_000)
    assert _estimated_users(engine, "acme") < 2_000

    assert schema.refresh_stale_statistics(engine, "acme", 20_000) is True

    assert _estimated_users(engine, "acme") > 15_000
    # Fresh statistics are left alone.
    assert schema.refresh_stale_statistics(engine, "acme", 20_000) is False
    engine.dispose()


def test_a_small_school_does_not_trigger_an_analyze(pg_url):
    engine = _stale_store(pg_url, 500)

    assert schema.refresh_stale_statistics(engine, "acme", 500) is False
    assert _estimated_users(engine, "acme") < 500
    engine.dispose()


def test_the_sqlite_store_is_never_analyzed(tmp_path):
    engine = store_engine(f"sqlite:///{tmp_path / 'store.db'}")
    ensure_schema(engine)

    assert schema.refresh_stale_statistics(engine, "acme", 20_000) is False
    engine.dispose()


def test_a_push_refreshes_stale_statistics_before_its_batches(pg_url, warehouse, monkeypatch):
    engine = _stale_store(pg_url, 20_000)
    estimates = []
    push_module = importlib.import_module("sisbridge.userstore.push")
    original = push_module.apply_batch

    def noting_the_estimate(*args, **kwargs):
        estimates.append(_estimated_users(engine, "acme"))
        return original(*args, **kwargs)

    monkeypatch.setattr(push_module, "apply_batch", noting_the_estimate)
    stage_run(warehouse, [person("new@acme.edu")])
    # The warehouse's baseline says the store holds the school's 20,000 users.
    warehouse.execute(
        """
        insert into state.applied_users (external_id, email, status, email_opt_out, applied_run_id)
        select 'u' || n || '@acme.edu', 'u' || n || '@acme.edu', 'active', false, 'run-0'
        from range(1, 20001) as t(n)
        """
    )

    assert push(warehouse, engine, ACME, "run-1").creates == 1
    assert len(estimates) == 1 and estimates[0] > 15_000
    engine.dispose()
