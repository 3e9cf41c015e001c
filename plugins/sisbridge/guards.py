"""The guard between the change set and the store: onboarding dry runs and mass-change thresholds.

The threshold rule lives here and only here (`crossed_thresholds`). So do the other safety checks:
identity checks on rows, schema drift of the header and stale files. Only rules: what a reviewer sees
and answers in Airflow is `sisbridge.review`'s.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import duckdb

from sisbridge import normalize
from sisbridge.audit import Finding
from sisbridge.config import IDENTIFIER_COLUMNS, SchoolConfig, Thresholds

# REVIEW: a school in onboarding review has a change set, which a reviewer may approve to turn its
# auto sync on (sisbridge.review). Without a reviewer (`sisbridge sync`) it is a dry run.
PUSH, DRY_RUN, HOLD, REVIEW = "push", "dry_run", "hold", "review"
COUNT_KEYS = ("creates", "updates", "reactivations", "deactivations", "deletes", "opt_outs")
CHANGE_TYPE_COUNT = {
    "create": "creates",
    "update": "updates",
    "reactivate": "reactivations",
    "deactivate": "deactivations",
    "delete": "deletes",
    "opt_out": "opt_outs",
}
IDENTITY_FIELDS = ("email", "user_login")
IDENTITY_STAGE, DRIFT_STAGE = "identity", "drift"
RULES = {
    "identity_email_taken": "An existing user's identifier now carries an EMAIL that another existing "
    "user of the school has. The row is ignored.",
    "identity_email_moved": "A new identifier carries the EMAIL of an existing user: the email moved to "
    "a different identifier. The row is ignored.",
    "schema_drift": "The header's set of columns differs from the last accepted file's. The file goes "
    "on; check that no column was renamed or dropped by mistake.",
}
ROW_RULES = frozenset({"identity_email_taken", "identity_email_moved"})
# Why a run of a school that does not sync automatically stops at a dry run, by `SchoolConfig.sync_mode`.
DRY_RUN_REASONS = {
    "review": "onboarding review (no auto_sync in the school's config): every run is a dry run until a "
    "reviewer approves one; nothing is pushed",
    "paused": "auto_sync is false: dry runs only, nothing is pushed",
}
EMPTY_REVIEW_REASON = "onboarding review: the file changes no user, so there is nothing to review"


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

    @property
    def changed_users(self) -> int:
        return sum(getattr(self, key) for key in COUNT_KEYS)


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
            for change_type, count_key in CHANGE_TYPE_COUNT.items()
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


def evaluate(
    con: duckdb.DuckDBPyConnection, school: SchoolConfig, *, auto_sync_approved: bool = False
) -> GuardDecision:
    """Decide what happens to this run's change set: push it, hold it, ask for the onboarding review,
    or stop at a dry run.

    A review's reasons are the onboarding reason, then any threshold the change set crosses.
    """
    counts = count_changes(con)
    mode = school.current_mode(auto_sync_approved)
    if mode == "paused":
        return GuardDecision(DRY_RUN, (DRY_RUN_REASONS["paused"],), counts)
    crossed = crossed_thresholds(counts, school.thresholds)
    if mode == "review":
        if counts.changed_users == 0:
            return GuardDecision(DRY_RUN, (EMPTY_REVIEW_REASON,), counts)
        return GuardDecision(REVIEW, (DRY_RUN_REASONS["review"], *crossed), counts)
    if crossed:
        return GuardDecision(HOLD, tuple(crossed), counts)
    return GuardDecision(PUSH, (), counts)


def identity_findings(con: duckdb.DuckDBPyConnection, school: SchoolConfig, file_name: str) -> list[Finding]:
    """Row errors for emails that would jump between identifiers (`raw.roster` vs `state.applied_users`).

    Only schools whose identifier is not EMAIL can have them: with EMAIL, a new email is a new user.
    """
    if school.identifier == "email":
        return []
    identifier = school.identifier
    # The keys the transform will build users by, so the checks see the same values.
    rows = con.execute(
        f"""
        with file_rows as (
            select line_number, email as raw_email, {normalize.key_sql("email", "email")} as email,
                   {normalize.key_sql(identifier, identifier)} as external_id
            from raw.roster
        )
        select f.line_number, f.external_id, f.raw_email, f.email, owner.external_id as owner_id,
               mine.external_id is not null as is_existing
        from file_rows as f
        join state.applied_users as owner
            on owner.email = f.email and owner.external_id <> f.external_id
        left join state.applied_users as mine on mine.external_id = f.external_id
        where f.external_id is not null and mine.email is distinct from f.email
        order by f.line_number
        """
    ).fetchall()
    column = IDENTIFIER_COLUMNS[identifier]
    findings = []
    for line, external, raw_email, email, owner, is_existing in rows:
        where = f"{file_name}: line {line}: EMAIL {email!r}"
        if is_existing:
            rule = "identity_email_taken"
            message = (
                f"{where} belongs to the existing user {column} {owner!r}; the user {column} {external!r} "
                "cannot take it. The row is ignored."
            )
        else:
            rule = "identity_email_moved"
            message = (
                f"{where} moved from the existing user {column} {owner!r} to the new {column} {external!r}; "
                "a user's identifier must not change. The row is ignored."
            )
        findings.append(Finding(rule, message, "error", line, external, "EMAIL", raw_email))
    return findings


def previous_header(con: duckdb.DuckDBPyConnection, run_id: str) -> tuple[str, tuple[str, ...]] | None:
    """The run id and header of the last succeeded run before `run_id` that recorded a header."""
    row = con.execute(
        """
        select run_id, header_columns from audit.sync_runs
        where status = 'succeeded' and header_columns is not null and run_id <> ?
          and started_at <= coalesce((select started_at from audit.sync_runs where run_id = ?), now())
        order by started_at desc
        limit 1
        """,
        [run_id, run_id],
    ).fetchone()
    return None if row is None else (row[0], tuple(row[1]))


def schema_drift(
    school: SchoolConfig,
    header: tuple[str, ...],
    previous: tuple[str, tuple[str, ...]] | None,
    file_name: str,
) -> Finding | None:
    """A warning when the file's set of columns differs from the last accepted file's, else None.

    Columns compare by their canonical names, so a change of case, spacing or alias is not drift.
    """
    if previous is None:
        return None
    previous_run, previous_columns = previous
    now = {school.canonical_header(name) for name in header}
    before = {school.canonical_header(name) for name in previous_columns}
    if now == before:
        return None
    added, removed = sorted(now - before), sorted(before - now)
    parts = [f"added {', '.join(added)}"] if added else []
    parts += [f"removed {', '.join(removed)}"] if removed else []
    changes = "; ".join(parts)
    return Finding(
        "schema_drift",
        f"{file_name}: line 1: the header changed since the last accepted file "
        f"(run {previous_run}): {changes}",
        "warning",
        1,
        value=changes,
    )


def unchanged_runs(con: duckdb.DuckDBPyConnection, run_id: str) -> int:
    """How many runs in a row, up to and including `run_id`, found no new file (status `unchanged`).

    A rollback's own row is not a sync and does not break the streak.
    """
    statuses = con.execute(
        """
        select status from audit.sync_runs
        where coalesce(details->>'rollback_of', '') = ''
          and started_at <= (select started_at from audit.sync_runs where run_id = ?)
        order by started_at desc
        """,
        [run_id],
    ).fetchall()
    streak = 0
    for (status,) in statuses:
        if status != "unchanged":
            break
        streak += 1
    return streak


def stale_file_message(school: SchoolConfig, unchanged: int) -> str | None:
    """The alert for a school whose file has not changed for `stale_after_runs` runs, else None."""
    if unchanged < school.stale_after_runs:
        return None
    return (
        f"{school.school_id} ({school.name}): s3://{school.s3.bucket}/{school.s3.key} has not changed for "
        f"{unchanged} runs (stale_after_runs = {school.stale_after_runs}); ask the school for a new export"
    )
