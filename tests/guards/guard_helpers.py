"""Helpers for the guard tests: a school config, baseline users and roster rows."""

from __future__ import annotations

from sisbridge.config import SchoolConfig


def school(**overrides) -> SchoolConfig:
    settings = {
        "school_id": "harbor",
        "name": "Harbor University",
        "s3": {"bucket": "uconnect-sis-harbor", "key": "roster.csv", "aws_conn_id": "sis_s3_harbor"},
        "identifier": "user_id",
        "auto_sync": True,
    }
    return SchoolConfig.model_validate(settings | overrides)


def applied(con, *users: tuple[str, str, str]) -> None:
    """Put (external_id, email, status) users into the applied baseline."""
    con.executemany(
        "insert into state.applied_users (external_id, email, user_id, first_name, last_name, status, "
        "email_opt_out, applied_run_id) values (?, ?, ?, 'F', 'L', ?, false, 'run_0')",
        [(external_id, email, external_id, status) for external_id, email, status in users],
    )


def roster(con, *rows: tuple[int, str, str]) -> None:
    """Put (line_number, email, user_id) rows into raw.roster, as the loader writes them."""
    con.executemany(
        "insert into raw.roster (line_number, first_name, last_name, email, user_id) "
        "values (?, 'F', 'L', ?, ?)",
        rows,
    )
