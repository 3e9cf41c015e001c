"""The Airflow UI as the platform team sees it, in Debian's headless Chromium.

Week 1 is synced with `sisbridge sync`. The real Airflow stack then starts on 127.0.0.1, and week 2,
which drops 30 of 80 students, is triggered through the REST API. The guard holds it, so the browser
logs in, sees the held run on the fleet page ("SIS syncs"), follows its link to the run's
approval page, approves, and then sees the run succeed in the DAG grid with
every task, the dbt model tasks included.

A new school, onboarded with `sisbridge onboard` (so in onboarding review), uploads its first file with
its own key. Its run asks "Enable auto sync for ... with this file?"; the reviewer sees a sample of the
changes and opens the report through its link, approves in the browser, and the school's users are
in the store. Its next file syncs with no review. Screenshots go to `test-artifacts/ui/`.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import urllib.request
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

import boto3
import lakes
import pytest

from sisbridge import locals3, sample_roster
from sisbridge.config import load_school
from sisbridge.localrun import ensure_dbt_manifest
from tests.e2e.store_rows import store_rows
from tests.ui.airflow_stack import ADMIN, make_stack
from tests.ui.browser import (
    TIMEOUT,
    chromium,
    click,
    page_text,
    type_into,
    until,
    wait_for_text,
    wait_for_url,
)

PROJECT_ROOT = Path(__file__).resolve().parents[2]
SCHOOLS = PROJECT_ROOT / "tests" / "data" / "schools"
ARTIFACTS = PROJECT_ROOT / "test-artifacts" / "ui"
DAG_ID = "sis_sync__northwind"
NEW_SCHOOL, NEW_SCHOOL_NAME = "eastbrook", "Eastbrook College"
NEW_DAG_ID = f"sis_sync__{NEW_SCHOOL}"
SISBRIDGE = Path(sys.executable).parent / "sisbridge"
# dbt models whose run and test tasks must show in the grid (short names: the grid never truncates them).
DBT_MODELS = ("stg_sis__roster", "users", "user_changes", "community_memberships", "graduation_years")

pytestmark = pytest.mark.e2e


@pytest.fixture(scope="module")
def stack(tmp_path_factory):
    """moto's S3 server, a SQLite store, week 1 synced, and the four Airflow components running."""
    ensure_dbt_manifest()
    base = tmp_path_factory.mktemp("airflow-ui")
    schools = base / "schools"
    shutil.copytree(SCHOOLS, schools)
    school = load_school(schools / "northwind.yaml")
    users = sample_roster.students(school, 80)
    with locals3.local_s3() as endpoint:
        s3 = locals3.s3_client(endpoint)
        locals3.create_bucket(s3, school.s3.bucket)
        extra = {
            "SISBRIDGE_HOME": str(base / "sisbridge"),
            "SISBRIDGE_SCHOOLS_DIR": str(schools),
            "SISBRIDGE_SENSOR_TIMEOUT_S": "3600",
            "AIRFLOW__CORE__DAGS_FOLDER": str(PROJECT_ROOT / "dags"),
            f"AIRFLOW_CONN_{school.s3.aws_conn_id.upper()}": locals3.aws_connection_uri(endpoint),
            # The sync reads the new school's bucket with the platform's credentials (as onboarded).
            f"AIRFLOW_CONN_SIS_S3_{NEW_SCHOOL.upper()}": locals3.aws_connection_uri(endpoint),
            "AIRFLOW_CONN_UCONNECT_USER_STORE": f"sqlite:///{base / 'userstore.db'}",
        }
        stack = make_stack(base / "airflow", extra)
        new_school = NewSchool(endpoint, onboard_new_school(stack.env, endpoint))
        locals3.upload(s3, school, sample_roster.roster_csv(school, users, bad_rows=False))
        # The worker's lake is shared with other test files that sync northwind: start it empty, as
        # the store is, so that week 1 is a first sync.
        lakes.wipe("northwind")
        lakes.wipe(NEW_SCHOOL)
        week1 = subprocess.run(
            [sys.executable, "-m", "sisbridge.cli", "sync", "--school", "northwind"],
            env=stack.env,
            capture_output=True,
            text=True,
            timeout=900,
        )
        assert week1.returncode == 0 and ": succeeded" in week1.stdout, week1.stdout + week1.stderr[-3000:]
        stack.start()
        try:
            stack.wait_until(
                lambda: stack.api("GET", f"dags/{DAG_ID}")[0] == 200, timeout=300, what="the DAG to be parsed"
            )
            locals3.upload(s3, school, sample_roster.roster_csv(school, users[:50], bad_rows=False))
            yield stack, base / "userstore.db", new_school
        finally:
            stack.stop()


@dataclass(frozen=True)
class NewSchool:
    """Where the school uploads (the S3 endpoint), with the key `sisbridge onboard` printed for it."""

    endpoint: str
    key: tuple[str, str]


def onboard_new_school(env: dict[str, str], endpoint: str) -> tuple[str, str]:
    """`sisbridge onboard` as the platform team runs it; returns the school's printed key."""
    result = subprocess.run(
        [str(SISBRIDGE), "onboard", NEW_SCHOOL, "--name", NEW_SCHOOL_NAME],
        env={**env, "AIRFLOW_CONN_SISBRIDGE_PLATFORM_AWS": locals3.aws_connection_uri(endpoint)},
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    printed = dict(line.split("=", 1) for line in result.stdout.splitlines() if line.startswith("AWS_"))
    return printed["AWS_ACCESS_KEY_ID"], printed["AWS_SECRET_ACCESS_KEY"]


@pytest.fixture(scope="module")
def browser():
    with chromium() as driver:
        yield driver
        # What the browser showed last: the first thing to look at when the test failed.
        screenshot(driver, "last.png")
        (ARTIFACTS / "last.txt").write_text(f"{driver.current_url}\n{page_text(driver)}\n", encoding="utf-8")


def grid_lines(driver) -> set[str]:
    """Every line the page shows while its scrollable panels (the grid's task list) scroll through.

    The panels are looked up by position on every step, never held, since the grid re-renders.
    """
    find_panels = (
        "return [...document.querySelectorAll('*')].filter(e => e.scrollHeight > e.clientHeight + 20 "
        "&& ['auto', 'scroll'].includes(getComputedStyle(e).overflowY))"
    )
    scroll = (
        f"const p = (() => {{ {find_panels} }})()[arguments[0]]; if (p) {{ p.scrollTop = arguments[1]; }}"
    )
    height = f"const p = (() => {{ {find_panels} }})()[arguments[0]]; return p ? p.scrollHeight : 0;"
    seen = set(page_text(driver).splitlines())
    for index in range(len(driver.execute_script(find_panels))):
        for top in range(0, driver.execute_script(height, index) + 400, 400):
            driver.execute_script(scroll, index, top)
            seen |= set(page_text(driver).splitlines())
        driver.execute_script(scroll, index, 0)
    return seen


def wait_for_lines(driver, wanted, *, scrolling: bool = False, timeout: float = TIMEOUT) -> set[str]:
    """Wait until the page shows each of `wanted` as a line of its own; return the lines seen."""
    from selenium.common.exceptions import TimeoutException

    seen: set[str] = set()

    def shown(d) -> bool:
        seen.clear()
        seen.update(grid_lines(d) if scrolling else page_text(d).splitlines())
        return set(wanted) <= seen

    try:
        until(driver, shown, "lines missing", timeout)
    except TimeoutException:
        raise AssertionError(f"never shown: {sorted(set(wanted) - seen)}") from None
    return seen


def screenshot(driver, name: str) -> Path:
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    path = ARTIFACTS / name
    driver.save_screenshot(str(path))
    return path


def _workload_paused(scheduler_log: Path, ti_id: str) -> bool:
    """Whether the LocalExecutor's supervisor logged the end of this task instance's paused attempt."""
    wanted = ti_id.replace("-", "")
    for line in scheduler_log.read_text(errors="replace").splitlines():
        if "Workload finished" in line and "final_state=awaiting_input" in line:
            workload = line.split("workload_id=", 1)[-1].split()[0]
            if workload.replace("-", "") == wanted:
                return True
    return False


def trigger(airflow, dag_id: str) -> str:
    """Unpause the DAG and start a run through the REST API; return its run id."""
    assert airflow.api("PATCH", f"dags/{dag_id}", {"is_paused": False})[0] == 200
    status, run = airflow.api("POST", f"dags/{dag_id}/dagRuns", {"logical_date": None, "conf": {}})
    assert status == 200, run
    return run["dag_run_id"]


def wait_for_review(airflow, dag_id: str, run_id: str) -> None:
    def awaiting_review():
        approve = airflow.api("GET", f"dags/{dag_id}/dagRuns/{run_id}/taskInstances/approve")[1]
        state = approve.get("state")
        assert state not in ("skipped", "failed", "success"), f"approve ended as {state} before review"
        # The executor must also have seen the paused attempt end. An answer given before that makes
        # Airflow resume the task, then read the attempt's end as an unexpected "success" of a queued
        # task and put it up for retry, which asks for a new answer (seen once in a clean-clone CI run;
        # a reviewer is never that fast).
        return state == "awaiting_input" and _workload_paused(airflow.log("scheduler"), approve["id"])

    airflow.wait_until(awaiting_review, timeout=1200, what="the run to wait in approve", every=5)


def wait_for_end(airflow, dag_id: str, run_id: str) -> str:
    def finished():
        state = airflow.api("GET", f"dags/{dag_id}/dagRuns/{run_id}")[1]["state"]
        return state if state in ("success", "failed") else None

    return airflow.wait_until(finished, timeout=900, what=f"run {run_id} to finish", every=5)


def log_in(browser, airflow) -> None:
    """Log in through Airflow's login page, unless the browser's session already is."""
    from selenium.webdriver.common.by import By

    browser.get(f"{airflow.url}/")
    # The UI sends an anonymous visitor to the login page from the browser, after the page loads.
    until(browser, lambda d: "/auth/login" in d.current_url or "Dags" in page_text(d), "no page")
    if "/auth/login" in browser.current_url:
        type_into(browser, By.NAME, "username", ADMIN)
        type_into(browser, By.NAME, "password", airflow.password)
        click(browser, By.CSS_SELECTOR, "button[type=submit]")
    wait_for_text(browser, "Dags")


def fleet_schools(airflow) -> dict[str, dict]:
    """The fleet page's JSON API, as the team's scripts call it."""
    request = urllib.request.Request(
        f"{airflow.url}/sisbridge/api/schools", headers={"Authorization": f"Bearer {airflow.token()}"}
    )
    with urllib.request.urlopen(request, timeout=60) as response:
        return {school["school_id"]: school for school in json.load(response)}


def approve_in_browser(browser, airflow, dag_id: str, run_id: str) -> None:
    """Click Approve on the approval page shown, and wait until Airflow has the answer."""
    from selenium.webdriver.common.by import By

    click(browser, By.XPATH, "//button[normalize-space()='Approve']")

    def answered(driver) -> bool:
        # The UI's confirmation is a toast that fades; on a slow page the answer's record is the proof.
        if "approve response successful" in page_text(driver):
            return True
        detail = airflow.api("GET", f"dags/{dag_id}/dagRuns/{run_id}/taskInstances/approve/-1/hitlDetails")[1]
        return bool(detail.get("response_received")) and detail.get("chosen_options") == ["Approve"]

    until(browser, answered, "the approval was never confirmed")


def store_users(store: Path, school_id: str) -> dict[str, int]:
    """The school's users in the store, counted by status."""
    users, _ = store_rows(f"sqlite:///{store}", school_id)
    return dict(Counter(user["status"] for user in users))


def test_platform_team_approves_a_held_run_and_sees_it_succeed(stack, browser):
    from selenium.common.exceptions import TimeoutException
    from selenium.webdriver.common.by import By

    airflow, store, _ = stack
    run_id = trigger(airflow, DAG_ID)
    wait_for_review(airflow, DAG_ID, run_id)
    log_in(browser, airflow)

    # The fleet page shows the run waiting for an answer, and links to its approval page.
    schools = fleet_schools(airflow)
    northwind = schools["northwind"]
    assert (northwind["mode"], northwind["awaiting_review"]) == ("auto", True)
    last_run = northwind["last_run"]
    assert (last_run["run_id"], last_run["status"], last_run["deactivations"]) == (run_id, "held", 30)
    assert schools["southpaw"]["last_run"] is None
    browser.get(f"{airflow.url}/sisbridge/")
    wait_for_text(browser, "Northwind University")
    screenshot(browser, "fleet.png")
    click(browser, By.LINK_TEXT, "awaiting review")
    wait_for_url(browser, f"/dags/{DAG_ID}/runs/")
    assert browser.current_url.endswith("/tasks/approve/required_actions"), browser.current_url
    for text in (
        "Approve the roster sync of Northwind University?",
        "Awaiting Input",
        "30 removals are 37.5% of 80 active users, over max_removed_pct = 10%",
        "Nothing has been pushed to the user store.",
    ):
        wait_for_text(browser, text)
    screenshot(browser, "approval.png")
    approve_in_browser(browser, airflow, DAG_ID, run_id)
    assert wait_for_end(airflow, DAG_ID, run_id) == "success"

    # The grid's toolbar renders after the page's first text, and on a loaded machine a click on it can
    # land before React has wired it (seen once: the button was there and the groups stayed shut). So
    # each try loads the page, clicks, and checks that the groups opened; a try that did not is
    # repeated from a fresh load.
    tasks = ("wait_for_file", "load_raw", "validate", "transform", "guard", "approve", "push", "finalize")

    def expanded() -> bool:
        browser.get(f"{airflow.url}/dags/{DAG_ID}/runs/{run_id}")
        wait_for_text(browser, "Task Instances")
        try:
            click(browser, By.CSS_SELECTOR, "button[aria-label='Expand all task groups']", timeout=120)
            wait_for_lines(browser, {"dbt_producer_watcher", "stg_sis__roster"}, timeout=120)
        except (TimeoutException, AssertionError):
            return False
        return True

    if not any(expanded() for _ in range(3)):
        pytest.fail("the grid never showed the transform group's tasks after 'Expand all task groups'")
    wait_for_lines(
        browser, {run_id, "Success", *tasks, "dbt_producer_watcher", "stg_sis__roster", "run", "test"}
    )
    screenshot(browser, "grid.png")
    # The grid renders only the rows in view: scroll its task list to see the marts' model tasks too.
    wait_for_lines(browser, DBT_MODELS, scrolling=True)

    # What the approval let through: exactly the 30 students missing from week 2 are now inactive.
    assert store_users(store, "northwind") == {"active": 50, "inactive": 30}
    assert os.path.getsize(ARTIFACTS / "grid.png") > 10_000


def test_a_new_schools_first_file_is_approved_in_the_ui_and_its_next_file_syncs_alone(stack, browser):
    from selenium.webdriver.common.by import By

    airflow, store, new_school = stack
    school = load_school(Path(airflow.env["SISBRIDGE_SCHOOLS_DIR"]) / f"{NEW_SCHOOL}.yaml")
    assert school.auto_sync is None  # as `sisbridge onboard` wrote it: in onboarding review
    users = sample_roster.students(school, 30, seed=11)
    # The school's IT team uploads with the key `sisbridge onboard` printed.
    access_key, secret = new_school.key
    school_s3 = boto3.client(
        "s3",
        endpoint_url=new_school.endpoint,
        aws_access_key_id=access_key,
        aws_secret_access_key=secret,
        region_name="us-east-1",
    )
    school_s3.put_object(
        Bucket=school.s3.bucket,
        Key=school.s3.key,
        Body=sample_roster.roster_csv(school, users, bad_rows=False),
    )

    run_id = trigger(airflow, NEW_DAG_ID)
    wait_for_review(airflow, NEW_DAG_ID, run_id)
    log_in(browser, airflow)

    new_school = fleet_schools(airflow)[NEW_SCHOOL]
    assert (new_school["mode"], new_school["awaiting_review"]) == ("review", True)
    assert (new_school["last_run"]["status"], new_school["last_run"]["creates"]) == ("held", 30)

    # From the fleet page, the school's row links to its approval page.
    browser.get(f"{airflow.url}/sisbridge/")
    wait_for_text(browser, NEW_SCHOOL_NAME)
    click(
        browser, By.XPATH, f"//tr[contains(., '{NEW_SCHOOL_NAME}')]//a[normalize-space()='awaiting review']"
    )
    wait_for_url(browser, f"/dags/{NEW_DAG_ID}/runs/")
    for text in (
        f"Enable auto sync for {NEW_SCHOOL_NAME} with this file?",
        "is in onboarding review",
        "Nothing has been pushed to the user store.",
        "Creates: 20 of 30",
        users[0].email,
        "Approve pushes exactly this change set and turns auto sync on",
    ):
        wait_for_text(browser, text)
    screenshot(browser, "onboarding-approval.png")
    # The file's values show as text: the sample's emails are not turned into mail links.
    sample_cell = browser.find_element(By.XPATH, f"//td[normalize-space()='{users[0].email}']")
    assert sample_cell.find_elements(By.TAG_NAME, "code") and not sample_cell.find_elements(By.TAG_NAME, "a")
    assert not browser.find_elements(By.CSS_SELECTOR, "a[href^='mailto:']")
    links = {
        link.text: link.get_attribute("href")
        for link in browser.find_elements(By.CSS_SELECTOR, "a[href*='/sisbridge/schools/']")
    }
    reports = f"{airflow.url}/sisbridge/schools/{NEW_SCHOOL}/runs/"
    assert {"summary.json", "findings.csv", "changes.csv"} <= set(links), links
    assert all(href.startswith(reports) for href in links.values()), links
    approve_in_browser(browser, airflow, NEW_DAG_ID, run_id)
    assert wait_for_end(airflow, NEW_DAG_ID, run_id) == "success"

    # The link the reviewer had opens the run's report in the browser (served by the fleet page).
    browser.get(links["summary.json"])
    wait_for_text(browser, f'"run_id": "{run_id}"')
    assert store_users(store, NEW_SCHOOL) == {"active": 30}
    assert fleet_schools(airflow)[NEW_SCHOOL]["mode"] == "auto"

    # The school's next file (two more students) syncs with nobody asked.
    school_s3.put_object(
        Bucket=school.s3.bucket,
        Key=school.s3.key,
        Body=sample_roster.roster_csv(
            school, users + sample_roster.students(school, 32, seed=11)[30:], bad_rows=False
        ),
    )
    next_run = trigger(airflow, NEW_DAG_ID)
    assert wait_for_end(airflow, NEW_DAG_ID, next_run) == "success"
    approve = airflow.api("GET", f"dags/{NEW_DAG_ID}/dagRuns/{next_run}/taskInstances/approve")[1]
    assert approve["state"] == "skipped"
    assert store_users(store, NEW_SCHOOL) == {"active": 32}
