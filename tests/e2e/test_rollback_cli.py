"""`sisbridge rollback` after a week that created, updated, deactivated, deleted and opted out users."""

from __future__ import annotations

import csv
import io

import pytest

from sisbridge import audit
from sisbridge.cli import main
from sisbridge.localrun import run_dag
from tests.e2e.store_rows import store_rows

pytestmark = pytest.mark.e2e

HEADER = ["FIRST_NAME", "LAST_NAME", "EMAIL", "GRADUATION", "STAKEHOLDERS", "PROGRAM", "AFFINITY"]
HEADER += ["EMAIL_OPT_OUT", "DELETE"]
FILLERS = [
    [f"Filler{n}", "Student", f"filler{n:02d}@northwind.edu", "2027", "Undergraduate", "", "", "", ""]
    for n in range(1, 21)
]
ADA = ["Ada", "Lovelace", "ada@northwind.edu", "2026", "Undergraduate", "Econ", "Women in Tech", "", ""]
ALAN = ["Alan", "Turing", "alan@northwind.edu", "2026", "Graduate", "Finance", "", "", ""]
GRACE = ["Grace", "Hopper", "grace@northwind.edu", "2024", "Alumni", "Biology", "", "", ""]
LINUS = ["Linus", "Torvalds", "linus@northwind.edu", "2027", "Undergraduate", "Biology", "FOSS", "", ""]
WEEK_1 = [ADA, ALAN, GRACE, LINUS]
WEEK_2 = [
    ADA[:1] + ["Lovelace-Byron"] + ADA[2:5] + ["Biology"] + ADA[6:],  # updated name and community
    # Alan is missing: deactivated.
    GRACE[:7] + ["yes", ""],  # opted out
    LINUS[:8] + ["true"],  # deleted, memberships and all
    ["Katherine", "Johnson", "katherine@northwind.edu", "2029", "Graduate", "Biology", "", "", ""],  # created
]


def roster(rows: list[list[str]]) -> bytes:
    buffer = io.StringIO()
    csv.writer(buffer, lineterminator="\r\n").writerows([HEADER, *rows, *FILLERS])
    return buffer.getvalue().encode()


def comparable(state: tuple[list[dict], list[tuple]]) -> tuple[list[dict], list[tuple]]:
    """The store rows, without `updated_at`: a rollback is itself a change to the rows it restores."""
    users, memberships = state
    return [{k: v for k, v in user.items() if k != "updated_at"} for user in users], memberships


def rollback(capsys, run_id: str) -> tuple[int, str, str]:
    code = main(["rollback", "--school", "northwind", "--run", run_id])
    out, err = capsys.readouterr()
    return code, out.strip(), err.strip()


def test_rollback_restores_the_store_exactly_and_refuses_out_of_order(school_env, store_url, capsys):
    _, s3 = school_env("northwind")
    s3.put_object(Bucket="uconnect-sis-northwind", Key="roster.csv", Body=roster(WEEK_1))
    week_1 = run_dag("northwind")
    assert week_1["status"] == "succeeded"
    after_week_1 = store_rows(store_url, "northwind")
    s3.put_object(Bucket="uconnect-sis-northwind", Key="roster.csv", Body=roster(WEEK_2))
    week_2 = run_dag("northwind")
    assert week_2["status"] == "succeeded", week_2["status_reason"]
    assert (week_2["creates"], week_2["updates"], week_2["deactivations"]) == (1, 1, 1)
    assert (week_2["deletes"], week_2["opt_outs"]) == (1, 1)
    assert comparable(store_rows(store_url, "northwind")) != comparable(after_week_1)
    capsys.readouterr()

    code, out, err = rollback(capsys, week_1["run_id"])

    assert (code, out) == (1, "")
    assert err == (
        f"refused: cannot roll back run {week_1['run_id']} of northwind: later run(s) {week_2['run_id']} "
        "were applied after it; roll those back first"
    )

    code, out, err = rollback(capsys, week_2["run_id"])

    assert (code, err) == (0, "")
    # Ada and Grace restored, Alan reactivated, Linus recreated, Katherine removed.
    assert out == (
        f"rolled back run {week_2['run_id']} of northwind: 3 users restored, 1 recreated, 1 removed; "
        f"audit row rollback__{week_2['run_id']} (the run is now rolled_back)"
    )
    assert comparable(store_rows(store_url, "northwind")) == comparable(after_week_1)
    with audit.warehouse("northwind", read_only=True) as con:
        original = audit.get_run(con, week_2["run_id"])
        own_row = audit.get_run(con, f"rollback__{week_2['run_id']}")
    assert original["status"] == "rolled_back"
    assert own_row["status"] == "succeeded"
    assert own_row["status_reason"] == f"rollback of run {week_2['run_id']}"

    code, _, err = rollback(capsys, week_2["run_id"])

    assert code == 1
    assert err == f"refused: run {week_2['run_id']} of northwind is already rolled back"

    # With the later run rolled back, the first one can go too: the school's users are gone.
    assert rollback(capsys, week_1["run_id"])[0] == 0
    assert store_rows(store_url, "northwind") == ([], [])
