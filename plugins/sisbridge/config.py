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

from sisbridge import normalize

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
    # A file may carry both STAKEHOLDERS and USER_TYPE: a non-blank USER_TYPE wins. Last, so that
    # raw.roster's other columns keep their places.
    "USER_TYPE",
)
# raw.roster's column for each standard header (DELETE is a reserved word in SQL).
RAW_COLUMNS = {name: ("delete_flag" if name == "DELETE" else name.lower()) for name in STANDARD_COLUMNS}
# The primary community column, built in: without a `communities` entry of its own, its values are
# communities of this group (unless another column of the school already feeds the group).
BUILTIN_COMMUNITY_COLUMN, BUILTIN_COMMUNITY_GROUP = "PROGRAM", "Career Communities"
IDENTIFIER_COLUMNS = {"email": "EMAIL", "user_id": "USER_ID", "user_login": "USER_LOGIN"}


class ConfigError(ValueError):
    """A school config is invalid; the message names the file and the field."""


def normalize_header(name: str) -> str:
    """Header matching is case-insensitive and ignores surrounding whitespace (and a stray BOM)."""
    return normalize.trim(name).upper()


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
    # None (the key left out): onboarding review, every run a dry run until a reviewer approves one.
    auto_sync: bool | None = None
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
    # How long the warehouse keeps superseded data for time travel (`sisbridge sql --as-of`); the
    # weekly maintenance expires older lake snapshots and deletes their files. The SCD2 user history
    # (snapshots.users_snapshot) and the audit tables are kept whatever this says.
    lake_retention_days: int = Field(default=90, ge=7)
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
    def _normalized_aliases(cls, aliases: dict[str, str]) -> dict[str, str]:
        normalized = {}
        for source, target in aliases.items():
            if not normalize_header(source):
                raise ValueError("an alias has a blank source header")
            if not normalize_header(target):
                raise ValueError(f"alias {source!r} has a blank target")
            normalized[normalize_header(source)] = normalize_header(target)
        return normalized

    @model_validator(mode="wrap")
    @classmethod
    def _columns_fit_together(cls, data, handler) -> SchoolConfig:
        """One column per community group, and every alias names a column the school has.

        Each problem starts with its key as the YAML spells it, since a rule across fields has no
        single place in pydantic.
        """
        self = handler(data)
        spelled = {}
        if isinstance(data, dict) and isinstance(data.get("header_aliases"), dict):
            spelled = {normalize_header(str(source)): source for source in data["header_aliases"]}
        problems = []
        columns: set[str] = set()
        groups: dict[str, str] = {}
        for index, community in enumerate(self.communities):
            if community.column in columns:
                problems.append(f"communities.{index}.column: {community.column} is configured twice")
            columns.add(community.column)
            group = normalize.trim(community.group).casefold()
            if group in groups:
                problems.append(
                    f"communities.{index}.group: {community.column} and {groups[group]} both feed the "
                    f"group {community.group!r}; each community group has exactly one column"
                )
            groups.setdefault(group, community.column)
        for source, target in self.header_aliases.items():
            if target not in STANDARD_COLUMNS and target not in self.community_columns:
                communities = ", ".join(self.community_columns) or "none"
                problems.append(
                    f"header_aliases.{spelled.get(source, source)}: the target {target!r} is neither a "
                    f"standard column ({', '.join(STANDARD_COLUMNS)}) nor a community column of this school "
                    f"({communities})"
                )
        if problems:
            raise ValueError("; ".join(problems))
        return self

    @property
    def sync_mode(self) -> Literal["review", "auto", "paused"]:
        """`review` (auto_sync unset: onboarding), `auto` (true) or `paused` (false: dry runs only)."""
        return {None: "review", True: "auto", False: "paused"}[self.auto_sync]

    def current_mode(self, auto_sync_approved: bool) -> Literal["review", "auto", "paused"]:
        """The mode a run follows: the YAML's `auto_sync` when set, else `auto` once a reviewer approved
        a first file (`audit.auto_sync_approvals`), else `review`."""
        if self.auto_sync is None and auto_sync_approved:
            return "auto"
        return self.sync_mode

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
        """The school's community columns by canonical name, the built-in PROGRAM column included."""
        columns = {community.column: community for community in self.communities}
        groups = {normalize.trim(c.group).casefold() for c in self.communities}
        if BUILTIN_COMMUNITY_COLUMN not in columns and BUILTIN_COMMUNITY_GROUP.casefold() not in groups:
            columns[BUILTIN_COMMUNITY_COLUMN] = CommunityColumn(
                column=BUILTIN_COMMUNITY_COLUMN, group=BUILTIN_COMMUNITY_GROUP
            )
        return columns

    def canonical_header(self, name: str) -> str:
        """Map one header name from the file to its canonical name (aliases applied)."""
        normalized = normalize_header(name)
        return self.header_aliases.get(normalized, normalized)


def _problem(error: dict) -> str:
    """One pydantic error as `field: message`; a rule across fields names its key in the message."""
    if error["loc"]:
        return f"{'.'.join(str(part) for part in error['loc'])}: {error['msg']}"
    return str(error["msg"]).removeprefix("Value error, ")


class _DuplicateKey(yaml.YAMLError):
    def __init__(self, key, first: int, second: int):
        super().__init__(f"{key}: given twice, on lines {first} and {second}; keep one")


class _UniqueKeyLoader(yaml.SafeLoader):
    """YAML's safe loader, except that a key given twice in one mapping is an error.

    PyYAML keeps the last of two equal keys without a word, so one of two settings would be ignored.
    """

    def construct_mapping(self, node, deep=False):
        lines = {}
        for key_node, _ in node.value:
            if key_node.tag == "tag:yaml.org,2002:merge":  # `<<: *anchor` is flattened by the parent
                continue
            key = self.construct_object(key_node, deep=deep)
            line = key_node.start_mark.line + 1
            try:
                first = lines.setdefault(key, line)
            except TypeError:  # an unhashable key: construct_mapping reports it
                continue
            if first != line:
                raise _DuplicateKey(key, first, line)
        return super().construct_mapping(node, deep=deep)


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
            row = {normalize_header(k): normalize.trim(v or "") for k, v in row.items() if k is not None}
            if not row["VALUE"] or not row["COMMUNITY"]:
                raise ConfigError(f"{path}: line {line}: 'value' and 'community' must not be blank")
            mapping[row["VALUE"]] = row["COMMUNITY"]
    return mapping


def load_school(path: str | os.PathLike) -> SchoolConfig:
    """Read and validate one school YAML; raise ConfigError naming the file and field."""
    path = Path(path)
    try:
        data = yaml.load(path.read_text(encoding="utf-8"), Loader=_UniqueKeyLoader)  # noqa: S506 - a safe loader
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read: {exc.strerror}") from exc
    except _DuplicateKey as exc:
        raise ConfigError(f"{path}: {exc}") from exc
    except yaml.YAMLError as exc:
        # One line: the CLI prints it as one, and YAML's own message spans several.
        raise ConfigError(f"{path}: not valid YAML: {' '.join(str(exc).split())}") from exc
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
        problems = "; ".join(_problem(err) for err in exc.errors())
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
