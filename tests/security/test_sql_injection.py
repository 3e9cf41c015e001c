"""Nothing from a file (or a school's config) reaches SQL unquoted: loader, quality, dbt and push.

One school whose header names, community column, groups, value map and user type are SQL
injections sends a roster whose names and community values are every naughty string. The run goes
through the same library calls as the DAG's tasks, into a real PostgreSQL store that also holds
another school's users with the same emails.
"""

from __future__ import annotations

import csv
import io

import lakes
import pytest
import sqlalchemy as sa

from sisbridge import audit, locals3, normalize, pipeline, transform, userstore
from sisbridge.config import reports_dir
from tests.security.security_helpers import (
    IDENT_INJECTION,
    LITERAL_INJECTION,
    VALUE_INJECTION,
    hostile_school,
    naughty_strings,
    table_dump,
    write_school,
)

pytestmark = pytest.mark.postgres

SCHOOL_ID = "bobby_tables"
BUCKET = "uconnect-sis-bobby-tables"
RUN_ID = "manual__2026-11-28T23:00:00+00:00"
UNKNOWN_HEADER = '"; DELETE FROM users; --'
HEADER = [
    LITERAL_INJECTION,  # the school's alias for FIRST_NAME
    "LAST_NAME",
    "EMAIL",
    "GRADUATION",
    "STAKEHOLDERS",
    IDENT_INJECTION,  # a community column, in lower case as the file has it
    "AFFINITY",
    "PROGRAM",
    UNKNOWN_HEADER,  # reported and ignored
]


def usable(value: str) -> bool:
    # NUL never occurs in a CSV text file (the loader rejects the whole file for it), and a name that
    # is blank after trimming (sisbridge.normalize) is a missing FIRST_NAME, not an injection.
    return "\x00" not in value and not normalize.is_blank(value)


def pieces(cell: str) -> set[str]:
    """Community values of one cell: split on ';', trimmed, empty pieces dropped."""
    return {normalize.clean(piece) for piece in cell.split(";")} - {None}


def hostile_rows() -> list[list[str]]:
    strings = [IDENT_INJECTION, LITERAL_INJECTION, *filter(usable, naughty_strings())]
    return [
        [
            value,
            "Student",
            f"student{number:03d}@bobby.example.edu",
            "2027",
            "Undergraduate",
            value,
            value,
            VALUE_INJECTION if number % 2 else "",
            value,
        ]
        for number, value in enumerate(strings)
    ]


def roster_bytes(rows: list[list[str]]) -> bytes:
    buffer = io.StringIO()
    csv.writer(buffer, lineterminator="\r\n").writerows([HEADER, *rows])
    return buffer.getvalue().encode("utf-8")


@pytest.fixture(scope="module")
def hostile_run(tmp_path_factory, s3_endpoint, pg_module_url):
    """Seed another school's users, then run the hostile school's file through every stage."""
    schools = tmp_path_factory.mktemp("schools")
    write_school(schools, hostile_school(SCHOOL_ID, BUCKET))
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("SISBRIDGE_SCHOOLS_DIR", str(schools))
        yield from _run_hostile_school(s3_endpoint, pg_module_url)


def _run_hostile_school(s3_endpoint: str, pg_url: str):
    school = pipeline.school_config(SCHOOL_ID)
    engine = userstore.store_engine(pg_url)
    userstore.ensure_schema(engine)
    rows = hostile_rows()
    with engine.begin() as conn:
        for row in rows[:5]:
            conn.execute(
                sa.text(
                    "insert into users (school_id, external_id, email, first_name, last_name, status, "
                    "email_opt_out, email_prefs_customized, created_at, updated_at) values "
                    "('othercollege', :email, :email, 'Other', 'School', 'active', false, false, "
                    "current_timestamp, current_timestamp)"
                ),
                {"email": row[2]},
            )
    other_before = table_dump(engine, "users", "othercollege")

    s3 = locals3.s3_client(s3_endpoint)
    locals3.create_bucket(s3, BUCKET)
    s3.put_object(Bucket=BUCKET, Key="roster.csv", Body=roster_bytes(rows))
    lakes.wipe(SCHOOL_ID)
    outcomes = [
        pipeline.load_raw(SCHOOL_ID, RUN_ID, None, s3=s3),
        pipeline.validate(SCHOOL_ID, RUN_ID, s3=s3),
    ]
    transform.run_build(school, RUN_ID)
    outcomes += [pipeline.guard(SCHOOL_ID, RUN_ID), pipeline.push(SCHOOL_ID, RUN_ID, engine=engine)]
    summary = pipeline.finalize(SCHOOL_ID, RUN_ID, s3=s3)
    yield {"rows": rows, "engine": engine, "outcomes": outcomes, "summary": summary, "other": other_before}
    engine.dispose()


def test_injections_are_stored_as_plain_text_and_nothing_is_dropped(hostile_run):
    rows, engine, summary = hostile_run["rows"], hostile_run["engine"], hostile_run["summary"]

    assert [o.stop for o in hostile_run["outcomes"]] == [False, False, False, False]
    assert summary["status"] == "succeeded", summary["status_reason"]
    assert summary["creates"] == len(rows)

    # Every store table is still there, and the other school's users are untouched.
    tables = set(sa.inspect(engine).get_table_names())
    assert {"users", "user_communities"} <= tables
    assert table_dump(engine, "users", "othercollege") == hostile_run["other"]

    with engine.connect() as conn:
        users = dict(
            conn.execute(
                sa.text("select external_id, first_name from users where school_id = :s"), {"s": SCHOOL_ID}
            ).fetchall()
        )
        user_types = {
            row[0]
            for row in conn.execute(
                sa.text("select user_type from users where school_id = :s"), {"s": SCHOOL_ID}
            )
        }
        memberships = set(
            conn.execute(
                sa.text(
                    "select external_id, community_group, community from user_communities "
                    "where school_id = :s"
                ),
                {"s": SCHOOL_ID},
            ).fetchall()
        )
    assert users == {row[2]: normalize.trim(row[0]) for row in rows}
    assert user_types == {LITERAL_INJECTION}
    expected = set()
    for row in rows:
        expected |= {(row[2], LITERAL_INJECTION, value) for value in pieces(row[5])}
        expected |= {(row[2], IDENT_INJECTION, value) for value in pieces(row[6])}
        if row[7]:
            expected.add((row[2], "Career Communities", IDENT_INJECTION))
    assert memberships == expected


def test_injected_header_names_are_reported_verbatim(hostile_run):
    with audit.warehouse(SCHOOL_ID, read_only=True) as con:
        columns = con.execute(
            "select source_name, canonical_name, kind from raw.file_columns order by position"
        ).fetchall()
        unknown = con.execute(
            "select rule, severity, column_name from audit.rejected_rows "
            "where run_id = ? and rule = 'unknown_column'",
            [RUN_ID],
        ).fetchall()
        marts = con.execute("select count(*) from marts.users").fetchone()[0]
    assert columns[0] == (LITERAL_INJECTION, "FIRST_NAME", "standard")
    assert columns[5] == (IDENT_INJECTION, IDENT_INJECTION.upper(), "community")
    assert columns[8] == (UNKNOWN_HEADER, UNKNOWN_HEADER.upper().strip(), "unknown")
    assert unknown == [("unknown_column", "warning", UNKNOWN_HEADER)]
    assert marts == len(hostile_run["rows"])


def test_reports_of_the_hostile_run_are_csv_injection_safe(hostile_run):
    folder = reports_dir(SCHOOL_ID, RUN_ID)
    for name in ("findings.csv", "changes.csv"):
        with (folder / name).open(encoding="utf-8-sig", newline="") as handle:
            cells = [cell for row in csv.reader(handle) for cell in row]
        assert cells, name
        formulas = [cell for cell in cells if cell[:1] in ("=", "+", "-", "@", "\t", "\r")]
        assert formulas == [], f"{name}: cells a spreadsheet would run: {formulas[:5]}"
