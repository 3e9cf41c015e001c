"""Rollback restores the store and the baseline exactly as they were before the run."""

from __future__ import annotations

import pytest
from userstore.userstore_helpers import (
    customize,
    person,
    school,
    stage_run,
    store_memberships,
    store_timestamps,
    store_users,
)

from sisbridge.audit import get_run, upsert_run, utcnow
from sisbridge.userstore import RollbackRefused, push, rollback
from sisbridge.userstore.schema import TARGET_USERS

ACME = school()
ADA, BOB, CY = "ada@acme.edu", "bob@acme.edu", "cy@acme.edu"

BASE_USERS = [person(ADA), person(BOB), person(CY, status="inactive", flag=None)]
BASE_MEMBERSHIPS = {
    ADA: [("Affinity", "Chess")],
    BOB: [("Affinity", "Go"), ("Career Communities", "Science")],
}

# One run per kind of change, each against the same run-1 baseline.
RUNS = {
    "create": (
        [*BASE_USERS, person("dee@acme.edu")],
        {**BASE_MEMBERSHIPS, "dee@acme.edu": [("Affinity", "Go")]},
    ),
    "update": (
        [person(ADA, last_name="Lovelace", email="ada.l@acme.edu"), *BASE_USERS[1:]],
        {**BASE_MEMBERSHIPS, ADA: [("Affinity", "Go")]},
    ),
    "deactivate": (
        [BASE_USERS[0], person(BOB, status="inactive", flag=None), BASE_USERS[2]],
        BASE_MEMBERSHIPS,
    ),
    "reactivate": ([*BASE_USERS[:2], person(CY)], BASE_MEMBERSHIPS),
    "delete": ([BASE_USERS[0], BASE_USERS[2]], {ADA: BASE_MEMBERSHIPS[ADA]}),
    "opt_out": ([person(ADA, flag=True), *BASE_USERS[1:]], BASE_MEMBERSHIPS),
    # cy had no membership and gains one; bob loses both of his.
    "memberships": (BASE_USERS, {ADA: BASE_MEMBERSHIPS[ADA], CY: [("Affinity", "Chess")]}),
}


def _run(warehouse, engine, run_id: str, users, memberships):
    upsert_run(warehouse, run_id, school_id="acme", started_at=utcnow())
    stage_run(warehouse, users, memberships)
    push(warehouse, engine, ACME, run_id)
    upsert_run(warehouse, run_id, status="succeeded", finished_at=utcnow())


def _baseline(warehouse) -> tuple[list, list]:
    return (
        warehouse.execute("select * from state.applied_users order by external_id").fetchall(),
        warehouse.execute("select * from state.applied_memberships order by all").fetchall(),
    )


@pytest.mark.parametrize("kind", sorted(RUNS))
def test_rollback_restores_the_store_and_baseline(warehouse, engine, kind):
    _run(warehouse, engine, "run-1", BASE_USERS, BASE_MEMBERSHIPS)
    # The platform's own flag on a user must come back too, even if the run deleted that user.
    customize(engine, BOB, opt_out=True)
    store_before = (store_users(engine), store_memberships(engine))
    created_before = {ext: stamps[0] for ext, stamps in store_timestamps(engine).items()}
    baseline_before = _baseline(warehouse)
    _run(warehouse, engine, "run-2", *RUNS[kind])
    assert (store_users(engine), store_memberships(engine)) != store_before

    summary = rollback(warehouse, engine, ACME, "run-2", "rollback-1")

    assert (store_users(engine), store_memberships(engine)) == store_before
    assert {ext: stamps[0] for ext, stamps in store_timestamps(engine).items()} == created_before
    assert _baseline(warehouse) == baseline_before
    assert get_run(warehouse, "run-2")["status"] == "rolled_back"
    rollback_run = get_run(warehouse, "rollback-1")
    assert (rollback_run["school_id"], rollback_run["status"]) == ("acme", "succeeded")
    assert rollback_run["status_reason"] == "rollback of run run-2"
    assert summary["run_id"] == "run-2" and summary["rollback_run_id"] == "rollback-1"


def test_rollback_counts(warehouse, engine):
    _run(warehouse, engine, "run-1", BASE_USERS, BASE_MEMBERSHIPS)
    _run(
        warehouse,
        engine,
        "run-2",
        [person(ADA, last_name="X"), person("dee@acme.edu"), BASE_USERS[2]],
        {ADA: BASE_MEMBERSHIPS[ADA]},
    )

    assert rollback(warehouse, engine, ACME, "run-2") == {
        "run_id": "run-2",
        "rollback_run_id": "rollback__run-2",
        "restored": 1,
        "recreated": 1,
        "removed": 1,
    }
    assert get_run(warehouse, "rollback__run-2")["status"] == "succeeded"


def test_rollback_is_refused_when_a_later_run_was_applied(warehouse, engine):
    _run(warehouse, engine, "run-1", BASE_USERS, BASE_MEMBERSHIPS)
    _run(warehouse, engine, "run-2", *RUNS["update"])
    after_run_2 = (store_users(engine), store_memberships(engine))

    with pytest.raises(
        RollbackRefused,
        match="cannot roll back run run-1 of acme: later run\\(s\\) run-2 were applied after it; "
        "roll those back first",
    ):
        rollback(warehouse, engine, ACME, "run-1", "rollback-1")
    assert (store_users(engine), store_memberships(engine)) == after_run_2
    assert get_run(warehouse, "run-1")["status"] == "succeeded"

    # Rolled back newest first, both runs can go.
    rollback(warehouse, engine, ACME, "run-2", "rollback-2")
    rollback(warehouse, engine, ACME, "run-1", "rollback-1")
    assert (store_users(engine), store_memberships(engine)) == ([], [])
    assert _baseline(warehouse) == ([], [])


def test_rollback_twice_or_of_an_unpushed_run_is_refused(warehouse, engine):
    _run(warehouse, engine, "run-1", BASE_USERS, BASE_MEMBERSHIPS)
    rollback(warehouse, engine, ACME, "run-1", "rollback-1")

    with pytest.raises(RollbackRefused, match="run run-1 of acme is already rolled back"):
        rollback(warehouse, engine, ACME, "run-1", "rollback-2")
    with pytest.raises(RollbackRefused, match="run run-9 of acme was never pushed to the store"):
        rollback(warehouse, engine, ACME, "run-9", "rollback-3")


def test_rollback_never_changes_preferences_the_user_customized_since(warehouse, engine):
    _run(warehouse, engine, "run-1", BASE_USERS, BASE_MEMBERSHIPS)
    _run(warehouse, engine, "run-2", *RUNS["opt_out"])
    customize(engine, ADA, opt_out=True)  # the user confirmed the opt-out on the platform

    rollback(warehouse, engine, ACME, "run-2", "rollback-1")

    ada = store_users(engine)[0]
    assert (ada[0], ada[-2], ada[-1]) == (ADA, True, True)


def test_the_baseline_keeps_only_the_users_a_run_changed(warehouse, engine):
    _run(warehouse, engine, "run-1", BASE_USERS, BASE_MEMBERSHIPS)
    # ada's name and bob's memberships change; cy does not.
    _run(
        warehouse,
        engine,
        "run-2",
        [person(ADA, last_name="Lovelace"), *BASE_USERS[1:]],
        {**BASE_MEMBERSHIPS, BOB: [("Affinity", "Go")]},
    )

    assert warehouse.execute(
        "select external_id, last_name, applied_run_id from state.applied_users order by 1"
    ).fetchall() == [(ADA, "Lovelace", "run-2"), (BOB, "Bob", "run-2"), (CY, "Cy", "run-1")]
    # The applied baseline is the target state, row for row.
    assert (
        warehouse.execute(
            f"""
        select * exclude (applied_run_id) from state.applied_users
        except select * exclude (file_opt_out) from ({TARGET_USERS})
        """
        ).fetchall()
        == []
    )
    assert (
        warehouse.execute("select * from state.applied_memberships order by all").fetchall()
        == warehouse.execute("select * from marts.community_memberships order by all").fetchall()
    )
    assert warehouse.execute(
        "select external_id, last_name, applied_run_id from audit.push_baseline_users where run_id = 'run-2' "
        "order by 1"
    ).fetchall() == [(ADA, "Ada", "run-1"), (BOB, "Bob", "run-1")]
    # Of the memberships, only those of the users whose memberships changed are kept.
    assert warehouse.execute(
        "select external_id, community from audit.push_baseline_memberships "
        "where run_id = 'run-2' order by all"
    ).fetchall() == [(BOB, "Go"), (BOB, "Science")]
    assert warehouse.execute(
        "select external_id from audit.push_baseline_member_users where run_id = 'run-2'"
    ).fetchall() == [(BOB,)]


def test_rollback_of_a_run_that_kept_a_full_baseline_copy(warehouse, engine):
    """Earlier versions stamped every user with the run and copied the whole baseline; still restorable."""
    _run(warehouse, engine, "run-1", BASE_USERS, BASE_MEMBERSHIPS)
    store_before = (store_users(engine), store_memberships(engine))
    baseline_before = _baseline(warehouse)
    _run(warehouse, engine, "run-2", *RUNS["update"])
    _as_legacy_json_images(warehouse, "run-2")
    warehouse.execute("delete from audit.push_baseline_member_users where run_id = 'run-2'")
    warehouse.execute("update state.applied_users set applied_run_id = 'run-2'")
    for table, rows in zip(("users", "memberships"), baseline_before, strict=True):
        warehouse.execute(f"delete from audit.push_baseline_{table} where run_id = 'run-2'")
        placeholders = ", ".join("?" for _ in range(len(rows[0]) + 1))
        warehouse.executemany(
            f"insert into audit.push_baseline_{table} values ({placeholders})",
            [("run-2", *row) for row in rows],
        )

    rollback(warehouse, engine, ACME, "run-2", "rollback-1")

    assert (store_users(engine), store_memberships(engine)) == store_before
    assert _baseline(warehouse) == baseline_before


def _as_legacy_json_images(warehouse, run_id: str) -> None:
    """Keep the run's before images as earlier versions did: JSON in `audit.applied_before`."""
    stamp = "'%Y-%m-%d %H:%M:%S.%f'"
    warehouse.execute(
        f"""
        create table audit.applied_before as
        select u.run_id, u.batch_no, u.external_id,
               case when u.existed then json_object(
                   'created_at', strftime(u.created_at, {stamp}), 'email', u.email,
                   'email_opt_out', u.email_opt_out, 'email_prefs_customized', u.email_prefs_customized,
                   'external_id', u.external_id, 'first_name', u.first_name,
                   'graduation_year', u.graduation_year, 'last_name', u.last_name, 'school_id', 'acme',
                   'status', u.status, 'updated_at', strftime(u.updated_at, {stamp}),
                   'user_id', u.user_id, 'user_login', u.user_login, 'user_type', u.user_type) end
                   as user_row,
               coalesce((
                   select to_json(list_sort(list([m.community_group, m.community])))
                   from audit.applied_before_memberships as m
                   where m.run_id = u.run_id and m.external_id = u.external_id
               ), '[]')::json as memberships,
               u.captured_at
        from audit.applied_before_users as u where u.run_id = ?
        """,
        [run_id],
    )
    for table in ("users", "memberships"):
        warehouse.execute(f"delete from audit.applied_before_{table} where run_id = ?", [run_id])


@pytest.mark.parametrize("kind", ["create", "delete"])
def test_rollback_of_a_run_whose_before_images_are_json(warehouse, engine, kind):
    """Earlier versions kept before images as JSON in `audit.applied_before`; still restorable."""
    _run(warehouse, engine, "run-1", BASE_USERS, BASE_MEMBERSHIPS)
    customize(engine, BOB, opt_out=True)
    store_before = (store_users(engine), store_memberships(engine))
    created_before = {ext: stamps[0] for ext, stamps in store_timestamps(engine).items()}
    _run(warehouse, engine, "run-2", *RUNS[kind])
    _as_legacy_json_images(warehouse, "run-2")

    rollback(warehouse, engine, ACME, "run-2", "rollback-1")

    assert (store_users(engine), store_memberships(engine)) == store_before
    assert {ext: stamps[0] for ext, stamps in store_timestamps(engine).items()} == created_before


def test_before_images_keep_only_the_memberships_a_run_changes(warehouse, engine):
    _run(warehouse, engine, "run-1", BASE_USERS, BASE_MEMBERSHIPS)
    store_before = (store_users(engine), store_memberships(engine))
    # ada is renamed, her membership stays; bob keeps his name and changes one membership.
    _run(
        warehouse,
        engine,
        "run-2",
        [person(ADA, last_name="Lovelace"), *BASE_USERS[1:]],
        {**BASE_MEMBERSHIPS, BOB: [("Affinity", "Go"), ("Career Communities", "Health")]},
    )

    assert warehouse.execute(
        """
        select external_id, existed, memberships_saved from audit.applied_before_users
        where run_id = 'run-2' order by 1
        """
    ).fetchall() == [(ADA, True, False), (BOB, True, True)]
    assert warehouse.execute(
        """
        select external_id, community_group, community from audit.applied_before_memberships
        where run_id = 'run-2' order by all
        """
    ).fetchall() == [(BOB, "Affinity", "Go"), (BOB, "Career Communities", "Science")]
    rollback(warehouse, engine, ACME, "run-2", "rollback-1")
    assert (store_users(engine), store_memberships(engine)) == store_before
