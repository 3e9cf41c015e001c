"""Who hears of a run: real DAG runs (`dag.test()`, moto's S3 server) e-mail a real SMTP server.

The school's notifier (its YAML) and the platform's (the Airflow Variable `sisbridge_platform_notifiers`,
here from `AIRFLOW_VAR_SISBRIDGE_PLATFORM_NOTIFIERS`) are sisbridge's `EmailNotifier`, on Airflow's SMTP
provider, sending to aiosmtpd on 127.0.0.1. Each mail must name the school, the run, the status, the
reason and where the report is, and the report must be there.
"""

from __future__ import annotations

import csv
import email
import email.policy
import html
import io
import json
import re
import socket
import threading

import pytest

from sisbridge import audit
from sisbridge.config import reports_dir, safe_component
from sisbridge.localrun import run_dag
from tests.e2e.store_rows import store_rows

pytestmark = pytest.mark.e2e

SCHOOL_YAML = """
school_id: quay
name: Quay University
s3: {bucket: uconnect-sis-quay, key: roster.csv, aws_conn_id: sis_s3_quay}
auto_sync: true
stale_after_runs: 1
notifiers:
  - {class: sisbridge.notify.EmailNotifier, kwargs: {to: registrar@quay.test, smtp_conn_id: smtp_sisbridge}}
"""
SCHOOL_TO, PLATFORM_TO = "registrar@quay.test", "data-platform@uconnect.test"
HEADER = ["FIRST_NAME", "LAST_NAME", "EMAIL"]
USERS = [[f"First{n}", f"Last{n}", f"u{n:02d}@quay.edu"] for n in range(1, 21)]


def roster(rows: list[list[str]], header: list[str] = HEADER) -> bytes:
    buffer = io.StringIO()
    csv.writer(buffer, lineterminator="\r\n").writerows([header, *rows])
    return buffer.getvalue().encode()


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class Inbox:
    """aiosmtpd's handler: keeps every message it accepts, with its envelope recipients."""

    def __init__(self):
        self.mails: list[tuple[list[str], email.message.EmailMessage]] = []
        self._lock = threading.Lock()

    async def handle_DATA(self, server, session, envelope):
        message = email.message_from_bytes(envelope.content, policy=email.policy.default)
        with self._lock:
            self.mails.append((list(envelope.rcpt_tos), message))
        return "250 Message accepted for delivery"

    def take(self) -> list[tuple[list[str], email.message.EmailMessage]]:
        with self._lock:
            mails, self.mails = self.mails, []
        return mails


@pytest.fixture
def inbox(tmp_path, monkeypatch):
    """An SMTP server on 127.0.0.1, the `smtp_sisbridge` connection to it, and the school `quay`."""
    from aiosmtpd.controller import Controller

    folder = tmp_path / "schools"
    folder.mkdir()
    (folder / "quay.yaml").write_text(SCHOOL_YAML, encoding="utf-8")
    monkeypatch.setenv("SISBRIDGE_SCHOOLS_DIR", str(folder))
    monkeypatch.setenv("SISBRIDGE_DBT_MODEL_TASKS", "false")
    handler = Inbox()
    controller = Controller(handler, hostname="127.0.0.1", port=free_port())
    controller.start()
    smtp = {"from_email": "sisbridge@uconnect.test", "disable_ssl": True, "disable_tls": True, "timeout": 10}
    connection = {"conn_type": "smtp", "host": "127.0.0.1", "port": controller.port, "extra": smtp}
    monkeypatch.setenv("AIRFLOW_CONN_SMTP_SISBRIDGE", json.dumps(connection))
    # A mail server that refuses connections: the platform's first notifier in one test.
    down = {**connection, "port": free_port()}
    monkeypatch.setenv("AIRFLOW_CONN_SMTP_DOWN", json.dumps(down))
    set_platform_notifiers(monkeypatch, "smtp_sisbridge")
    try:
        yield handler
    finally:
        controller.stop()


def set_platform_notifiers(monkeypatch, *conn_ids: str) -> None:
    specs = [
        {"class": "sisbridge.notify.EmailNotifier", "kwargs": {"to": PLATFORM_TO, "smtp_conn_id": conn_id}}
        for conn_id in conn_ids
    ]
    monkeypatch.setenv("AIRFLOW_VAR_SISBRIDGE_PLATFORM_NOTIFIERS", json.dumps(specs))


def mail_lines(message: email.message.EmailMessage) -> list[str]:
    """The mail's HTML body as the reader sees it: one line per paragraph or table row."""
    body = message.get_body(preferencelist=("html",)).get_content()
    text = re.sub(r"<[^>]+>", " ", re.sub(r"</(p|tr)>", "\n", body))
    return [" ".join(html.unescape(line).split()) for line in text.splitlines() if line.strip()]


def assert_told(inbox: Inbox, run: dict, status: str, reason: str, recipients=(SCHOOL_TO, PLATFORM_TO)):
    """Exactly one mail per recipient about this run, naming school, run, status, reason and report."""
    mails = inbox.take()
    assert sorted(to for rcpt, _ in mails for to in rcpt) == sorted(recipients)
    run_id = run["run_id"]
    report_url = f"s3://uconnect-sis-quay/sisbridge-reports/{safe_component(run_id)}/"
    for _, message in mails:
        assert message["Subject"] == f"[sisbridge] Quay University (quay): run {status}"
        assert message["From"] == "sisbridge@uconnect.test"
        assert mail_lines(message)[1:] == [
            "School Quay University (quay)",
            f"Run {run_id} (DAG sis_sync__quay)",
            f"Status {status}",
            f"Reason {reason}",
            f"Report {report_url}",
            f"Report on the worker {reports_dir('quay', run_id)}",
        ]
    return report_url


def report_is_there(s3, run_id: str) -> None:
    """The report the mail points at: on the worker and in the school's bucket."""
    assert (reports_dir("quay", run_id) / "summary.json").is_file()
    key = f"sisbridge-reports/{safe_component(run_id)}/summary.json"
    summary = json.loads(s3.get_object(Bucket="uconnect-sis-quay", Key=key)["Body"].read())
    assert summary["run_id"] == run_id


def test_a_rejected_file_and_then_a_stale_file_are_mailed_to_the_school_and_the_platform(
    inbox, school_env, monkeypatch
):
    _, s3 = school_env("quay")
    # The platform's first mail server is down: its failure must not stop the other notifiers.
    set_platform_notifiers(monkeypatch, "smtp_down", "smtp_sisbridge")
    no_email = roster(USERS, ["FIRST_NAME", "LAST_NAME"])
    s3.put_object(Bucket="uconnect-sis-quay", Key="roster.csv", Body=no_email)

    rejected = run_dag("quay")

    assert rejected["status"] == "rejected"
    assert "EMAIL" in rejected["status_reason"]
    assert_told(inbox, rejected, "rejected", rejected["status_reason"])
    report_is_there(s3, rejected["run_id"])

    # The same file again: nothing new (stale_after_runs: 1). The platform's setting is now broken
    # (not JSON), which is logged; the school still hears of it.
    monkeypatch.setenv("AIRFLOW_VAR_SISBRIDGE_PLATFORM_NOTIFIERS", "[not json")
    stale = run_dag("quay")

    assert stale["status"] == "unchanged"
    message = (
        "quay (Quay University): s3://uconnect-sis-quay/roster.csv has not changed for 1 runs "
        "(stale_after_runs = 1); ask the school for a new export"
    )
    assert_told(inbox, stale, "unchanged", message, recipients=(SCHOOL_TO,))
    report_is_there(s3, stale["run_id"])


def test_a_failed_run_and_a_held_run_are_mailed_and_a_good_run_is_not(
    inbox, school_env, store_url, monkeypatch, tmp_path
):
    _, s3 = school_env("quay")
    s3.put_object(Bucket="uconnect-sis-quay", Key="roster.csv", Body=roster(USERS))
    # A real fault: the store's database file is in a folder that does not exist (an unmounted volume).
    unreachable = tmp_path / "unmounted" / "userstore.db"
    monkeypatch.setenv("AIRFLOW_CONN_UCONNECT_USER_STORE", f"sqlite:///{unreachable}")

    failed = run_dag("quay")

    assert failed["status"] == "failed"
    assert "unable to open database file" in failed["status_reason"]
    assert_told(inbox, failed, "failed", failed["status_reason"])
    report_is_there(s3, failed["run_id"])

    monkeypatch.setenv("AIRFLOW_CONN_UCONNECT_USER_STORE", store_url)
    succeeded = run_dag("quay")

    assert (succeeded["status"], succeeded["creates"]) == ("succeeded", 20)
    assert inbox.take() == []

    # 15 of 20 students gone: over max_removed_pct, so `sisbridge sync` holds the run.
    s3.put_object(Bucket="uconnect-sis-quay", Key="roster.csv", Body=roster(USERS[:5]))
    before = store_rows(store_url, "quay")
    held = run_dag("quay")

    assert held["status"] == "held"
    assert held["status_reason"] == "15 removals are 75.0% of 20 active users, over max_removed_pct = 10%"
    assert_told(inbox, held, "held", held["status_reason"])
    report_is_there(s3, held["run_id"])
    assert store_rows(store_url, "quay") == before
    with audit.warehouse("quay", read_only=True) as con:
        statuses = con.execute("select status from audit.sync_runs order by started_at").fetchall()
    assert [status for (status,) in statuses] == ["failed", "succeeded", "held"]
