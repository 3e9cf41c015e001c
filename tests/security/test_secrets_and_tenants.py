"""One real DAG run (`sisbridge sync`) with marked secrets, into a store shared with another school.

Afterwards every file the run wrote (warehouse, reports, dbt and Airflow logs, the Airflow metadata
DB), every store table, every object in the buckets and everything printed is searched for the
secrets. The other school's users must be exactly as they were, although the file names them.
"""

from __future__ import annotations

import csv
import io
import json
import os
import secrets
import subprocess
import sys
from pathlib import Path

import lakes
import pytest
import sqlalchemy as sa

from sisbridge import audit, locals3, warehouse
from sisbridge.config import load_school, schools_dir, sisbridge_home
from sisbridge.localrun import prepare_airflow
from sisbridge.userstore import ensure_schema, store_engine
from tests.security.security_helpers import table_dump

pytestmark = [pytest.mark.e2e, pytest.mark.postgres]

HEADER = ["FIRST_NAME", "LAST_NAME", "EMAIL", "GRADUATION", "STAKEHOLDERS", "PROGRAM", "DELETE"]
# southpaw's students, keyed by USER_ID; their emails are also in northwind's file below.
SOUTHPAW = [
    ("SP-1001", "ada.lovelace@northwind.edu", "Ada", "Lovelace"),
    ("SP-1002", "alan@northwind.edu", "Alan", "Turing"),
    ("SP-1003", "grace@northwind.edu", "Grace", "Hopper"),
    ("SP-1004", "only.southpaw@southpaw.edu", "Only", "Southpaw"),
]


def northwind_file() -> bytes:
    rows = [
        ["Ada", "Lovelace", "Ada.Lovelace@northwind.edu", "2026", "Undergraduate", "Econ", ""],
        ["Alan", "Turing", "alan@northwind.edu", "2027", "Graduate", "Biology", ""],
        # grace is only southpaw's user: DELETE must neither create nor delete anyone here.
        ["Grace", "Hopper", "grace@northwind.edu", "2024", "Alumni", "", "yes"],
        *[
            [f"Filler{n}", "Student", f"filler{n:02d}@northwind.edu", "2027", "Undergraduate", "", ""]
            for n in range(1, 18)
        ],
    ]
    buffer = io.StringIO()
    csv.writer(buffer, lineterminator="\r\n").writerows([HEADER, *rows])
    return buffer.getvalue().encode()


def seed_southpaw(engine: sa.Engine) -> None:
    with engine.begin() as conn:
        for user_id, email, first, last in SOUTHPAW:
            conn.execute(
                sa.text(
                    "insert into users (school_id, external_id, email, user_id, first_name, last_name, "
                    "user_type, status, email_opt_out, email_prefs_customized, created_at, updated_at) "
                    "values ('southpaw', :id, :email, :id, :first, :last, 'Alumni', 'active', false, "
                    "false, timestamp '2026-01-01 00:00:00', timestamp '2026-01-01 00:00:00')"
                ),
                {"id": user_id, "email": email, "first": first, "last": last},
            )
            conn.execute(
                sa.text(
                    "insert into user_communities values ('southpaw', :id, 'Career Communities', "
                    "'Business & Finance')"
                ),
                {"id": user_id},
            )


def written_files(*roots: Path) -> list[Path]:
    return sorted(path for root in roots if root.exists() for path in root.rglob("*") if path.is_file())


def warehouse_text(school_id: str) -> str:
    """Every value of every table in a school's lake, as text (its Parquet files compress strings)."""
    con = warehouse.connect(school_id, read_only=True)
    try:
        tables = con.execute(
            "select table_schema, table_name from information_schema.tables "
            "where table_catalog = 'lake' and table_type = 'BASE TABLE'"
        ).fetchall()
        return "\n".join(
            str(con.execute(f'select * from "{schema}"."{table}"').fetchall()) for schema, table in tables
        )
    finally:
        con.close()


def store_text(engine: sa.Engine) -> str:
    with engine.connect() as conn:
        return "\n".join(
            str(conn.execute(sa.text(f'select * from "{table}"')).fetchall())
            for table in sa.inspect(engine).get_table_names()
        )


@pytest.fixture(scope="module")
def marked_run(s3_endpoint, pg_module_url, tmp_path_factory):
    """`sisbridge sync --school northwind` once, with marked S3 keys and a marked store password."""
    with pytest.MonkeyPatch.context() as patch:
        yield from _marked_run(s3_endpoint, pg_module_url, tmp_path_factory.mktemp("sync"), patch)


def _marked_run(s3_endpoint: str, pg_url: str, tmp: Path, patch: pytest.MonkeyPatch):
    marks = {
        "s3 access key": "AKIACANARY" + secrets.token_hex(6).upper(),
        "s3 secret key": "s3-canary-" + secrets.token_hex(12),
        "store password": "pg-canary-" + secrets.token_hex(12),
    }
    prepare_airflow()
    northwind = load_school(schools_dir() / "northwind.yaml")
    southpaw = load_school(schools_dir() / "southpaw.yaml")
    connection = json.loads(locals3.aws_connection_uri(s3_endpoint))
    connection.update(login=marks["s3 access key"], password=marks["s3 secret key"])
    patch.setenv(f"AIRFLOW_CONN_{northwind.s3.aws_conn_id.upper()}", json.dumps(connection))
    # The test cluster trusts local connections, so any password logs in: a marked one is real enough.
    store_url = pg_url.replace("postgresql://postgres@", f"postgresql://postgres:{marks['store password']}@")
    patch.setenv("AIRFLOW_CONN_UCONNECT_USER_STORE", store_url)

    engine = store_engine(pg_url)
    ensure_schema(engine)
    seed_southpaw(engine)
    before = {table: table_dump(engine, table, "southpaw") for table in ("users", "user_communities")}
    s3 = locals3.s3_client(s3_endpoint)
    existing = {b["Name"] for b in s3.list_buckets().get("Buckets", [])}
    for school in (northwind, southpaw):
        if school.s3.bucket not in existing:
            locals3.create_bucket(s3, school.s3.bucket)
    lakes.wipe("northwind")
    s3.put_object(Bucket=northwind.s3.bucket, Key=northwind.s3.key, Body=northwind_file())

    sync = subprocess.run(
        [sys.executable, "-m", "sisbridge.cli", "sync", "--school", "northwind"],
        capture_output=True,
        text=True,
        timeout=600,
    )
    (tmp / "sync.log").write_text(sync.stdout + sync.stderr)
    with audit.warehouse("northwind", read_only=True) as con:
        run_id = con.execute("select run_id from audit.sync_runs order by started_at desc limit 1").fetchone()
        run = audit.get_run(con, run_id[0])
    yield {
        "exit_code": sync.returncode,
        "run": run,
        "marks": marks,
        "engine": engine,
        "before": before,
        "printed": sync.stdout + sync.stderr,
        "s3": s3,
        "buckets": (northwind.s3.bucket, southpaw.s3.bucket),
    }
    engine.dispose()


def test_a_school_file_never_changes_another_schools_users(marked_run):
    run, engine = marked_run["run"], marked_run["engine"]

    assert marked_run["exit_code"] == 0, marked_run["printed"][-3000:]
    assert run["status"] == "succeeded", run["status_reason"]
    assert (run["creates"], run["deletes"], run["deactivations"]) == (19, 0, 0)
    for table, rows in marked_run["before"].items():
        assert table_dump(engine, table, "southpaw") == rows, table
    with engine.connect() as conn:
        northwind_ids = [
            row[0]
            for row in conn.execute(
                sa.text("select external_id from users where school_id = 'northwind' order by 1")
            )
        ]
    assert "grace@northwind.edu" not in northwind_ids  # DELETE never creates
    assert northwind_ids[:2] == ["ada.lovelace@northwind.edu", "alan@northwind.edu"]
    # The reports went to northwind's own bucket only.
    northwind_bucket, southpaw_bucket = marked_run["buckets"]
    keys = [o["Key"] for o in marked_run["s3"].list_objects_v2(Bucket=northwind_bucket).get("Contents", [])]
    assert any(key.startswith(f"sisbridge-reports/{run['run_id'].replace(':', '_')}") for key in keys), keys
    assert marked_run["s3"].list_objects_v2(Bucket=southpaw_bucket).get("KeyCount", 0) == 0


def test_secrets_appear_in_nothing_the_run_wrote(marked_run):
    marks = marked_run["marks"]
    files = written_files(sisbridge_home(), Path(os.environ["AIRFLOW_HOME"]))
    assert any(path.name == "findings.csv" for path in files)

    leaks = []
    for path in files:
        content = path.read_bytes()
        leaks += [(what, str(path)) for what, mark in marks.items() if mark.encode() in content]
    text = warehouse_text("northwind")
    assert "ada.lovelace@northwind.edu" in text  # the scan reads the run's tables
    leaks += [(what, "the school's lake tables") for what, mark in marks.items() if mark in text]
    text = store_text(marked_run["engine"])
    leaks += [(what, "user store tables") for what, mark in marks.items() if mark in text]
    s3 = marked_run["s3"]
    for bucket in marked_run["buckets"]:
        for obj in s3.list_objects_v2(Bucket=bucket).get("Contents", []):
            body = s3.get_object(Bucket=bucket, Key=obj["Key"])["Body"].read()
            leaks += [
                (what, f"s3://{bucket}/{obj['Key']}") for what, mark in marks.items() if mark.encode() in body
            ]
    leaks += [(what, "the run's output") for what, mark in marks.items() if mark in marked_run["printed"]]
    assert leaks == []
