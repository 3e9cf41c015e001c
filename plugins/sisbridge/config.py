"""School configs (`config/schools/<school_id>.yaml`) and runtime settings.

A config that breaks the rules raises `ConfigError`, which names the file and the field.
"""

from __future__ import annotations

import csv
import hashlib
import json
import os
import re
from pathlib import Path
from typing import Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

SCHOOL_ID_PATTERN = r"^[a-z][a-z0-9_]{1,39}$"
# The folder that holds `dags/`, `dbt_project/` and `config/` (sisbridge is installed from it, editable).
PROJECT_ROOT = Path(__file__).resolve().parents[2]

# Canonical header names of the standard columns (DESIGN.md, "The school file").
STANDARD_COLUMNS = (
    "FIRST_NAME",
    "LAST_NAME",
    "EMAIL",
    "USER_ID",
    "USER_LOGIN",
    "GRADUATION",
    "STAKEHOLDERS",
    "EMAIL_OPT_OUT",
    "DELETE",
)
# Built-in aliases that every school gets, on top of its own `header_aliases`.
BUILTIN_HEADER_ALIASES = {"USER_TYPE": "STAKEHOLDERS"}
IDENTIFIER_COLUMNS = {"email": "EMAIL", "user_id": "USER_ID", "user_login": "USER_LOGIN"}


class ConfigError(ValueError):
    """A school config is invalid; the message names the file and the field."""


def normalize_header(name: str) -> str:
    """Header matching is case-insensitive and ignores surrounding spaces (and a stray BOM)."""
    return name.replace("\ufeff", "").strip().upper()


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class S3Location(_Strict):
    bucket: str = Field(pattern=r"^[a-z0-9][a-z0-9.\-]{1,61}[a-z0-9]$")
    key: str = Field(min_length=1, max_length=1024)
    aws_conn_id: str = Field(pattern=r"^[A-Za-z0-9_\-]{1,250}$")

    @field_validator("key")
    @classmethod
    def _no_traversal(cls, key: str) -> str:
        parts = key.split("/")
        if key.startswith("/") or any(part in ("", ".", "..") for part in parts):
            raise ValueError("must be a plain object key without empty, '.' or '..' segments")
        return key


class Thresholds(_Strict):
    max_removed_pct: float = Field(default=10, ge=0, le=100)
    max_removed: int = Field(default=500, ge=0)
    max_updated_pct: float = Field(default=75, ge=0, le=100)
    max_email_changed_pct: float = Field(default=10, ge=0, le=100)
    max_rejected_pct: float = Field(default=5, ge=0, le=100)


class GraduationConfig(_Strict):
    date_formats: tuple[str, ...] = ()

    @field_validator("date_formats")
    @classmethod
    def _formats_have_year(cls, formats: tuple[str, ...]) -> tuple[str, ...]:
        for fmt in formats:
            if "%Y" not in fmt and "%y" not in fmt:
                raise ValueError(f"date format {fmt!r} has no year (%Y or %y)")
            if not all(ch.isprintable() for ch in fmt) or "'" in fmt:
                raise ValueError(f"date format {fmt!r} has a quote or a control character")
        return formats


class CommunityColumn(_Strict):
    column: str = Field(min_length=1)
    group: str = Field(min_length=1)
    values: dict[str, str] | None = None
    values_file: str | None = None

    @field_validator("column")
    @classmethod
    def _canonical_column(cls, column: str) -> str:
        canonical = normalize_header(column)
        if not canonical:
            raise ValueError("is blank")
        if canonical in STANDARD_COLUMNS:
            raise ValueError(f"{canonical} is a standard column, not a community column")
        return canonical

    @model_validator(mode="after")
    def _one_value_source(self) -> CommunityColumn:
        if self.values is not None and self.values_file is not None:
            raise ValueError("give either 'values' or 'values_file', not both")
        return self


class NotifierSpec(_Strict):
    """An Airflow notifier (a `BaseNotifier` subclass, e.g. Slack's or SMTP's) and its keyword arguments."""

    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True)

    class_path: str = Field(alias="class", pattern=r"^[A-Za-z_][\w]*(\.[A-Za-z_][\w]*)+$")
    kwargs: dict = {}

    @model_validator(mode="after")
    def _importable_notifier(self) -> NotifierSpec:
        # Fail when the DAG is parsed, not at 2am when the first alert is due.
        self.build()
        return self

    def build(self):
        """Import the class and instantiate it with `kwargs`; ValueError says what is wrong."""
        import importlib

        module_name, _, class_name = self.class_path.rpartition(".")
        try:
            cls = getattr(importlib.import_module(module_name), class_name)
        except (ImportError, AttributeError) as exc:
            raise ValueError(f"cannot import notifier class {self.class_path!r}: {exc}") from exc
        from airflow.sdk import BaseNotifier

        if not (isinstance(cls, type) and issubclass(cls, BaseNotifier)):
            raise ValueError(f"{self.class_path!r} is not an Airflow notifier (airflow.sdk.BaseNotifier)")
        try:
            return cls(**self.kwargs)
        except TypeError as exc:
            raise ValueError(f"{self.class_path!r} does not take these kwargs: {exc}") from exc


class SchoolConfig(_Strict):
    school_id: str = Field(pattern=SCHOOL_ID_PATTERN)
    name: str = Field(min_length=1)
    s3: S3Location
    identifier: Literal["email", "user_id", "user_login"] = "email"
    auto_sync: bool = True
    schedule: str = "0 23 * * 6"
    timezone: str = "UTC"
    missing_users: Literal["deactivate", "delete", "keep"] = "deactivate"
    duplicates: Literal["reject_file", "reject_rows"] = "reject_file"
    thresholds: Thresholds = Thresholds()
    header_aliases: dict[str, str] = {}
    user_types: dict[str, str] = {}
    graduation: GraduationConfig = GraduationConfig()
    communities: tuple[CommunityColumn, ...] = ()
    max_file_mb: float = Field(default=512, gt=0)
    stale_after_runs: int = Field(default=2, ge=1)
    approval_timeout_hours: float = Field(default=48, gt=0)
    notifiers: tuple[NotifierSpec, ...] = ()

    @field_validator("schedule")
    @classmethod
    def _valid_cron(cls, schedule: str) -> str:
        from croniter import croniter

        if not croniter.is_valid(schedule):
            raise ValueError(f"{schedule!r} is not a valid cron expression")
        return schedule

    @field_validator("timezone")
    @classmethod
    def _valid_timezone(cls, timezone: str) -> str:
        from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

        try:
            ZoneInfo(timezone)
        except (ZoneInfoNotFoundError, ValueError) as exc:
            raise ValueError(f"{timezone!r} is not an IANA time zone") from exc
        return timezone

    @field_validator("header_aliases")
    @classmethod
    def _aliases_target_known_columns(cls, aliases: dict[str, str]) -> dict[str, str]:
        normalized = {}
        for source, target in aliases.items():
            if not normalize_header(source):
                raise ValueError("an alias has a blank source header")
            if not normalize_header(target):
                raise ValueError(f"alias {source!r} has a blank target")
            normalized[normalize_header(source)] = normalize_header(target)
        return normalized

    @model_validator(mode="after")
    def _communities_are_distinct(self) -> SchoolConfig:
        seen: set[str] = set()
        for community in self.communities:
            if community.column in seen:
                raise ValueError(f"community column {community.column} is configured twice")
            seen.add(community.column)
        return self

    @property
    def identifier_column(self) -> str:
        """The canonical header of the column that holds the school's SSO identifier."""
        return IDENTIFIER_COLUMNS[self.identifier]

    @property
    def required_columns(self) -> tuple[str, ...]:
        columns = ["FIRST_NAME", "LAST_NAME", "EMAIL"]
        if self.identifier_column not in columns:
            columns.append(self.identifier_column)
        return tuple(columns)

    @property
    def community_columns(self) -> dict[str, CommunityColumn]:
        return {community.column: community for community in self.communities}

    def canonical_header(self, name: str) -> str:
        """Map one header name from the file to its canonical name (aliases applied)."""
        normalized = normalize_header(name)
        normalized = self.header_aliases.get(normalized, normalized)
        return BUILTIN_HEADER_ALIASES.get(normalized, normalized)


def _field_path(loc: tuple) -> str:
    return ".".join(str(part) for part in loc) or "(top level)"


def _read_values_file(config_path: Path, values_file: str, field: str) -> dict[str, str]:
    path = (config_path.parent / values_file).resolve()
    if not path.is_relative_to(config_path.parent.resolve()):
        raise ConfigError(f"{config_path}: {field}: {values_file!r} points outside the config folder")
    if not path.is_file():
        raise ConfigError(f"{config_path}: {field}: file {values_file!r} does not exist")
    with path.open(newline="", encoding="utf-8-sig") as handle:
        reader = csv.DictReader(handle)
        columns = {normalize_header(name) for name in reader.fieldnames or []}
        if not {"VALUE", "COMMUNITY"} <= columns:
            raise ConfigError(f"{path}: needs the header columns 'value' and 'community'")
        mapping = {}
        for line, row in enumerate(reader, start=2):
            row = {normalize_header(k): (v or "").strip() for k, v in row.items() if k is not None}
            if not row["VALUE"] or not row["COMMUNITY"]:
                raise ConfigError(f"{path}: line {line}: 'value' and 'community' must not be blank")
            mapping[row["VALUE"]] = row["COMMUNITY"]
    return mapping


def load_school(path: str | os.PathLike) -> SchoolConfig:
    """Read and validate one school YAML; raise ConfigError naming the file and field."""
    path = Path(path)
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read: {exc.strerror}") from exc
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path}: not valid YAML: {exc}") from exc
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: must be a YAML mapping of settings")
    for index, community in enumerate(data.get("communities") or []):
        if isinstance(community, dict) and community.get("values_file"):
            field = f"communities.{index}.values_file"
            community = dict(community)
            community["values"] = _read_values_file(path, str(community.pop("values_file")), field)
            data["communities"][index] = community
    try:
        school = SchoolConfig.model_validate(data)
    except ValidationError as exc:
        problems = "; ".join(f"{_field_path(err['loc'])}: {err['msg']}" for err in exc.errors())
        raise ConfigError(f"{path}: {problems}") from exc
    if school.school_id != path.stem:
        raise ConfigError(f"{path}: school_id: {school.school_id!r} must equal the file name {path.stem!r}")
    return school


def load_schools(directory: str | os.PathLike | None = None) -> list[SchoolConfig]:
    """All school configs in `directory`, sorted by school_id; any bad file raises ConfigError."""
    directory = Path(directory) if directory is not None else schools_dir()
    return [load_school(path) for path in sorted(directory.glob("*.yaml"))]


def sisbridge_home() -> Path:
    return Path(os.environ.get("SISBRIDGE_HOME", "./.sisbridge")).absolute()


def schools_dir() -> Path:
    """`SISBRIDGE_SCHOOLS_DIR`, by default the project's `config/schools`, whatever the working directory."""
    # Not `./config/schools`: Airflow parses the DAG file from wherever its processes were started,
    # and `sisbridge sync` runs from any folder; both must find the same schools.
    return Path(os.environ.get("SISBRIDGE_SCHOOLS_DIR", PROJECT_ROOT / "config" / "schools")).absolute()


def config_sha256(school: SchoolConfig) -> str:
    """A hash of the school's config as loaded (YAML and values files): a change makes a file new again."""
    canonical = json.dumps(school.model_dump(mode="json"), sort_keys=True, ensure_ascii=False)
    return hashlib.sha256(canonical.encode("utf-8")).hexdigest()


def safe_component(value: str) -> str:
    """A run id or school id as one safe path component: it can never climb out with '../'."""
    cleaned = re.sub(r"[^A-Za-z0-9_.+\-]", "_", value).lstrip(".")
    if not cleaned:
        raise ValueError(f"{value!r} cannot be used as a path component")
    return cleaned


def dag_id(school_id: str) -> str:
    """The id of a school's sync DAG."""
    return f"sis_sync__{school_id}"


def warehouse_path(school_id: str) -> Path:
    return sisbridge_home() / "warehouse" / f"{safe_component(school_id)}.duckdb"


def warehouse_memory_limit() -> str:
    """DuckDB's memory limit for one school's warehouse (it spills to disk beyond it).

    DuckDB's own default is 80% of the host's memory, per process: with several schools' tasks on
    one worker that is several times the host.
    """
    return os.environ.get("SISBRIDGE_DUCKDB_MEMORY_LIMIT", "1GB")


def push_workers() -> int:
    """How many push batches one school applies at a time, each in its own store connection.

    Two keep the push's DuckDB work and the store's work overlapping on two cores; each worker holds
    one store connection for the length of the push.
    """
    value = os.environ.get("SISBRIDGE_PUSH_WORKERS", "2")
    try:
        workers = int(value)
    except ValueError:
        workers = 0
    if workers < 1:
        raise ValueError(f"SISBRIDGE_PUSH_WORKERS must be a whole number of at least 1, not {value!r}")
    return workers


def reports_dir(school_id: str, run_id: str) -> Path:
    return sisbridge_home() / "reports" / safe_component(school_id) / safe_component(run_id)
