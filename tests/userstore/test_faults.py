"""A push that dies part-way, a store that goes away, a broken store, and two schools at once."""

from __future__ import annotations

import importlib
import threading
import time
from dataclasses import replace

import duckdb
import pytest
import sqlalchemy as sa
from userstore.userstore_helpers import (
    customize,
    expected_row,
    person,
    school,
    stage_run,
    store_memberships,
    store_users,
)

from sisbridge import audit
from sisbridge.userstore import (
    PermanentStoreError,
    PushResult,
    TransientStoreError,
    before_images,
    push,
    rollback,
    store_engine,
)

# The push module (`sisbridge.userstore.push` is the function of the same name).
push_module = importlib.import_module("sisbridge.userstore.push")
ACME = school()
BATCH = 2


def _emails(*names: str) -> list[str]:
    return [f"{name}@acme.edu" for name in names]


def _scenario(warehouse, engine) -> tuple[list[dict], dict, list[tuple], list[tuple]]:
    """Run 1 applied; run 2 staged: 8 changed users (4 batches of 2) of every change type."""
    a, b, c, d, e, f, g, h = _emails(*"abcdefgh")
    stage_run(
        warehouse,
        [person(a), person(b), person(c), person(d), person(e, status="inactive", flag=None), person(f)],
        {a: [("Affinity", "Chess")], c: [("Affinity", "Go")]},
    )
    push(warehouse, engine, ACME, "run-1")
    customize(engine, f, opt_out=False)
    before = (store_users(engine), store_memberships(engine))
    target = [
        person(a, last_name="Lovelace"),  # update
        person(b, status="inactive", flag=None),  # deactivate
        # c is deleted
        person(d, flag=True),  # opt-out
        person(e),  # reactivate
        person(f, flag=True, first_name="Flo"),  # customized: update, no opt-out
        person(g),  # create
        person(h, flag=True),  # create, opted out
    ]
    memberships = {a: [("Affinity", "Chess"), ("Affinity", "Go")], g: [("Career Communities", "Health")]}
    stage_run(warehouse, target, memberships)
    return target, memberships, *before


def _expected(target: list[dict]) -> list[tuple]:
    opted_out = {"d@acme.edu", "h@acme.edu"}
    rows = [
        expected_row(p, opt_out=p["external_id"] in opted_out, customized=p["external_id"] == "f@acme.edu")
        for p in target
    ]
    return sorted(rows)


EXPECTED_MEMBERSHIPS = [
    ("a@acme.edu", "Affinity", "Chess"),
    ("a@acme.edu", "Affinity", "Go"),
    ("g@acme.edu", "Career Communities", "Health"),
]
EXPECTED_RESULT = PushResult(
    creates=2, updates=2, reactivations=1, deactivations=1, deletes=1, opt_outs=1, batches=4
)


def _audit(warehouse) -> list[tuple]:
    return warehouse.execute(
        """
        select external_id, change_type, field, old_value, new_value
        from audit.applied_changes where run_id = 'run-2' order by all
        """
    ).fetchall()


def _kill_after(monkeypatch, batches_done: int, recorder: str = "record_batch") -> None:
    """Make the batch after `batches_done` die inside its transaction, just before it commits.

    recorder: the push's function that writes a batch's ledger row (`record_new_batch` for the
    batches of a school's first push).
    """
    original = getattr(push_module, recorder)
    calls = {"n": 0}

    def dying(*args, **kwargs):
        if calls["n"] == batches_done:
            raise RuntimeError("worker killed")
        calls["n"] += 1
        return original(*args, **kwargs)

    monkeypatch.setattr(push_module, recorder, dying)


def test_clean_run_of_the_scenario(warehouse, engine):
    target, _, _, _ = _scenario(warehouse, engine)

    assert push(warehouse, engine, ACME, "run-2", batch_size=BATCH) == EXPECTED_RESULT

    assert store_users(engine) == _expected(target)
    assert store_memberships(engine) == EXPECTED_MEMBERSHIPS
    assert len(_audit(warehouse)) == 9


@pytest.mark.parametrize("batches_done", [0, 1, 3])
def test_a_push_killed_after_k_batches_converges_on_retry(warehouse, engine, monkeypatch, batches_done):
    target, _, before_users, before_members = _scenario(warehouse, engine)
    _kill_after(monkeypatch, batches_done)
    with pytest.raises(RuntimeError, match="worker killed"):
        push(warehouse, engine, ACME, "run-2", batch_size=BATCH)
    # Nothing of the run is in the baseline or the audit until the whole push succeeded.
    assert warehouse.execute(
        "select count(*) from audit.applied_changes where run_id = 'run-2'"
    ).fetchone() == (0,)
    assert warehouse.execute("select distinct applied_run_id from state.applied_users").fetchall() == [
        ("run-1",)
    ]
    monkeypatch.undo()

    # The retry comes with another batch size; once a batch is done it must cut the change set as before.
    result = push(warehouse, engine, ACME, "run-2", batch_size=50)

    assert result == replace(EXPECTED_RESULT, batches=4 if batches_done else 1)
    assert store_users(engine) == _expected(target)
    assert store_memberships(engine) == EXPECTED_MEMBERSHIPS
    audit_rows = _audit(warehouse)
    assert len(audit_rows) == 9 and len(set(audit_rows)) == 9
    assert warehouse.execute(
        "select count(*), count(distinct external_id) from audit.applied_before_users where run_id = 'run-2'"
    ).fetchone() == (8, 8)
    # The before images survived the retry: a rollback restores run 1's store exactly.
    rollback(warehouse, engine, ACME, "run-2", "rollback-1")
    assert (store_users(engine), store_memberships(engine)) == (before_users, before_members)


def _kill_store_on_second_call(monkeypatch, module, name: str, pg_url: str) -> None:
    """Make `module.name` cut every store connection on its second call (in the second batch)."""
    original = getattr(module, name)
    calls = {"n": 0}

    def kill_connection_during_second_batch(*args, **kwargs):
        calls["n"] += 1
        if calls["n"] == 2:
            _terminate_other_backends(pg_url)
        return original(*args, **kwargs)

    monkeypatch.setattr(module, name, kill_connection_during_second_batch)


def _terminate_other_backends(url: str) -> None:
    admin = sa.create_engine(url)
    with admin.connect() as conn:
        conn.exec_driver_sql(
            """
            select pg_terminate_backend(pid) from pg_stat_activity
            where datname = current_database() and pid <> pg_backend_pid()
            """
        )
    admin.dispose()


def test_store_connection_killed_mid_batch_is_transient_and_retry_is_exact(warehouse, pg_url, monkeypatch):
    engine = store_engine(pg_url)
    target, _, _, _ = _scenario(warehouse, engine)
    _kill_store_on_second_call(monkeypatch, before_images, "capture", pg_url)

    # One batch at a time, so that exactly the second batch is in flight when the store goes away.
    with pytest.raises(TransientStoreError, match="user store unavailable while applying batch 2 of 4"):
        push(warehouse, engine, ACME, "run-2", batch_size=BATCH, workers=1)
    monkeypatch.undo()

    assert push(warehouse, engine, ACME, "run-2", batch_size=BATCH) == EXPECTED_RESULT
    assert store_users(engine) == _expected(target)
    assert store_memberships(engine) == EXPECTED_MEMBERSHIPS
    assert len(_audit(warehouse)) == 9
    engine.dispose()


def _hold_batches_together(monkeypatch, arrivals: int, then) -> list[int]:
    """Make the first `arrivals` batches meet inside their transactions, before their before images.

    Once all have arrived, `then(batch_no)` runs in each of them (it may raise). Returns the list of
    batch numbers that reached `before_images.capture`, in order.
    """
    original = before_images.capture
    barrier = threading.Barrier(arrivals, timeout=60)
    seen: list[int] = []

    def meeting(conn, school_id, run_id, batch_no):
        seen.append(batch_no)
        if len(seen) <= arrivals:
            barrier.wait()
            then(batch_no)
        return original(conn, school_id, run_id, batch_no)

    monkeypatch.setattr(before_images, "capture", meeting)
    return seen


def _converges(warehouse, engine, target, before_users, before_members) -> None:
    """A clean retry gives the scenario's store, audit and before images; rollback restores run 1."""
    assert push(warehouse, engine, ACME, "run-2", batch_size=BATCH, workers=2) == EXPECTED_RESULT
    assert store_users(engine) == _expected(target)
    assert store_memberships(engine) == EXPECTED_MEMBERSHIPS
    audit_rows = _audit(warehouse)
    assert len(audit_rows) == 9 and len(set(audit_rows)) == 9
    assert warehouse.execute(
        """
        select count(*), count(distinct external_id), list(distinct batch_no order by batch_no)
        from audit.applied_before_users where run_id = 'run-2'
        """
    ).fetchone() == (8, 8, [0, 1, 2, 3])
    rollback(warehouse, engine, ACME, "run-2", "rollback-1")
    assert (store_users(engine), store_memberships(engine)) == (before_users, before_members)


def _done_batch_numbers(engine) -> list[int]:
    return sorted(push_module.done_batches(engine, "acme", "run-2"))


def test_two_workers_apply_the_same_push_as_one(pg_url, warehouse, monkeypatch):
    engine = store_engine(pg_url)
    target, _, before_users, before_members = _scenario(warehouse, engine)
    # Both workers are inside a batch transaction at the same time before either commits.
    seen = _hold_batches_together(monkeypatch, 2, lambda _: None)

    _converges(warehouse, engine, target, before_users, before_members)
    assert sorted(seen) == [0, 1, 2, 3]
    engine.dispose()


def test_a_batch_failing_while_another_is_in_flight_stops_the_push(pg_url, warehouse, monkeypatch):
    engine = store_engine(pg_url)
    target, _, before_users, before_members = _scenario(warehouse, engine)

    threads = {}

    def second_batch_dies(batch_no):
        threads[batch_no] = threading.current_thread()
        if batch_no == 1:
            raise RuntimeError("worker killed")
        # The first batch goes on only once the failed batch's worker has stopped.
        while 1 not in threads:
            time.sleep(0.01)
        threads[1].join(timeout=60)

    seen = _hold_batches_together(monkeypatch, 2, second_batch_dies)
    with pytest.raises(RuntimeError, match="worker killed"):
        push(warehouse, engine, ACME, "run-2", batch_size=BATCH, workers=2)
    monkeypatch.undo()

    # The batch in flight beside the failed one committed; no batch started after the failure.
    assert sorted(seen) == [0, 1]
    assert _done_batch_numbers(engine) == [0]
    assert warehouse.execute(
        "select count(*) from audit.applied_changes where run_id = 'run-2'"
    ).fetchone() == (0,)
    _converges(warehouse, engine, target, before_users, before_members)
    engine.dispose()


def test_store_killed_under_two_workers_names_the_first_failed_batch(pg_url, warehouse, monkeypatch):
    engine = store_engine(pg_url)
    target, _, before_users, before_members = _scenario(warehouse, engine)

    killed = threading.Event()

    def kill_once(batch_no):
        if batch_no == 0:
            _terminate_other_backends(pg_url)
            killed.set()
        else:
            killed.wait(timeout=60)

    _hold_batches_together(monkeypatch, 2, kill_once)
    # Both store connections die mid-transaction: the error names the first batch, none committed.
    with pytest.raises(TransientStoreError, match="user store unavailable while applying batch 1 of 4"):
        push(warehouse, engine, ACME, "run-2", batch_size=BATCH, workers=2)
    monkeypatch.undo()

    assert _done_batch_numbers(engine) == []
    _converges(warehouse, engine, target, before_users, before_members)
    engine.dispose()


def test_store_server_down_is_transient(warehouse, pg_server, pg_url):
    engine = store_engine(pg_url)
    stage_run(warehouse, [person("a@acme.edu")])
    pg_server.stop()
    try:
        with pytest.raises(
            TransientStoreError, match="user store unavailable while creating the store tables"
        ):
            push(warehouse, engine, ACME, "run-1")
    finally:
        pg_server.start()

    assert push(warehouse, engine, ACME, "run-1").creates == 1
    assert store_users(engine) == [expected_row(person("a@acme.edu"))]
    engine.dispose()


def test_an_incompatible_store_is_a_permanent_error(warehouse, tmp_path):
    engine = store_engine(f"sqlite:///{tmp_path / 'store.db'}")
    with engine.begin() as conn:
        conn.exec_driver_sql(
            "create table users (school_id text, external_id text, primary key (school_id, external_id))"
        )
    stage_run(warehouse, [person("a@acme.edu")])

    with pytest.raises(
        PermanentStoreError, match="user store rejected applying batch 1 of 1 of run run-1: .*email"
    ):
        push(warehouse, engine, ACME, "run-1")


def test_a_missing_change_set_is_a_permanent_error(warehouse, engine):
    with pytest.raises(PermanentStoreError, match="the warehouse has no marts.user_changes"):
        push(warehouse, engine, ACME, "run-1")


def test_unknown_store_uri_is_refused():
    with pytest.raises(PermanentStoreError, match="scheme 'mysql' is not supported"):
        store_engine("mysql://u@h/db")


def test_two_schools_pushed_at_the_same_time_do_not_interfere(pg_url, tmp_path):
    engine = store_engine(pg_url)  # no tables yet: both first pushes create them at once
    schools = [school("acme", identifier="user_id"), school("globex", identifier="user_id")]
    # Both schools use the same student numbers: only school_id tells their rows apart.
    people = {
        s.school_id: [
            person(f"{n:04d}", email=f"s{n}@{s.school_id}.edu", last_name=s.school_id) for n in range(24)
        ]
        for s in schools
    }
    warehouses = {}
    for s in schools:
        con = duckdb.connect(str(tmp_path / f"{s.school_id}.duckdb"))
        audit.ensure_schema(con)
        stage_run(
            con,
            people[s.school_id],
            {p["external_id"]: [("Affinity", s.school_id)] for p in people[s.school_id]},
        )
        warehouses[s.school_id] = con
    barrier = threading.Barrier(len(schools))
    results, errors = {}, []

    def run(s):
        try:
            barrier.wait()
            results[s.school_id] = push(warehouses[s.school_id], engine, s, "run-1", batch_size=5)
        except Exception as exc:  # surfaced by the assertion below
            errors.append(exc)

    threads = [threading.Thread(target=run, args=(s,)) for s in schools]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()

    assert errors == []
    for s in schools:
        # Batches of at most 5 users, six of them for the two workers.
        assert results[s.school_id] == PushResult(24, 0, 0, 0, 0, 0, 6)
        assert store_users(engine, s.school_id) == [expected_row(p) for p in people[s.school_id]]
        assert store_memberships(engine, s.school_id) == [
            (p["external_id"], "Affinity", s.school_id) for p in people[s.school_id]
        ]
        warehouses[s.school_id].close()
    engine.dispose()


def _first_push_people() -> tuple[list[dict], dict]:
    people = [person(f"u{n}@acme.edu") for n in range(6)]
    return people, {p["external_id"]: [("Affinity", "Chess")] for p in people}


def test_a_user_written_by_someone_else_during_a_first_push_is_updated_and_restorable(
    warehouse, pg_url, monkeypatch
):
    """A first push copies its users straight in; one written meanwhile sends the rest the general way."""
    engine = store_engine(pg_url)
    people, memberships = _first_push_people()
    stage_run(warehouse, people, memberships)
    direct, general = push_module.apply_new_batch, push_module.apply_batch
    attempts = []

    def someone_else_writes_u3_first(plan, batch_no, cursor):
        attempts.append(("direct", batch_no))
        if batch_no == 1:
            with engine.begin() as conn:
                conn.exec_driver_sql(
                    """
                    insert into users (school_id, external_id, email, first_name, last_name, status,
                                       email_opt_out, email_prefs_customized, created_at, updated_at)
                    values ('acme', 'u3@acme.edu', 'u3@acme.edu', 'Platform', 'Made', 'active',
                            true, true, '2020-01-01 00:00:00', '2020-01-01 00:00:00')
                    """
                )
                conn.exec_driver_sql(
                    "insert into user_communities values ('acme', 'u3@acme.edu', 'Affinity', 'Go')"
                )
        return direct(plan, batch_no, cursor)

    def counted(plan, batch_no):
        attempts.append(("general", batch_no))
        return general(plan, batch_no)

    monkeypatch.setattr(push_module, "apply_new_batch", someone_else_writes_u3_first)
    monkeypatch.setattr(push_module, "apply_batch", counted)

    result = push(warehouse, engine, ACME, "run-1", batch_size=2, workers=1)

    # Batch 2 (u2, u3) failed on u3's key; it and batch 3 were applied as changes.
    assert attempts == [("direct", 0), ("direct", 1), ("general", 1), ("general", 2)]
    assert result == PushResult(
        creates=6, updates=0, reactivations=0, deactivations=0, deletes=0, opt_outs=0, batches=3
    )
    # u3 follows the file, but keeps the preferences its user customized.
    u3 = "u3@acme.edu"
    assert store_users(engine) == [
        expected_row(p, opt_out=p["external_id"] == u3, customized=p["external_id"] == u3) for p in people
    ]
    assert store_memberships(engine) == [(p["external_id"], "Affinity", "Chess") for p in people]
    assert warehouse.execute(
        "select external_id from audit.applied_before_users where run_id = 'run-1' and existed"
    ).fetchall() == [(u3,)]
    # The rollback removes the run's users and gives u3 back as the platform had written it.
    rollback(warehouse, engine, ACME, "run-1", "rollback-1")
    assert store_users(engine) == [(u3, u3, None, None, "Platform", "Made", None, None, "active", True, True)]
    assert store_memberships(engine) == [(u3, "Affinity", "Go")]
    engine.dispose()


@pytest.mark.parametrize("batches_done", [0, 2])
def test_a_first_push_killed_after_k_batches_converges_on_retry(warehouse, pg_url, monkeypatch, batches_done):
    engine = store_engine(pg_url)
    people, memberships = _first_push_people()
    stage_run(warehouse, people, memberships)
    _kill_after(monkeypatch, batches_done, "record_new_batch")
    with pytest.raises(RuntimeError, match="worker killed"):
        push(warehouse, engine, ACME, "run-1", batch_size=2, workers=1)
    monkeypatch.undo()
    # Only the committed batches are in the store; nothing of the run is in the warehouse yet.
    assert [row[0] for row in store_users(engine)] == [p["external_id"] for p in people[: 2 * batches_done]]
    assert warehouse.execute("select count(*) from state.applied_users").fetchone() == (0,)

    # The retry cuts the change set as the first attempt did once a batch of it is done.
    result = push(warehouse, engine, ACME, "run-1", batch_size=50)

    assert result == PushResult(
        creates=6,
        updates=0,
        reactivations=0,
        deactivations=0,
        deletes=0,
        opt_outs=0,
        batches=3 if batches_done else 1,
    )
    assert store_users(engine) == [expected_row(p) for p in people]
    assert store_memberships(engine) == [(p["external_id"], "Affinity", "Chess") for p in people]
    assert warehouse.execute(
        "select count(*), count(*) filter (not existed) from audit.applied_before_users "
        "where run_id = 'run-1'"
    ).fetchone() == (6, 6)
    rollback(warehouse, engine, ACME, "run-1", "rollback-1")
    assert (store_users(engine), store_memberships(engine)) == ([], [])
    engine.dispose()


def test_store_connection_killed_during_a_first_push_is_transient_and_retry_is_exact(
    warehouse, pg_url, monkeypatch
):
    engine = store_engine(pg_url)
    people, memberships = _first_push_people()
    stage_run(warehouse, people, memberships)
    _kill_store_on_second_call(monkeypatch, push_module, "record_new_batch", pg_url)
    with pytest.raises(TransientStoreError, match="user store unavailable while applying batch 2 of 3"):
        push(warehouse, engine, ACME, "run-1", batch_size=2, workers=1)
    monkeypatch.undo()
    assert [row[0] for row in store_users(engine)] == ["u0@acme.edu", "u1@acme.edu"]

    assert push(warehouse, engine, ACME, "run-1").creates == 6
    assert store_users(engine) == [expected_row(p) for p in people]
    assert store_memberships(engine) == [(p["external_id"], "Affinity", "Chess") for p in people]
    rollback(warehouse, engine, ACME, "run-1", "rollback-1")
    assert (store_users(engine), store_memberships(engine)) == ([], [])
    engine.dispose()
