"""Embedded demo: a local S3 endpoint (moto's server), a SQLite user store and generated rosters."""

from __future__ import annotations

import csv
import io
import os
import random
import subprocess
import sys
from collections.abc import Generator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from sisbridge.config import SchoolConfig

FIRST_NAMES = (
    "Ada",
    "Grace",
    "Alan",
    "Katherine",
    "Linus",
    "Margaret",
    "Edsger",
    "Barbara",
    "Dennis",
    "Frances",
    "Ken",
    "Radia",
    "Tim",
    "Hedy",
    "John",
    "Shafi",
    "Whitfield",
    "Adele",
    "Niklaus",
    "Sophie",
    "José",
    "Zoë",
    "Łukasz",
    "Søren",
    "Chloé",
)
LAST_NAMES = (
    "Lovelace",
    "Hopper",
    "Turing",
    "Johnson",
    "Torvalds",
    "Hamilton",
    "Dijkstra",
    "Liskov",
    "Ritchie",
    "Allen",
    "Thompson",
    "Perlman",
    "Berners-Lee",
    "Lamarr",
    "McCarthy",
    "Goldwasser",
    "Diffie",
    "Goldberg",
    "Wirth",
    "Wilson",
    "Núñez",
    "O'Brien",
    "Smith, Jr.",
    "van Rossum",
)
STAKEHOLDERS = ("Undergraduate", "Undergraduate", "Undergraduate", "Graduate", "Alumni")
AFFINITIES = ("Women in Tech", "First Generation", "Veterans", "LGBTQ+", "International Students")
COLLEGES = ("Arts & Sciences", "Engineering", "Business", "Health Sciences")


@dataclass(frozen=True)
class DemoUser:
    number: int
    first_name: str
    last_name: str
    email: str
    graduation: str
    stakeholder: str
    program: str
    affinity: str
    opt_out: str = ""
    delete: str = ""


def demo_users(school: SchoolConfig, count: int, seed: int = 7) -> list[DemoUser]:
    """A deterministic roster of `count` students for a demo school."""
    rng = random.Random(f"{school.school_id}-{seed}")
    programs = sorted(next((c.values or {} for c in school.communities if c.column == "PROGRAM"), {}))
    domain = f"{school.school_id}.example.edu"
    users = []
    for number in range(1, count + 1):
        first, last = rng.choice(FIRST_NAMES), rng.choice(LAST_NAMES)
        year = rng.randint(2020, 2030)
        graduation = rng.choice((str(year), f"{year}-05-15", f"{year}-12-20", f"05/30/{year}"))
        users.append(
            DemoUser(
                number=100000 + number,
                first_name=first,
                last_name=last,
                email=f"{first[0].lower()}{number:05d}@{domain}",
                graduation=graduation,
                stakeholder=rng.choice(STAKEHOLDERS),
                program=";".join(rng.sample(programs, k=rng.choice((1, 1, 2)))) if programs else "",
                affinity=rng.choice(("", "", *AFFINITIES)),
            )
        )
    return users


def roster_csv(school: SchoolConfig, users: list[DemoUser], *, bad_rows: bool = True) -> bytes:
    """Write a roster the way the school's SIS exports it (its own header names), with a few bad rows."""
    if school.identifier == "user_id":
        header = [
            "Student Number",
            "First Name",
            "Last Name",
            "EMAIL",
            "Class Of",
            "STAKEHOLDERS",
            "PROGRAM",
            "ACADEMIC_COLLEGE",
            "EMAIL_OPT_OUT",
            "DELETE",
        ]
    else:
        header = [
            "FIRST_NAME",
            "LAST_NAME",
            "EMAIL",
            "GRADUATION",
            "STAKEHOLDERS",
            "PROGRAM",
            "AFFINITY",
            "EMAIL_OPT_OUT",
            "DELETE",
        ]
    rows = []
    for user in users:
        if school.identifier == "user_id":
            rows.append(
                [
                    str(user.number),
                    user.first_name,
                    user.last_name,
                    user.email,
                    user.graduation,
                    user.stakeholder,
                    user.program,
                    COLLEGES[user.number % len(COLLEGES)],
                    user.opt_out,
                    user.delete,
                ]
            )
        else:
            rows.append(
                [
                    user.first_name,
                    user.last_name,
                    user.email,
                    user.graduation,
                    user.stakeholder,
                    user.program,
                    user.affinity,
                    user.opt_out,
                    user.delete,
                ]
            )
    if bad_rows:
        # What real exports contain: a blank email, a malformed email and a nameless record.
        blank_email = ["Noemail", "Student", "", "2027", "Undergraduate", "", "", "", ""]
        bad_email = ["Bad", "Address", "bad.address@@example", "2027", "Undergraduate", "", "", "", ""]
        no_name = [
            "",
            "Nameless",
            f"nameless@{school.school_id}.example.edu",
            "2027",
            "Graduate",
            "",
            "",
            "",
            "",
        ]
        for index, row in enumerate((blank_email, bad_email, no_name)):
            if school.identifier == "user_id":
                row = [str(900001 + index), row[0], row[1], row[2], row[3], row[4], "", "", "", ""]
            rows.insert(10 * (index + 1), row)
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\r\n")
    writer.writerow(header)
    writer.writerows(rows)
    return buffer.getvalue().encode("utf-8")


def second_week(users: list[DemoUser]) -> tuple[list[DemoUser], dict[str, int]]:
    """Next week's roster: a few leave, a few join, some change, one asks to be deleted, one opts out."""
    kept = [u for u in users if u.number % 40 != 0]  # 2.5% leave: under the 10% removal threshold
    changed = []
    expected = {"left": len(users) - len(kept), "renamed": 0, "opted_out": 0, "deleted": 0}
    for user in kept:
        if user.number % 25 == 1:
            user = DemoUser(**{**user.__dict__, "last_name": user.last_name + "-Okafor"})
            expected["renamed"] += 1
        elif user.number % 33 == 2:
            user = DemoUser(**{**user.__dict__, "opt_out": "Yes"})
            expected["opted_out"] += 1
        elif user.number == users[2].number:
            user = DemoUser(**{**user.__dict__, "delete": "TRUE"})
            expected["deleted"] += 1
        changed.append(user)
    newcomers = [
        DemoUser(**{**u.__dict__, "number": u.number + 50000, "email": u.email.replace("@", ".new@")})
        for u in users[:6]
    ]
    expected["joined"] = len(newcomers)
    return changed + newcomers, expected


@contextmanager
def local_s3() -> Generator[str, None, None]:
    """moto's S3 server on 127.0.0.1, on a free port; yields its endpoint URL."""
    import logging

    from moto.server import ThreadedMotoServer

    logging.getLogger("werkzeug").setLevel(logging.WARNING)  # one line per request is noise here
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    try:
        yield f"http://{host}:{port}"
    finally:
        server.stop()


def aws_connection_uri(endpoint_url: str) -> str:
    """An Airflow `aws` connection (JSON form) for a local S3 endpoint with demo credentials."""
    import json

    return json.dumps(
        {
            "conn_type": "aws",
            "login": "demo-access-key",
            "password": "demo-secret-key",
            "extra": {"endpoint_url": endpoint_url, "region_name": "us-east-1"},
        }
    )


def use_local_connections(schools: list[SchoolConfig], endpoint_url: str, store_uri: str) -> None:
    """Point every demo school's Airflow connection at the local endpoint, and the store at SQLite."""
    for school in schools:
        os.environ[f"AIRFLOW_CONN_{school.s3.aws_conn_id.upper()}"] = aws_connection_uri(endpoint_url)
    os.environ["AIRFLOW_CONN_UCONNECT_USER_STORE"] = store_uri


def s3_client(endpoint_url: str):
    import boto3

    return boto3.client(
        "s3",
        endpoint_url=endpoint_url,
        aws_access_key_id="demo-access-key",
        aws_secret_access_key="demo-secret-key",
        region_name="us-east-1",
    )


def create_bucket(s3, bucket: str, *, versioned: bool = True) -> None:
    s3.create_bucket(Bucket=bucket)
    if versioned:
        s3.put_bucket_versioning(Bucket=bucket, VersioningConfiguration={"Status": "Enabled"})


def upload(s3, school: SchoolConfig, body: bytes) -> None:
    s3.put_object(Bucket=school.s3.bucket, Key=school.s3.key, Body=body)


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
            rosters[school.school_id] = demo_users(school, rows)
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
