"""The `sisbridge` command: check a file, sync a school now, onboard one, run the demo, roll a run back."""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
from pathlib import Path

from sisbridge.audit import RUN_COUNT_COLUMNS
from sisbridge.config import ConfigError, dag_id, load_school, schools_dir, sisbridge_home

REPO_ROOT = Path(__file__).resolve().parents[2]


class UsageError(Exception):
    """A mistake in the command line or its environment: exit code 2."""


def ensure_dbt_manifest() -> Path:
    """Write dbt's manifest (`dbt parse`) when any project file is newer: the DAGs render from it."""
    project = REPO_ROOT / "dbt_project"
    manifest = project / "target" / "manifest.json"
    sources = [
        path
        for path in project.rglob("*")
        if path.suffix in (".sql", ".yml", ".csv") and "target" not in path.parts
    ]
    if manifest.exists() and all(path.stat().st_mtime <= manifest.stat().st_mtime for path in sources):
        return manifest
    dbt = Path(sys.executable).parent / "dbt"
    env = {**os.environ, "DO_NOT_TRACK": "1", "DBT_TARGET_PATH": str(project / "target")}
    subprocess.run(
        [str(dbt), "parse", "--project-dir", str(project), "--profiles-dir", str(project), "--quiet"],
        check=True,
        env=env,
        cwd=project,
    )
    return manifest


def prepare_airflow() -> Path:
    """Give Airflow a home under SISBRIDGE_HOME and a migrated metadata DB, unless they exist already."""
    os.environ.setdefault("SISBRIDGE_SCHOOLS_DIR", str(schools_dir()))
    os.environ.setdefault("AIRFLOW_HOME", str(sisbridge_home() / "airflow"))
    os.environ.setdefault("AIRFLOW__CORE__DAGS_FOLDER", str(REPO_ROOT / "dags"))
    os.environ.setdefault("AIRFLOW__CORE__LOAD_EXAMPLES", "False")
    os.environ.setdefault("DO_NOT_TRACK", "1")
    ensure_dbt_manifest()
    home = Path(os.environ["AIRFLOW_HOME"])
    home.mkdir(parents=True, exist_ok=True)
    marker = home / ".sisbridge-migrated"
    if not marker.exists():
        subprocess.run(
            [sys.executable, "-m", "airflow", "db", "migrate"], check=True, stdout=subprocess.DEVNULL
        )
        marker.touch()
    return home


def run_dag(school_id: str) -> dict:
    """Run the school's DAG once, now, in-process with `dag.test()`; return the run's audit row."""
    from sisbridge import audit, pipeline

    pipeline.school_config(school_id)  # a bad or missing config fails here, loudly
    prepare_airflow()
    from airflow.dag_processing.dagbag import DagBag

    bag = DagBag(dag_folder=os.environ["AIRFLOW__CORE__DAGS_FOLDER"])
    if bag.import_errors:
        raise ConfigError("; ".join(f"{path}: {err}" for path, err in bag.import_errors.items()))
    dag = bag.get_dag(dag_id(school_id))
    if dag is None:
        raise UsageError(f"no DAG {dag_id(school_id)}: is there a {school_id}.yaml in {schools_dir()}?")
    dag_run = dag.test(run_conf={"interactive_approval": False})
    with audit.warehouse(school_id, read_only=True) as con:
        row = audit.get_run(con, dag_run.run_id)
    if row is None:
        return {"run_id": dag_run.run_id, "status": "failed", "status_reason": f"DAG run {dag_run.state}"}
    return row


def format_summary(row: dict) -> str:
    counts = ", ".join(f"{field}={row.get(field) or 0}" for field in RUN_COUNT_COLUMNS)
    reason = f" ({row['status_reason']})" if row.get("status_reason") else ""
    return f"{row['school_id']} {row['run_id']}: {row['status']}{reason}\n  {counts}"


def cmd_check(args) -> int:
    from sisbridge import quality

    path = Path(args.file)
    if not path.is_file():
        raise UsageError(f"{path}: no such file")
    school = (
        load_school(schools_dir() / f"{args.school}.yaml") if args.school else quality.default_school_config()
    )
    return quality.check_file(path, school, Path(args.out) if args.out else None)


def cmd_sync(args) -> int:
    row = run_dag(args.school)
    print(format_summary(row))
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
    from sisbridge import audit, pipeline, userstore

    school = pipeline.school_config(args.school)
    prepare_airflow()
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

    rollback = commands.add_parser("rollback", help="revert a run's applied changes in the store")
    rollback.add_argument("--school", required=True)
    rollback.add_argument("--run", required=True)
    rollback.set_defaults(func=cmd_rollback)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as exc:  # argparse exits 2 on a usage error, 0 on --help
        return int(exc.code or 0)
    try:
        return args.func(args)
    except (UsageError, ConfigError) as exc:
        print(f"sisbridge: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
