"""Which outcomes are worth telling someone about, and what an e-mail about one says."""

from __future__ import annotations

import pytest

from sisbridge import notify
from tests.guards.guard_helpers import school


@pytest.mark.parametrize(
    ("status", "kind"),
    [
        ("held", "held"),
        ("rejected", "rejected"),
        ("rejected_by_reviewer", "rejected"),
        ("failed", "failed"),
        ("succeeded", None),
        ("dry_run", None),
        ("unchanged", None),
        ("rolled_back", None),
    ],
)
def test_only_runs_that_need_someone_to_act_are_events(status, kind):
    event = notify.run_event(school(), "run_1", status, "why")

    assert (event.kind if event else None) == kind


def test_a_stale_file_is_an_event_of_its_own_with_its_message():
    run_id = "scheduled__2026-11-07"
    event = notify.run_event(school(), run_id, "unchanged", "no new file", stale_file="stale!")

    assert (event.kind, event.status, event.reason, event.message) == (
        "stale_file",
        "unchanged",
        "stale!",
        "Stale file: stale!",
    )
    assert event.report_url == "s3://uconnect-sis-harbor/sisbridge-reports/scheduled__2026-11-07/"
    assert event.report_dir.endswith("/reports/harbor/scheduled__2026-11-07")


def test_the_email_body_escapes_what_the_file_put_in_the_reason():
    reason = "roster.csv: line 1: the column <script>alert(1)</script> & 'x' is unknown"
    event = notify.run_event(school(), "run_1", "rejected", reason)

    body = notify.email_html(event.as_context())

    assert "<script>" not in body
    assert "&lt;script&gt;alert(1)&lt;/script&gt; &amp; &#x27;x&#x27;" in body
    assert "<th align='left'>Status</th><td>rejected</td>" in body
