"""What a reviewer reads in the Airflow UI: the request's wording, a sample of the changes, the links.

The body is Markdown; it is rendered here with markdown-it (CommonMark with tables, raw HTML on, and
linkify, which turns web and email addresses in text into links as the UI's GitHub flavour does), so a
value from the school's file that became a link, an image, markup or a table cell would show.
"""

from __future__ import annotations

import json
import re

from corpora import CORPORA
from markdown_it import MarkdownIt

from sisbridge import review
from sisbridge.guards import ChangeCounts
from tests.guards.guard_helpers import school

LINKS = {"changes.csv": "http://airflow.example/sisbridge/schools/harbor/runs/run_1/reports/changes.csv"}


def render(body: str) -> str:
    return MarkdownIt("commonmark", {"linkify": True}).enable(["table", "linkify"]).render(body)


def users_table(con, users: list[tuple]) -> None:
    """marts.users with (external_id, first_name, last_name, email) rows."""
    con.execute(
        "create table marts.users (external_id varchar, email varchar, user_id varchar, user_login varchar, "
        "first_name varchar, last_name varchar, user_type varchar, graduation_year integer, status varchar)"
    )
    con.executemany(
        "insert into marts.users (external_id, first_name, last_name, email, status) "
        "values (?, ?, ?, ?, 'active')",
        users,
    )


def change_rows(con, *rows: tuple) -> None:
    """(external_id, change_type, field, old, new, line_number) rows of marts.user_changes."""
    con.executemany(
        "insert into marts.user_changes (change_id, external_id, change_type, field, old_value, new_value, "
        "line_number) values (?, ?, ?, ?, ?, ?, ?)",
        [(str(n), *row) for n, row in enumerate(rows)],
    )


def test_a_held_run_asks_to_approve_the_sync_with_its_thresholds_and_links():
    counts = ChangeCounts(deactivations=15, active_before=20, users_before=20)

    request = review.approval_request(
        school(approval_timeout_hours=24), "run_1", counts, ["15 removals are too many"], LINKS
    )

    assert request["subject"] == "Approve the roster sync of Harbor University? (1 threshold(s) crossed)"
    body = request["body"].splitlines()
    assert "- 15 removals are too many" in body
    assert "| deactivations | 15 |" in body
    assert "| active users before | 20 |" in body
    assert f"- [changes.csv]({LINKS['changes.csv']})" in body
    assert body[-1].endswith(
        "(or no answer within 24 hours) pushes nothing; the run ends as `rejected_by_reviewer`."
    )
    assert f'<a href="{LINKS["changes.csv"]}">changes.csv</a>' in render(request["body"])


def test_an_onboarding_review_asks_to_enable_auto_sync_with_this_file():
    counts = ChangeCounts(creates=240)
    reasons = ["onboarding review (no auto_sync in the school's config): ...", "a threshold crossed"]

    request = review.approval_request(school(), "run_1", counts, reasons, LINKS, kind=review.ONBOARDING_KIND)

    assert request["subject"] == "Enable auto sync for Harbor University with this file?"
    assert request["kind"] == "onboarding"
    body = request["body"]
    assert "**Harbor University** (`harbor`) is in onboarding review." in body
    # The onboarding reason is the subject; only the thresholds are listed.
    assert "**Thresholds crossed**\n- a threshold crossed\n" in body
    assert "turns auto sync on for Harbor University" in body
    assert "the school stays in onboarding review" in body


def test_without_uploaded_reports_the_request_says_so_instead_of_a_worker_path():
    request = review.approval_request(school(), "run_1", ChangeCounts(creates=1), ["r"], {})

    assert "- The reports could not be uploaded to the school's bucket; see the guard task's log." in (
        request["body"].splitlines()
    )
    assert "/tmp" not in request["body"] and ".sisbridge" not in request["body"]


def test_the_sample_shows_twenty_users_of_each_kind_with_what_changes(con):
    users_table(
        con, [(f"new{n:02d}@harbor.edu", f"Ada{n}", "Lovelace", f"new{n:02d}@harbor.edu") for n in range(25)]
    )
    change_rows(
        con,
        *((f"new{n:02d}@harbor.edu", "create", None, None, None, 100 + n) for n in range(25)),
        ("u01", "update", "last_name", "Old", "New", 7),
        ("u01", "update", "email", "a@harbor.edu", None, 7),
        ("u02", "deactivate", None, None, None, None),
        ("u03", "delete", None, None, None, None),
        ("u04", "opt_out", "email_opt_out", "false", "true", 9),
    )
    counts = ChangeCounts(creates=25, updates=1, deactivations=1, deletes=1, opt_outs=1)

    sample = review.change_sample(con)
    body = review.approval_request(school(), "r", counts, ["x"], LINKS, sample=sample)["body"]

    assert [user for _, user, _ in sample["create"]] == [f"new{n:02d}@harbor.edu" for n in range(20)]
    assert sample["create"][0] == (
        100,
        "new00@harbor.edu",
        [("email", "new00@harbor.edu"), ("first_name", "Ada0"), ("last_name", "Lovelace")],
    )
    assert sample["update"] == [(7, "u01", [("email", "a@harbor.edu", None), ("last_name", "Old", "New")])]
    assert sample["deactivate"] == [(None, "u02", ["status: active → inactive"])]
    assert sample["delete"] == [(None, "u03", ["removed from the store"])]
    assert sample["opt_out"] == [(9, "u04", [("email_opt_out", "false", "true")])]
    lines = body.splitlines()
    assert "Creates: 20 of 25" in lines
    assert "| 7 | `u01` | email: `a@harbor.edu` → (empty); last_name: `Old` → `New` |" in lines
    html = render(body)
    assert (
        "<td><code>u01</code></td>\n<td>email: <code>a@harbor.edu</code> → (empty); "
        "last_name: <code>Old</code> → <code>New</code></td>"
    ) in html


def test_values_from_the_file_stay_text_in_the_rendered_request(con):
    """Every naughty string as a new user's first name: one table row each, no link, image or tag, and
    each name in a code span (which GitHub's Markdown never turns into a link, as it does plain text)."""
    naughty = json.loads((CORPORA / "naughty-strings" / "blns.json").read_text(encoding="utf-8"))
    names = [value for value in naughty if value.strip()][:400]
    users_table(con, [(f"u{n:03d}", name, "L", None) for n, name in enumerate(names)])
    change_rows(con, *((f"u{n:03d}", "create", None, None, None, n + 2) for n in range(len(names))))

    sample = review.change_sample(con, per_kind=len(names))
    body = review.approval_request(school(), "r", ChangeCounts(creates=len(names)), ["x"], {}, sample=sample)[
        "body"
    ]
    html = render(body)

    rows = re.findall(r"<tr>\s*<td>(\d*)</td>\s*<td><code>(u\d{3})</code></td>\s*<td>", html)
    assert [user for _, user in rows] == [f"u{n:03d}" for n in range(len(names))]
    tags = set(re.findall(r"<([a-z][a-z0-9]*)\b", html))
    assert tags <= {"p", "strong", "code", "table", "thead", "tbody", "tr", "th", "td", "ul", "li"}, tags
    cells = re.findall(r"<td>first_name: (.*?); last_name: <code>L</code></td>", html)
    assert len(cells) == len(names)
    assert all(re.fullmatch(r"<code>[^<]*</code>", cell) for cell in cells), cells
