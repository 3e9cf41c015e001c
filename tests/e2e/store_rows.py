"""What the user store holds for a school, for the end-to-end tests to compare."""

from __future__ import annotations

import sqlalchemy as sa


def store_rows(store_url: str, school_id: str) -> tuple[list[dict], list[tuple]]:
    engine = sa.create_engine(store_url)
    with engine.connect() as conn:
        users = [
            dict(row._mapping)
            for row in conn.execute(
                sa.text("select * from users where school_id = :s order by external_id"), {"s": school_id}
            )
        ]
        memberships = [
            tuple(row)
            for row in conn.execute(
                sa.text(
                    "select external_id, community_group, community from user_communities "
                    "where school_id = :s order by 1, 2, 3"
                ),
                {"s": school_id},
            )
        ]
    engine.dispose()
    return users, memberships
