"""Telling people about a run: held, rejected and failed runs and stale files reach the notifiers.

The school's notifiers are the `notifiers:` of its YAML; the platform's are the Airflow Variable
`sisbridge_platform_notifiers`, a JSON list in the same form, read when an event fires (never when the
DAGs are parsed). Each is an Airflow notifier (`airflow.sdk.BaseNotifier`); its templates get the task's
context plus `sisbridge_alert` (one line) and `sisbridge_event` (the fields of `RunEvent`).
"""

from __future__ import annotations

import html
import json
import logging
from dataclasses import asdict, dataclass

from airflow.providers.smtp.notifications.smtp import SmtpNotifier
from airflow.sdk import BaseNotifier

from sisbridge import audit
from sisbridge.config import NotifierSpec, SchoolConfig, dag_id, reports_dir, safe_component
from sisbridge.reports import REPORT_PREFIX

log = logging.getLogger(__name__)

PLATFORM_NOTIFIERS_VARIABLE = "sisbridge_platform_notifiers"
ALERT_CONTEXT_KEY, EVENT_CONTEXT_KEY = "sisbridge_alert", "sisbridge_event"
HELD, REJECTED, FAILED, STALE_FILE = "held", "rejected", "failed", "stale_file"
# A run ending in one of these statuses needs someone to act; the others (succeeded, dry_run,
# unchanged without a stale file, rolled_back) are the normal course of things.
_EVENT_OF_STATUS = {"held": HELD, "rejected": REJECTED, "rejected_by_reviewer": REJECTED, "failed": FAILED}


@dataclass(frozen=True)
class RunEvent:
    """What a notifier is told: which school and run, what happened, why, and where the report is."""

    kind: str  # held | rejected | failed | stale_file
    school_id: str
    school_name: str
    dag_id: str
    run_id: str
    status: str
    reason: str
    report_dir: str  # the report folder on the worker ($SISBRIDGE_HOME/reports/<school_id>/<run_id>)
    report_url: str  # the same files in the school's bucket
    message: str  # one line, for chat notifiers and the task log

    def as_context(self) -> dict:
        return asdict(self)


def run_event(
    school: SchoolConfig,
    run_id: str,
    status: str,
    reason: str | None,
    stale_file: str | None = None,
    message: str | None = None,
) -> RunEvent | None:
    """The event a run's outcome is worth telling someone about, or None when there is nothing to act on."""
    kind = STALE_FILE if stale_file else _EVENT_OF_STATUS.get(status)
    if kind is None:
        return None
    reason = stale_file or reason or "no reason was recorded"
    report_url = f"s3://{school.s3.bucket}/{REPORT_PREFIX}/{safe_component(run_id)}/"
    if message is None:
        message = (
            f"Stale file: {stale_file}"
            if kind == STALE_FILE
            else f"Run {run_id} of {school.name} ({school.school_id}) is {status}: {reason}. "
            f"Report: {report_url}"
        )
    return RunEvent(
        kind=kind,
        school_id=school.school_id,
        school_name=school.name,
        dag_id=dag_id(school.school_id),
        run_id=run_id,
        status=status,
        reason=reason,
        report_dir=str(reports_dir(school.school_id, run_id)),
        report_url=report_url,
        message=message,
    )


def platform_notifier_specs() -> list[NotifierSpec]:
    """The platform-wide notifiers, from the Airflow Variable (or `AIRFLOW_VAR_SISBRIDGE_PLATFORM_NOTIFIERS`).

    A bad value is logged, naming the variable, and skipped: it must not silence the school's notifiers.
    """
    from airflow.sdk import Variable

    try:
        raw = Variable.get(PLATFORM_NOTIFIERS_VARIABLE, default=None)
    except Exception as exc:  # no Variable backend reachable: the school's notifiers still run
        log.error("Cannot read the Airflow Variable %s: %s", PLATFORM_NOTIFIERS_VARIABLE, exc)
        return []
    if raw is None or not str(raw).strip():
        return []
    try:
        items = json.loads(raw)
        if not isinstance(items, list):
            raise ValueError("it must be a JSON list of {class, kwargs} objects")
        return [NotifierSpec.model_validate(item) for item in items]
    except ValueError as exc:  # json.JSONDecodeError and pydantic's ValidationError are ValueErrors
        log.error("The Airflow Variable %s is not a notifier list: %s", PLATFORM_NOTIFIERS_VARIABLE, exc)
        return []


def dispatch(school: SchoolConfig, event: RunEvent, context) -> int:
    """Call the school's notifiers, then the platform's, with the event; return how many succeeded.

    One broken notifier (a wrong password, a channel that is gone) is logged and does not stop the others.
    """
    log.warning("%s", event.message)
    specs = [("school", spec) for spec in school.notifiers]
    specs += [("platform", spec) for spec in platform_notifier_specs()]
    sent = 0
    for owner, spec in specs:
        event_context = {**context, ALERT_CONTEXT_KEY: event.message, EVENT_CONTEXT_KEY: event.as_context()}
        try:
            spec.build()(event_context)
            sent += 1
        except Exception:
            log.exception("The %s notifier %s failed for run %s", owner, spec.class_path, event.run_id)
    return sent


def _audit_row(school_id: str, run_id: str) -> dict | None:
    try:
        with audit.reading(school_id) as con:
            return audit.get_run(con, run_id)
    except Exception as exc:  # the warehouse may be what broke the run
        log.error("Cannot read the audit row of run %s of %s: %s", run_id, school_id, exc)
        return None


class RunEventNotifier(BaseNotifier):
    """Callback of `finalize`: tells the notifiers of a held, rejected or failed run, or of a stale file.

    As the failure callback (`failed=True`) the run counts as failed whatever its audit row says, since
    `finalize` itself did not finish.
    """

    def __init__(self, school: SchoolConfig, *, failed: bool = False):
        super().__init__()
        self.school = school
        self.failed = failed

    def notify(self, context) -> None:
        run_id = context["run_id"]
        row = _audit_row(self.school.school_id, run_id) or {}
        details = audit.run_details(row)
        status, reason = row.get("status"), row.get("status_reason")
        if self.failed and status != "failed":
            status = "failed"
            reason = f"the finalize task failed: {context.get('exception') or 'see the Airflow log'}"
        event = run_event(self.school, run_id, status, reason, stale_file=details.get("stale_file"))
        if event is not None:
            dispatch(self.school, event, context)


class ReviewRequestNotifier(BaseNotifier):
    """Notifier of the approval task: tells the school's and the platform's notifiers that a run waits."""

    def __init__(self, school: SchoolConfig):
        super().__init__()
        self.school = school

    def notify(self, context) -> None:
        run_id = context["run_id"]
        row = _audit_row(self.school.school_id, run_id) or {}
        message = f"Run {run_id} is waiting for a reviewer: {context['task'].subject}"
        event = run_event(self.school, run_id, HELD, row.get("status_reason"), message=message)
        dispatch(self.school, event, context)


_EMAIL_FIELDS = (
    ("School", "{school_name} ({school_id})"),
    ("Run", "{run_id} (DAG {dag_id})"),
    ("Status", "{status}"),
    ("Reason", "{reason}"),
    ("Report", "{report_url}"),
    ("Report on the worker", "{report_dir}"),
)


class EmailNotifier(SmtpNotifier):
    """An e-mail per event through Airflow's SMTP provider: the school, run, status, reason and report.

    Takes SmtpNotifier's arguments (`to`, `smtp_conn_id`, `from_email`, ...); `subject` and
    `html_content` default to sisbridge's own. Outside a sisbridge event it is a plain SmtpNotifier.
    """

    def notify(self, context) -> None:
        event = context.get(EVENT_CONTEXT_KEY)
        if event is not None:
            if self.subject is None:
                school = f"{event['school_name']} ({event['school_id']})"
                self.subject = f"[sisbridge] {school}: run {event['status']}"
            if self.html_content is None:
                self.html_content = email_html(event)
        super().notify(context)


def email_html(event: dict) -> str:
    """The body of the e-mail about one event: a sentence, then one line per field, HTML-escaped."""
    rows = "".join(
        f"<tr><th align='left'>{name}</th><td>{html.escape(template.format(**event))}</td></tr>"
        for name, template in _EMAIL_FIELDS
    )
    return f"<p>{html.escape(event['message'])}</p><table>{rows}</table>"
