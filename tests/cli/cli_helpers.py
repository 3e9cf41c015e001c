"""The installed `sisbridge` command, run the way a user runs it: its plain shell, rosters and output.

Each test gets a plain shell: no `AIRFLOW_*` variable, a `HOME` that is an empty folder (it must still
be empty afterwards), and a fresh, empty working directory. S3 is moto's server over HTTP; the store
is a SQLite file.
"""

from __future__ import annotations

import csv
import io
import sqlite3
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path

from sisbridge import locals3

BIN = Path(sys.executable).parent
SISBRIDGE = BIN / "sisbridge"
PROJECT_ROOT = Path(__file__).resolve().parents[2]
HEADER = ["FIRST_NAME", "LAST_NAME", "EMAIL", "GRADUATION"]
STUDENTS = [[f"Student{n}", "Tester", f"s{n:02d}@example.edu", "2027"] for n in range(1, 21)]


def roster(header: list[str] = HEADER, rows: list[list[str]] = STUDENTS) -> bytes:
    buffer = io.StringIO()
    csv.writer(buffer, lineterminator="\r\n").writerows([header, *rows])
    return buffer.getvalue().encode()


def school_yaml(school_id: str, extra: str = "") -> str:
    bucket = "uconnect-sis-" + school_id.replace("_", "-")
    return (
        f"school_id: {school_id}\n"
        f"name: {school_id.title()} College\n"
        f"s3: {{bucket: {bucket}, key: roster.csv, aws_conn_id: sis_s3_{school_id}}}\n"
        "identifier: email\n"
        "auto_sync: true\n" + extra
    )


@dataclass
class Shell:
    """A plain shell: `run` starts the installed command with exactly `env`, in `cwd`."""

    root: Path
    home: Path
    cwd: Path
    schools: Path
    sisbridge_home: Path
    env: dict[str, str] = field(default_factory=dict)

    def run(self, *args: str, command: Path = SISBRIDGE, env: dict | None = None, timeout: float = 900):
        result = subprocess.run(
            [str(command), *args],
            cwd=self.cwd,
            env={**self.env, **(env or {})},
            capture_output=True,
            text=True,
            timeout=timeout,
        )
        return result

    def sync(self, school_id: str, *flags: str, env: dict | None = None):
        return self.run("sync", "--school", school_id, *flags, env=env)

    def write_school(self, school_id: str, extra: str = "") -> Path:
        path = self.schools / f"{school_id}.yaml"
        path.write_text(school_yaml(school_id, extra), encoding="utf-8")
        return path

    def store(self) -> Path:
        return self.root / "userstore.db"

    def store_uri(self) -> str:
        return f"sqlite:///{self.store()}"

    def store_users(self, school_id: str) -> list[str]:
        if not self.store().exists():
            return []
        with sqlite3.connect(self.store()) as con:
            rows = con.execute(
                "select external_id from users where school_id = ? and status = 'active' order by 1",
                [school_id],
            ).fetchall()
        return [row[0] for row in rows]

    def connection_env(self, school_id: str, endpoint_url: str) -> dict[str, str]:
        """The school's S3 connection and the store, as `AIRFLOW_CONN_*` variables (nothing else)."""
        return {
            f"AIRFLOW_CONN_SIS_S3_{school_id.upper()}": locals3.aws_connection_uri(endpoint_url),
            "AIRFLOW_CONN_UCONNECT_USER_STORE": self.store_uri(),
        }

    def assert_home_untouched(self) -> None:
        assert sorted(p.name for p in self.home.iterdir()) == []
        assert sorted(p.name for p in self.cwd.iterdir()) == []


def plain_env(home: Path, sisbridge_home: Path, schools: Path, tmp: Path) -> dict[str, str]:
    return {
        "PATH": "/usr/local/bin:/usr/bin:/bin",
        "LANG": "C.UTF-8",
        "HOME": str(home),
        "TMPDIR": str(tmp),
        "SISBRIDGE_HOME": str(sisbridge_home),
        "SISBRIDGE_SCHOOLS_DIR": str(schools),
    }


def upload(endpoint_url: str, school_id: str, body: bytes) -> None:
    """Create the school's versioned bucket when needed, and upload its roster."""
    s3 = locals3.s3_client(endpoint_url)
    bucket = "uconnect-sis-" + school_id.replace("_", "-")
    if bucket not in {b["Name"] for b in s3.list_buckets().get("Buckets", [])}:
        locals3.create_bucket(s3, bucket)
    s3.put_object(Bucket=bucket, Key="roster.csv", Body=body)


def summary(stdout: str) -> tuple[str, str, str]:
    """(school_id, run_id, status and reason) from the first line of `sisbridge sync`'s output."""
    head, _, rest = stdout.splitlines()[0].partition(": ")
    school_id, _, run_id = head.partition(" ")
    return school_id, run_id, rest


def counts(stdout: str) -> dict[str, int]:
    """The counts line of `sisbridge sync`'s summary, as a dict."""
    line = stdout.splitlines()[1].strip()
    return {key: int(value) for key, value in (pair.split("=") for pair in line.split(", "))}
