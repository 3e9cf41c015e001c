"""The guard between the change set and the store: onboarding dry runs and mass-change thresholds.

The threshold rule lives here and only here (`crossed_thresholds`).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import duckdb

from sisbridge.config import SchoolConfig, Thresholds

PUSH, DRY_RUN, HOLD = "push", "dry_run", "hold"
COUNT_KEYS = ("creates", "updates", "reactivations", "deactivations", "deletes", "opt_outs")
_CHANGE_TYPE_COUNT = {
    "create": "creates",
    "update": "updates",
    "reactivate": "reactivations",
    "deactivate": "deactivations",
    "delete": "deletes",
    "opt_out": "opt_outs",
}
IDENTITY_FIELDS = ("email", "user_login")


@dataclass(frozen=True)
class ChangeCounts:
    """Distinct users per change type, plus the baseline sizes the percentages are taken of."""

    creates: int = 0
    updates: int = 0
    reactivations: int = 0
    deactivations: int = 0
    deletes: int = 0
    opt_outs: int = 0
    identity_changes: int = 0
    active_before: int = 0
    users_before: int = 0

    @property
    def removals(self) -> int:
        return self.deactivations + self.deletes

    def as_audit(self) -> dict[str, int]:
        return {key: getattr(self, key) for key in COUNT_KEYS}


@dataclass(frozen=True)
class GuardDecision:
    action: str
    reasons: tuple[str, ...] = ()
    counts: ChangeCounts = field(default_factory=ChangeCounts)


def count_changes(con: duckdb.DuckDBPyConnection) -> ChangeCounts:
    """Count the change set in `marts.user_changes` against the applied baseline."""
    by_type = dict(
        con.execute(
            "select change_type, count(distinct external_id) from marts.user_changes group by all"
        ).fetchall()
    )
    identity = con.execute(
        "select count(distinct external_id) from marts.user_changes "
        "where change_type = 'update' and field in (?, ?)",
        list(IDENTITY_FIELDS),
    ).fetchone()[0]
    users_before, active_before = con.execute(
        "select count(*), count(*) filter (where status = 'active') from state.applied_users"
    ).fetchone()
    return ChangeCounts(
        **{
            count_key: int(by_type.get(change_type, 0))
            for change_type, count_key in _CHANGE_TYPE_COUNT.items()
        },
        identity_changes=int(identity),
        active_before=int(active_before),
        users_before=int(users_before),
    )


def _pct(part: int, whole: int) -> float:
    return 100.0 * part / whole if whole else 0.0


def crossed_thresholds(counts: ChangeCounts, thresholds: Thresholds) -> list[str]:
    """Every threshold the change set crosses, as a sentence an operator can act on.

    Percentages are of the users in the applied baseline, so a school's first sync is never held
    for creating everyone.
    """
    crossed = []
    removed_pct = _pct(counts.removals, counts.active_before)
    if counts.removals > thresholds.max_removed:
        crossed.append(
            f"{counts.removals} removals (deactivations + deletes) exceed "
            f"max_removed = {thresholds.max_removed}"
        )
    if removed_pct > thresholds.max_removed_pct:
        crossed.append(
            f"{counts.removals} removals are {removed_pct:.1f}% of {counts.active_before} active users, "
            f"over max_removed_pct = {thresholds.max_removed_pct:g}%"
        )
    updated_pct = _pct(counts.updates, counts.users_before)
    if updated_pct > thresholds.max_updated_pct:
        crossed.append(
            f"{counts.updates} updated users are {updated_pct:.1f}% of {counts.users_before} users, "
            f"over max_updated_pct = {thresholds.max_updated_pct:g}%"
        )
    identity_pct = _pct(counts.identity_changes, counts.users_before)
    if identity_pct > thresholds.max_email_changed_pct:
        crossed.append(
            f"{counts.identity_changes} email or login changes are {identity_pct:.1f}% of "
            f"{counts.users_before} users, over max_email_changed_pct = {thresholds.max_email_changed_pct:g}%"
        )
    return crossed


def evaluate(con: duckdb.DuckDBPyConnection, school: SchoolConfig) -> GuardDecision:
    """Decide what happens to this run's change set: push it, hold it, or stop at a dry run."""
    counts = count_changes(con)
    if not school.auto_sync:
        return GuardDecision(DRY_RUN, ("auto_sync is off: onboarding review, nothing is pushed",), counts)
    crossed = crossed_thresholds(counts, school.thresholds)
    if crossed:
        return GuardDecision(HOLD, tuple(crossed), counts)
    return GuardDecision(PUSH, (), counts)
