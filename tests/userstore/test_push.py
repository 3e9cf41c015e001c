"""The push: each kind of change on its own, the email-preference rule, and school scoping."""

from __future__ import annotations

import ctypes
import os
import re
import struct
import tempfile
from pathlib import Path

import pytest
import sqlalchemy as sa
from userstore.userstore_helpers import (
    customize,
    expected_row,
    person,
    school,
    stage_run,
    store_memberships,
    store_timestamps,
    store_users,
)

from sisbridge import normalize
from sisbridge.userstore import PushResult, push, rollback
from tests.corpora import CORPORA

ACME = school()
ADA, BOB, CY = "ada@acme.edu", "bob@acme.edu", "cy@acme.edu"


def _result(**counts) -> PushResult:
    fields = dict.fromkeys(("creates", "updates", "reactivations", "deactivations", "deletes", "opt_outs"), 0)
    fields["batches"] = 1
    return PushResult(**{**fields, **counts})


def _baseline(warehouse, engine, users, memberships=None):
    stage_run(warehouse, users, memberships)
    push(warehouse, engine, ACME, "run-1")


def test_create_writes_users_and_memberships(warehouse, engine):
    ada, bob = person(ADA), person(BOB, user_type="Graduate", graduation_year=2027)
    stage_run(warehouse, [ada, bob], {ADA: [("Affinity", "Chess"), ("Career Communities", "Science")]})

    result = push(warehouse, engine, ACME, "run-1")

    assert result == _result(creates=2)
    assert store_users(engine) == [expected_row(ada), expected_row(bob)]
    assert store_memberships(engine) == [
        (ADA, "Affinity", "Chess"),
        (ADA, "Career Communities", "Science"),
    ]
    created, updated = store_timestamps(engine)[ADA]
    assert created == updated
    assert warehouse.execute(
        "select external_id, status, email_opt_out, applied_run_id from state.applied_users order by 1"
    ).fetchall() == [(ADA, "active", False, "run-1"), (BOB, "active", False, "run-1")]
    assert warehouse.execute(
        "select run_id, external_id, change_type, field from audit.applied_changes order by 2"
    ).fetchall() == [("run-1", ADA, "create", None), ("run-1", BOB, "create", None)]


def test_update_changes_fields_and_memberships_only_of_changed_users(warehouse, engine):
    _baseline(warehouse, engine, [person(ADA), person(BOB)], {ADA: [("Affinity", "Chess")]})
    before = store_timestamps(engine)
    ada = person(ADA, last_name="Lovelace", graduation_year=2021)
    stage_run(warehouse, [ada, person(BOB)], {ADA: [("Affinity", "Go")]})

    result = push(warehouse, engine, ACME, "run-2")

    assert result == _result(updates=1)
    assert store_users(engine) == [expected_row(ada), expected_row(person(BOB))]
    assert store_memberships(engine) == [(ADA, "Affinity", "Go")]
    after = store_timestamps(engine)
    assert after[ADA][0] == before[ADA][0] and after[ADA][1] > before[ADA][1]
    assert after[BOB] == before[BOB]
    assert warehouse.execute(
        "select field, old_value, new_value from audit.applied_changes where run_id = 'run-2' order by 1"
    ).fetchall() == [
        ("communities:Affinity", "Chess", "Go"),
        ("graduation_year", "2020", "2021"),
        ("last_name", "Ada", "Lovelace"),
    ]


def test_membership_only_change_touches_updated_at(warehouse, engine):
    _baseline(warehouse, engine, [person(ADA)], {ADA: [("Affinity", "Chess")]})
    before = store_timestamps(engine)[ADA]
    stage_run(warehouse, [person(ADA)], {ADA: [("Affinity", "Chess"), ("Affinity", "Go")]})

    assert push(warehouse, engine, ACME, "run-2") == _result(updates=1)

    assert store_memberships(engine) == [(ADA, "Affinity", "Chess"), (ADA, "Affinity", "Go")]
    assert store_timestamps(engine)[ADA][1] > before[1]


def test_deactivate_keeps_the_row_and_memberships(warehouse, engine):
    _baseline(warehouse, engine, [person(ADA), person(BOB)], {BOB: [("Affinity", "Chess")]})
    bob = person(BOB, status="inactive", flag=None)
    stage_run(warehouse, [person(ADA), bob], {BOB: [("Affinity", "Chess")]})

    assert push(warehouse, engine, ACME, "run-2") == _result(deactivations=1)

    assert store_users(engine) == [expected_row(person(ADA)), expected_row(bob)]
    assert store_memberships(engine) == [(BOB, "Affinity", "Chess")]


def test_reactivate_a_returning_user(warehouse, engine):
    _baseline(warehouse, engine, [person(ADA), person(BOB, status="inactive", flag=None)])
    stage_run(warehouse, [person(ADA), person(BOB)])

    assert push(warehouse, engine, ACME, "run-2") == _result(reactivations=1)

    assert store_users(engine) == [expected_row(person(ADA)), expected_row(person(BOB))]


def test_delete_removes_the_user_and_memberships(warehouse, engine):
    _baseline(
        warehouse, engine, [person(ADA), person(BOB)], {BOB: [("Affinity", "Chess")], ADA: [("A", "B")]}
    )
    stage_run(warehouse, [person(ADA)], {ADA: [("A", "B")]})

    assert push(warehouse, engine, ACME, "run-2") == _result(deletes=1)

    assert store_users(engine) == [expected_row(person(ADA))]
    assert store_memberships(engine) == [(ADA, "A", "B")]
    assert warehouse.execute("select external_id from state.applied_users").fetchall() == [(ADA,)]


def test_opt_out_of_an_existing_user(warehouse, engine):
    _baseline(warehouse, engine, [person(ADA), person(BOB)])
    stage_run(warehouse, [person(ADA, flag=True), person(BOB)])

    assert push(warehouse, engine, ACME, "run-2") == _result(opt_outs=1)

    assert store_users(engine) == [expected_row(person(ADA), opt_out=True), expected_row(person(BOB))]


def test_new_user_starts_with_the_file_flag(warehouse, engine):
    stage_run(warehouse, [person(ADA, flag=True), person(BOB, flag=False)])

    push(warehouse, engine, ACME, "run-1")

    assert store_users(engine) == [expected_row(person(ADA), opt_out=True), expected_row(person(BOB))]


def test_nothing_ever_opts_a_user_back_in(warehouse, engine):
    _baseline(warehouse, engine, [person(ADA, flag=True)])
    stage_run(warehouse, [person(ADA, flag=False, last_name="Byron")])

    assert push(warehouse, engine, ACME, "run-2") == _result(updates=1)

    assert store_users(engine) == [expected_row(person(ADA, last_name="Byron"), opt_out=True)]


def test_customized_preferences_are_never_changed_but_sis_fields_follow_the_file(warehouse, engine):
    _baseline(warehouse, engine, [person(ADA), person(BOB, flag=True)])
    customize(engine, ADA, opt_out=False)
    customize(engine, BOB, opt_out=False)  # the user opted back in on the platform
    ada = person(ADA, flag=True, last_name="Byron")
    bob = person(BOB, flag=True, user_type="Graduate")
    stage_run(warehouse, [ada, bob], {ADA: [("Affinity", "Chess")]})

    result = push(warehouse, engine, ACME, "run-2")

    assert store_users(engine) == [
        expected_row(ada, opt_out=False, customized=True),
        expected_row(bob, opt_out=False, customized=True),
    ]
    assert store_memberships(engine) == [(ADA, "Affinity", "Chess")]
    # Ada's opt-out was refused by the store, so it is not an applied change.
    assert result == _result(updates=2)
    assert warehouse.execute(
        "select count(*) from audit.applied_changes where run_id = 'run-2' and change_type = 'opt_out'"
    ).fetchone() == (0,)


def test_emails_logins_and_ids_are_trimmed_and_lowercased(warehouse, engine):
    messy = person(" Ada@ACME.edu ", email=" Ada@ACME.edu ", user_login="  ADA.L ")
    stage_run(warehouse, [messy])

    push(warehouse, engine, ACME, "run-1")

    clean = {**messy, "external_id": ADA, "email": ADA, "user_login": "ada.l"}
    assert store_users(engine) == [expected_row(clean)]


def test_a_push_never_touches_another_school(warehouse, engine, tmp_path):
    import duckdb

    from sisbridge import audit

    other = duckdb.connect(str(tmp_path / "globex.duckdb"))
    audit.ensure_schema(other)
    globex = school("globex")
    stage_run(other, [person(ADA, first_name="Other"), person(CY)])
    push(other, engine, globex, "g-1")
    # Acme has the same external ids, and deletes one that Globex also has.
    _baseline(warehouse, engine, [person(ADA), person(CY)])
    stage_run(warehouse, [person(ADA, last_name="Acme")])

    push(warehouse, engine, ACME, "run-2")

    assert store_users(engine, "globex") == [
        expected_row(person(ADA, first_name="Other")),
        expected_row(person(CY)),
    ]
    assert store_users(engine, "acme") == [expected_row(person(ADA, last_name="Acme"))]
    other.close()


def test_a_finished_push_is_not_applied_twice(warehouse, engine):
    stage_run(warehouse, [person(ADA)])
    first = push(warehouse, engine, ACME, "run-1")
    stamps = store_timestamps(engine)

    assert push(warehouse, engine, ACME, "run-1") == first
    assert store_timestamps(engine) == stamps
    assert warehouse.execute("select count(*) from audit.applied_changes").fetchone() == (1,)


def test_batches_split_the_change_set(warehouse, engine):
    people = [person(f"u{n:02d}@acme.edu") for n in range(7)]
    stage_run(warehouse, people)

    result = push(warehouse, engine, ACME, "run-1", batch_size=3)

    # At most 3 users a batch; on PostgreSQL in as many batches as keep its two workers equally busy.
    assert result == _result(creates=7, batches=4 if engine.dialect.name == "postgresql" else 3)
    with engine.connect() as conn:
        sizes = conn.exec_driver_sql("select users_in_batch from sisbridge_push_batches order by batch_no")
        assert list(sizes.scalars()) == ([2, 2, 2, 1] if engine.dialect.name == "postgresql" else [3, 3, 1])
    assert store_users(engine) == [expected_row(p) for p in people]


class _Created:
    """The names of the files and folders created directly in some folders (Linux inotify)."""

    _IN_CREATE = 0x100

    def __init__(self, *folders: Path):
        self._libc = ctypes.CDLL(None, use_errno=True)
        self._fd = self._libc.inotify_init1(os.O_NONBLOCK)
        assert self._fd >= 0, os.strerror(ctypes.get_errno())
        for folder in folders:
            assert self._libc.inotify_add_watch(self._fd, str(folder).encode(), self._IN_CREATE) >= 0

    def names(self) -> list[str]:
        names = []
        while True:
            try:
                data = os.read(self._fd, 65536)
            except BlockingIOError:
                break
            offset = 0
            while offset < len(data):
                _, _, _, length = struct.unpack_from("iIII", data, offset)
                raw = data[offset + 16 : offset + 16 + length]
                names.append(raw.rstrip(b"\0").decode())
                offset += 16 + length
        os.close(self._fd)
        return names


def test_a_push_writes_no_files_and_leaves_nothing_behind_in_the_store(
    warehouse, engine, tmp_path, monkeypatch
):
    scratch = tmp_path / "tmp"
    scratch.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(scratch))
    monkeypatch.setenv("TMPDIR", str(scratch))
    people = [person(f"u{n:02d}@acme.edu") for n in range(9)]
    stage_run(warehouse, people, {p["external_id"]: [("Affinity", "Chess")] for p in people})
    created = _Created(scratch, tmp_path)

    push(warehouse, engine, ACME, "run-1", batch_size=2)
    stage_run(warehouse, [person(p["external_id"], last_name="Renamed") for p in people])
    push(warehouse, engine, ACME, "run-2", batch_size=2)

    # Five batches a push, and not one file for them, not even for a moment: only the databases'
    # own journals appear beside the warehouse and the SQLite store.
    assert [name for name in created.names() if not name.endswith((".wal", "-journal"))] == []
    # The transfer tables and the store's copy of the before images are gone once the push is done.
    tables = sa.inspect(engine).get_table_names()
    assert [table for table in tables if table.startswith("sisbridge_transfer_")] == []
    with engine.connect() as conn:
        assert conn.exec_driver_sql("select count(*) from sisbridge_push_before_users").scalar_one() == 0
        assert (
            conn.exec_driver_sql("select count(*) from sisbridge_push_before_memberships").scalar_one() == 0
        )
    assert warehouse.execute(
        "select count(*), count(*) filter (existed) from audit.applied_before_users where run_id = 'run-2'"
    ).fetchone() == (9, 9)


def test_the_push_logs_where_its_time_went(warehouse, engine, caplog):
    stage_run(warehouse, [person(f"u{n:02d}@acme.edu") for n in range(7)])

    with caplog.at_level("INFO", logger="sisbridge.userstore"):
        push(warehouse, engine, ACME, "run-1", batch_size=3, workers=1)

    lines = [record.getMessage() for record in caplog.records if "push of run" in record.getMessage()]
    assert len(lines) == 1
    # A first push into PostgreSQL copies its batches straight into the store: no transfer tables.
    transfer = (
        "" if engine.dialect.name == "postgresql" else r"statistics \d+\.\d\d s, transfer \d+\.\d\d s, "
    )
    assert re.fullmatch(
        rf"push of run run-1 took prepare \d+\.\d\d s, {transfer}"
        r"3 batches \d+\.\d\d s, baseline alongside \d+\.\d\d s, finish \d+\.\d\d s, "
        r"cleanup \d+\.\d\d s",
        lines[0],
    )


def test_an_empty_change_set_changes_nothing(warehouse, engine):
    _baseline(warehouse, engine, [person(ADA)])
    stamps = store_timestamps(engine)
    stage_run(warehouse, [person(ADA)])

    assert push(warehouse, engine, ACME, "run-2") == _result(batches=0)
    assert store_timestamps(engine) == stamps


@pytest.mark.parametrize("batch_size", [0, -1])
def test_batch_size_must_be_positive(warehouse, engine, batch_size):
    with pytest.raises(ValueError, match="batch_size must be at least 1"):
        push(warehouse, engine, ACME, "run-1", batch_size=batch_size)


def test_naughty_strings_are_stored_exactly(warehouse, engine):
    """Names from the Big List of Naughty Strings survive staging (COPY escapes, quotes, unicode)."""
    lines = (CORPORA / "naughty-strings" / "blns.txt").read_text(encoding="utf-8").splitlines()
    # PostgreSQL text cannot hold NUL; a school's file with one is rejected before the push.
    names = [line for line in lines if line and not line.startswith("#") and "\x00" not in line]
    names += ["tab\there", "back\\slash\\N", "line\nbreak", "\\N"]
    people = [person(f"n{number:04d}@acme.edu", last_name=name) for number, name in enumerate(names)]
    stage_run(warehouse, people)

    push(warehouse, engine, ACME, "run-1", batch_size=200)

    assert store_users(engine) == [expected_row(p) for p in people]


def test_unusual_identifiers_and_communities_round_trip(warehouse, engine):
    """Ids, emails and logins outside printable ASCII are normalized as every stage does; values survive."""
    odd_ids = [" Ädä@ACME.edu\u00a0", "\tİSTANBUL@acme.edu", "\u2003ÉMILE@Acme.Edu\u3000", "😀@acme.edu"]
    people = [
        person(odd_ids[0], email=odd_ids[0], user_login="\u00a0LOGIN.Ä ", first_name=""),
        person(odd_ids[1], email=odd_ids[1], first_name='a "quoted", name', last_name="x\r\ny"),
        person(odd_ids[2], email=odd_ids[2], last_name="back\\slash\\N\ttab"),
        person(odd_ids[3], email=odd_ids[3], user_id="", last_name="😀 non-BMP 𝔘"),
    ]
    communities = {odd_ids[0]: [("Affinity", 'Chess, "Go"'), ("Career Communities", "")]}
    communities[odd_ids[3]] = [("Affinity", "line\nbreak"), ("Affinity", "\\N")]
    stage_run(warehouse, people, communities)

    push(warehouse, engine, ACME, "run-1")

    # sisbridge.normalize: trimmed of every kind of whitespace, lowercased as DuckDB's lower() does
    # (İ becomes i, as in the gate's and dbt's keys).
    expected = sorted(
        expected_row(
            {
                **p,
                "external_id": normalize.key("email", p["external_id"]),
                "email": normalize.key("email", p["email"]),
                "user_login": normalize.key("user_login", p["user_login"]),
            }
        )
        for p in people
    )
    assert store_users(engine) == expected
    assert store_memberships(engine) == sorted(
        (normalize.key("email", ext), group, community)
        for ext, pairs in communities.items()
        for group, community in pairs
    )
    # The before images of such values bring them back exactly on rollback.
    stage_run(warehouse, [{**p, "last_name": "Renamed"} for p in people[1:]], {})
    push(warehouse, engine, ACME, "run-2")
    rollback(warehouse, engine, ACME, "run-2")
    assert store_users(engine) == expected
    assert len(store_memberships(engine)) == 4
