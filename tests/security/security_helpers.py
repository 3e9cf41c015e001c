"""The security tests' hostile inputs (a school whose own names are SQL injections, the naughty
strings) and a dump of the store's tables."""

from __future__ import annotations

import json
from pathlib import Path

import sqlalchemy as sa
import yaml

from tests.corpora import CORPORA

PROJECT_ROOT = Path(__file__).resolve().parents[2]
NAUGHTY_JSON = CORPORA / "naughty-strings" / "blns.json"

# The two classic payloads the issue names: one breaks out of a double-quoted identifier, one out of
# a single-quoted literal.
IDENT_INJECTION = 'x"; drop table users; --'
LITERAL_INJECTION = "Robert'); DROP TABLE users;--"
# A community cell is split on ';', so a mapped value that must stay whole has none.
VALUE_INJECTION = "Robert') OR '1'='1' --"


def naughty_strings() -> list[str]:
    """Every string of the Big List of Naughty Strings, in file order."""
    return json.loads(NAUGHTY_JSON.read_text(encoding="utf-8"))


def hostile_school(school_id: str, bucket: str) -> dict:
    """A school config whose header alias, groups, community column and value map are injections."""
    return {
        "school_id": school_id,
        "name": f"{LITERAL_INJECTION} University",
        "s3": {"bucket": bucket, "key": "roster.csv", "aws_conn_id": f"sis_s3_{school_id}"},
        "identifier": "email",
        "auto_sync": True,
        "missing_users": "deactivate",
        "duplicates": "reject_file",
        "header_aliases": {LITERAL_INJECTION: "FIRST_NAME"},
        "user_types": {"Undergraduate": LITERAL_INJECTION},
        "communities": [
            {"column": IDENT_INJECTION, "group": LITERAL_INJECTION},
            {"column": "AFFINITY", "group": IDENT_INJECTION},
            {
                "column": "PROGRAM",
                "group": "Career Communities",
                "values": {VALUE_INJECTION: IDENT_INJECTION},
            },
        ],
    }


def write_school(directory: Path, config: dict) -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / f"{config['school_id']}.yaml"
    path.write_text(yaml.safe_dump(config, allow_unicode=True), encoding="utf-8")
    return path


def table_dump(engine: sa.Engine, table: str, school_id: str | None = None) -> list[tuple]:
    """Every row of a store table (of one school, when given), sorted, as plain tuples."""
    query = f"select * from {table}" + (" where school_id = :school" if school_id else "")
    with engine.connect() as conn:
        rows = conn.execute(sa.text(query), {"school": school_id}).fetchall()
    return sorted(tuple(row) for row in rows)
