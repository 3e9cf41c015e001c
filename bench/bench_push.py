"""Benchmark the push into PostgreSQL: 100k creates, then 100k updates, then 100k deactivations.

Starts a throwaway PostgreSQL 15 cluster (or uses `--url`), builds each change set directly in a temp
DuckDB warehouse, and times `sisbridge.userstore.push` (median of `--repeats`). Prints JSON and merges
the keys into bench/results.json.

    .venv/bin/python bench/bench_push.py [--rows 100000] [--repeats 3] [--batch-size 5000]
"""

from __future__ import annotations

import argparse
import json
import resource
import statistics
import sys
import tempfile
import time
from pathlib import Path

import duckdb
import sqlalchemy as sa

from sisbridge import audit
from sisbridge.config import SchoolConfig
from sisbridge.userstore import ensure_schema, push, store_engine

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "bench" / "results.json"
SCHOOL = SchoolConfig(
    school_id="bench",
    name="Bench University",
    s3={"bucket": "uconnect-sis-bench", "key": "roster.csv", "aws_conn_id": "sis_s3_bench"},
)


def _build_change_set(con, rows: int, *, last_name: str, status: str, change_type: str) -> None:
    """Target state, file rows and the change set for `rows` users, all of one change type."""
    con.execute("create schema if not exists marts")
    con.execute("create schema if not exists intermediate")
    con.execute(
        """
        create or replace table intermediate.int_users_target_state as
        select format('user{:07d}@bench.edu', i) as external_id,
               format('user{:07d}@bench.edu', i) as email,
               null::varchar as user_id, null::varchar as user_login,
               'Student' as first_name, ? as last_name, 'Alumni' as user_type,
               (2000 + i % 30)::integer as graduation_year, ? as status, false as email_opt_out
        from range(?) as t(i)
        """,
        [last_name, status, rows],
    )
    con.execute(
        """
        create or replace table intermediate.int_memberships_target_state as
        select external_id, 'Affinity' as community_group, 'Club ' || (graduation_year % 7) as community
        from intermediate.int_users_target_state
        """
    )
    con.execute(
        """
        create or replace table marts.users as
        select external_id, email, user_id, user_login, first_name, last_name, user_type,
               graduation_year, email_opt_out as is_email_opt_out, false as is_delete_requested,
               (row_number() over (order by external_id) + 1)::integer as line_number
        from intermediate.int_users_target_state
        where status = 'active'
        """
    )
    con.execute(
        """
        create or replace table marts.user_changes as
        select (row_number() over (order by external_id))::integer as change_id, external_id,
               ? as change_type, case when ? = 'update' then 'last_name' end as field,
               null::varchar as old_value, null::varchar as new_value, null::integer as line_number
        from intermediate.int_users_target_state
        """,
        [change_type, change_type],
    )


def _timed_push(con, engine, run_id: str, batch_size: int) -> float:
    started = time.perf_counter()
    push(con, engine, SCHOOL, run_id, batch_size=batch_size)
    return time.perf_counter() - started


def _empty_store(engine) -> None:
    with engine.begin() as conn:
        for table in ("user_communities", "users", "sisbridge_push_batches"):
            conn.execute(
                sa.text(f"delete from {table} where school_id = :school"), {"school": SCHOOL.school_id}
            )


def run(url: str, rows: int, repeats: int, batch_size: int) -> dict:
    engine = store_engine(url)
    ensure_schema(engine)
    workdir = Path(tempfile.mkdtemp(prefix="sisbridge-bench-"))
    con = duckdb.connect(str(workdir / "bench.duckdb"))
    audit.ensure_schema(con)
    timings: dict[str, list[float]] = {"creates": [], "updates": [], "deactivations": []}

    _build_change_set(con, rows, last_name="Base", status="active", change_type="create")
    for repeat in range(repeats):
        _empty_store(engine)
        timings["creates"].append(_timed_push(con, engine, f"create-{repeat}", batch_size))
    for repeat in range(repeats):
        _build_change_set(con, rows, last_name=f"Renamed {repeat}", status="active", change_type="update")
        timings["updates"].append(_timed_push(con, engine, f"update-{repeat}", batch_size))
    for repeat in range(repeats):
        _build_change_set(con, rows, last_name="Final", status="inactive", change_type="deactivate")
        timings["deactivations"].append(_timed_push(con, engine, f"deactivate-{repeat}", batch_size))
        if repeat + 1 < repeats:  # untimed: bring everyone back for the next repeat
            _build_change_set(con, rows, last_name="Final", status="active", change_type="reactivate")
            push(con, engine, SCHOOL, f"reactivate-{repeat}", batch_size=batch_size)
    con.close()
    engine.dispose()

    label = f"{rows // 1000}k" if rows % 1000 == 0 else str(rows)
    result = {
        "push_rows": rows,
        "push_batch_size": batch_size,
        "push_repeats": repeats,
        "push_peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
    }
    for kind, values in timings.items():
        median = statistics.median(values)
        result[f"push_s_{label}_{kind}"] = round(median, 3)
        result[f"push_rows_per_s_{kind}"] = round(rows / median)
    return result


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--url", help="an existing PostgreSQL database (default: a throwaway cluster)")
    parser.add_argument("--rows", type=int, default=100_000)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--batch-size", type=int, default=5000)
    args = parser.parse_args(argv)

    server = None
    url = args.url
    if url is None:
        sys.path.insert(0, str(ROOT / "tests"))
        from pgserver import remove_server, start_server

        server = start_server()
        url = server.url()
    try:
        result = run(url, args.rows, args.repeats, args.batch_size)
    finally:
        if server is not None:
            remove_server(server)

    merged = json.loads(RESULTS.read_text()) if RESULTS.exists() else {}
    merged.update(result)
    RESULTS.write_text(json.dumps(merged, indent=2, sort_keys=True) + "\n")
    print(json.dumps(result, indent=2, sort_keys=True))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
