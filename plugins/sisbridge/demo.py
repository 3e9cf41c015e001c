"""`sisbridge demo`: two demo schools' rosters in a local S3 endpoint, synced into a SQLite user store."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from sisbridge.config import SchoolConfig
from sisbridge.locals3 import aws_connection_uri, create_bucket, local_s3, s3_client, upload
from sisbridge.sample_roster import roster_csv, second_week, students


def use_local_connections(schools: list[SchoolConfig], endpoint_url: str, store_uri: str) -> None:
    """Point every demo school's Airflow connection at the local endpoint, and the store at SQLite."""
    for school in schools:
        os.environ[f"AIRFLOW_CONN_{school.s3.aws_conn_id.upper()}"] = aws_connection_uri(endpoint_url)
    os.environ["AIRFLOW_CONN_UCONNECT_USER_STORE"] = store_uri


def sync_quietly(school_id: str, log_path: Path) -> dict:
    """`sisbridge sync` in a child process whose Airflow, dbt and GX logs go to `log_path`."""
    from sisbridge import audit

    with log_path.open("a") as log:
        subprocess.run(
            [sys.executable, "-m", "sisbridge.cli", "sync", "--school", school_id],
            stdout=log,
            stderr=subprocess.STDOUT,
            check=False,
        )
    with audit.warehouse(school_id, read_only=True) as con:
        run_id = con.execute(
            "select run_id from audit.sync_runs order by started_at desc limit 1"
        ).fetchone()[0]
        return audit.get_run(con, run_id)


def run_demo(rows: int = 240) -> int:
    """Seed both demo schools in a local S3, sync them, then sync a second week for one of them."""
    from sisbridge.config import load_schools, reports_dir, schools_dir, sisbridge_home
    from sisbridge.localrun import format_summary, prepare_airflow

    schools = load_schools(schools_dir())
    home = sisbridge_home()
    home.mkdir(parents=True, exist_ok=True)
    store_path = home / "userstore.db"
    failed = False
    log_path = home / "logs" / "demo.log"
    log_path.parent.mkdir(parents=True, exist_ok=True)
    prepare_airflow()
    with local_s3() as endpoint_url:
        use_local_connections(schools, endpoint_url, f"sqlite:///{store_path}")
        s3 = s3_client(endpoint_url)
        rosters = {}
        print(f"Local S3 endpoint (moto): {endpoint_url}")
        for school in schools:
            create_bucket(s3, school.s3.bucket)
            rosters[school.school_id] = students(school, rows)
            upload(s3, school, roster_csv(school, rosters[school.school_id]))
            print(
                f"Uploaded week 1 for {school.school_id}: s3://{school.s3.bucket}/{school.s3.key} "
                f"({rows} students + 3 bad rows)"
            )
        for week in (1, 2):
            if week == 2:
                school = schools[0]
                users, expected = second_week(rosters[school.school_id])
                upload(s3, school, roster_csv(school, users))
                print(f"\nUploaded week 2 for {school.school_id}: {expected}")
            for school in schools if week == 1 else schools[:1]:
                print(f"\n== Week {week}: sisbridge sync --school {school.school_id}", flush=True)
                row = sync_quietly(school.school_id, log_path)
                print(format_summary(row))
                print(f"  report: {reports_dir(school.school_id, row['run_id'])}")
                failed = failed or row["status"] == "failed"
    print(
        "\nWhere things are:\n"
        f"  warehouse (embedded DuckLake, one per school): {home / 'lake' / 'schools'}\n"
        f"  user store (SQLite):                           {store_path}\n"
        f"  reports:                                       {home / 'reports'}\n"
        f"  the runs' full logs:                           {home / 'logs'}\n"
        f"  Airflow home and metadata DB:                  {home / 'airflow'}\n"
        "  query a school's warehouse: python -c \"from sisbridge.warehouse import connect; "
        "print(connect('<school>', read_only=True).sql('from audit.sync_runs'))\"\n"
        "\nOpen the same setup in the Airflow UI:\n"
        f"  AIRFLOW_HOME={home / 'airflow'} AIRFLOW__CORE__DAGS_FOLDER=$PWD/dags "
        "AIRFLOW__CORE__LOAD_EXAMPLES=False .venv/bin/airflow standalone\n"
        "  (start a local S3 endpoint with `.venv/bin/moto_server -H 127.0.0.1 -p 5000` and point\n"
        "   the schools' AIRFLOW_CONN_SIS_S3_* connections at it, as this demo did; see README.md)"
    )
    return 1 if failed else 0
