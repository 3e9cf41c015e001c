"""The dbt step: the school's settings as `config.*` tables, then `dbt build` and `dbt snapshot`.

dbt is imported inside the functions because the DAG module imports this one.
"""

from __future__ import annotations

import contextlib
import importlib
import json
import logging
import os
import shutil
import sys
import threading
from collections.abc import Generator
from pathlib import Path

from sisbridge import warehouse
from sisbridge.audit import Finding, record_findings
from sisbridge.config import PROJECT_ROOT, SchoolConfig, safe_component, sisbridge_home

DBT_PROJECT_DIR = PROJECT_ROOT / "dbt_project"
# The snapshot runs only after a successful push, never as part of the build. The unit tests check the
# SQL, not the data: they give the same answer every week for every school, so CI runs them
# (`run_unit_tests`) and the weekly build leaves them out.
BUILD_EXCLUDE = ("resource_type:snapshot", "resource_type:unit_test")
TRANSFORM_STAGE = "transform"
DBT_PROFILE, DBT_TARGET = "sisbridge", "prod"
# dbt's saved parse of the project, written beside the manifest by `sisbridge.localrun.ensure_dbt_manifest`
# with the pipeline's profile and target (`parse_args`). A school's first build on a worker starts
# from it (`seed_parse`) instead of parsing the project anew.
PARSE_SEED = DBT_PROJECT_DIR / "target" / "partial_parse.msgpack"
# The `dbt` of this interpreter's environment (a bare `dbt`, found on PATH, where it has none): the
# project's parse, Cosmos's producer and `sisbridge dbt` run it as a subprocess.
DBT_EXECUTABLE = shutil.which("dbt", path=str(Path(sys.executable).parent)) or "dbt"
DATE_FORMATS_ENV = "SISBRIDGE_DATE_FORMATS"

log = logging.getLogger(__name__)

_CONFIG_SCHEMA = """
create schema if not exists config;
create or replace table config.school (school_id varchar, identifier varchar, missing_users varchar);
create or replace table config.user_types (source_value varchar, user_type varchar);
create or replace table config.community_columns (
    column_name varchar, community_group varchar, has_value_map boolean
);
create or replace table config.community_values (
    column_name varchar, source_value varchar, community varchar
);
create or replace table config.date_formats (format varchar);
"""


class TransformError(RuntimeError):
    """dbt failed; the message names the failing nodes and what dbt said about them."""


def write_config_tables(con, school: SchoolConfig) -> None:
    """Replace the `config.*` tables with this school's settings (values go in as parameters)."""
    con.execute(_CONFIG_SCHEMA)
    con.execute(
        "insert into config.school values (?, ?, ?)",
        [school.school_id, school.identifier, school.missing_users],
    )
    if school.user_types:
        con.executemany("insert into config.user_types values (?, ?)", list(school.user_types.items()))
    communities = school.community_columns.values()
    if communities:
        con.executemany(
            "insert into config.community_columns values (?, ?, ?)",
            [(c.column, c.group, c.values is not None) for c in communities],
        )
    values = [(c.column, source, target) for c in communities for source, target in (c.values or {}).items()]
    if values:
        con.executemany("insert into config.community_values values (?, ?, ?)", values)
    if school.graduation.date_formats:
        con.executemany(
            "insert into config.date_formats values (?)",
            [(fmt,) for fmt in school.graduation.date_formats],
        )


def dbt_env(school_id: str, *, with_lake: bool = True) -> dict[str, str]:
    """Environment for a dbt run on one school's lake, with its own target and log folders.

    with_lake=False leaves out the lake's settings (`SISBRIDGE_LAKE`, which may hold secrets): the
    DAG file renders Cosmos's tasks with that, and `lake_pre_execute` adds them when a task runs.
    """
    work_dir = sisbridge_home() / "dbt" / safe_component(school_id)
    lake = warehouse.dbt_env(school_id) if with_lake else {"SISBRIDGE_SCHOOL_ID": school_id}
    return {
        **lake,
        "DBT_PROJECT_DIR": str(DBT_PROJECT_DIR),
        "DBT_PROFILES_DIR": str(DBT_PROJECT_DIR),
        # Separate folders so that two schools' runs never overwrite each other's manifest.
        "DBT_TARGET_PATH": str(work_dir / "target"),
        "DBT_LOG_PATH": str(work_dir / "logs"),
        # Every node's SQL stays in target/run; the file log keeps dbt's info lines, not its debug events.
        "DBT_LOG_LEVEL_FILE": "info",
    }


def lake_pre_execute(context) -> None:
    """Cosmos's `pre_execute`: put the lake's settings in the task's environment for its dbt process.

    Resolved in the task (from the `sisbridge_lake` connection), never when the DAG is parsed, and
    handed over in the environment, never on a command line. Also seeds the dbt process's target
    folder with the project's parse (`seed_parse`).
    """
    os.environ[warehouse.LAKE_ENV] = warehouse.settings().to_env()
    target = (getattr(context["task"], "env", None) or {}).get("DBT_TARGET_PATH")
    if target:
        seed_parse(Path(target))


def seed_parse(target: Path) -> None:
    """Create a dbt target folder, and copy the project's saved parse (`PARSE_SEED`) into it if it has none.

    A worker whose disk is new, or was wiped, would otherwise parse the whole project before the
    build: about 2 s of a small school's run (docs/scaling.md). dbt checks the copy as it checks its
    own: a parse made with other vars, profile or target, or of files changed since, is parsed again
    (in full, or the changed files only), so a stale or foreign seed costs only that parse.
    """
    target.mkdir(parents=True, exist_ok=True)
    saved = target / PARSE_SEED.name
    if saved.exists() or not PARSE_SEED.exists():
        return
    # Copied aside, then renamed: a dbt process starting beside this one never reads half a file.
    partial = target / f".{PARSE_SEED.name}.{os.getpid()}.{threading.get_ident()}"
    try:
        shutil.copyfile(PARSE_SEED, partial)
        os.replace(partial, saved)
    except OSError as exc:  # the project's parse vanished meanwhile (a `dbt parse` rewriting it)
        log.info("no saved dbt parse copied into %s: %s", target, exc)
        partial.unlink(missing_ok=True)


def dbt_school_env(school: SchoolConfig) -> dict[str, str]:
    """The school's settings that dbt reads as it compiles: its extra graduation date formats (JSON).

    An environment variable (`school_date_formats()` in dbt_project/macros/text.sql), not a dbt var:
    dbt parses the whole project again when the vars differ from those of its saved parse, but only
    the files that read an environment variable when that variable changes. So every school's first
    build on a worker starts from the project's parse (`seed_parse`). The run's id is not passed at
    all: it reaches the models through `raw.file`, so nothing here changes from week to week.
    """
    return {DATE_FORMATS_ENV: json.dumps(list(school.graduation.date_formats))}


def parse_args() -> list[str]:
    """The arguments of the project's own `dbt parse` (`sisbridge.localrun.ensure_dbt_manifest`).

    The pipeline's profile and target: dbt reuses a saved parse only for the same vars, profile and
    target, so a school's first build on a worker can start from this one (`seed_parse`).
    """
    return ["--profile", DBT_PROFILE, "--target", DBT_TARGET]


def _release_warehouse() -> None:
    """Close the DuckDB instance that dbt-duckdb keeps open in this process after a command.

    It holds the school's lake attached: the catalog's connection, and for `sisbridge check` the
    scratch file, which would stay locked.
    """
    from dbt.adapters.duckdb.connections import DuckDBConnectionManager

    with DuckDBConnectionManager._LOCK:
        if DuckDBConnectionManager._ENV is not None:
            DuckDBConnectionManager._ENV.close()
        DuckDBConnectionManager.close_all_connections()


@contextlib.contextmanager
def environment(values: dict[str, str]) -> Generator[None, None, None]:
    """Set environment variables for the duration of a block, then restore them."""
    saved = {name: os.environ.get(name) for name in values}
    os.environ.update(values)
    try:
        yield
    finally:
        for name, value in saved.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value


def _invoke(school: SchoolConfig, run_id: str, args: list[str]) -> None:
    from dbt.cli.main import dbtRunner

    log.info("dbt %s for %s, run %s", " ".join(args), school.school_id, run_id)
    env = {**dbt_env(school.school_id), **dbt_school_env(school)}
    seed_parse(Path(env["DBT_TARGET_PATH"]))
    command = [
        *args,
        "--project-dir",
        str(DBT_PROJECT_DIR),
        "--profiles-dir",
        str(DBT_PROJECT_DIR),
        # The same profile and target as the DAG's build, so each reuses the other's parse.
        "--profile",
        DBT_PROFILE,
        "--target",
        DBT_TARGET,
    ]
    with environment(env):
        try:
            result = dbtRunner().invoke(command)
        finally:
            _release_warehouse()
    if result.success:
        return
    if result.exception is not None:
        raise TransformError(f"dbt {args[0]} for {school.school_id} failed: {result.exception}") from (
            result.exception
        )
    failures = [
        f"{node_result.node.unique_id}: {node_result.status}: {node_result.message}"
        for node_result in getattr(result.result, "results", [])
        if str(node_result.status) in ("error", "fail", "runtime error")
    ]
    raise TransformError(f"dbt {args[0]} for {school.school_id} failed: " + "; ".join(failures))


def run_build(school: SchoolConfig, run_id: str) -> None:
    """`dbt build` of the models and data tests; the caller must not hold the warehouse open."""
    _invoke(school, run_id, ["build", "--exclude", *BUILD_EXCLUDE])


def run_unit_tests(school: SchoolConfig, run_id: str) -> None:
    """dbt's unit tests, on a warehouse that `run_build` has built (they need the models' columns)."""
    _invoke(school, run_id, ["test", "--select", "test_type:unit"])


def import_dbt_in_background() -> None:
    """Start importing dbt (about a second of CPU) on a thread, for a caller that will run dbt soon.

    The push task does this while its own work waits on the store and the lake, so that the snapshot
    step that follows need not. A later `import` of dbt waits for this one to finish.
    """
    threading.Thread(
        target=importlib.import_module, args=("dbt.cli.main",), name="import-dbt", daemon=True
    ).start()


def run_snapshot(school: SchoolConfig, run_id: str) -> None:
    """Snapshot the applied baseline (then test the snapshot), right after a successful push."""
    # Its manifest and run results would replace the build's in the school's target folder, and
    # writing them was a fifth of the dbt invocation at 10k users.
    _invoke(school, run_id, ["build", "--select", "resource_type:snapshot", "--no-write-json"])


def record_transform_findings(con, run_id: str) -> int:
    """Copy `marts.roster_findings` into `audit.rejected_rows` (stage 'transform')."""
    rows = con.execute(
        """
        select rule, message, severity, line_number, identifier, column_name, value
        from marts.roster_findings
        order by line_number, rule, column_name, value
        """
    ).fetchall()
    return record_findings(con, run_id, TRANSFORM_STAGE, [Finding(*row) for row in rows])


DBT_CLI_TARGETS = ("dev", "prod")


def dbt_cli_command(school: SchoolConfig, target: str, args: list[str]) -> tuple[list[str], dict[str, str]]:
    """The command line and environment of `sisbridge dbt` (docs/analytics-engineering.md).

    The target travels as `DBT_TARGET`, the project as `DBT_PROJECT_DIR` and `DBT_PROFILES_DIR`, so
    a `--project-dir` among the arguments (a copy of the project) wins. Under `dev`, refs to models
    that are not selected and not built in the dev schemas yet resolve to the sync's own tables
    (`--defer` to the prod manifest that `ensure_dbt_manifest` keeps beside the project), so
    `build --select users` builds `dev_marts.users` from the production upstream models (and,
    with a copy of the project, `state:modified` selects what differs from the repository's).
    """
    if target not in DBT_CLI_TARGETS:
        raise ValueError(f"unknown dbt target {target!r}: use one of {', '.join(DBT_CLI_TARGETS)}")
    if any(arg in ("--target", "-t") or arg.startswith("--target=") for arg in args):
        raise ValueError("give the target as `sisbridge dbt --target dev|prod`, before dbt's own arguments")
    # Apart from the pipeline's own folders: a try must not replace its manifest or partial parse.
    work_dir = sisbridge_home() / "dbt" / safe_component(school.school_id) / f"cli-{target}"
    env = {
        **dbt_env(school.school_id),
        **dbt_school_env(school),
        "DBT_TARGET": target,
        "DBT_TARGET_PATH": str(work_dir / "target"),
        "DBT_LOG_PATH": str(work_dir / "logs"),
        "DO_NOT_TRACK": "1",
        warehouse.DBT_USE_LAKE_ENV: "1",
    }
    if target == "dev":
        env |= {"DBT_DEFER": "true", "DBT_STATE": str(DBT_PROJECT_DIR / "target")}
    return list(args), env


def dbt_cli(school: SchoolConfig, target: str, args: list[str], dbt_executable: Path) -> int:
    """Run dbt for `sisbridge dbt` in a subprocess on the school's lake; returns dbt's exit code."""
    import subprocess

    command, env = dbt_cli_command(school, target, args)
    Path(env["DBT_TARGET_PATH"]).mkdir(parents=True, exist_ok=True)
    return subprocess.run([str(dbt_executable), *command], env={**os.environ, **env}, check=False).returncode


def build_docs(target_dir: Path) -> Path:
    """Write dbt's lineage docs (one static `index.html`) into target_dir, without a warehouse."""
    from dbt.cli.main import dbtRunner

    target_dir = Path(target_dir).absolute()
    target_dir.mkdir(parents=True, exist_ok=True)
    env = {
        # The catalog is left empty, so no lake is needed: the profile attaches an in-memory one.
        "SISBRIDGE_SCHOOL_ID": "",
        "DBT_TARGET_PATH": str(target_dir),
        "DBT_LOG_PATH": str(target_dir / "logs"),
    }
    with environment(env):
        result = dbtRunner().invoke(
            [
                "docs",
                "generate",
                "--static",
                "--empty-catalog",
                "--project-dir",
                str(DBT_PROJECT_DIR),
                "--profiles-dir",
                str(DBT_PROJECT_DIR),
                "--target",
                DBT_TARGET,
            ]
        )
        _release_warehouse()
    if not result.success:
        raise TransformError(f"dbt docs generate failed: {result.exception}")
    return target_dir / "static_index.html"
