"""The store-side SQL of a push batch and of a rollback: the one place that carries the preference rule.

Email preferences (DESIGN.md, "Email preferences") live in `OPT_OUT_RULE` and `NEW_USER_OPT_OUT` only:
- a new user starts with `email_opt_out` equal to the file's flag;
- an existing user whose preferences are not customized is opted out when the flag is yes;
- nothing ever opts a user back in, and a user with customized preferences keeps every preference.
The SIS fields of a customized user (names, email, type, year, status, memberships) still follow the
file: the rule protects the preferences the user chose, not the school's record of the student.

Every statement is scoped with `school_id = :school`: a push never touches another school. They read
the session-private stages `STAGE_USERS` and `STAGE_MEMBERS` (a push batch's temporary views over
the transfer tables) or a rollback's `STAGE_BEFORE` and `STAGE_MEMBERS` (temp tables), which live
only for the transaction.
"""

from __future__ import annotations

from datetime import datetime

import sqlalchemy as sa

from sisbridge.userstore.schema import SIS_FIELDS

STAGE_USERS = "sisbridge_stage_users"
STAGE_MEMBERS = "sisbridge_stage_members"
STAGE_BEFORE = "sisbridge_stage_before"
# A push batch's membership changes (temp table): the rows it adds (`adding`) and removes.
MEMBER_CHANGES = "sisbridge_stage_member_changes"
# The columns of the stage tables, with their types in both PostgreSQL and SQLite.
_SIS_TYPES = tuple((field, "integer" if field == "graduation_year" else "text") for field in SIS_FIELDS)
STAGE_COLUMNS = {
    STAGE_USERS: (
        ("external_id", "text"),
        ("in_target", "boolean"),
        *_SIS_TYPES,
        ("target_opt_out", "boolean"),
        ("file_opt_out", "boolean"),
    ),
    STAGE_MEMBERS: (("external_id", "text"), ("community_group", "text"), ("community", "text")),
    STAGE_BEFORE: (
        ("external_id", "text"),
        ("existed", "boolean"),
        ("memberships_saved", "boolean"),
        *_SIS_TYPES,
        ("email_opt_out", "boolean"),
        ("email_prefs_customized", "boolean"),
        ("created_at", "timestamp"),
    ),
}


def params(school_id: str, now: datetime) -> dict:
    return {"school": school_id, "now": now}


def text(sql: str) -> sa.TextClause:
    clause = sa.text(sql)
    if ":now" in sql:
        clause = clause.bindparams(sa.bindparam("now", type_=sa.DateTime()))
    return clause


MEMBERSHIPS_DIFFER = f"""
    exists (
        select 1 from {STAGE_MEMBERS} m
        where m.external_id = s.external_id
          and not exists (
              select 1 from user_communities c
              where c.school_id = :school and c.external_id = m.external_id
                and c.community_group = m.community_group and c.community = m.community))
    or exists (
        select 1 from user_communities c
        where c.school_id = :school and c.external_id = s.external_id
          and not exists (
              select 1 from {STAGE_MEMBERS} m
              where m.external_id = c.external_id
                and m.community_group = c.community_group and m.community = c.community))
"""

FIELDS_DIFFER = " or ".join(f"users.{field} is distinct from s.{field}" for field in SIS_FIELDS)

# The opt-out rule: customized preferences are never touched, a yes flag opts out, nothing opts in.
OPT_OUT_RULE = """
    case
        when users.email_prefs_customized then users.email_opt_out
        when s.file_opt_out then true
        else users.email_opt_out
    end
"""

# The key is also what keeps PostgreSQL's planner sane here: with sequential scans off in a batch
# (`push.apply_batch`), a table without an index costs every plan that reads it the same penalty,
# and the planner then no longer tells the plans apart (it joined a whole school's users to the
# batch's with a nested loop).
MEMBER_CHANGES_DDL = f"""
create temp table {MEMBER_CHANGES} (
    external_id text not null,
    community_group text not null,
    community text not null,
    adding boolean not null,
    primary key (external_id, community_group, community)
)
"""


def insert_member_changes(store_memberships: str) -> str:
    """Fill `MEMBER_CHANGES`: the batch's memberships that are in the store or the target, not both.

    `store_memberships` selects the store's memberships of the staged users. Each side holds a
    membership once (the store's key; dbt tests the target's), so a membership on one side only
    appears once in the union. One aggregate over the batch's own rows, with no join: a batch's
    statements run with hash and merge joins off, and a join of two unindexed sets would compare
    every row with every other. Only the changes are kept: a batch whose memberships all stay as
    they are writes nothing.
    """
    return f"""
    insert into {MEMBER_CHANGES} (external_id, community_group, community, adding)
    select external_id, community_group, community, max(in_target) = 1
    from (
        select external_id, community_group, community, 0 as in_target from ({store_memberships}) as c
        union all
        select external_id, community_group, community, 1 from {STAGE_MEMBERS}
    ) as both_sides
    group by external_id, community_group, community
    having count(*) = 1
    """


UPDATE_USERS = f"""
update users set
    {", ".join(f"{field} = s.{field}" for field in SIS_FIELDS)},
    email_opt_out = {OPT_OUT_RULE},
    updated_at = :now
from {STAGE_USERS} as s
where users.school_id = :school
  and users.external_id = s.external_id
  and s.in_target
  and (
      {FIELDS_DIFFER}
      or (s.file_opt_out and not users.email_opt_out and not users.email_prefs_customized)
      or s.external_id in (select external_id from {MEMBER_CHANGES})
  )
"""


def delete_gone_memberships(*, postgres: bool) -> str:
    if postgres:
        return f"""
        delete from user_communities using {MEMBER_CHANGES} as g
        where not g.adding
          and user_communities.school_id = :school
          and user_communities.external_id = g.external_id
          and user_communities.community_group = g.community_group
          and user_communities.community = g.community
        """
    return f"""
    delete from user_communities
    where school_id = :school
      and (external_id, community_group, community) in (
          select external_id, community_group, community from {MEMBER_CHANGES} where not adding)
    """


INSERT_ADDED_MEMBERSHIPS = f"""
insert into user_communities (school_id, external_id, community_group, community)
select :school, external_id, community_group, community from {MEMBER_CHANGES} where adding
on conflict do nothing
"""

# A new user's opt-out is the file's flag; `email_prefs_customized` is left to its default. The same
# expression in DuckDB copies a school's first batches straight into the store (`push.apply_new_batch`).
NEW_USER_OPT_OUT = "coalesce(s.file_opt_out, s.target_opt_out)"
INSERT_USERS = f"""
insert into users (school_id, external_id, {", ".join(SIS_FIELDS)}, email_opt_out, created_at, updated_at)
select :school, s.external_id, {", ".join(f"s.{field}" for field in SIS_FIELDS)},
       {NEW_USER_OPT_OUT}, :now, :now
from {STAGE_USERS} as s
where s.in_target
on conflict (school_id, external_id) do nothing
"""


def delete_stale_memberships(users_stage: str, *, postgres: bool) -> str:
    """A rollback's delete of the memberships its users did not have (`memberships_saved` users only).

    On PostgreSQL a join with the staged users (one row per user, indexed on external_id) lets either
    side drive the delete through an index; SQLite has no DELETE ... USING.
    """
    scope = (
        f"""using {users_stage} as staged
    where staged.memberships_saved
      and user_communities.school_id = :school
      and user_communities.external_id = staged.external_id"""
        if postgres
        else f"""where school_id = :school
      and external_id in (select external_id from {users_stage} where memberships_saved)"""
    )
    return f"""
    delete from user_communities
    {scope}
      and not exists (
          select 1 from {STAGE_MEMBERS} m
          where m.external_id = user_communities.external_id
            and m.community_group = user_communities.community_group
            and m.community = user_communities.community)
    """


def delete_users(users_stage: str, present: str) -> str:
    return f"""
    delete from users
    where school_id = :school
      and external_id in (select external_id from {users_stage} where not {present})
    """


def insert_memberships(users_stage: str, present: str) -> str:
    return f"""
    insert into user_communities (school_id, external_id, community_group, community)
    select :school, m.external_id, m.community_group, m.community
    from {STAGE_MEMBERS} as m
    where m.external_id in (select external_id from {users_stage} where {present})
    on conflict do nothing
    """


# A rollback puts back the SIS fields and the opt-out, unless the user customized preferences since.
RESTORE_UPDATE = f"""
update users set
    {", ".join(f"{field} = s.{field}" for field in SIS_FIELDS)},
    email_opt_out = case when users.email_prefs_customized then users.email_opt_out else s.email_opt_out end,
    created_at = s.created_at,
    updated_at = :now
from {STAGE_BEFORE} as s
where users.school_id = :school
  and users.external_id = s.external_id
  and s.existed
  and (
      {FIELDS_DIFFER}
      or users.created_at is distinct from s.created_at
      or (users.email_opt_out is distinct from s.email_opt_out and not users.email_prefs_customized)
      or (s.memberships_saved and {MEMBERSHIPS_DIFFER})
  )
"""

# Recreating a user the run deleted restores the row as it was, platform flags included.
RESTORE_INSERT = f"""
insert into users (school_id, external_id, {", ".join(SIS_FIELDS)}, email_opt_out,
                   email_prefs_customized, created_at, updated_at)
select :school, s.external_id, {", ".join(f"s.{field}" for field in SIS_FIELDS)}, s.email_opt_out,
       s.email_prefs_customized, s.created_at, :now
from {STAGE_BEFORE} as s
where s.existed
on conflict (school_id, external_id) do nothing
"""
