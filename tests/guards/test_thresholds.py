"""The guard's decision: onboarding dry runs and each mass-change threshold, on a real warehouse."""

from __future__ import annotations

from sisbridge import guards
from sisbridge.config import Thresholds
from sisbridge.guards import ChangeCounts, crossed_thresholds
from tests.guards.guard_helpers import applied, school


def changes(con, *rows: tuple[str, str, str | None]) -> None:
    """Put (external_id, change_type, field) rows into marts.user_changes."""
    con.executemany(
        "insert into marts.user_changes (change_id, external_id, change_type, field) values (?, ?, ?, ?)",
        [(str(n), *row) for n, row in enumerate(rows)],
    )


def twenty_active_users(con) -> None:
    applied(con, *((f"u{n:02d}", f"u{n:02d}@harbor.edu", "active") for n in range(20)))


def test_a_75_percent_removal_is_held(con):
    twenty_active_users(con)
    changes(con, *((f"u{n:02d}", "deactivate", None) for n in range(10)))
    changes(con, *((f"u{n:02d}", "delete", None) for n in range(10, 15)))

    decision = guards.evaluate(con, school())

    assert decision.action == guards.HOLD
    assert decision.reasons == ("15 removals are 75.0% of 20 active users, over max_removed_pct = 10%",)
    assert decision.counts.as_audit() == {
        "creates": 0,
        "updates": 0,
        "reactivations": 0,
        "deactivations": 10,
        "deletes": 5,
        "opt_outs": 0,
    }


def test_removals_at_the_limit_are_pushed(con):
    twenty_active_users(con)
    changes(con, ("u00", "deactivate", None), ("u01", "delete", None), ("u02", "update", "last_name"))

    decision = guards.evaluate(con, school())

    assert (decision.action, decision.reasons) == (guards.PUSH, ())


def test_auto_sync_off_is_a_dry_run_whatever_the_change_set(con):
    twenty_active_users(con)
    changes(con, *((f"u{n:02d}", "delete", None) for n in range(20)))

    decision = guards.evaluate(con, school(auto_sync=False))

    assert decision.action == guards.DRY_RUN
    assert decision.reasons == ("auto_sync is false: dry runs only, nothing is pushed",)
    assert decision.counts.deletes == 20


def in_review():
    """Harbor without the auto_sync key: onboarding review."""
    return type(school()).model_validate(school().model_dump(exclude={"auto_sync"}))


def test_a_school_without_auto_sync_asks_for_its_onboarding_review(con):
    changes(con, *((f"u{n:02d}", "create", None) for n in range(5)))

    decision = guards.evaluate(con, in_review())

    assert decision.action == guards.REVIEW
    assert decision.reasons == (
        "onboarding review (no auto_sync in the school's config): every run is a dry run until a "
        "reviewer approves one; nothing is pushed",
    )


def test_an_onboarding_review_lists_the_thresholds_its_file_crosses(con):
    twenty_active_users(con)
    changes(con, *((f"u{n:02d}", "deactivate", None) for n in range(10)))

    decision = guards.evaluate(con, in_review())

    assert decision.action == guards.REVIEW
    assert decision.reasons[1:] == ("10 removals are 50.0% of 20 active users, over max_removed_pct = 10%",)


def test_an_onboarding_file_that_changes_nobody_is_a_dry_run(con):
    twenty_active_users(con)

    decision = guards.evaluate(con, in_review())

    assert (decision.action, decision.reasons) == (guards.DRY_RUN, (guards.EMPTY_REVIEW_REASON,))


def test_an_approved_first_file_turns_auto_sync_on_unless_the_yaml_says_otherwise(con):
    changes(con, *((f"u{n:02d}", "create", None) for n in range(5)))

    assert guards.evaluate(con, in_review(), auto_sync_approved=True).action == guards.PUSH
    paused = guards.evaluate(con, school(auto_sync=False), auto_sync_approved=True)
    assert (paused.action, paused.reasons) == (guards.DRY_RUN, (guards.DRY_RUN_REASONS["paused"],))
    assert in_review().current_mode(True) == "auto"
    assert in_review().current_mode(False) == "review"
    assert school(auto_sync=False).current_mode(True) == "paused"


def test_a_first_sync_that_creates_everyone_is_pushed(con):
    changes(con, *((f"u{n:02d}", "create", None) for n in range(50)))

    assert guards.evaluate(con, school()).action == guards.PUSH


def test_an_absolute_number_of_removals_holds_even_a_small_share():
    counts = ChangeCounts(deactivations=400, deletes=101, active_before=100_000, users_before=100_000)

    assert crossed_thresholds(counts, Thresholds()) == [
        "501 removals (deactivations + deletes) exceed max_removed = 500"
    ]


def test_updates_above_max_updated_pct_are_held(con):
    twenty_active_users(con)
    # Distinct users count, not changed fields: u00 has two updated fields.
    changes(con, ("u00", "update", "first_name"), *((f"u{n:02d}", "update", "last_name") for n in range(16)))

    decision = guards.evaluate(con, school())

    assert decision.reasons == ("16 updated users are 80.0% of 20 users, over max_updated_pct = 75%",)


def test_email_or_login_changes_above_the_limit_are_held(con):
    twenty_active_users(con)
    changes(con, ("u00", "update", "email"), ("u01", "update", "user_login"), ("u02", "update", "email"))

    decision = guards.evaluate(con, school())

    assert decision.action == guards.HOLD
    assert decision.reasons == (
        "3 email or login changes are 15.0% of 20 users, over max_email_changed_pct = 10%",
    )


def test_every_crossed_threshold_is_listed():
    counts = ChangeCounts(updates=9, deactivations=3, identity_changes=2, active_before=10, users_before=10)
    thresholds = Thresholds(max_removed=2, max_removed_pct=20, max_updated_pct=50, max_email_changed_pct=10)

    assert crossed_thresholds(counts, thresholds) == [
        "3 removals (deactivations + deletes) exceed max_removed = 2",
        "3 removals are 30.0% of 10 active users, over max_removed_pct = 20%",
        "9 updated users are 90.0% of 10 users, over max_updated_pct = 50%",
        "2 email or login changes are 20.0% of 10 users, over max_email_changed_pct = 10%",
    ]


def test_the_rules_are_tested_without_airflow():
    """The guard is rules only: importing it loads no part of Airflow (the review is sisbridge.review)."""
    import subprocess
    import sys

    code = "import sys, sisbridge.guards; print(sorted({m.split('.')[0] for m in sys.modules} & {'airflow'}))"
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)

    assert (result.returncode, result.stdout.strip()) == (0, "[]"), result.stderr
