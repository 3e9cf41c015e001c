"""Helpers for the dbt tests: a small school warehouse for the dbt project: raw.* and config.* written as the pipeline writes them."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import duckdb

from sisbridge import audit
from sisbridge.config import SchoolConfig, warehouse_path
from sisbridge.transform import write_config_tables

ROSTER_COLUMNS = (
    "first_name",
    "last_name",
    "email",
    "user_id",
    "user_login",
    "graduation",
    "stakeholders",
    "email_opt_out",
    "delete_flag",
)
HEADER = {
    "first_name": "First Name",
    "last_name": "LAST_NAME",
    "email": "Email",
    "graduation": "GRADUATION",
    "stakeholders": "USER_TYPE",
    "email_opt_out": "EMAIL_OPT_OUT",
    "delete_flag": "DELETE",
}


def make_school(**overrides) -> SchoolConfig:
    settings = {
        "school_id": "tinyu",
        "name": "Tiny University",
        "s3": {"bucket": "uconnect-sis-tinyu", "key": "roster.csv", "aws_conn_id": "sis_s3_tinyu"},
        "identifier": "email",
        "missing_users": "deactivate",
        "user_types": {"Undergraduate": "Undergraduate Students", "Alumni": "Alumni"},
        "graduation": {"date_formats": ["%m/%d/%Y"]},
        "communities": [
            {"column": "PROGRAM", "group": "Career Communities", "values": {"Econ": "Business & Finance"}},
            {"column": "AFFINITY", "group": "Affinity"},
        ],
    }
    settings.update(overrides)
    return SchoolConfig.model_validate(settings)


@contextmanager
def open_warehouse(school: SchoolConfig) -> Iterator[duckdb.DuckDBPyConnection]:
    with audit.warehouse(school.school_id) as con:
        yield con


def load_week(school: SchoolConfig, run_id: str, records: list[dict], errors: dict[int, str] = {}) -> None:
    """Write raw.* the way sisbridge.loading does (line 1 is the header), config.* and the run's errors.

    Each record is a dict of roster columns plus community columns (PROGRAM, AFFINITY) as file cells.
    """
    with open_warehouse(school) as con:
        con.execute("create schema if not exists raw")
        con.execute(
            "create or replace table raw.roster (line_number integer, "
            + ", ".join(f"{column} varchar" for column in ROSTER_COLUMNS)
            + ")"
        )
        con.execute(
            "create or replace table raw.roster_communities "
            "(line_number integer, column_name varchar, raw_value varchar)"
        )
        con.execute(
            "create or replace table raw.file_columns "
            "(position integer, source_name varchar, canonical_name varchar, kind varchar)"
        )
        con.execute(
            "create or replace table raw.file (run_id varchar, school_id varchar, file_key varchar, "
            "file_version_id varchar, file_etag varchar, file_sha256 varchar, file_bytes bigint, "
            "file_encoding varchar, rows_in_file bigint)"
        )
        community_columns = [c.column for c in school.communities]
        for line, record in enumerate(records, start=2):
            con.execute(
                f"insert into raw.roster values ({', '.join('?' for _ in range(len(ROSTER_COLUMNS) + 1))})",
                [line, *(record.get(column, "") for column in ROSTER_COLUMNS)],
            )
            for column in community_columns:
                con.execute(
                    "insert into raw.roster_communities values (?, ?, ?)",
                    [line, column, record.get(column, "")],
                )
        header = [(HEADER[c], c.upper(), "standard") for c in ROSTER_COLUMNS if c in HEADER]
        header += [(column.title(), column, "community") for column in community_columns]
        con.executemany(
            "insert into raw.file_columns values (?, ?, ?, ?)",
            [(position, *column) for position, column in enumerate(header, start=1)],
        )
        con.execute(
            "insert into raw.file values (?, ?, 'roster.csv', 'v1', 'etag', 'sha', 100, 'utf-8', ?)",
            [run_id, school.school_id, len(records)],
        )
        write_config_tables(con, school)
        audit.record_findings(
            con,
            run_id,
            "quality",
            [
                audit.Finding(rule=rule, message=f"line {line}: {rule}", line_number=line)
                for line, rule in errors.items()
            ],
        )


def simulate_push(school: SchoolConfig, run_id: str) -> None:
    """What a successful push leaves behind: the target state becomes the applied baseline."""
    with open_warehouse(school) as con:
        con.execute("delete from state.applied_users")
        con.execute(
            "insert into state.applied_users "
            "select *, ? as applied_run_id from intermediate.int_users_target_state",
            [run_id],
        )
        con.execute("delete from state.applied_memberships")
        con.execute("insert into state.applied_memberships select * from intermediate.int_memberships_target_state")


def query(school: SchoolConfig, sql: str, params=None) -> list[tuple]:
    with duckdb.connect(str(warehouse_path(school.school_id)), read_only=True) as con:
        return con.execute(sql, params or []).fetchall()


def project_root() -> Path:
    return Path(__file__).resolve().parents[2]
