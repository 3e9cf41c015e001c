"""The auditors' tables: one row per run, findings replaced per stage so a retried task never doubles them."""

from __future__ import annotations

import duckdb
import pytest

from sisbridge import audit


@pytest.fixture
def con():
    connection = duckdb.connect()
    audit.ensure_schema(connection)
    yield connection
    connection.close()


@pytest.mark.parametrize("count", [3, 5000])  # the small path and the bulk path
def test_findings_are_stored_exactly_and_replaced_on_retry(con, count):
    findings = [
        audit.Finding(
            "unknown_column", f"column {i} is unknown", "warning", i + 1 if i % 3 else None, None, "C", "v"
        )
        for i in range(count)
    ]
    audit.record_findings(con, "run-1", "load", findings)
    audit.record_findings(con, "run-1", "load", findings)  # a retried task
    audit.record_findings(con, "run-1", "quality", [audit.Finding("email_invalid", "bad", line_number=2)])

    stored = audit.findings_of_run(con, "run-1")

    assert len(stored) == count + 1
    stored_unknown = [f for f in stored if f.rule == "unknown_column"]
    assert sorted(stored_unknown, key=repr) == sorted(findings, key=repr)


def test_a_run_row_is_created_once_and_updated_field_by_field(con):
    audit.upsert_run(con, "run-1", school_id="acme", status="running", rows_in_file=10)
    audit.upsert_run(con, "run-1", status="succeeded", creates=7, details={"note": "ok"})

    run = audit.get_run(con, "run-1")

    assert (run["school_id"], run["status"], run["rows_in_file"], run["creates"]) == (
        "acme",
        "succeeded",
        10,
        7,
    )
    assert run["details"] == '{"note": "ok"}'
    assert con.execute("select count(*) from audit.sync_runs").fetchone() == (1,)


def test_unknown_status_and_column_are_refused(con):
    with pytest.raises(ValueError, match="unknown status 'done'"):
        audit.upsert_run(con, "run-1", school_id="acme", status="done")
    with pytest.raises(ValueError, match="unknown sync_runs columns"):
        audit.upsert_run(con, "run-1", school_id="acme", colour="blue")
    with pytest.raises(ValueError, match="severity"):
        audit.Finding("x", "y", severity="fatal")


def test_a_baseline_made_with_primary_keys_is_rebuilt_without_them_and_keeps_its_rows(tmp_path):
    # Older versions keyed the baseline tables; DuckDB wrote those indexes at every commit.
    path = tmp_path / "old.duckdb"
    old = duckdb.connect(str(path))
    old.execute("create schema state")
    old.execute(
        """
        create table state.applied_users (
            external_id varchar primary key, email varchar, user_id varchar, user_login varchar,
            first_name varchar, last_name varchar, user_type varchar, graduation_year integer,
            status varchar not null, email_opt_out boolean not null, applied_run_id varchar not null
        )
        """
    )
    old.execute(
        """
        create table state.applied_memberships (
            external_id varchar not null, community_group varchar not null, community varchar not null,
            primary key (external_id, community_group, community)
        )
        """
    )
    old.execute(
        "insert into state.applied_users values "
        "('a@x.edu', 'a@x.edu', null, null, 'Ada', 'L', 'Alumni', 2020, 'active', false, 'r1')"
    )
    old.execute("insert into state.applied_memberships values ('a@x.edu', 'Affinity', 'Chess')")
    old.close()

    for _ in range(2):  # the second open finds nothing to rebuild
        with audit.warehouse("old", path=path) as con:
            keys = con.execute(
                "select table_name, constraint_type from duckdb_constraints() where schema_name = 'state'"
            ).fetchall()
            assert ("applied_users", "PRIMARY KEY") not in keys
            assert ("applied_memberships", "PRIMARY KEY") not in keys
            assert ("applied_users", "NOT NULL") in keys
            assert con.execute(
                "select external_id, first_name, graduation_year from state.applied_users"
            ).fetchall() == [("a@x.edu", "Ada", 2020)]
            assert con.execute("select * from state.applied_memberships").fetchall() == [
                ("a@x.edu", "Affinity", "Chess")
            ]
            tables = {
                t
                for (t,) in con.execute(
                    "select table_name from duckdb_tables() where schema_name = 'state'"
                ).fetchall()
            }
            assert tables == {"applied_users", "applied_memberships"}
