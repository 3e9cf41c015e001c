"""The `sisbridge` command: check a file, sync or onboard a school, query, migrate or dbt its warehouse."""

from __future__ import annotations

import argparse
import contextlib
import os
import sys
import tempfile
import traceback
from datetime import UTC, datetime
from pathlib import Path

from sisbridge.config import (
    ConfigError,
    sisbridge_home,
)
from sisbridge.localrun import (
    UsageError,
    airflow_environment,
    format_summary,
    prepare_airflow,
    run_dag,
    school_config,
)

EXIT_USAGE, EXIT_INTERNAL = 2, 3


def log_file(command: str) -> Path:
    """A new log file for this command under SISBRIDGE_HOME/logs (the temp folder when that fails)."""
    name = f"{command}-{datetime.now(UTC):%Y%m%dT%H%M%SZ}-{os.getpid()}.log"
    for folder in (sisbridge_home() / "logs", Path(tempfile.gettempdir()) / "sisbridge-logs"):
        try:
            folder.mkdir(parents=True, exist_ok=True)
            (folder / name).touch()
            return folder / name
        except OSError:
            continue
    raise OSError(f"cannot create {name} in {sisbridge_home() / 'logs'} or {tempfile.gettempdir()}")


@contextlib.contextmanager
def output_to(path: Path):
    """Send the process's stdout and stderr, and its children's, to `path` for the block."""
    sys.stdout.flush()
    sys.stderr.flush()
    saved = [os.dup(1), os.dup(2)]
    try:
        with path.open("ab") as log:
            os.dup2(log.fileno(), 1)
            os.dup2(log.fileno(), 2)
        yield path
    finally:
        sys.stdout.flush()
        sys.stderr.flush()
        for fd, copy in zip((1, 2), saved, strict=True):
            os.dup2(copy, fd)
            os.close(copy)


def cmd_check(args) -> int:
    from sisbridge import check

    path = Path(args.file)
    if not path.is_file():
        raise UsageError(f"{path}: no such file")
    school = school_config(args.school) if args.school else check.default_school_config()
    return check.check_file(path, school, Path(args.out) if args.out else None)


def cmd_sync(args) -> int:
    school_config(args.school)  # before the log: an unknown school is a one-line usage error
    args.log = log_file("sync")
    # Airflow's, dbt's and GX's output, and any traceback of a failed task, go to the log.
    with output_to(args.log):
        row = run_dag(args.school, force=args.force)
    print(format_summary(row))
    print(f"  log: {args.log}")
    return 1 if row["status"] == "failed" else 0


def read_connections_only() -> None:
    """Airflow's home as for `sync`, for commands that only read connections: no metadata DB, quiet logs."""
    os.environ.setdefault("AIRFLOW_HOME", str(sisbridge_home() / "airflow"))
    os.environ.setdefault("AIRFLOW__LOGGING__LOGGING_LEVEL", "WARNING")


def cmd_onboard(args) -> int:
    from sisbridge import onboarding

    read_connections_only()
    options = {name: value for name, value in vars(args).items() if name not in ("command", "func")}
    try:
        result = onboarding.onboard(onboarding.Request(**options))
    except onboarding.InvalidRequest as exc:
        raise UsageError(str(exc)) from exc
    except onboarding.ProvisioningError as exc:
        print(f"sisbridge: onboard {args.school_id}: {exc}", file=sys.stderr)
        return 1
    print(onboarding.report(result))
    return 0


def cmd_upload_url(args) -> int:
    from sisbridge import onboarding

    read_connections_only()
    try:
        url, expires_at = onboarding.upload_url(args.school, args.days)
    except onboarding.InvalidRequest as exc:
        raise UsageError(str(exc)) from exc
    except onboarding.ProvisioningError as exc:
        print(f"sisbridge: upload-url {args.school}: {exc}", file=sys.stderr)
        return 1
    print(url)
    print(
        f"valid until {expires_at:%Y-%m-%d %H:%M} UTC; anyone holding it can replace the roster of "
        f"{args.school} until then (upload: curl --fail -T roster.csv URL)",
        file=sys.stderr,
    )
    return 0


def cmd_demo(args) -> int:
    from sisbridge.demo import run_demo

    return run_demo(rows=args.rows)


def cmd_rollback(args) -> int:
    school = school_config(args.school)
    connections_from_airflow()
    from sisbridge import audit, userstore

    engine = userstore.engine_from_connection()
    with audit.warehouse(school.school_id) as con:
        try:
            result = userstore.rollback(con, engine, school, args.run)
        except userstore.RollbackRefused as exc:
            print(f"refused: {exc}", file=sys.stderr)
            return 1
    print(
        f"rolled back run {args.run} of {school.school_id}: {result['restored']} users restored, "
        f"{result['recreated']} recreated, {result['removed']} removed; "
        f"audit row {result['rollback_run_id']} (the run is now rolled_back)"
    )
    return 0


def connections_from_airflow() -> None:
    """Read Airflow's connections (the lake's, the store's) from variables or the metadata DB."""
    # Airflow's info lines (which connection it read) would go to stdout, between the results.
    os.environ.setdefault("AIRFLOW__LOGGING__LOGGING_LEVEL", "WARNING")
    prepare_airflow()  # before anything imports Airflow
    # Outside a task, Airflow reads connections from its metadata DB only in a server process (as
    # its own `airflow connections` command declares itself).
    os.environ["_AIRFLOW_PROCESS_CONTEXT"] = "server"


def cmd_sql(args) -> int:
    school = school_config(args.school)
    connections_from_airflow()
    from sisbridge import auditor, warehouse

    try:
        result = auditor.query(school.school_id, args.query, as_of=args.as_of)
    except auditor.QueryRefused as exc:
        print(f"sisbridge sql: refused: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except (auditor.UnknownRun, warehouse.LakeError) as exc:
        print(f"sisbridge sql: {exc}", file=sys.stderr)
        return 1
    except duckdb_error() as exc:
        print(f"sisbridge sql: {str(exc).strip().splitlines()[0]}", file=sys.stderr)
        return 1
    sys.stdout.write(auditor.to_csv(result) if args.csv else auditor.to_table(result))
    return 0


def duckdb_error() -> type[Exception]:
    import duckdb

    return duckdb.Error


def cmd_migrate_warehouse(args) -> int:
    school = school_config(args.school)
    from sisbridge import migration

    try:
        source = migration.check_source(
            school.school_id, args.source or migration.default_source(school.school_id)
        )
    except migration.MigrationError as exc:
        print(f"sisbridge migrate-warehouse: {exc}", file=sys.stderr)
        return 1
    connections_from_airflow()
    from sisbridge import warehouse

    try:
        result = migration.migrate(school.school_id, source, replace=args.replace)
    except (migration.MigrationError, warehouse.LakeError) as exc:
        print(f"sisbridge migrate-warehouse: {exc}", file=sys.stderr)
        return 1
    print(migration.report(result))
    return 0


def cmd_dbt(args) -> int:
    from sisbridge import transform

    school = school_config(args.school)
    if args.dbt_args[:1] == ["--"]:  # `sisbridge dbt --school ID -- --version`: dbt's options first
        args.dbt_args = args.dbt_args[1:]
    if not args.dbt_args:
        raise UsageError("dbt: give dbt's arguments after the options, e.g. `build --select users`")
    if any(arg in ("--target", "-t") or arg.startswith("--target=") for arg in args.dbt_args):
        raise UsageError(
            "dbt: give the target as `sisbridge dbt --target dev|prod`, before dbt's own arguments"
        )
    connections_from_airflow()  # also refreshes the prod manifest dev defers to
    from sisbridge import warehouse

    if args.target == "prod":
        print(
            f"sisbridge dbt: warning: --target prod writes the sync's own tables of {school.school_id}; "
            "the next push and snapshot read them",
            file=sys.stderr,
        )
    try:
        return transform.dbt_cli(school, args.target, args.dbt_args, Path(transform.DBT_EXECUTABLE))
    except ValueError as exc:
        raise UsageError(f"dbt: {exc}") from exc
    except warehouse.LakeError as exc:
        print(f"sisbridge dbt: {exc}", file=sys.stderr)
        return 1


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="sisbridge", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)

    check = commands.add_parser(
        "check", help="check a roster file with the pipeline's own rules; no side effects"
    )
    check.add_argument("file")
    check.add_argument("--school", help="school_id whose config applies (default: the standard columns only)")
    check.add_argument("--out", help="folder to write the report into")
    check.set_defaults(func=cmd_check)

    sync = commands.add_parser("sync", help="run a school's DAG once, now, in-process")
    sync.add_argument("--school", required=True)
    sync.add_argument(
        "--force", action="store_true", help="process the current file even when it was processed before"
    )
    sync.set_defaults(func=cmd_sync)

    onboard = commands.add_parser(
        "onboard", help="provision a school: bucket, upload-only key (printed once), YAML in review"
    )
    onboard.add_argument("school_id", metavar="ID")
    onboard.add_argument("--name", help="the school's name (required for a new school)")
    onboard.add_argument("--identifier", help="email (default), user_id or user_login: what SSO passes")
    onboard.add_argument("--key", help="the roster's object key (default roster.csv)")
    onboard.add_argument("--bucket-prefix", help="the bucket is PREFIX + ID, _ as - (default uconnect-sis-)")
    onboard.add_argument("--aws-conn-id", help="Airflow connection the sync reads with (default sis_s3_ID)")
    onboard.add_argument("--timezone", help="IANA time zone of the Saturday 23:00 schedule (default UTC)")
    onboard.add_argument("--roster-versions-days", type=int, help="keep replaced rosters N days (90)")
    onboard.add_argument("--reports-days", type=int, help="keep each run's reports N days (180)")
    onboard.add_argument("--rotate-key", action="store_true", help="replace the school's access key")
    onboard.set_defaults(func=cmd_onboard)

    upload_url = commands.add_parser(
        "upload-url", help="print a presigned HTTP PUT URL for a school's roster"
    )
    upload_url.add_argument("--school", required=True)
    upload_url.add_argument("--days", type=int, default=7, help="how long it works, 1-7 days (default 7)")
    upload_url.set_defaults(func=cmd_upload_url)

    demo = commands.add_parser("demo", help="local S3 + SQLite store: seed two demo schools and sync them")
    demo.add_argument("--rows", type=int, default=240, help="students per demo school (default 240)")
    demo.set_defaults(func=cmd_demo)

    sql = commands.add_parser(
        "sql", help="read-only SQL over a school's warehouse tables (audit.*, marts.*, snapshots.*)"
    )
    sql.add_argument("--school", required=True)
    sql.add_argument("--as-of", metavar="RUN_ID", help="read the warehouse as it was when that run finished")
    sql.add_argument("--csv", action="store_true", help="print CSV with a header instead of a table")
    sql.add_argument("query", metavar="QUERY", help="one SELECT, e.g. 'select * from audit.sync_runs'")
    sql.set_defaults(func=cmd_sql)

    rollback = commands.add_parser("rollback", help="revert a run's applied changes in the store")
    rollback.add_argument("--school", required=True)
    rollback.add_argument("--run", required=True)
    rollback.set_defaults(func=cmd_rollback)

    migrate = commands.add_parser(
        "migrate-warehouse",
        help="copy a school's DuckDB warehouse file from before the lake, with its history, into its lake",
    )
    migrate.add_argument("--school", required=True)
    migrate.add_argument(
        "--from",
        dest="source",
        metavar="PATH",
        help="the DuckDB file (default $SISBRIDGE_HOME/warehouse/ID.duckdb)",
    )
    migrate.add_argument(
        "--replace", action="store_true", help="replace what the school's lake has, even its runs"
    )
    migrate.set_defaults(func=cmd_migrate_warehouse)
    dbt = commands.add_parser(
        "dbt",
        help="run dbt on a school's warehouse; the dev target (default) writes dev_* schemas only",
        description="Runs dbt against the school's part of the warehouse: `sisbridge dbt --school ID "
        "build --select users`. The dev target reads the sync's sources and writes dev_staging, "
        "dev_intermediate, dev_marts and dev_snapshots; prod writes the sync's own tables.",
    )
    dbt.add_argument("--school", required=True)
    dbt.add_argument("--target", choices=("dev", "prod"), default="dev", help="dev (default) or prod")
    dbt.add_argument("dbt_args", nargs=argparse.REMAINDER, metavar="DBT_ARGS", help="dbt's own arguments")
    dbt.set_defaults(func=cmd_dbt)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as exc:  # argparse exits 2 on a usage error, 0 on --help
        return int(exc.code or 0)
    airflow_environment()  # first: any command may import Airflow, which reads its settings once
    try:
        return args.func(args)
    except (UsageError, ConfigError) as exc:
        print(f"sisbridge: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except KeyboardInterrupt:
        print(f"sisbridge {args.command}: interrupted", file=sys.stderr)
        return 130
    except Exception as exc:  # noqa: BLE001 - the user gets one line, the log gets the traceback
        return internal_error(args, exc)


def internal_error(args, exc: BaseException) -> int:
    """Write the traceback to the command's log and print one line that names the failure and the log."""
    message = str(exc).strip()
    what = type(exc).__name__ + (f": {message.splitlines()[0]}" if message else "")
    try:
        log = getattr(args, "log", None) or log_file(args.command)
        with log.open("a", encoding="utf-8") as handle:
            traceback.print_exception(exc, file=handle)
        where = f"; the traceback is in {log}"
    except OSError as log_exc:
        where = f"; no log could be written ({log_exc})"
    print(f"sisbridge {args.command}: internal error: {what}{where}", file=sys.stderr)
    return EXIT_INTERNAL


if __name__ == "__main__":
    sys.exit(main())
