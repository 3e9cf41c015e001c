"""The school's side of onboarding: the request, its checks, and the YAML written in onboarding review."""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

import yaml
from pydantic import ValidationError

from sisbridge.config import SCHOOL_ID_PATTERN, ConfigError, SchoolConfig, load_school, schools_dir

DEFAULT_BUCKET_PREFIX = "uconnect-sis-"
DEFAULT_KEY = "roster.csv"
DEFAULT_IDENTIFIER = "email"
_BUCKET_NAME = re.compile(r"^[a-z0-9][a-z0-9.\-]{1,61}[a-z0-9]$")
# pydantic's field path -> the option that sets it, so an error names what the operator typed.
_OPTION_OF_FIELD = {
    "name": "--name",
    "s3.key": "--key",
    "s3.bucket": "--bucket-prefix",
    "s3.aws_conn_id": "--aws-conn-id",
    "identifier": "--identifier",
    "timezone": "--timezone",
}


class InvalidRequest(ValueError):
    """The command line or its environment is wrong (exit 2); nothing was changed."""


@dataclass(frozen=True)
class Request:
    """What `sisbridge onboard` was asked for; None means "not given": keep what exists, else default."""

    school_id: str
    name: str | None = None
    identifier: str | None = None
    key: str | None = None
    bucket_prefix: str | None = None
    aws_conn_id: str | None = None
    timezone: str | None = None
    roster_versions_days: int | None = None
    reports_days: int | None = None
    rotate_key: bool = False


def bucket_name(school_id: str, prefix: str = DEFAULT_BUCKET_PREFIX) -> str:
    """The school's bucket: the prefix and the school id, with `_` (not allowed in bucket names) as `-`."""
    return f"{prefix}{school_id.replace('_', '-')}"


def check_school_id(school_id: str) -> None:
    if not re.fullmatch(SCHOOL_ID_PATTERN, school_id):
        raise InvalidRequest(
            f"school id {school_id!r}: must match {SCHOOL_ID_PATTERN} "
            "(2-40 lowercase letters, digits or _, starting with a letter)"
        )


def check_days(option: str, days: int | None, maximum: int | None = None) -> None:
    if days is None:
        return
    if days < 1 or (maximum is not None and days > maximum):
        bound = f"between 1 and {maximum}" if maximum else "at least 1"
        raise InvalidRequest(f"{option} {days}: must be a whole number of days {bound}")


def _check_bucket_name(bucket: str) -> None:
    if not _BUCKET_NAME.match(bucket) or ".." in bucket or bucket.startswith("xn--"):
        raise InvalidRequest(
            f"bucket name {bucket!r} (--bucket-prefix and the school id) is not a valid S3 bucket name: "
            "3-63 lowercase letters, digits, '.' or '-', starting and ending with a letter or digit"
        )


def _validated(data: dict) -> SchoolConfig:
    try:
        return SchoolConfig.model_validate(data)
    except ValidationError as exc:
        problems = []
        for error in exc.errors():
            where = ".".join(str(part) for part in error["loc"])
            problems.append(f"{_OPTION_OF_FIELD.get(where, where)}: {error['msg']}")
        raise InvalidRequest("; ".join(problems)) from exc


def plan_config(request: Request, directory: Path | None = None) -> tuple[SchoolConfig, Path, bool]:
    """The school's config: the existing YAML, or the one to write. No side effects.

    Returns (config, path, exists). An option that contradicts an existing YAML is an error: the
    YAML is the platform team's to edit, and a rerun must never undo their changes.
    """
    check_school_id(request.school_id)
    check_days("--roster-versions-days", request.roster_versions_days)
    check_days("--reports-days", request.reports_days)
    path = (directory or schools_dir()) / f"{request.school_id}.yaml"
    if path.exists():
        school = load_school(path)
        given = {
            "--name": (request.name, school.name),
            "--identifier": (request.identifier, school.identifier),
            "--key": (request.key, school.s3.key),
            "--aws-conn-id": (request.aws_conn_id, school.s3.aws_conn_id),
            "--timezone": (request.timezone, school.timezone),
            "--bucket-prefix": (
                request.bucket_prefix and bucket_name(request.school_id, request.bucket_prefix),
                school.s3.bucket,
            ),
        }
        for option, (wanted, current) in given.items():
            if wanted is not None and wanted != current:
                raise InvalidRequest(
                    f"{path} exists with a different {option.removeprefix('--')} ({current!r}, not "
                    f"{wanted!r}); edit the YAML to change it"
                )
        return school, path, True
    if not request.name:
        raise InvalidRequest(f"--name is required to onboard a new school ({path} does not exist)")
    bucket = bucket_name(request.school_id, request.bucket_prefix or DEFAULT_BUCKET_PREFIX)
    _check_bucket_name(bucket)
    data = {
        "school_id": request.school_id,
        "name": request.name,
        "s3": {
            "bucket": bucket,
            "key": request.key or DEFAULT_KEY,
            "aws_conn_id": request.aws_conn_id or f"sis_s3_{request.school_id}",
        },
        "identifier": request.identifier or DEFAULT_IDENTIFIER,
    }
    if request.timezone:
        data["timezone"] = request.timezone
    return _validated(data), path, False


# No value of the school's goes into the comment: a name with a line break could write a key there.
_CONFIG_HEADER = (
    "# Written by `sisbridge onboard`. No auto_sync key: the school is in onboarding review. Every run\n"
    "# is a dry run until a reviewer approves one in the Airflow UI, which pushes that run and turns\n"
    "# auto sync on. s3.aws_conn_id is the Airflow connection the sync reads the bucket with: the\n"
    "# platform's credentials, never the school's key.\n"
)


def write_config(school: SchoolConfig, path: Path) -> None:
    """Write the YAML without auto_sync, atomically, and check that it loads as the same config."""
    data = {
        "school_id": school.school_id,
        "name": school.name,
        "s3": {"bucket": school.s3.bucket, "key": school.s3.key, "aws_conn_id": school.s3.aws_conn_id},
        "identifier": school.identifier,
    }
    if school.timezone != "UTC":
        data["timezone"] = school.timezone
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_name(f".{path.name}.partial")
    text = _CONFIG_HEADER + yaml.safe_dump(data, sort_keys=False, allow_unicode=True, width=100)
    partial.write_text(text, encoding="utf-8")
    partial.replace(path)
    loaded = load_school(path)
    if loaded.s3 != school.s3 or loaded.name != school.name:
        raise ConfigError(f"{path}: does not read back as written")
