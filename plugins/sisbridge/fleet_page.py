"""The fleet page: every school's latest run, on Airflow's api-server at `/sisbridge` (DESIGN.md).

A FastAPI app that `sisbridge.airflow_plugin` mounts; Airflow's own login guards it. It reads the fleet
view (`sisbridge.fleet`), the schools' configs (`sisbridge.config`) and, from Airflow's metadata
database, which school DAGs are paused and which runs wait in their approval task. A user sees only
the schools whose DAG (`sis_sync__<school_id>`) the auth manager lets them read.

- `/sisbridge/` is the "SIS syncs" page, `/sisbridge/schools/<school_id>` a school's run history;
- `/sisbridge/api/schools` and `/sisbridge/api/schools/<school_id>/runs` are the JSON API;
- `/sisbridge/schools/<school_id>/runs/<run_id>/reports/<file>` serves a run's reports from the
  school's bucket (`sisbridge-reports/<run_id>/...`, through the school's S3 connection).
"""

from __future__ import annotations

import html
import mimetypes
from datetime import datetime
from typing import Annotated
from urllib.parse import quote, urlencode

from fastapi import Depends, FastAPI, HTTPException, Request
from fastapi.responses import HTMLResponse, JSONResponse, RedirectResponse, Response

from sisbridge import config

# Statuses the page makes stand out, and the ones a run waits in for a reviewer.
ALARMING = frozenset({"failed", "rejected", "held", "rejected_by_reviewer"})
WAITING = "held"
APPROVAL_TASK = "approve"
MOUNT = "/sisbridge"
# The headers of every page this app writes: nothing but itself, and never inside another site.
_PAGE_HEADERS = {
    "Content-Security-Policy": "default-src 'none'; style-src 'unsafe-inline'; img-src 'self' data:; "
    "frame-ancestors 'self'; form-action 'self'",
    "X-Content-Type-Options": "nosniff",
}
# A report (GX's Data Docs carry the school's own values) is shown sandboxed: no script of it runs as
# Airflow's origin.
_REPORT_HEADERS = {"Content-Security-Policy": "sandbox", "X-Content-Type-Options": "nosniff"}

app = FastAPI(title="sisbridge fleet", docs_url=None, redoc_url=None, openapi_url=None)


# --- who is asking -----------------------------------------------------------------------------------


class LoginRequired(Exception):
    """A page was asked for without a valid login: the browser is sent to Airflow's login."""


async def _user(request: Request):
    """The logged-in Airflow user (bearer token, else the UI's cookie), or HTTP 401/403."""
    from airflow.api_fastapi.core_api.security import get_user
    from fastapi.security import HTTPAuthorizationCredentials

    scheme, _, token = request.headers.get("authorization", "").partition(" ")
    bearer = None
    if scheme.lower() == "bearer" and token.strip():
        bearer = HTTPAuthorizationCredentials(scheme=scheme, credentials=token.strip())
    return await get_user(request, None, bearer)


async def page_user(request: Request):
    """The logged-in user of a page; without one, the browser goes to Airflow's login page."""
    try:
        return await _user(request)
    except HTTPException as exc:
        raise LoginRequired from exc


@app.exception_handler(LoginRequired)
async def _to_login(request: Request, exc: LoginRequired):
    from airflow.api_fastapi.app import get_auth_manager

    next_url = MOUNT + request.url.path.removeprefix(MOUNT)
    if request.url.query:
        next_url += "?" + request.url.query
    return RedirectResponse(get_auth_manager().get_url_login(next_url=next_url), status_code=303)


def readable_schools(user) -> list[config.SchoolConfig]:
    """The configured schools whose DAG the user may read, by school id."""
    from airflow.api_fastapi.app import get_auth_manager

    schools = config.load_schools()
    dag_ids = {config.dag_id(school.school_id) for school in schools}
    allowed = get_auth_manager().filter_authorized_dag_ids(dag_ids=dag_ids, user=user, method="GET")
    return [school for school in schools if config.dag_id(school.school_id) in allowed]


def _school(user, school_id: str) -> config.SchoolConfig:
    for school in readable_schools(user):
        if school.school_id == school_id:
            return school
    raise HTTPException(status_code=404, detail=f"no school {school_id!r}")


# --- what the page shows -------------------------------------------------------------------------------


def _airflow_state(dag_ids: list[str]) -> tuple[set[str], dict[str, dict]]:
    """The paused DAGs among `dag_ids`, and per DAG the run whose approval task awaits an answer."""
    from airflow.models.dag import DagModel
    from airflow.models.taskinstance import TaskInstance
    from airflow.utils.session import create_session
    from airflow.utils.state import TaskInstanceState
    from sqlalchemy import select

    with create_session() as session:
        paused = set(
            session.scalars(select(DagModel.dag_id).where(DagModel.dag_id.in_(dag_ids), DagModel.is_paused))
        )
        waiting = {}
        for dag_id, run_id, task_id, map_index in session.execute(
            select(TaskInstance.dag_id, TaskInstance.run_id, TaskInstance.task_id, TaskInstance.map_index)
            .where(
                TaskInstance.dag_id.in_(dag_ids),
                TaskInstance.state == TaskInstanceState.AWAITING_INPUT,
            )
            .order_by(TaskInstance.start_date)
        ):
            waiting[dag_id] = {"run_id": run_id, "task_id": task_id, "map_index": map_index}
    return paused, waiting


def _json_value(value):
    return value.isoformat() if isinstance(value, datetime) else value


def run_json(row: dict) -> dict:
    """A run as the API gives it: the fleet view's fields (DESIGN.md, "The fleet page") but the school."""
    from sisbridge import fleet

    return {name: _json_value(row.get(name)) for name in fleet.FIELDS if name != "school_id"}


def school_rows(schools: list[config.SchoolConfig]) -> list[dict]:
    """One row per school: the API's object, plus the approval page of a run waiting for an answer."""
    from sisbridge import fleet

    latest = {row["school_id"]: row for row in fleet.latest_runs()}
    approved = fleet.auto_sync_schools()
    paused, waiting = _airflow_state([config.dag_id(school.school_id) for school in schools])
    rows = []
    for school in schools:
        dag_id = config.dag_id(school.school_id)
        run = latest.get(school.school_id)
        approval = waiting.get(dag_id)
        if approval is None and run is not None and run["status"] == WAITING:
            approval = {"run_id": run["run_id"], "task_id": APPROVAL_TASK, "map_index": -1}
        rows.append(
            {
                "school_id": school.school_id,
                "name": school.name,
                "mode": "paused" if dag_id in paused else school.current_mode(school.school_id in approved),
                "awaiting_review": approval is not None,
                "last_run": None if run is None else run_json(run),
                "_run": run,
                "_approval": approval,
            }
        )
    return rows


def approval_url(school_id: str, approval: dict) -> str:
    """Airflow's page where a reviewer answers the run's approval task (human in the loop)."""
    path = (
        f"/dags/{quote(config.dag_id(school_id))}/runs/{quote(approval['run_id'], safe='')}"
        f"/tasks/{quote(approval['task_id'])}"
    )
    if approval.get("map_index", -1) not in (-1, None):
        path += f"/mapped/{approval['map_index']}"
    return path + "/required_actions"


# --- JSON API ------------------------------------------------------------------------------------------


ApiUser = Annotated[object, Depends(_user)]
PageUser = Annotated[object, Depends(page_user)]


@app.get("/api/schools")
def api_schools(user: ApiUser) -> JSONResponse:
    rows = school_rows(readable_schools(user))
    return JSONResponse([{k: v for k, v in row.items() if not k.startswith("_")} for row in rows])


@app.get("/api/schools/{school_id}/runs")
def api_runs(school_id: str, user: ApiUser) -> JSONResponse:
    from sisbridge import fleet

    school = _school(user, school_id)
    return JSONResponse([run_json(row) for row in fleet.runs(school.school_id)])


# --- reports -------------------------------------------------------------------------------------------


def report_key(run_id: str, path: str) -> str:
    """The object key of one report file of a run; a path that could climb out is refused (404)."""
    from sisbridge.reports import REPORT_PREFIX

    parts = path.split("/")
    if not path or "\\" in path or any(part in ("", ".", "..") for part in parts):
        raise HTTPException(status_code=404, detail="no such report")
    try:
        folder = config.safe_component(run_id)  # as sisbridge.reports.upload_reports names it
    except ValueError:
        raise HTTPException(status_code=404, detail="no such run") from None
    return f"{REPORT_PREFIX}/{folder}/{path}"


def _s3(school: config.SchoolConfig):
    from sisbridge.landing import s3_client

    return s3_client(school)


@app.get("/schools/{school_id}/runs/{run_id}/reports/{path:path}")
def report_file(school_id: str, run_id: str, path: str, user: PageUser) -> Response:
    from botocore.exceptions import ClientError

    school = _school(user, school_id)
    key = report_key(run_id, path)
    try:
        body = _s3(school).get_object(Bucket=school.s3.bucket, Key=key)["Body"].read()
    except ClientError as exc:
        if exc.response.get("Error", {}).get("Code") in ("NoSuchKey", "404", "NoSuchBucket"):
            raise HTTPException(status_code=404, detail="no such report") from None
        raise
    media_type = mimetypes.guess_type(path)[0] or "application/octet-stream"
    return Response(body, media_type=media_type, headers=_REPORT_HEADERS)


@app.get("/schools/{school_id}/runs/{run_id}/reports", response_class=HTMLResponse)
def report_index(school_id: str, run_id: str, user: PageUser) -> HTMLResponse:
    school = _school(user, school_id)
    prefix = report_key(run_id, "x")[:-1]
    client = _s3(school)
    keys = []
    for page in client.get_paginator("list_objects_v2").paginate(Bucket=school.s3.bucket, Prefix=prefix):
        keys.extend(item["Key"][len(prefix) :] for item in page.get("Contents", []))
    base = reports_path(school_id, run_id) + "/"
    wanted = ("summary.json", "findings.csv", "changes.csv", "data_docs/index.html")
    shown = [name for name in wanted if name in keys] + sorted(
        name for name in keys if name.startswith("data_docs/validations/") and name.endswith(".html")
    )
    items = "".join(f'<li><a href="{_e(base + quote(name))}">{_e(name)}</a></li>' for name in shown)
    body = (
        f"<h1>Reports of run {_e(run_id)}</h1><p>{_e(school.name)} "
        f'(<a href="{MOUNT}/schools/{_e(quote(school_id))}">run history</a>)</p>'
        + (f"<ul>{items}</ul>" if items else "<p>This run uploaded no reports.</p>")
    )
    return _page(f"Reports of {run_id}", body)


# --- HTML ----------------------------------------------------------------------------------------------


def _e(value) -> str:
    return html.escape("" if value is None else str(value), quote=True)


_CSS = """
body { font-family: system-ui, sans-serif; margin: 1.5rem; color: #1a1a1a; }
table { border-collapse: collapse; width: 100%; font-size: 0.9rem; }
th, td { border-bottom: 1px solid #ddd; padding: 0.35rem 0.5rem; text-align: left; vertical-align: top; }
th { background: #f3f3f3; }
td.n { text-align: right; font-variant-numeric: tabular-nums; }
tr.alarm td { background: #fdecea; }
tr.held td { background: #fff4e0; }
.status { font-weight: 600; }
.status-failed, .status-rejected, .status-rejected_by_reviewer { color: #b00020; }
.status-held { color: #a15c00; }
.status-succeeded { color: #1b5e20; }
nav a { margin-right: 0.6rem; }
nav a.on { font-weight: 700; text-decoration: none; color: #1a1a1a; }
.legend span { margin-right: 1rem; }
"""


def _page(title: str, body: str) -> HTMLResponse:
    document = (
        f'<!doctype html><html lang="en"><head><meta charset="utf-8"><title>{_e(title)}</title>'
        f"<style>{_CSS}</style></head><body>{body}</body></html>"
    )
    return HTMLResponse(document, headers=_PAGE_HEADERS)


def _when(value) -> str:
    if value is None:
        return ""
    return value.strftime("%Y-%m-%d %H:%M UTC") if isinstance(value, datetime) else str(value)


def _rejected(run: dict) -> str:
    total, rejected = run.get("rows_in_file"), run.get("rows_rejected")
    if not total or rejected is None:
        return "" if rejected is None else str(rejected)
    return f"{rejected} ({100 * rejected / total:.1f}%)"


def _row_class(status: str | None) -> str:
    if status == WAITING:
        return "held"
    return "alarm" if status in ALARMING else ""


def reports_path(school_id: str, run_id: str, name: str = "") -> str:
    """The path of one report of a run on the api-server, or of the run's list of reports."""
    path = f"{MOUNT}/schools/{quote(school_id, safe='')}/runs/{quote(run_id, safe='')}/reports"
    return path + (f"/{quote(name)}" if name else "")


def _reports_link(school_id: str, run_id: str) -> str:
    return f'<a href="{_e(reports_path(school_id, run_id))}">reports</a>'


def _count_cells(run: dict | None) -> str:
    run = run or {}
    values = [run.get("rows_in_file"), _rejected(run) if run else ""]
    values += [run.get(name) for name in ("creates", "updates", "deactivations", "deletes")]
    return "".join(f'<td class="n">{_e(value)}</td>' for value in values)


_COUNT_HEADERS = "<th>Rows</th><th>Rejected</th><th>Creates</th><th>Updates</th><th>Deactivations</th>"
_COUNT_HEADERS += "<th>Deletes</th>"


@app.get("/", response_class=HTMLResponse)
def fleet_page(user: PageUser, status: str | None = None) -> HTMLResponse:
    rows = school_rows(readable_schools(user))
    statuses = sorted({row["_run"]["status"] for row in rows if row["_run"]})
    shown = [row for row in rows if not status or (row["_run"] or {}).get("status") == status]
    links = [f'<a href="{MOUNT}/"' + (' class="on"' if not status else "") + ">all</a>"]
    for name in statuses:
        on = ' class="on"' if name == status else ""
        links.append(f'<a href="{MOUNT}/?{_e(urlencode({"status": name}))}"{on}>{_e(name)}</a>')
    lines = []
    for row in shown:
        run = row["_run"]
        school_id = row["school_id"]
        review = ""
        if row["_approval"] is not None:
            href = approval_url(school_id, row["_approval"])
            review = f'<a href="{_e(href)}" target="_top">awaiting review</a>'
        status_cell = ""
        if run:
            status_cell = f'<span class="status status-{_e(run["status"])}">{_e(run["status"])}</span>'
        lines.append(
            f'<tr class="{_row_class(run and run["status"])}" data-school="{_e(school_id)}">'
            f'<td><a href="{MOUNT}/schools/{_e(quote(school_id))}">{_e(row["name"])}</a></td>'
            f"<td>{_e(row['mode'])}</td>"
            f"<td>{_e(_when(run and run['started_at']) if run else 'no run yet')}</td>"
            f"<td>{status_cell}</td><td>{_e(run and run['status_reason'])}</td>"
            f"{_count_cells(run)}<td>{review}</td>"
            f"<td>{_reports_link(school_id, run['run_id']) if run else ''}</td></tr>"
        )
    body = (
        "<h1>SIS syncs</h1>"
        f"<nav>Status: {''.join(links)}</nav>"
        "<table><thead><tr><th>School</th><th>Mode</th><th>Last run</th><th>Status</th><th>Reason</th>"
        f"{_COUNT_HEADERS}<th>Review</th><th>Reports</th></tr></thead>"
        f"<tbody>{''.join(lines)}</tbody></table>" + ("" if shown else "<p>No school matches.</p>")
    )
    return _page("SIS syncs", body)


def active_users(runs_oldest_first: list[dict]) -> list[int]:
    """Active users after each run: the changes of the runs that applied theirs, added up.

    Only a `succeeded` run changed the store; every other run leaves the count where it was.
    """
    active, series = 0, []
    for run in runs_oldest_first:
        if run["status"] == "succeeded":
            active += (run.get("creates") or 0) + (run.get("reactivations") or 0)
            active -= (run.get("deactivations") or 0) + (run.get("deletes") or 0)
        series.append(active)
    return series


def chart(runs_oldest_first: list[dict], width: int = 720, height: int = 220) -> str:
    """An inline SVG line chart of active users and rejected rows per run."""
    if not runs_oldest_first:
        return ""
    series = {
        "active users": (active_users(runs_oldest_first), "#1565c0"),
        "rejected rows": ([run.get("rows_rejected") or 0 for run in runs_oldest_first], "#c62828"),
    }
    top = max(1, *(max(values) for values, _ in series.values()))
    left, bottom, pad = 56, 28, 12
    span_x = max(1, len(runs_oldest_first) - 1)

    def point(index: int, value: int) -> str:
        x = left + (width - left - pad) * (index / span_x if len(runs_oldest_first) > 1 else 0.5)
        y = pad + (height - pad - bottom) * (1 - value / top)
        return f"{x:.1f},{y:.1f}"

    parts = [
        f'<svg xmlns="http://www.w3.org/2000/svg" id="runs-chart" width="{width}" height="{height}" '
        f'role="img" aria-label="Active users and rejected rows per run">',
        f'<line x1="{left}" y1="{height - bottom}" x2="{width - pad}" y2="{height - bottom}" stroke="#999"/>',
        f'<line x1="{left}" y1="{pad}" x2="{left}" y2="{height - bottom}" stroke="#999"/>',
        f'<text x="{left - 6}" y="{pad + 4}" text-anchor="end" font-size="11">{top}</text>',
        f'<text x="{left - 6}" y="{height - bottom}" text-anchor="end" font-size="11">0</text>',
    ]
    for name, (values, colour) in series.items():
        points = " ".join(point(i, v) for i, v in enumerate(values))
        cls = name.replace(" ", "-")
        parts.append(
            f'<polyline class="{cls}" fill="none" stroke="{colour}" stroke-width="2" points="{points}"/>'
        )
        for i, value in enumerate(values):
            x, y = point(i, value).split(",")
            run_id = runs_oldest_first[i]["run_id"]
            parts.append(
                f'<circle class="{cls}" cx="{x}" cy="{y}" r="3" fill="{colour}">'
                f"<title>{_e(run_id)}: {value} {name}</title></circle>"
            )
    first, last = runs_oldest_first[0]["started_at"], runs_oldest_first[-1]["started_at"]
    parts.append(f'<text x="{left}" y="{height - 8}" font-size="11">{_e(_when(first))}</text>')
    parts.append(
        f'<text x="{width - pad}" y="{height - 8}" text-anchor="end" font-size="11">{_e(_when(last))}</text>'
    )
    parts.append("</svg>")
    legend = "".join(
        f'<span style="color:{colour}">&#9632; {name}</span>' for name, (_, colour) in series.items()
    )
    return "".join(parts) + f'<p class="legend">{legend}</p>'


@app.get("/schools/{school_id}", response_class=HTMLResponse)
def school_page(school_id: str, user: PageUser) -> HTMLResponse:
    from sisbridge import fleet

    school = _school(user, school_id)
    runs = fleet.runs(school.school_id)
    row = school_rows([school])[0]
    lines = []
    for run in runs:
        review = ""
        if row["_approval"] is not None and row["_approval"]["run_id"] == run["run_id"]:
            href = approval_url(school.school_id, row["_approval"])
            review = f'<a href="{_e(href)}" target="_top">awaiting review</a>'
        lines.append(
            f'<tr class="{_row_class(run["status"])}" data-run="{_e(run["run_id"])}">'
            f"<td>{_e(run['run_id'])}</td><td>{_e(_when(run['started_at']))}</td>"
            f"<td>{_e(_when(run['finished_at']))}</td>"
            f'<td><span class="status status-{_e(run["status"])}">{_e(run["status"])}</span></td>'
            f"<td>{_e(run['status_reason'])}</td>{_count_cells(run)}<td>{review}</td>"
            f"<td>{_reports_link(school.school_id, run['run_id'])}</td></tr>"
        )
    body = (
        f'<p><a href="{MOUNT}/">All schools</a></p>'
        f"<h1>{_e(school.name)}</h1><p>School id {_e(school.school_id)}, mode {_e(row['mode'])}, DAG "
        f"{_e(config.dag_id(school.school_id))}</p>"
        f"<h2>Active users and rejected rows per run</h2>{chart(list(reversed(runs)))}"
        "<h2>Runs</h2>"
        "<table><thead><tr><th>Run</th><th>Started</th><th>Finished</th><th>Status</th><th>Reason</th>"
        f"{_COUNT_HEADERS}<th>Review</th><th>Reports</th></tr></thead>"
        f"<tbody>{''.join(lines)}</tbody></table>" + ("" if runs else "<p>No run yet.</p>")
    )
    return _page(school.name, body)
