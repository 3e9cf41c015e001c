"""The file rules through a real DAG run (dag.test(), moto's S3, dbt, GX, a SQLite store).

One definition of whitespace and keys for every stage, and the columns the integration guide names
built in: PROGRAM without a `communities` entry, STAKEHOLDERS beside USER_TYPE, no `user_types` map.
"""

from __future__ import annotations

import csv
import io

import pytest

from sisbridge import audit, userstore
from sisbridge.localrun import run_dag
from tests.e2e.store_rows import store_rows

pytestmark = pytest.mark.e2e

# No user_types map and no communities: the guide's columns must work without either.
QUAY = """\
school_id: quay
name: Quay College
s3: {bucket: uconnect-sis-quay, key: roster.csv, aws_conn_id: sis_s3_quay}
identifier: user_id
auto_sync: true
duplicates: reject_file
"""


@pytest.fixture
def quay(tmp_path, monkeypatch, school_env):
    folder = tmp_path / "schools"
    folder.mkdir()
    (folder / "quay.yaml").write_text(QUAY, encoding="utf-8")
    monkeypatch.setenv("SISBRIDGE_SCHOOLS_DIR", str(folder))
    _, s3 = school_env("quay")
    return s3


def upload(s3, header: list[str], rows: list[list[str]]) -> None:
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\r\n")
    writer.writerow(header)
    writer.writerows(rows)
    s3.put_object(Bucket="uconnect-sis-quay", Key="roster.csv", Body=buffer.getvalue().encode())


def findings(run_id: str) -> list[tuple]:
    with audit.warehouse("quay", read_only=True) as con:
        return con.execute(
            "select line_number, stage, severity, rule, identifier, column_name, value, message "
            "from audit.rejected_rows where run_id = ? order by line_number, rule",
            [run_id],
        ).fetchall()


def fillers(count: int, width: int) -> list[list[str]]:
    return [
        [f"Filler{n}", "Student", f"filler{n}@quay.edu", f"F{n}"] + [""] * (width - 4)
        for n in range(1, count + 1)
    ]


def test_a_user_id_and_the_same_id_with_a_tab_reject_the_file_naming_both_lines(quay, store_url):
    upload(
        quay,
        ["FIRST_NAME", "LAST_NAME", "EMAIL", "USER_ID"],
        [["Ada", "Lovelace", "ada@quay.edu", "S1"], ["Alan", "Turing", "alan@quay.edu", "S1\t"]]
        + fillers(20, 4),
    )

    run = run_dag("quay")

    # Before, the gate let both through, dbt merged them and its unique test failed the run.
    assert run["status"] == "rejected", run["status_reason"]
    message = "USER_ID 'S1' is on lines 2, 3 (compared trimmed); each user must have exactly one record"
    assert run["status_reason"] == message
    assert findings(run["run_id"]) == [
        (2, "quality", "error", "duplicate_in_file", "S1", "USER_ID", "S1", message),
    ]
    userstore.ensure_schema(userstore.store_engine(store_url))
    assert store_rows(store_url, "quay") == ([], [])


def test_program_user_type_beside_stakeholders_and_a_blank_name_in_one_run(quay, store_url):
    header = ["FIRST_NAME", "LAST_NAME", "EMAIL", "USER_ID", "STAKEHOLDERS", "USER_TYPE", "PROGRAM"]
    upload(
        quay,
        header,
        [
            ["Ada", "Lovelace", "ada@quay.edu", "S1", "Graduate", "Graduate Student", "Econ; Biology"],
            ["Alan", "Turing", "alan@quay.edu", "S2", "Alumni", "", "Physics"],
            ["\u00a0", "Hopper", "grace@quay.edu", "S3", "Alumni", "Alumni", "Math"],
            ["Katherine", "Johnson", "kj@quay.edu", "S4", "", "Staff", ""],
            ["Hedy", "Lamarr", "hedy@quay.edu", "S5", "alumni", "Alumni", ""],
        ]
        + fillers(20, len(header)),
    )

    run = run_dag("quay")

    assert run["status"] == "succeeded", run["status_reason"]
    counts = (run["rows_in_file"], run["rows_accepted"], run["rows_rejected"], run["creates"])
    assert counts == (25, 24, 1, 24)
    assert findings(run["run_id"]) == [
        (
            2,
            "transform",
            "warning",
            "user_type_conflict",
            "S1",
            "USER_TYPE",
            "Graduate Student",
            "USER_TYPE value 'Graduate Student' disagrees with STAKEHOLDERS value 'Graduate'; the user type "
            "follows USER_TYPE. Send the same user type in both columns, or only one of them.",
        ),
        (4, "quality", "error", "first_name_blank", "S3", "FIRST_NAME", "\u00a0", "FIRST_NAME is blank"),
    ]
    users, memberships = store_rows(store_url, "quay")
    types = {user["external_id"]: user["user_type"] for user in users}
    assert {key: types[key] for key in ("S1", "S2", "S4", "S5")} == {
        "S1": "Graduate Student",  # a non-blank USER_TYPE wins; no user_types map: the value is the type
        "S2": "Alumni",  # USER_TYPE blank: STAKEHOLDERS
        "S4": "Staff",
        "S5": "Alumni",
    }
    assert "S3" not in types and len(users) == 24
    assert {types[f"F{n}"] for n in range(1, 21)} == {None}
    assert memberships == [
        ("S1", "Career Communities", "Biology"),
        ("S1", "Career Communities", "Econ"),
        ("S2", "Career Communities", "Physics"),
    ]
    with audit.warehouse("quay", read_only=True) as con:
        marts_users = con.execute(
            "select external_id, user_type from marts.users where external_id like 'S%' order by 1"
        ).fetchall()
        marts_memberships = con.execute("select * from marts.community_memberships order by all").fetchall()
    assert marts_users == [("S1", "Graduate Student"), ("S2", "Alumni"), ("S4", "Staff"), ("S5", "Alumni")]
    assert marts_memberships == memberships
