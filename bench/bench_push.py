"""Benchmark the push into PostgreSQL: a 1M-user school's weekly change set, 1M creates, 100k basics.

Starts a throwaway PostgreSQL 15 cluster (or uses `--url`), builds each change set directly in a
warehouse, and times `sisbridge.userstore.push`. The warehouse (`--warehouse`) is, by default, the
production kind: a DuckLake whose catalog is in that PostgreSQL and whose data is in a temp folder
(production's is in S3); `file` is a plain DuckDB file, the warehouse before the lake. Prints JSON:
wall seconds, CPU seconds of this process (the push's Python and DuckDB) and of the PostgreSQL
server (throwaway cluster only), and the peak RSS of this process during the push. `--write-results`
merges the keys into bench/results.json.

Scenarios (`--scenarios`, comma-separated):
- `week2`: `--users` users in the store and the applied baseline, then a change set of 10.5% of them
  (name, graduation and community updates, opt-outs, deactivations, deletes, creates); median of
  `--repeats`, the store and the baseline reset before each repeat (untimed). With
  `--stale-statistics` the store keeps the planner statistics of the empty store.
- `creates`: `--users` creates into an empty store (one run).
- `basic`: `--rows` creates, then updates, then deactivations, each a median of `--repeats`.

    .venv/bin/python bench/bench_push.py [--scenarios week2,creates] [--users 1000000] [--repeats 3]
        [--warehouse lake|file]
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import sys
import tempfile
import time
from pathlib import Path

import duckdb
import sqlalchemy as sa

from sisbridge import audit, warehouse
from sisbridge.config import SchoolConfig
from sisbridge.userstore import ensure_schema, push, store_engine

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "bench" / "results.json"
SCHOOL = SchoolConfig(
    school_id="bench",
    name="Bench University",
    s3={"bucket": "uconnect-sis-bench", "key": "roster.csv", "aws_conn_id": "sis_s3_bench"},
)
_CLK_TCK = os.sysconf("SC_CLK_TCK")


class Meter:
    """Wall, CPU (this process; the PostgreSQL server's when its postmaster pid is known) and peak RSS."""

    def __init__(self, postmaster_pid: int | None):
        self.postmaster_pid = postmaster_pid

    def _server_cpu(self) -> float | None:
        if self.postmaster_pid is None:
            return None
        # The postmaster's own time, its reaped children's (cutime/cstime) and its live backends'.
        total = _proc_cpu(self.postmaster_pid, children=True)
        for pid in _child_pids(self.postmaster_pid):
            total += _proc_cpu(pid, children=False)
        return total

    def __enter__(self) -> Meter:
        _reset_peak_rss()
        self._cpu = _self_cpu()
        self._server = self._server_cpu()
        self._wall = time.perf_counter()
        return self

    def __exit__(self, *exc) -> None:
        self.wall_s = time.perf_counter() - self._wall
        self.cpu_s = _self_cpu() - self._cpu
        server = self._server_cpu()
        self.server_cpu_s = None if server is None or self._server is None else server - self._server
        self.peak_rss_mb = _peak_rss_mb()

    def as_dict(self) -> dict:
        return {
            "wall_s": round(self.wall_s, 3),
            "cpu_s": round(self.cpu_s, 3),
            "server_cpu_s": None if self.server_cpu_s is None else round(self.server_cpu_s, 3),
            "peak_rss_mb": self.peak_rss_mb,
        }


def _self_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def _proc_cpu(pid: int, *, children: bool) -> float:
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    # Fields after the command: utime, stime, cutime, cstime are the 12th to 15th.
    ticks = int(fields[11]) + int(fields[12])
    if children:
        ticks += int(fields[13]) + int(fields[14])
    return ticks / _CLK_TCK


def _child_pids(pid: int) -> list[int]:
    try:
        return [int(p) for p in Path(f"/proc/{pid}/task/{pid}/children").read_text().split()]
    except OSError:
        return []


def _reset_peak_rss() -> None:
    # Writing 5 to clear_refs resets VmHWM, so the peak is the push's, not the set-up's.
    try:
        Path("/proc/self/clear_refs").write_text("5")
    except OSError:
        pass


def _peak_rss_mb() -> float:
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return round(int(line.split()[1]) / 1024, 1)
    except OSError:
        pass
    return round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)


def _median_of(runs: list[dict]) -> dict:
    result = {key: statistics.median(run[key] for run in runs) for key in ("wall_s", "cpu_s")}
    servers = [run["server_cpu_s"] for run in runs if run["server_cpu_s"] is not None]
    result["server_cpu_s"] = round(statistics.median(servers), 3) if servers else None
    result["peak_rss_mb"] = max(run["peak_rss_mb"] for run in runs)
    result["runs"] = runs
    return result


def _settle(con) -> None:
    """Write a DuckDB file's set-up tables out before a timed push, as dbt does when its process ends.

    Otherwise the push's first commit runs DuckDB's automatic checkpoint, writing the change set the
    benchmark just built (6-7 s of a 100k-user push's finish) into the push's time. A lake writes its
    data files as it goes (its `checkpoint` is maintenance, which the weekly DAG does not run).
    """
    kind = con.execute("select type from duckdb_databases() where database_name = current_database()")
    if kind.fetchone()[0] != "ducklake":
        con.execute("checkpoint")


def _schemas(con) -> None:
    con.execute("create schema if not exists marts")


# --- week 2 of a large school ----------------------------------------------------------------------
# The baseline: user i has a last name, a graduation year, an affinity club, a career community (9 in
# 10) and 2% are opted out. The week-2 file changes users by `i % 200`: 0-4 last name, 5-9 graduation,
# 10-13 affinity club, 14-15 opt out, 16-17 absent (deactivated), 18-19 deleted; plus 0.5% new users.
_EXT = "format('user{:07d}@bench.edu', i)"
_BASE_USERS = f"""
select i, {_EXT} as external_id, {_EXT} as email, null::varchar as user_id, null::varchar as user_login,
       'Student' as first_name, 'Number ' || i as last_name, 'Alumni' as user_type,
       (2000 + i % 30)::integer as graduation_year, 'active' as status, i % 50 = 0 as email_opt_out
from range(?) as t(i)
"""
_BASE_MEMBERSHIPS = """
select i, external_id, 'Affinity' as community_group, 'Club ' || (i % 7) as community from bench_base
union all
select i, external_id, 'Career Communities', 'Field ' || (i % 5) from bench_base where i % 10 <> 0
"""


def _build_week2(con, users: int) -> None:
    """bench_base*/state: the applied week 1; marts: week 2's target and change set."""
    _schemas(con)
    con.execute(f"create or replace table bench_base as {_BASE_USERS}", [users])
    con.execute(f"create or replace table bench_base_members as {_BASE_MEMBERSHIPS}")
    new_users = users // 200
    con.execute(
        f"""
        create or replace table bench_target as
        select i, external_id, email, user_id, user_login, first_name,
               case when i % 200 < 5 then 'Renamed ' || i else last_name end as last_name, user_type,
               case when i % 200 between 5 and 9 then graduation_year + 1 else graduation_year end
                   as graduation_year,
               case when i % 200 between 16 and 17 then 'inactive' else 'active' end as status,
               email_opt_out or i % 200 between 14 and 15 as email_opt_out,
               i % 200 between 14 and 15 as file_opt_out
        from bench_base where i % 200 not between 18 and 19
        union all
        select * replace (false as email_opt_out), false
        from ({_BASE_USERS.replace("from range(?)", "from range(?, ?)")})
        """,
        [users, users + new_users],
    )
    con.execute(
        """
        create or replace table marts.users as
        select external_id, email, user_id, user_login, first_name, last_name, user_type,
               graduation_year, status, email_opt_out as is_email_opt_out,
               case when status = 'active' then file_opt_out end as is_email_opt_out_requested,
               case when status = 'active' then (i + 2)::integer end as line_number
        from bench_target order by external_id
        """
    )
    con.execute(
        """
        create or replace table marts.community_memberships as
        select m.external_id, m.community_group,
               case when m.community_group = 'Affinity' and t.i % 200 between 10 and 13
                    then 'Club ' || ((t.i + 1) % 7) else m.community end as community
        from bench_base_members as m join bench_target as t using (external_id)
        union all
        select external_id, 'Affinity', 'Club ' || (i % 7) from bench_target where i >= ?
        """,
        [users],
    )
    con.execute(
        """
        create or replace table marts.user_changes as
        with changes as (
            select external_id, 'update' as change_type, 'last_name' as field from bench_target
            where i % 200 < 5 and i < ?
            union all
            select external_id, 'update', 'graduation_year' from bench_target
            where i % 200 between 5 and 9 and i < ?
            union all
            select external_id, 'update', 'communities:Affinity' from bench_target
            where i % 200 between 10 and 13 and i < ?
            union all
            select external_id, 'opt_out', 'email_opt_out' from bench_target
            where i % 200 between 14 and 15 and i < ?
            union all
            select external_id, 'deactivate', null from bench_target
            where i % 200 between 16 and 17 and i < ?
            union all
            select external_id, 'delete', null from bench_base where i % 200 between 18 and 19
            union all
            select external_id, 'create', null from bench_target where i >= ?
        )
        select (row_number() over (order by external_id, field))::integer as change_id, external_id,
               change_type, field, null::varchar as old_value, null::varchar as new_value,
               null::integer as line_number
        from changes
        """,
        [users] * 6,
    )


def _reset_week1(con, engine, workdir: Path, *, truncate: bool, stale_statistics: bool = False) -> None:
    """Put week 1 back: the baseline in `state.*` and the same users in the store."""
    con.execute("begin")
    con.execute("delete from state.applied_users")
    con.execute(
        """
        insert into state.applied_users
        select external_id, email, user_id, user_login, first_name, last_name, user_type,
               graduation_year, status, email_opt_out, 'week-1' from bench_base
        """
    )
    con.execute("delete from state.applied_memberships")
    con.execute(
        "insert into state.applied_memberships select external_id, community_group, community "
        "from bench_base_members"
    )
    con.execute("commit")
    users_csv, members_csv = workdir / "seed_users.csv", workdir / "seed_members.csv"
    con.execute(
        f"""
        copy (select ?, external_id, email, user_id, user_login, first_name, last_name, user_type,
                     graduation_year, status, email_opt_out, false, now()::timestamp, now()::timestamp
              from bench_base) to '{users_csv}' (format csv, header false)
        """,
        [SCHOOL.school_id],
    )
    con.execute(
        f"""
        copy (select ?, external_id, community_group, community from bench_base_members)
        to '{members_csv}' (format csv, header false)
        """,
        [SCHOOL.school_id],
    )
    _empty_store(engine, truncate=truncate)
    if stale_statistics:
        # Statistics of the empty store, as after a school's first push before autovacuum ran.
        with engine.connect() as conn:
            conn.execution_options(isolation_level="AUTOCOMMIT").exec_driver_sql("analyze")
    with engine.begin() as conn:
        cursor = conn.connection.dbapi_connection.cursor()
        for table, path in (("users", users_csv), ("user_communities", members_csv)):
            with path.open() as source:
                cursor.copy_expert(f"copy {table} from stdin (format csv)", source)
        cursor.close()
    with engine.connect() as conn:
        conn.execution_options(isolation_level="AUTOCOMMIT").exec_driver_sql(
            "vacuum" if stale_statistics else "vacuum analyze"
        )


def run_week2(
    con,
    engine,
    workdir: Path,
    meter: Meter,
    users: int,
    repeats: int,
    truncate: bool,
    stale_statistics: bool = False,
) -> dict:
    _build_week2(con, users)
    changed = con.execute("select count(distinct external_id) from marts.user_changes").fetchone()[0]
    runs = []
    for repeat in range(repeats):
        _reset_week1(con, engine, workdir, truncate=truncate, stale_statistics=stale_statistics)
        _settle(con)
        with meter:
            result = push(con, engine, SCHOOL, f"week2-{repeat}")
        runs.append(meter.as_dict())
    return {"users": users, "changed_users": changed, "result": result.__dict__, **_median_of(runs)}


def run_creates(con, engine, meter: Meter, users: int, truncate: bool) -> dict:
    _schemas(con)
    con.execute(f"create or replace table bench_base as {_BASE_USERS}", [users])
    con.execute(f"create or replace table bench_base_members as {_BASE_MEMBERSHIPS}")
    con.execute(
        """
        create or replace table marts.users as
        select external_id, email, user_id, user_login, first_name, last_name, user_type,
               graduation_year, status, email_opt_out as is_email_opt_out,
               email_opt_out as is_email_opt_out_requested, (i + 2)::integer as line_number
        from bench_base
        """
    )
    con.execute(
        """
        create or replace table marts.community_memberships as
        select external_id, community_group, community from bench_base_members
        """
    )
    con.execute(
        """
        create or replace table marts.user_changes as
        select (i + 1)::integer as change_id, external_id, 'create' as change_type, null::varchar as field,
               null::varchar as old_value, null::varchar as new_value, null::integer as line_number
        from bench_base
        """
    )
    con.execute("delete from state.applied_users")
    con.execute("delete from state.applied_memberships")
    _empty_store(engine, truncate=truncate)
    _settle(con)
    with meter:
        result = push(con, engine, SCHOOL, "creates")
    return {"users": users, "result": result.__dict__, **meter.as_dict()}


# --- 100k creates, updates, deactivations (all users of one change type) ----------------------------
def _build_change_set(con, rows: int, *, last_name: str, status: str, change_type: str) -> None:
    """Target state (with the file's rows) and the change set for `rows` users, all of one change type."""
    _schemas(con)
    con.execute(
        """
        create or replace table marts.users as
        select format('user{:07d}@bench.edu', i) as external_id,
               format('user{:07d}@bench.edu', i) as email,
               null::varchar as user_id, null::varchar as user_login,
               'Student' as first_name, ? as last_name, 'Alumni' as user_type,
               (2000 + i % 30)::integer as graduation_year, ? as status, false as is_email_opt_out,
               -- An inactive user is one the file no longer lists: no flag and no line.
               case when ? = 'active' then false end as is_email_opt_out_requested,
               case when ? = 'active' then (i + 2)::integer end as line_number
        from range(?) as t(i)
        """,
        [last_name, status, status, status, rows],
    )
    con.execute(
        """
        create or replace table marts.community_memberships as
        select external_id, 'Affinity' as community_group, 'Club ' || (graduation_year % 7) as community
        from marts.users
        """
    )
    con.execute(
        """
        create or replace table marts.user_changes as
        select (row_number() over (order by external_id))::integer as change_id, external_id,
               ? as change_type, case when ? = 'update' then 'last_name' end as field,
               null::varchar as old_value, null::varchar as new_value, null::integer as line_number
        from marts.users
        """,
        [change_type, change_type],
    )


def run_basic(con, engine, meter: Meter, rows: int, repeats: int, truncate: bool) -> dict:
    runs: dict[str, list[dict]] = {"creates": [], "updates": [], "deactivations": []}
    con.execute("delete from state.applied_users")
    con.execute("delete from state.applied_memberships")
    _build_change_set(con, rows, last_name="Base", status="active", change_type="create")
    for repeat in range(repeats):
        _empty_store(engine, truncate=truncate)
        _settle(con)
        with meter:
            push(con, engine, SCHOOL, f"create-{repeat}")
        runs["creates"].append(meter.as_dict())
    for repeat in range(repeats):
        _build_change_set(con, rows, last_name=f"Renamed {repeat}", status="active", change_type="update")
        _settle(con)
        with meter:
            push(con, engine, SCHOOL, f"update-{repeat}")
        runs["updates"].append(meter.as_dict())
    for repeat in range(repeats):
        _build_change_set(con, rows, last_name="Final", status="inactive", change_type="deactivate")
        _settle(con)
        with meter:
            push(con, engine, SCHOOL, f"deactivate-{repeat}")
        runs["deactivations"].append(meter.as_dict())
        if repeat + 1 < repeats:  # untimed: bring everyone back for the next repeat
            _build_change_set(con, rows, last_name="Final", status="active", change_type="reactivate")
            push(con, engine, SCHOOL, f"reactivate-{repeat}")
    return {"rows": rows, **{kind: _median_of(values) for kind, values in runs.items()}}


def _empty_store(engine, *, truncate: bool) -> None:
    with engine.begin() as conn:
        if truncate:  # a throwaway cluster: nothing but this benchmark in it
            conn.exec_driver_sql("truncate user_communities, users, sisbridge_push_batches")
            return
        for table in ("user_communities", "users", "sisbridge_push_batches"):
            conn.execute(
                sa.text(f"delete from {table} where school_id = :school"), {"school": SCHOOL.school_id}
            )


def _lake(url: sa.URL, workdir: Path) -> warehouse.LakeSettings:
    """A lake as in production, its catalog in the store's PostgreSQL, its data in `workdir`."""
    dsn = warehouse.libpq_dsn(
        host=url.host, port=url.port, dbname=url.database, user=url.username, password=url.password
    )
    return warehouse.LakeSettings(kind=warehouse.POSTGRES, catalog_dsn=dsn, data_path=f"{workdir / 'lake'}/")


def run(url: str, scenarios: list[str], args, postmaster_pid: int | None) -> dict:
    engine = store_engine(url)
    ensure_schema(engine)
    workdir = Path(tempfile.mkdtemp(prefix="sisbridge-bench-"))
    meter = Meter(postmaster_pid)
    truncate = postmaster_pid is not None
    result: dict = {"batch_size": "default", "warehouse": args.warehouse}
    for scenario in scenarios:
        # A fresh warehouse per scenario, as a school's own would be.
        school_id = f"bench_{scenario}"
        if args.warehouse == "lake":
            con = warehouse.connect(school_id, lake=_lake(engine.url, workdir))
        else:
            con = duckdb.connect(str(workdir / f"{scenario}.duckdb"))
        audit.ensure_schema(con)
        if scenario == "week2":
            result["week2"] = run_week2(
                con, engine, workdir, meter, args.users, args.repeats, truncate, args.stale_statistics
            )
        elif scenario == "creates":
            result["creates"] = run_creates(con, engine, meter, args.users, truncate)
        elif scenario == "basic":
            result["basic"] = run_basic(con, engine, meter, args.rows, args.repeats, truncate)
        else:
            raise SystemExit(f"unknown scenario {scenario!r} (week2, creates, basic)")
        con.close()
        warehouse.release(school_id)
        print(json.dumps({scenario: result[scenario]}, sort_keys=True), file=sys.stderr, flush=True)
    engine.dispose()
    return result


def _results_keys(result: dict) -> dict:
    """The flat keys bench/results.json keeps."""
    keys = {}
    if "week2" in result:
        week2 = result["week2"]
        keys["push_s_week2_median"] = round(week2["wall_s"], 3)
        keys["push_cpu_s_week2_median"] = round(week2["cpu_s"], 3)
        keys["push_week2_users"] = week2["users"]
        keys["push_week2_changed_users"] = week2["changed_users"]
    if "creates" in result:
        creates = result["creates"]
        keys["push_s_creates"] = creates["wall_s"]
        keys["push_creates_users"] = creates["users"]
        keys["push_peak_rss_mb_creates"] = creates["peak_rss_mb"]
        # The push alone (no dbt snapshot): push_users_per_s_initial_1m (bench/run.py) includes it.
        keys["push_users_per_s_creates_only"] = round(creates["users"] / creates["wall_s"])
    if "basic" in result:
        rows = result["basic"]["rows"]
        label = f"{rows // 1000}k" if rows % 1000 == 0 else str(rows)
        for kind in ("creates", "updates", "deactivations"):
            median = result["basic"][kind]["wall_s"]
            keys[f"push_s_{label}_{kind}"] = round(median, 3)
            keys[f"push_rows_per_s_{kind}"] = round(rows / median)
            # Users per second, median of the repeats: push_users_per_s_create_100k and the like.
            singular = {"creates": "create", "updates": "update", "deactivations": "deactivate"}[kind]
            keys[f"push_users_per_s_{singular}_{label}"] = round(rows / median)
    return keys


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--url", help="an existing PostgreSQL database (default: a throwaway cluster)")
    parser.add_argument("--scenarios", default="week2,creates")
    parser.add_argument("--users", type=int, default=1_000_000)
    parser.add_argument("--rows", type=int, default=100_000, help="users in the basic scenario")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--write-results", action="store_true", help="merge the keys into bench/results.json")
    parser.add_argument(
        "--stale-statistics",
        action="store_true",
        help="week2: leave the store with the statistics of the empty store (as before autovacuum ran)",
    )
    parser.add_argument(
        "--warehouse",
        choices=("lake", "file"),
        default="lake",
        help="lake: a DuckLake, its catalog in PostgreSQL, as in production (default); file: a DuckDB file",
    )
    args = parser.parse_args(argv)
    if args.stale_statistics and args.write_results:
        parser.error("--stale-statistics measures a fault case; its figures do not go into results.json")

    server = None
    url = args.url
    postmaster_pid = None
    if url is None:
        sys.path.insert(0, str(ROOT / "tests"))
        from pgserver import remove_server, start_server

        server = start_server()
        url = server.url()
        postmaster_pid = int((server.data_dir / "postmaster.pid").read_text().split()[0])
    try:
        result = run(url, args.scenarios.split(","), args, postmaster_pid)
    finally:
        if server is not None:
            remove_server(server)

    if args.write_results:
        merged = json.loads(RESULTS.read_text()) if RESULTS.exists() else {}
        merged.update(_results_keys(result))
        RESULTS.write_text(json.dumps(merged, indent=2, sort_keys=True) + "\n")
    print(json.dumps(result, indent=2, sort_keys=True))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
