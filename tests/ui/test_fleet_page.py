"""The fleet page ("SIS syncs") on a real Airflow api-server: its JSON API, its login, and in Chromium.

Five schools (tests/data/fleet_schools/): one whose runs succeeded, one held for a reviewer, one in
onboarding review whose file was rejected, one paused (`auto_sync: false`) whose run failed, and one
without a run yet, whose DAG is paused in Airflow.
To keep CI time low their runs are not produced by running four DAGs: the test writes each run's
audit row with `sisbridge.audit` (in a transaction, as the pipeline's stages do), which publishes it to
the fleet view on the test's lake, and writes and uploads the rejected run's reports with
`sisbridge.reports` to the school's bucket (moto). The DAG runs that write these rows are tested in
tests/e2e and tests/ui/test_airflow_ui.py. Only the api-server runs: the page needs no scheduler.
Screenshots go to `test-artifacts/fleet/`.
"""

from __future__ import annotations

import http.client
import json
import os
import subprocess
import sys
from datetime import datetime
from pathlib import Path
from urllib.parse import urlsplit

import lakes
import pytest

from sisbridge import audit, locals3, reports, warehouse
from sisbridge.config import load_school
from tests.ui.airflow_stack import ADMIN, make_stack
from tests.ui.browser import chromium, click, page_text, type_into, until
from tests.ui.fleet_auth import READER

PROJECT_ROOT = Path(__file__).resolve().parents[2]
SCHOOLS = PROJECT_ROOT / "tests" / "data" / "fleet_schools"
ARTIFACTS = PROJECT_ROOT / "test-artifacts" / "fleet"
SCHOOL_IDS = ("fleet_failed", "fleet_held", "fleet_new", "fleet_ok", "fleet_rejected")
# Scheduled runs of different schools share their run id (Airflow names them by date).
WEEK1, WEEK2, WEEK3 = (f"scheduled__2026-11-{day}T23:00:00+00:00" for day in (14, 21, 28))
HELD_REASON = "30 removals are 37.5% of 80 active users, over max_removed_pct = 10%"
REJECTED_REASON = "12 of 40 rows rejected (30.0%), over max_rejected_pct = 5%"
FAILED_REASON = "push: the user store did not answer"
READER_SCHOOLS = ("fleet_held", "fleet_ok")
READER_PASSWORD = "reader-password-for-the-test"
COUNTS = ("creates", "updates", "reactivations", "deactivations", "deletes", "opt_outs")

pytestmark = pytest.mark.e2e


def _run(school_id: str, run_id: str, day: int, status: str, reason: str | None = None, **counts) -> None:
    """One run's audit row, as its stages leave it: started, then its final status and counts."""
    started = datetime(2026, 11, day, 23, 0, 5)
    with audit.warehouse(school_id) as con:
        with audit.transaction(con, run_id=run_id):
            audit.upsert_run(con, run_id, school_id=school_id, status="running", started_at=started)
        with audit.transaction(con, run_id=run_id):
            fields = {"rows_in_file": 0, "rows_rejected": 0, **dict.fromkeys(COUNTS, 0), **counts}
            audit.upsert_run(
                con,
                run_id,
                status=status,
                status_reason=reason,
                finished_at=started.replace(minute=4),
                **fields,
            )


def _runs() -> None:
    _run("fleet_ok", WEEK1, 14, "succeeded", rows_in_file=80, creates=80)
    _run("fleet_ok", WEEK2, 21, "succeeded", rows_in_file=85, creates=5, updates=2)
    _run("fleet_ok", WEEK3, 28, "succeeded", rows_in_file=87, rows_rejected=2, creates=2, deactivations=3)
    _run("fleet_held", WEEK1, 14, "succeeded", rows_in_file=80, creates=80)
    _run("fleet_held", WEEK2, 21, "held", HELD_REASON, rows_in_file=50, deactivations=30)
    _run("fleet_rejected", WEEK3, 28, "rejected", REJECTED_REASON, rows_in_file=40, rows_rejected=12)
    _run("fleet_failed", WEEK3, 28, "failed", FAILED_REASON, rows_in_file=60)


def _upload_reports(s3, base: Path) -> None:
    """The rejected run's reports (summary.json, findings.csv and a Data Docs page) in its bucket."""
    school = load_school(SCHOOLS / "fleet_rejected.yaml")
    out_dir = base / "reports" / "fleet_rejected"
    (out_dir / "data_docs").mkdir(parents=True)
    (out_dir / "data_docs" / "index.html").write_text("<h1>Data Docs of Redfield College</h1>\n")
    with audit.warehouse("fleet_rejected") as con:
        paths = reports.write_reports(con, school, WEEK3, out_dir)
    locals3.create_bucket(s3, school.s3.bucket)
    # As the run's tasks do: `finalize` uploads the reports, `validate` the Data Docs.
    reports.upload_reports(paths, s3, school.s3.bucket, WEEK3, base=out_dir)
    reports.upload_reports(reports.data_docs_files(out_dir), s3, school.s3.bucket, WEEK3, base=out_dir)


@pytest.fixture(scope="module")
def fleet(tmp_path_factory):
    """The schools' runs on the test's lake, their reports in moto, and Airflow's api-server."""
    base = tmp_path_factory.mktemp("fleet-page")
    for school_id in (*SCHOOL_IDS, warehouse.FLEET):
        lakes.wipe(school_id)
    _runs()
    with locals3.local_s3() as endpoint:
        _upload_reports(locals3.s3_client(endpoint), base)
        extra = {
            "SISBRIDGE_HOME": str(base / "sisbridge"),
            "SISBRIDGE_SCHOOLS_DIR": str(SCHOOLS),
            "AIRFLOW__CORE__DAGS_FOLDER": str(PROJECT_ROOT / "dags"),
            "AIRFLOW__CORE__DAGS_ARE_PAUSED_AT_CREATION": "False",
            "AIRFLOW_CONN_FLEET_S3": locals3.aws_connection_uri(endpoint),
            # The test's lake (tests/airflow_env.py): the fleet view the runs were published to.
            **{key: value for key, value in os.environ.items() if key.startswith("AIRFLOW_CONN_")},
        }
        stack = make_stack(base / "airflow", extra)
        # A second user, who may read two schools' DAGs only (tests/ui/fleet_auth.py).
        stack.env.update(
            {
                "AIRFLOW__CORE__AUTH_MANAGER": "tests.ui.fleet_auth.ReaderRestrictedAuthManager",
                "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_USERS": f"{ADMIN}:admin,{READER}:viewer",
                "SISBRIDGE_TEST_READER_DAGS": ",".join(f"sis_sync__{school}" for school in READER_SCHOOLS),
                "PYTHONPATH": os.pathsep.join(
                    filter(None, [str(PROJECT_ROOT), os.environ.get("PYTHONPATH")])
                ),
            }
        )
        passwords = Path(stack.env["AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_PASSWORDS_FILE"])
        passwords.write_text(json.dumps({ADMIN: stack.password, READER: READER_PASSWORD}))
        stack.start(components=("api-server",))
        try:
            # The schools' DAGs in Airflow's database (parsed once, no dag-processor), one paused.
            for command in (["dags", "reserialize"], ["dags", "pause", "sis_sync__fleet_new"]):
                done = subprocess.run(
                    [sys.executable, "-m", "airflow", *command],
                    env=stack.env,
                    capture_output=True,
                    text=True,
                    timeout=600,
                )
                assert done.returncode == 0, done.stdout + done.stderr[-3000:]
            yield stack
        finally:
            stack.stop()
            for school_id in (*SCHOOL_IDS, warehouse.FLEET):
                lakes.wipe(school_id)


def _get(stack, path: str, token: str | None = None) -> tuple[int, dict[str, str], bytes]:
    """GET `path` exactly as written (no redirect followed, no dot segment resolved)."""
    host = urlsplit(stack.url)
    connection = http.client.HTTPConnection(host.hostname, host.port, timeout=60)
    headers = {} if token is None else {"Authorization": f"Bearer {token}"}
    try:
        connection.request("GET", path, headers=headers)
        response = connection.getresponse()
        return response.status, dict(response.getheaders()), response.read()
    finally:
        connection.close()


def _token(stack, username: str, password: str) -> str:
    body = json.dumps({"username": username, "password": password})
    host = urlsplit(stack.url)
    connection = http.client.HTTPConnection(host.hostname, host.port, timeout=60)
    try:
        connection.request("POST", "/auth/token", body, {"Content-Type": "application/json"})
        response = connection.getresponse()
        assert response.status in (200, 201), response.read()
        return json.loads(response.read())["access_token"]
    finally:
        connection.close()


def _run_json(run_id, status, reason, day, **counts) -> dict:
    started = datetime(2026, 11, day, 23, 0, 5)
    fields = {"rows_in_file": 0, "rows_rejected": 0, **dict.fromkeys(COUNTS, 0), **counts}
    return {
        "run_id": run_id,
        "status": status,
        "status_reason": reason,
        "started_at": started.isoformat(),
        "finished_at": started.replace(minute=4).isoformat(),
        "rows_in_file": fields["rows_in_file"],
        "rows_rejected": fields["rows_rejected"],
        **{name: fields[name] for name in COUNTS},
    }


def test_the_api_lists_every_school_to_a_logged_in_user_only(fleet):
    # Nobody logged in: the API refuses, the page sends the browser to Airflow's login.
    status, _, body = _get(fleet, "/sisbridge/api/schools")
    assert status == 401, body
    assert _get(fleet, "/sisbridge/api/schools/fleet_ok/runs")[0] == 401
    assert _get(fleet, "/sisbridge/api/schools", token="not-a-token")[0] == 403
    status, headers, _ = _get(fleet, "/sisbridge/")
    assert status == 303 and headers["location"].startswith("/auth/login?next=%2Fsisbridge%2F")
    assert _get(fleet, f"/sisbridge/schools/fleet_rejected/runs/{WEEK3}/reports/summary.json")[0] == 303

    token = fleet.token()
    status, _, body = _get(fleet, "/sisbridge/api/schools", token)
    assert status == 200, body
    assert json.loads(body) == [
        {
            "school_id": "fleet_failed",
            "name": "Fernbrook Institute <Main>",
            "mode": "paused",
            "awaiting_review": False,
            "last_run": _run_json(WEEK3, "failed", FAILED_REASON, 28, rows_in_file=60),
        },
        {
            "school_id": "fleet_held",
            "name": "Hollow Pines School",
            "mode": "auto",
            "awaiting_review": True,
            "last_run": _run_json(WEEK2, "held", HELD_REASON, 21, rows_in_file=50, deactivations=30),
        },
        {"school_id": "fleet_new", "name": "Newport Academy", "mode": "paused", "awaiting_review": False}
        | {"last_run": None},
        {
            "school_id": "fleet_ok",
            "name": "Oakridge Academy",
            "mode": "auto",
            "awaiting_review": False,
            "last_run": _run_json(
                WEEK3, "succeeded", None, 28, rows_in_file=87, rows_rejected=2, creates=2, deactivations=3
            ),
        },
        {
            "school_id": "fleet_rejected",
            "name": "Redfield College",
            "mode": "review",
            "awaiting_review": False,
            "last_run": _run_json(WEEK3, "rejected", REJECTED_REASON, 28, rows_in_file=40, rows_rejected=12),
        },
    ]

    status, _, body = _get(fleet, "/sisbridge/api/schools/fleet_ok/runs", token)
    assert status == 200, body
    assert json.loads(body) == [
        _run_json(WEEK3, "succeeded", None, 28, rows_in_file=87, rows_rejected=2, creates=2, deactivations=3),
        _run_json(WEEK2, "succeeded", None, 21, rows_in_file=85, creates=5, updates=2),
        _run_json(WEEK1, "succeeded", None, 14, rows_in_file=80, creates=80),
    ]
    assert json.loads(_get(fleet, "/sisbridge/api/schools/fleet_new/runs", token)[2]) == []
    assert _get(fleet, "/sisbridge/api/schools/nowhere/runs", token)[0] == 404

    # The reports, from the school's bucket; nothing outside the run's report folder.
    reports_of = f"/sisbridge/schools/fleet_rejected/runs/{WEEK3}/reports"
    status, headers, body = _get(fleet, f"{reports_of}/summary.json", token)
    assert status == 200, body
    summary = json.loads(body)
    assert (summary["school_id"], summary["status"], summary["status_reason"]) == (
        "fleet_rejected",
        "rejected",
        REJECTED_REASON,
    )
    assert headers["content-security-policy"] == "sandbox"
    status, _, body = _get(fleet, f"{reports_of}/data_docs/index.html", token)
    assert (status, body) == (200, b"<h1>Data Docs of Redfield College</h1>\n")
    for path in (
        f"{reports_of}/../../../fleet_ok/runs/{WEEK3}/reports/summary.json",
        f"{reports_of}/data_docs/../summary.json",
        f"{reports_of}/..%2Fsummary.json",
        f"{reports_of}/data_docs%2F..%2F..%2F{WEEK2}%2Fsummary.json",
        f"/sisbridge/schools/fleet_rejected/runs/..%2F{WEEK3}/reports/summary.json",
        f"{reports_of}/nothing.csv",
    ):
        assert _get(fleet, path, token)[0] == 404, path
    # Another school's run with the same run id has its own reports (here none).
    assert _get(fleet, f"/sisbridge/schools/fleet_ok/runs/{WEEK3}/reports/summary.json", token)[0] == 404

    # A user who may read only some schools' DAGs sees only those schools, their runs and reports.
    reader = _token(fleet, READER, READER_PASSWORD)
    status, _, body = _get(fleet, "/sisbridge/api/schools", reader)
    assert status == 200, body
    assert [school["school_id"] for school in json.loads(body)] == list(READER_SCHOOLS)
    assert len(json.loads(_get(fleet, "/sisbridge/api/schools/fleet_ok/runs", reader)[2])) == 3
    assert _get(fleet, "/sisbridge/api/schools/fleet_rejected/runs", reader)[0] == 404
    assert _get(fleet, f"{reports_of}/summary.json", reader)[0] == 404
    assert _get(fleet, "/sisbridge/schools/fleet_rejected", reader)[0] == 404

    # The page is in Airflow's navigation.
    status, plugins = fleet.api("GET", "plugins")
    assert status == 200
    (plugin,) = [plugin for plugin in plugins["plugins"] if plugin["name"] == "sisbridge"]
    assert [(view["name"], view["href"]) for view in plugin["external_views"]] == [
        ("SIS syncs", "/sisbridge/")
    ]


@pytest.fixture(scope="module")
def browser():
    with chromium() as driver:
        yield driver
        screenshot(driver, "last.png")


def screenshot(driver, name: str) -> Path:
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    path = ARTIFACTS / name
    driver.save_screenshot(str(path))
    return path


def _rows(driver) -> dict[str, dict]:
    """The table's rows by school (or run): their cells' text and their background colour."""
    from selenium.webdriver.common.by import By

    rows = {}
    for row in driver.find_elements(By.CSS_SELECTOR, "tbody tr"):
        key = row.get_attribute("data-school") or row.get_attribute("data-run")
        cells = [cell.text for cell in row.find_elements(By.TAG_NAME, "td")]
        colour = row.find_element(By.TAG_NAME, "td").value_of_css_property("background-color")
        rows[key] = {"cells": cells, "colour": colour}
    return rows


WHITE = ("rgba(0, 0, 0, 0)", "rgb(255, 255, 255)")


def test_the_platform_team_sees_every_school_in_the_browser(fleet, browser):
    from selenium.webdriver.common.by import By

    browser.get(f"{fleet.url}/sisbridge/")
    # Not logged in: Airflow's login page, which comes back to the fleet page afterwards.
    until(browser, lambda d: "/auth/login" in d.current_url, "the login page never showed")
    type_into(browser, By.NAME, "username", ADMIN)
    type_into(browser, By.NAME, "password", fleet.password)
    click(browser, By.CSS_SELECTOR, "button[type=submit]")
    until(browser, lambda d: "SIS syncs" in page_text(d), "the fleet page never showed after the login")
    if not browser.current_url.startswith(f"{fleet.url}/sisbridge/"):
        browser.get(f"{fleet.url}/sisbridge/")
        until(browser, lambda d: d.current_url.startswith(f"{fleet.url}/sisbridge/"), "no fleet page")

    rows = _rows(browser)
    assert list(rows) == list(SCHOOL_IDS)
    assert rows["fleet_ok"]["cells"] == [
        "Oakridge Academy",
        "auto",
        "2026-11-28 23:00 UTC",
        "succeeded",
        "",
        "87",
        "2 (2.3%)",
        "2",
        "0",
        "3",
        "0",
        "",
        "reports",
    ]
    assert rows["fleet_held"]["cells"][:7] == [
        "Hollow Pines School",
        "auto",
        "2026-11-21 23:00 UTC",
        "held",
        HELD_REASON,
        "50",
        "0 (0.0%)",
    ]
    assert rows["fleet_held"]["cells"][11] == "awaiting review"
    assert rows["fleet_rejected"]["cells"][1:7] == ["review", "2026-11-28 23:00 UTC", "rejected"] + [
        REJECTED_REASON,
        "40",
        "12 (30.0%)",
    ]
    assert rows["fleet_failed"]["cells"][:5] == [
        "Fernbrook Institute <Main>",  # escaped, shown as written
        "paused",
        "2026-11-28 23:00 UTC",
        "failed",
        FAILED_REASON,
    ]
    assert rows["fleet_new"]["cells"][:3] == ["Newport Academy", "paused", "no run yet"]
    # Failed, rejected and held rows stand out; the others do not.
    assert rows["fleet_ok"]["colour"] in WHITE and rows["fleet_new"]["colour"] in WHITE
    assert rows["fleet_failed"]["colour"] == rows["fleet_rejected"]["colour"] not in WHITE
    assert rows["fleet_held"]["colour"] not in (*WHITE, rows["fleet_failed"]["colour"])
    # The held run links to its approval page in Airflow.
    approval = browser.find_element(By.LINK_TEXT, "awaiting review").get_attribute("href")
    assert approval == (
        f"{fleet.url}/dags/sis_sync__fleet_held/runs/scheduled__2026-11-21T23%3A00%3A00%2B00%3A00"
        "/tasks/approve/required_actions"
    )
    screenshot(browser, "fleet.png")

    # The filter by status.
    click(browser, By.LINK_TEXT, "failed")
    until(
        browser, lambda d: list(_rows(d)) == ["fleet_failed"], "the filter never showed only the failed run"
    )
    screenshot(browser, "fleet-failed.png")
    click(browser, By.LINK_TEXT, "all")
    until(browser, lambda d: len(_rows(d)) == len(SCHOOL_IDS), "'all' never showed every school again")

    # The rejected run's reports, served from its school's bucket.
    browser.find_element(By.CSS_SELECTOR, "tr[data-school=fleet_rejected] a[href$='/reports']").click()
    until(browser, lambda d: "Reports of run" in page_text(d), "the reports page never showed")
    assert {link.text for link in browser.find_elements(By.CSS_SELECTOR, "li a")} == {
        "summary.json",
        "findings.csv",
        "data_docs/index.html",
    }
    click(browser, By.LINK_TEXT, "data_docs/index.html")
    until(browser, lambda d: "Data Docs of Redfield College" in page_text(d), "the Data Docs never showed")

    # A school's page: its runs, newest first, and the chart of active users and rejected rows.
    browser.get(f"{fleet.url}/sisbridge/")
    click(browser, By.LINK_TEXT, "Oakridge Academy")
    until(browser, lambda d: "Active users and rejected rows per run" in page_text(d), "no school page")
    assert list(_rows(browser)) == [WEEK3, WEEK2, WEEK1]
    titles = [
        element.get_attribute("textContent")
        for element in browser.find_elements(By.CSS_SELECTOR, "#runs-chart circle title")
    ]
    assert titles == [
        f"{WEEK1}: 80 active users",
        f"{WEEK2}: 85 active users",
        f"{WEEK3}: 84 active users",
        f"{WEEK1}: 0 rejected rows",
        f"{WEEK2}: 0 rejected rows",
        f"{WEEK3}: 2 rejected rows",
    ]
    assert browser.find_element(By.ID, "runs-chart").size["height"] > 100
    screenshot(browser, "school.png")

    # Airflow's navigation has the page: its plugin route shows it in a frame.
    browser.get(f"{fleet.url}/plugin/sis-syncs")
    frame = until(browser, lambda d: d.find_element(By.TAG_NAME, "iframe"), "no frame of the fleet page")
    assert frame.get_attribute("src") == f"{fleet.url}/sisbridge/"
    browser.switch_to.frame(frame)
    until(browser, lambda d: "Oakridge Academy" in page_text(d), "the framed page never showed the schools")
    browser.switch_to.default_content()
    screenshot(browser, "airflow-nav.png")
