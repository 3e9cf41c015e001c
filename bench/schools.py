"""Many schools at once (`make bench-schools`): 20 schools of 20k users under a real Airflow scheduler.

Starts a throwaway PostgreSQL 15 (Airflow's metadata DB and the user store), moto's S3 server, and
Airflow's scheduler, dag-processor, triggerer and api-server with LocalExecutor (or CeleryExecutor with
`--executor celery`: a local redis-server and two Celery workers). The warehouse is the production
lake: its catalog in that PostgreSQL (database `lake`), its data in moto's S3 (bucket `sisbridge-lake`);
`--lake embedded` puts it under the workers' SISBRIDGE_HOME instead. It first times single runs of extra
schools alone, then uploads a roster for each of the 20 schools and triggers all 20 through the REST
API at once. Merges `schools_*` (or `celery_*`) figures into bench/results.json.

    .venv/bin/python bench/schools.py [--schools 20] [--rows 20000] [--executor local|celery]
        [--model-tasks true|false] [--lake postgres|embedded]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
BENCH_DIR = ROOT / "bench"
DATA_DIR = BENCH_DIR / "data"
RESULTS = BENCH_DIR / "results.json"
sys.path.insert(0, str(BENCH_DIR))
sys.path.insert(0, str(ROOT / "tests"))

import lakes  # noqa: E402
import roster  # noqa: E402
from airflow_cluster import (  # noqa: E402
    AIRFLOW,
    Api,
    Stack,
    celery_env,
    create_databases,
    free_port,
    migrate,
    parsed_dags,
    service_env,
    start_control_plane,
    start_redis,
    wait_for,
    wait_runs,
)

LOCK_ERRORS = ("Could not set lock on file", "Conflicting lock is held", "database is locked")


def run_durations(metadata_url: str, runs: dict[str, str]) -> dict[str, dict]:
    """Start, end and state of each DAG run, from the metadata DB."""
    import sqlalchemy as sa

    engine = sa.create_engine(metadata_url)
    with engine.connect() as conn:
        rows = conn.execute(
            sa.text(
                "select dag_id, run_id, state, extract(epoch from start_date), extract(epoch from end_date), "
                "extract(epoch from queued_at) from dag_run where run_id = any(:runs)"
            ),
            {"runs": list(runs.values())},
        ).fetchall()
        tasks = dict(
            conn.execute(
                sa.text(
                    "select dag_id, count(*) from task_instance where run_id = any(:runs) group by dag_id"
                ),
                {"runs": list(runs.values())},
            ).fetchall()
        )
        per_task = conn.execute(
            sa.text(
                "select dag_id, run_id, task_id, extract(epoch from end_date - start_date) "
                "from task_instance where run_id = any(:runs) and end_date is not null"
            ),
            {"runs": list(runs.values())},
        ).fetchall()
    engine.dispose()
    return {
        dag_id: {
            "state": state,
            "start": float(start) if start else None,
            "end": float(end) if end else None,
            "queued": float(queued) if queued else None,
            "seconds": float(end - start) if start and end else None,
            "task_instances": tasks.get(dag_id, 0),
            "task_seconds": {
                task_id: float(seconds)
                for task_dag, task_run, task_id, seconds in per_task
                if task_dag == dag_id and task_run == run_id
            },
        }
        for dag_id, run_id, state, start, end, queued in rows
        if runs.get(dag_id) == run_id
    }


def task_medians(runs) -> dict:
    """Median seconds per task (the dbt watcher tasks summed as one line), over the given runs."""
    by_task: dict[str, list[float]] = {}
    for run in runs:
        watchers = [
            seconds
            for task, seconds in run["task_seconds"].items()
            if task.startswith("transform.") and "producer" not in task
        ]
        by_task.setdefault(f"transform watchers (sum of {len(watchers)})", []).append(sum(watchers))
        for task, seconds in run["task_seconds"].items():
            if not (task.startswith("transform.") and "producer" not in task):
                by_task.setdefault(task, []).append(seconds)
    return {task: round(statistics.median(values), 2) for task, values in sorted(by_task.items())}


def warehouse_status(home: Path, school_id: str) -> dict:
    from sisbridge import warehouse

    # The workers' lake: the embedded one under their SISBRIDGE_HOME unless a `sisbridge_lake`
    # connection is set for them.
    lake = warehouse.settings()
    if lake.kind == warehouse.EMBEDDED:
        lake = warehouse.LakeSettings(kind=warehouse.EMBEDDED, data_path=str(home / "lake"))
    con = warehouse.connect(school_id, read_only=True, lake=lake)
    try:
        status, creates = con.execute(
            "select status, creates from audit.sync_runs order by started_at desc limit 1"
        ).fetchone()
    finally:
        con.close()
    return {"status": status, "creates": creates}


def store_snapshot(store_url: str) -> dict:
    """Per school: user count, and a checksum of users and memberships (to compare two executors)."""
    import sqlalchemy as sa

    engine = sa.create_engine(store_url)
    with engine.connect() as conn:
        users = conn.execute(
            sa.text(
                "select school_id, count(*), md5(string_agg(concat_ws('|', external_id, email, first_name, "
                "last_name, user_type, graduation_year, status, email_opt_out), ',' order by external_id)) "
                "from users group by school_id"
            )
        ).fetchall()
        memberships = dict(
            conn.execute(
                sa.text(
                    "select school_id, md5(string_agg(concat_ws('|', external_id, community_group, "
                    "community), ',' order by external_id, community_group, community)) "
                    "from user_communities group by school_id"
                )
            ).fetchall()
        )
    engine.dispose()
    return {
        school: {"users": count, "users_md5": digest, "memberships_md5": memberships.get(school)}
        for school, count, digest in users
    }


def compare_stores(results: dict) -> dict:
    """Whether the Celery and LocalExecutor runs (whichever ran last) left the same store, school by school.

    The two runs use their own school ids but the same files by position, so the checksums compare in order.
    """
    local, celery = results.get("schools_store_checksums"), results.get("celery_store_checksums")
    if not local or not celery:
        return {}
    same = [value for _, value in sorted(celery.items())] == [value for _, value in sorted(local.items())]
    return {"celery_store_identical_to_local": same}


def lock_errors(workdir: Path) -> list[str]:
    """Lines of any log (services and task logs) that report a DuckDB or database lock conflict."""
    hits = []
    for path in workdir.rglob("*.log"):
        with path.open(errors="replace") as handle:
            hits += [
                f"{path.name}: {line.strip()[:200]}" for line in handle if any(e in line for e in LOCK_ERRORS)
            ]
    return hits


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--schools", type=int, default=int(os.environ.get("BENCH_SCHOOLS", "20")))
    parser.add_argument("--rows", type=int, default=int(os.environ.get("BENCH_SCHOOL_ROWS", "20000")))
    parser.add_argument("--singles", type=int, default=2, help="extra schools timed alone, one after another")
    parser.add_argument("--executor", choices=("local", "celery"), default="local")
    parser.add_argument("--parallelism", type=int, default=8, help="Airflow's [core] parallelism")
    parser.add_argument("--timeout", type=float, default=3600)
    parser.add_argument(
        "--model-tasks",
        choices=("true", "false"),
        default=os.environ.get("SISBRIDGE_DBT_MODEL_TASKS", "false"),
        help="one task per dbt model (Cosmos watchers) or the transform as one task (the default here, "
        "as docs/scaling.md recommends for many schools)",
    )
    lakes.add_lake_argument(parser)
    args = parser.parse_args(argv)
    # `kill PID` (a background job ignores Ctrl-C) still stops the services and PostgreSQL cleanly.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    prefix = "schools" if args.executor == "local" else "celery"

    from pgserver import remove_server, start_server

    from sisbridge import locals3
    from sisbridge.localrun import ensure_dbt_manifest

    workdir = Path(tempfile.mkdtemp(prefix=f"sisbridge-bench-{prefix}-"))
    print(f"work dir: {workdir}", flush=True)
    # Own school ids per executor (same files, by position): Cosmos keeps a cache folder per DAG id.
    tag = "bsch" if args.executor == "local" else "bcel"
    school_ids = [f"{tag}_{n:02d}" for n in range(1, args.schools + 1)]
    single_ids = [f"{tag}_single_{n}" for n in range(1, args.singles + 1)]
    schools_dir = workdir / "schools"
    schools_dir.mkdir()
    for school_id in school_ids + single_ids:
        (schools_dir / f"{school_id}.yaml").write_text(roster.school_yaml(school_id))
    files = {
        school_id: roster.ensure_rosters(DATA_DIR, args.rows, seed=1000 + n)["week1"]
        for n, school_id in enumerate(school_ids + single_ids)
    }
    ensure_dbt_manifest()

    server = start_server()
    create_databases(server.url(), ["airflow", "userstore"])
    metadata_url = server.url("airflow")
    store_url = server.url("userstore")
    api_port = free_port()
    executor = "LocalExecutor" if args.executor == "local" else "CeleryExecutor"
    env = {
        **service_env(workdir, metadata_url, api_port, executor=executor, base=dict(os.environ)),
        "SISBRIDGE_HOME": str(workdir / "home"),
        "SISBRIDGE_SCHOOLS_DIR": str(schools_dir),
        "SISBRIDGE_SENSOR_TIMEOUT_S": "3600",
        "AIRFLOW__CORE__PARALLELISM": str(args.parallelism),
        "AIRFLOW__DAG_PROCESSOR__REFRESH_INTERVAL": "30",
        "AIRFLOW_CONN_UCONNECT_USER_STORE": store_url,
        "SISBRIDGE_DBT_MODEL_TASKS": args.model_tasks,
    }
    stack = Stack(workdir, env)
    results: dict = {}
    try:
        with locals3.local_s3() as endpoint_url:
            s3 = locals3.s3_client(endpoint_url)
            for school_id in school_ids + single_ids:
                env[f"AIRFLOW_CONN_SIS_S3_{school_id.upper()}"] = locals3.aws_connection_uri(endpoint_url)
                locals3.create_bucket(s3, f"bench-{school_id.replace('_', '-')}")
            if args.lake == "postgres":
                lake_env = lakes.production_lake(server, endpoint_url)
                env.update(lake_env)
                os.environ.update(lake_env)  # this process reads the runs' statuses from the same lake
                os.environ.setdefault("AIRFLOW_HOME", env["AIRFLOW_HOME"])  # not ~/airflow
            if args.executor == "celery":
                env.update(celery_env(start_redis(workdir, stack), metadata_url))
                env["AIRFLOW__CELERY__WORKER_CONCURRENCY"] = str(max(1, args.parallelism // 2))
            migrate(env)
            start_control_plane(stack)
            if args.executor == "celery":
                for n in (1, 2):
                    stack.start(
                        f"celery-worker-{n}",
                        [*AIRFLOW, "celery", "worker", "--celery-hostname", f"worker{n}@%h"],
                    )
            api = Api(f"http://127.0.0.1:{api_port}")
            wait_for(lambda: stack.check_alive() or api.healthy(), "the api-server", 300)
            dag_ids = {school_id: f"sis_sync__{school_id}" for school_id in school_ids + single_ids}
            started = time.monotonic()
            wait_for(
                lambda: parsed_dags(metadata_url, list(dag_ids.values())), "the DAGs to be parsed", 600, 5
            )
            print(f"services up, {len(dag_ids)} DAGs parsed in {time.monotonic() - started:.0f}s", flush=True)

            singles = {}
            for school_id in single_ids:
                s3.upload_file(str(files[school_id]), f"bench-{school_id.replace('_', '-')}", "roster.csv")
                run = {dag_ids[school_id]: api.trigger(dag_ids[school_id])}
                wait_runs(api, stack, run, args.timeout)
                singles.update(run_durations(metadata_url, run))
                print(f"single {school_id}: {singles[dag_ids[school_id]]}", flush=True)

            for school_id in school_ids:
                s3.upload_file(str(files[school_id]), f"bench-{school_id.replace('_', '-')}", "roster.csv")
            together = {}
            triggered_at = time.time()
            for school_id in school_ids:
                together[dag_ids[school_id]] = api.trigger(dag_ids[school_id])
            trigger_s = time.time() - triggered_at
            print(f"triggered {len(together)} runs in {trigger_s:.2f}s", flush=True)
            wait_runs(api, stack, together, args.timeout)
            runs = run_durations(metadata_url, together)

            statuses = {school_id: warehouse_status(workdir / "home", school_id) for school_id in school_ids}
            store = store_snapshot(store_url)
            raw = {"runs": runs, "singles": singles, "statuses": statuses, "store": store}
            (workdir / "raw.json").write_text(json.dumps({**raw, "triggered_at": triggered_at}, default=str))
            single_s = [run["seconds"] for run in singles.values()]
            wall = max(run["end"] for run in runs.values()) - triggered_at
            results = {
                f"{prefix}_count": args.schools,
                f"{prefix}_rows_per_school": args.rows,
                f"{prefix}_executor": executor,
                f"{prefix}_lake": args.lake,
                f"{prefix}_parallelism": args.parallelism,
                f"{prefix}_dbt_model_tasks": args.model_tasks == "true",
                f"{prefix}_wall_s": round(wall, 1),
                f"{prefix}_single_run_s": [round(s, 1) for s in single_s],
                f"{prefix}_sum_s": round(statistics.median(single_s) * args.schools, 1) if single_s else None,
                f"{prefix}_sum_of_concurrent_runs_s": round(
                    sum(run["seconds"] or 0 for run in runs.values()), 1
                ),
                f"{prefix}_trigger_s": round(trigger_s, 2),
                f"{prefix}_all_succeeded": all(run["state"] == "success" for run in runs.values())
                and all(status["status"] == "succeeded" for status in statuses.values()),
                f"{prefix}_run_states": sorted({run["state"] for run in runs.values()}),
                f"{prefix}_audit_statuses": sorted({status["status"] for status in statuses.values()}),
                f"{prefix}_task_instances_per_run": max(run["task_instances"] for run in runs.values()),
                f"{prefix}_task_seconds_median": task_medians(runs.values()),
                f"{prefix}_single_task_seconds": task_medians(singles.values()),
                f"{prefix}_lock_errors": lock_errors(workdir),
                f"{prefix}_store_users": sum(store[s]["users"] for s in school_ids if s in store),
                f"{prefix}_store_checksums": {s: store.get(s) for s in school_ids},
                f"{prefix}_load_average_after": [round(x, 2) for x in os.getloadavg()],
            }
            if single_s:
                results[f"{prefix}_target"] = {
                    "rule": f"{prefix}_wall_s <= 0.75 x {prefix}_sum_s",
                    "value": results[f"{prefix}_wall_s"],
                    "limit": round(0.75 * results[f"{prefix}_sum_s"], 1),
                    "pass": results[f"{prefix}_wall_s"] <= 0.75 * results[f"{prefix}_sum_s"],
                }
            results[f"{prefix}_note"] = (
                f"{prefix}_sum_s is {args.schools} x the median of {len(single_s)} single runs of other "
                "schools (same size), each run alone under the same services; wall is from the first "
                "trigger to the "
                "last run's end."
            )
    finally:
        stack.stop()
        remove_server(server)
    merged = json.loads(RESULTS.read_text()) if RESULTS.exists() else {}
    previous = merged.get(f"{prefix}_store_checksums")
    if results and previous and merged.get(f"{prefix}_rows_per_school") == args.rows:
        # The same files (same seeds) must give the same stores, run after run, lake or not.
        results[f"{prefix}_store_identical_to_previous_results"] = (
            previous == results[f"{prefix}_store_checksums"]
        )
    merged.update(results)
    if results:
        merged.update(compare_stores(merged))
    RESULTS.write_text(json.dumps(merged, indent=2, sort_keys=True, default=str) + "\n")
    print(
        json.dumps({k: v for k, v in results.items() if not k.endswith("_checksums")}, indent=2, default=str)
    )
    if os.environ.get("BENCH_KEEP") != "1":
        shutil.rmtree(workdir, ignore_errors=True)
    return 0 if results.get(f"{prefix}_all_succeeded") else 1


if __name__ == "__main__":
    raise SystemExit(main())
