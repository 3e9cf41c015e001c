"""A small school (tinyu) and its weeks written into its warehouse as the pipeline writes them."""

from __future__ import annotations

from collections.abc import Generator
from contextlib import contextmanager

import duckdb

from sisbridge import audit
from sisbridge.config import SchoolConfig
from sisbridge.loading import RAW_COLUMNS
from sisbridge.transform import write_config_tables
from tests.raw_tables import fill_raw

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
    "user_type",
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


# The small school of these tests, as its config/schools YAML would say.
SCHOOL_SETTINGS = {
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


def make_school(**overrides) -> SchoolConfig:
    settings = {**SCHOOL_SETTINGS}
    settings.update(overrides)
    return SchoolConfig.model_validate(settings)


@contextmanager
def open_warehouse(school: SchoolConfig) -> Generator[duckdb.DuckDBPyConnection, None, None]:
    with audit.warehouse(school.school_id) as con:
        yield con


def load_week(
    school: SchoolConfig, run_id: str, records: list[dict], errors: dict[int, str] | None = None
) -> None:
    """Write raw.* the way sisbridge.loading does (line 1 is the header), config.* and the run's errors.

    Each record is a dict of roster columns plus community columns (PROGRAM, AFFINITY) as file cells.
    """
    # The file's header: HEADER's columns, plus any other roster column a record has (as the file's
    # own name), then the community columns.
    extra = [c for c in ROSTER_COLUMNS if c not in HEADER and any(c in record for record in records)]
    columns = [c for c in ROSTER_COLUMNS if c in HEADER or c in extra]
    community_columns = [c.column for c in school.communities]
    header = [HEADER.get(c, c.upper()) for c in columns] + [column.title() for column in community_columns]
    by_raw_column = {raw: name for name, raw in RAW_COLUMNS.items()}
    canonical = [by_raw_column[c] for c in columns] + community_columns
    rows = [[record.get(c, "") for c in [*columns, *community_columns]] for record in records]
    with open_warehouse(school) as con, audit.transaction(con):
        fill_raw(
            con,
            school,
            header,
            rows,
            run_id,
            canonical=canonical,
            file_meta={"file_version_id": "v1", "file_etag": "etag", "file_sha256": "sha", "file_bytes": 100},
        )
        write_config_tables(con, school)
        audit.record_findings(
            con,
            run_id,
            "quality",
            [
                audit.Finding(rule=rule, message=f"line {line}: {rule}", line_number=line)
                for line, rule in (errors or {}).items()
            ],
        )
