"""Build a run's change set in a temp warehouse, shaped exactly as docs/architecture.md describes.

The tables are written directly (no dbt): a target state, the file's flags, and the change set that
the target implies against the current `state.applied_*` baseline.
"""

from __future__ import annotations

import sqlalchemy as sa

from sisbridge.config import SchoolConfig
from sisbridge.userstore import user_communities, users

FIELDS = ("email", "user_id", "user_login", "first_name", "last_name", "user_type", "graduation_year")
STORE_COLUMNS = (
    "external_id",
    "email",
    "user_id",
    "user_login",
    "first_name",
    "last_name",
    "user_type",
    "graduation_year",
    "status",
    "email_opt_out",
    "email_prefs_customized",
)


def school(school_id: str = "acme", identifier: str = "email") -> SchoolConfig:
    return SchoolConfig(
        school_id=school_id,
        name=f"{school_id.title()} University",
        s3={"bucket": f"uconnect-sis-{school_id}", "key": "roster.csv", "aws_conn_id": f"sis_s3_{school_id}"},
        identifier=identifier,
    )


def person(external_id: str, **overrides) -> dict:
    """A target user; `flag` is the file's EMAIL_OPT_OUT (None: the user is not in the file)."""
    row = {
        "external_id": external_id,
        "email": external_id,
        "user_id": None,
        "user_login": None,
        "first_name": "Ada",
        "last_name": external_id.split("@")[0].title(),
        "user_type": "Alumni",
        "graduation_year": 2020,
        "status": "active",
        "flag": False,
    }
    row.update(overrides)
    return row


def _joined(pairs) -> str:
    return "; ".join(sorted(pairs))


def stage_run(con, target: list[dict], memberships: dict[str, list[tuple[str, str]]] | None = None) -> list:
    """Write the marts the push reads: users (the target state), community_memberships and user_changes."""
    memberships = memberships or {}
    baseline = {
        row[0]: dict(zip(("external_id", *FIELDS, "status", "email_opt_out"), row, strict=True))
        for row in con.execute(
            f"select external_id, {', '.join(FIELDS)}, status, email_opt_out from state.applied_users"
        ).fetchall()
    }
    base_members: dict[str, set] = {}
    for ext, group, community in con.execute("select * from state.applied_memberships").fetchall():
        base_members.setdefault(ext, set()).add((group, community))

    target_rows, changes = [], []
    for line, user in enumerate(target, start=2):
        ext = user["external_id"]
        old = baseline.get(ext)
        flag = user["flag"]
        opt_out = bool(flag) if old is None else bool(old["email_opt_out"] or flag)
        # A user the file lists (flag not None) has its flag and its line; the others have neither.
        in_file = (bool(flag), line) if flag is not None else (None, None)
        target_rows.append((*(user[c] for c in ("external_id", *FIELDS, "status")), opt_out, *in_file))
        if old is None:
            changes.append((ext, "create", None, None, None, line))
            continue
        if old["status"] == "inactive" and user["status"] == "active":
            changes.append((ext, "reactivate", None, None, None, line))
        if old["status"] == "active" and user["status"] == "inactive":
            changes.append((ext, "deactivate", None, None, None, line))
        for field in FIELDS:
            if old[field] != user[field]:
                changes.append((ext, "update", field, str(old[field]), str(user[field]), line))
        new_members = set(memberships.get(ext, []))
        old_members = base_members.get(ext, set())
        for group in sorted({g for g, _ in new_members | old_members}):
            before = {c for g, c in old_members if g == group}
            after = {c for g, c in new_members if g == group}
            if before != after:
                changes.append((ext, "update", f"communities:{group}", _joined(before), _joined(after), line))
        if flag and not old["email_opt_out"]:
            changes.append((ext, "opt_out", "email_opt_out", "false", "true", line))
    target_ids = {user["external_id"] for user in target}
    for ext in sorted(set(baseline) - target_ids):
        changes.append((ext, "delete", None, None, None, None))

    con.execute("create schema if not exists marts")
    con.execute(
        """
        create or replace table marts.users (
            external_id varchar, email varchar, user_id varchar, user_login varchar, first_name varchar,
            last_name varchar, user_type varchar, graduation_year integer, status varchar,
            is_email_opt_out boolean, is_email_opt_out_requested boolean, line_number integer)
        """
    )
    con.execute(
        """
        create or replace table marts.community_memberships (
            external_id varchar, community_group varchar, community varchar)
        """
    )
    con.execute(
        """
        create or replace table marts.user_changes (
            change_id integer, external_id varchar, change_type varchar, field varchar,
            old_value varchar, new_value varchar, line_number integer)
        """
    )
    member_rows = [(ext, g, c) for ext, pairs in memberships.items() if ext in target_ids for g, c in pairs]
    if target_rows:
        con.executemany("insert into marts.users values (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)", target_rows)
    if member_rows:
        con.executemany("insert into marts.community_memberships values (?, ?, ?)", member_rows)
    numbered = [(number, *change) for number, change in enumerate(changes, start=1)]
    if numbered:
        con.executemany("insert into marts.user_changes values (?, ?, ?, ?, ?, ?, ?)", numbered)
    return numbered


def store_users(engine: sa.Engine, school_id: str = "acme") -> list[tuple]:
    """The school's store rows (all columns but the timestamps), by external_id."""
    query = (
        sa.select(*(users.c[name] for name in STORE_COLUMNS))
        .where(users.c.school_id == school_id)
        .order_by(users.c.external_id)
    )
    with engine.connect() as conn:
        return [tuple(row) for row in conn.execute(query)]


def store_timestamps(engine: sa.Engine, school_id: str = "acme") -> dict:
    query = sa.select(users.c.external_id, users.c.created_at, users.c.updated_at).where(
        users.c.school_id == school_id
    )
    with engine.connect() as conn:
        return {ext: (created, updated) for ext, created, updated in conn.execute(query)}


def store_memberships(engine: sa.Engine, school_id: str = "acme") -> list[tuple]:
    c = user_communities.c
    query = (
        sa.select(c.external_id, c.community_group, c.community)
        .where(c.school_id == school_id)
        .order_by(c.external_id, c.community_group, c.community)
    )
    with engine.connect() as conn:
        return [tuple(row) for row in conn.execute(query)]


def customize(engine: sa.Engine, external_id: str, *, opt_out: bool, school_id: str = "acme") -> None:
    """What the platform does when a user edits their own email preferences."""
    with engine.begin() as conn:
        conn.execute(
            users.update()
            .where(users.c.school_id == school_id, users.c.external_id == external_id)
            .values(email_prefs_customized=True, email_opt_out=opt_out)
        )


def expected_row(user: dict, *, opt_out: bool = False, customized: bool = False) -> tuple:
    return (
        *(user[c] for c in ("external_id", *FIELDS, "status")),
        opt_out,
        customized,
    )
