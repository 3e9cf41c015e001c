"""What a reviewer sees and decides in the Airflow UI: held runs, and a school's onboarding review.

A run waits in the DAG's `approve` task (Airflow's human-in-the-loop approval) in two cases:
- a school that syncs automatically crossed a mass-change threshold (`guards.HOLD`);
- a school in onboarding review (no `auto_sync` in its YAML, and no first file approved yet) has a
  change set (`guards.REVIEW`): "Enable auto sync for NAME with this file?". Approve pushes this run
  and turns auto sync on, recorded in the school's `audit.auto_sync_approvals`.

The request shows the counts, a sample of the changes (up to `SAMPLE_USERS` users of each kind, with
the fields that change) and links to the run's reports, which the fleet page serves from the school's
bucket. The approval task (`RosterApproval`) and what its answer means (`review_outcome`) live here
too: this module is where the DAG meets Airflow's human in the loop. Its XCom keys are in `xcom_keys`.
"""

from __future__ import annotations

import re
from collections import defaultdict

import duckdb
from airflow.providers.standard.operators.hitl import ApprovalOperator

from sisbridge import xcom_keys
from sisbridge.config import SchoolConfig
from sisbridge.guards import CHANGE_TYPE_COUNT, COUNT_KEYS, ChangeCounts

HOLD_KIND, ONBOARDING_KIND = "threshold", "onboarding"
SAMPLE_USERS = 20
REPORT_LINKS = ("summary.json", "findings.csv", "changes.csv")
_CHANGE_KINDS = {
    "create": "Creates",
    "update": "Updates",
    "reactivate": "Reactivations",
    "deactivate": "Deactivations",
    "delete": "Deletes",
    "opt_out": "Opt-outs",
}
_LIFECYCLE = {
    "reactivate": "status: inactive → active",
    "deactivate": "status: active → inactive",
    "delete": "removed from the store",
}
_MAX_VALUE = 60


def md_value(value) -> str:
    """A value from the school's file as Markdown: a code span, on one line, at most 60 characters.

    A code span shows its text as it is: no markup, no link. Escaping alone is not enough, because the
    UI's Markdown (GitHub's flavour) turns an email or a web address in plain text into a link.
    """
    if value is None or value == "":
        return "(empty)"
    text = " ".join(str(value).split())
    if len(text) > _MAX_VALUE:
        text = text[: _MAX_VALUE - 1] + "…"
    # In a table a pipe ends the cell, even inside a code span, unless it is escaped.
    text = text.replace("|", "\\|")
    fence = "`" * (max((len(run) for run in re.findall("`+", text)), default=0) + 1)
    pad = " " if text.startswith(("`", " ")) or text.endswith(("`", " ")) else ""
    return f"{fence}{pad}{text}{pad}{fence}"


def _describe(parts: list) -> str:
    """What changes for one user: (field, old, new), (field, value) and sentences of our own."""
    described = []
    for part in parts:
        if isinstance(part, str):
            described.append(part)
        elif len(part) == 3:
            described.append(f"{part[0]}: {md_value(part[1])} → {md_value(part[2])}")
        else:
            described.append(f"{part[0]}: {md_value(part[1])}")
    return "; ".join(described)


def change_sample(con: duckdb.DuckDBPyConnection, per_kind: int = SAMPLE_USERS) -> dict[str, list[tuple]]:
    """Up to `per_kind` users of each change kind in `marts.user_changes`, in file order.

    Returns {change_type: [(line_number, external_id, parts), ...]}; the parts are the fields that
    change, (field, old, new), or a new user's fields, (field, value), or a sentence.
    """
    from sisbridge.userstore.schema import SIS_FIELDS

    rows = con.execute(
        """
        with per_user as (
            select change_type, external_id, min(line_number) as line_number
            from marts.user_changes
            group by change_type, external_id
        ),
        picked as (
            select * from per_user
            qualify row_number() over (
                partition by change_type order by line_number nulls last, external_id
            ) <= ?
        )
        select p.change_type, p.external_id, p.line_number, c.field, c.old_value, c.new_value
        from picked as p
        join marts.user_changes as c on c.change_type = p.change_type and c.external_id = p.external_id
        order by p.change_type, p.line_number nulls last, p.external_id, c.field nulls first
        """,
        [per_kind],
    ).fetchall()
    fields: dict[tuple[str, str], list[tuple]] = defaultdict(list)
    lines: dict[tuple[str, str], int | None] = {}
    for change_type, external_id, line, field, old, new in rows:
        lines[(change_type, external_id)] = line
        if field is not None:
            fields[(change_type, external_id)].append((field, old, new))
    created = [external_id for change_type, external_id in lines if change_type == "create"]
    new_users = {}
    if created:
        columns = [name for name in SIS_FIELDS if name != "status"]
        cursor = con.execute(
            f"select external_id, {', '.join(columns)} from marts.users "
            "where external_id in (select unnest(?::varchar[]))",
            [created],
        )
        for external_id, *values in cursor.fetchall():
            new_users[external_id] = [
                (name, value) for name, value in zip(columns, values, strict=True) if value is not None
            ]
    sample: dict[str, list[tuple]] = defaultdict(list)
    for (change_type, external_id), line in lines.items():
        if change_type == "create":
            described = new_users.get(external_id, [])
        else:
            described = fields.get((change_type, external_id)) or [_LIFECYCLE.get(change_type, "")]
        sample[change_type].append((line, external_id, described))
    return dict(sample)


def reports_url(school_id: str, run_id: str, name: str = "") -> str:
    """The fleet page's link to one of a run's reports (or, without a name, to the list of them).

    Absolute when Airflow's `[api] base_url` is set, else from the api-server's root.
    """
    from airflow.configuration import conf

    from sisbridge.fleet_page import reports_path

    base = (conf.get("api", "base_url", fallback="") or "").rstrip("/")
    return base + reports_path(school_id, run_id, name)


def _sample_lines(counts: ChangeCounts, sample: dict[str, list[tuple]]) -> list[str]:
    lines = ["**Sample of the changes**"]
    for change_type, title in _CHANGE_KINDS.items():
        users = sample.get(change_type, [])
        if not users:
            continue
        total = getattr(counts, CHANGE_TYPE_COUNT[change_type])
        lines += [
            "",
            f"{title}: {len(users)} of {total}",
            "",
            "| line | user | what changes |",
            "|---|---|---|",
            *(
                f"| {'' if line is None else line} | {md_value(user)} | {_describe(parts)} |"
                for line, user, parts in users
            ),
        ]
    if len(lines) == 1:
        lines.append("No user changes.")
    return lines


def approval_request(
    school: SchoolConfig,
    run_id: str,
    counts: ChangeCounts,
    reasons,
    links: dict[str, str],
    *,
    kind: str = HOLD_KIND,
    sample: dict[str, list[tuple]] | None = None,
) -> dict:
    """The subject and Markdown body a reviewer sees in the Airflow UI.

    `links` maps a report's name to the URL the browser opens; `reasons` are the guard's.
    """
    timeout = f"{school.approval_timeout_hours:g} hours"
    if kind == ONBOARDING_KIND:
        subject = f"Enable auto sync for {school.name} with this file?"
        opening = [
            f"**{school.name}** (`{school.school_id}`) is in onboarding review. Run `{run_id}` read its "
            "file and built the change set below. Nothing has been pushed to the user store.",
        ]
        thresholds = list(reasons[1:])
        answer = (
            f"Approve pushes exactly this change set and turns auto sync on for {school.name}: its next "
            "runs sync without review (a school YAML's `auto_sync`, when set, still decides). Reject (or no "
            f"answer within {timeout}) pushes nothing; the school stays in onboarding review and the run "
            "ends as `rejected_by_reviewer`."
        )
    else:
        subject = f"Approve the roster sync of {school.name}? ({len(reasons)} threshold(s) crossed)"
        opening = [
            f"The weekly roster sync of **{school.name}** (`{school.school_id}`), run `{run_id}`, crossed "
            "the mass-change thresholds. Nothing has been pushed to the user store.",
        ]
        thresholds = list(reasons)
        answer = (
            f"Approve pushes exactly this change set. Reject (or no answer within {timeout}) pushes "
            "nothing; the run ends as `rejected_by_reviewer`."
        )
    lines = [*opening, ""]
    if thresholds:
        lines += ["**Thresholds crossed**", *(f"- {reason}" for reason in thresholds), ""]
    lines += [
        "**Change set**",
        "",
        "| change | users |",
        "|---|---|",
        *(f"| {key} | {getattr(counts, key)} |" for key in COUNT_KEYS),
        f"| active users before | {counts.active_before} |",
        "",
    ]
    if sample is not None:
        lines += [*_sample_lines(counts, sample), ""]
    lines.append("**Reports**")
    if links:
        lines += [f"- [{name}]({url})" for name, url in links.items()]
    else:
        lines.append("- The reports could not be uploaded to the school's bucket; see the guard task's log.")
    lines += ["", answer]
    return {"subject": subject, "body": "\n".join(lines), "kind": kind}


class RosterApproval(ApprovalOperator):
    """Airflow's ApprovalOperator, which also records the reviewer's answer in XCom (key `review`).

    A Reject skips `push` and leaves no return value, yet `finalize` must say who rejected the run, or
    that nobody answered in time.
    """

    def execute_complete(self, context, event):
        if "error" not in event:
            review = {
                "chosen_options": list(event["chosen_options"]),
                "responded_by_user": event.get("responded_by_user"),
                "responded_at": str(event.get("responded_at")),
                "timedout": bool(event.get("timedout")),
            }
            context["ti"].xcom_push(key=xcom_keys.REVIEW, value=review)
        return super().execute_complete(context=context, event=event)


def review_outcome(answer: dict | None, school: SchoolConfig) -> tuple[bool, str] | None:
    """(approved, sentence) from the approval task's result; None when no reviewer was asked."""
    if not answer or not answer.get("chosen_options"):
        return None
    approved = answer["chosen_options"][0] == "Approve"
    who = reviewer(answer)
    if who is None:
        return approved, f"no reviewer answered within {school.approval_timeout_hours:g} hours"
    return approved, f"{'approved' if approved else 'rejected'} by {who[0]} at {who[1]}"


def reviewer(answer: dict) -> tuple[str, str] | None:
    """(who, when) of a reviewer's answer; None when the request timed out."""
    user = answer.get("responded_by_user") or {}
    if answer.get("timedout") or not user:
        return None
    return str(user.get("name") or user.get("id")), str(answer.get("responded_at"))
