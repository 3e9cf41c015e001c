"""Benchmark the loader on a 1M-row roster (about 100 MB) against DuckDB's own `read_csv`.

Usage: python bench/bench_loading.py [--rows N]. Prints JSON; merges its figures into
bench/results.json when that file exists. Each timed run is a fresh process with a fresh warehouse
file, so the peak RSS is that of one load.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

BENCH_DIR = Path(__file__).resolve().parent
DATA_DIR = BENCH_DIR / "data"
RESULTS = BENCH_DIR / "results.json"
HEADER = "FIRST_NAME,LAST_NAME,EMAIL,USER_ID,GRADUATION,STAKEHOLDERS,EMAIL_OPT_OUT,DELETE,PROGRAM,AFFINITY"
FIRST = ["Ada", "Grace", "Alan", "Katherine", "Linus", "Barbara", "José", "Zoë", "Chidi", "Mei"]
LAST = ["Lovelace", "Hopper", "Turing", "Johnson", "Torvalds", "Liskov", "Núñez", "O'Neil", "Okafor"]
PROGRAMS = ["Econ", "Marketing", "Nursing", "Pre-Med", "Mechanical Engineering", "Civil Engineering"]
AFFINITIES = ["Chess Club", "Debate, Model UN", "Women in STEM", "First Generation", ""]
TYPES = ["Undergraduate", "Graduate", "Alumni"]
BAD_ROW_RATE = 0.01


def _quote(value: str) -> str:
    if any(ch in value for ch in ',"\r\n'):
        return '"' + value.replace('"', '""') + '"'
    return value


def generate(path: Path, rows: int, seed: int = 20260101) -> None:
    """Write a deterministic roster: quoted commas, communities, dates, about 1% ragged rows."""
    rng = random.Random(seed)
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", encoding="utf-8", newline="") as out:
        out.write(HEADER + "\r\n")
        for n in range(rows):
            first, last = rng.choice(FIRST), rng.choice(LAST)
            if rng.random() < 0.05:
                last += ", Jr."
            graduation = (
                str(rng.randint(1990, 2030))
                if rng.random() < 0.5
                else f"{rng.randint(1990, 2030)}-{rng.randint(1, 12):02d}-{rng.randint(1, 28):02d}"
            )
            programs = "; ".join(rng.sample(PROGRAMS, rng.randint(1, 2)))
            fields = [
                first,
                last,
                f"{first.lower()}.{last.split(',')[0].lower().replace(chr(39), '')}{n}@example.edu",
                f"U{n:08d}",
                graduation,
                rng.choice(TYPES),
                rng.choice(["0", "1", "yes", ""]),
                "1" if rng.random() < 0.002 else "",
                programs,
                rng.choice(AFFINITIES),
            ]
            if rng.random() < BAD_ROW_RATE:
                # A ragged row: one field too many or one too few.
                fields = fields + ["extra"] if rng.random() < 0.5 else fields[:-1]
            out.write(",".join(_quote(field) for field in fields) + "\r\n")


def _school():
    from sisbridge.config import SchoolConfig

    return SchoolConfig(
        school_id="bench",
        name="Bench University",
        s3={"bucket": "uconnect-sis-bench", "key": "roster.csv", "aws_conn_id": "sis_s3_bench"},
        communities=[
            {"column": "PROGRAM", "group": "Career Communities"},
            {"column": "AFFINITY", "group": "Affinity"},
        ],
    )


def run_once(kind: str, csv_path: Path, db_path: Path) -> dict:
    """One timed load in this process (called in a child process by `timed`)."""
    import duckdb

    if kind == "load":
        # Import cost is not load time: a pipeline worker has these modules loaded already.
        import numpy  # noqa: F401
        import pandas  # noqa: F401

        from sisbridge import loading  # noqa: F401
    con = duckdb.connect(str(db_path))
    started, cpu_started = time.perf_counter(), time.process_time()
    if kind == "duckdb":
        con.execute(
            "create table roster as select * from read_csv(?, all_varchar = true, ignore_errors = true)",
            [str(csv_path)],
        )
        rows = con.execute("select count(*) from roster").fetchone()[0]
    else:
        from sisbridge import loading

        result = loading.load_file(csv_path, _school(), con)
        rows = result.rows_loaded
    # CPU seconds of all the process's threads: less sensitive than wall time to a busy machine.
    elapsed, cpu = time.perf_counter() - started, time.process_time() - cpu_started
    checks = {}
    if kind == "load":
        # Record n of the generator is on line n + 2 (one record a line, after the header).
        checks["wrong_line_numbers"] = con.execute(
            "select count(*) from raw.roster "
            "where line_number <> regexp_extract(email, '(\\d+)@', 1)::integer + 2"
        ).fetchone()[0]
        checks["community_rows"] = con.execute("select count(*) from raw.roster_communities").fetchone()[0]
        checks["ragged_rows"] = sum(f.rule == "ragged_row" for f in result.findings)
    con.close()
    return {"seconds": elapsed, "cpu_s": cpu, "rows": rows, **checks}


def timed(kind: str, csv_path: Path) -> tuple[dict, float]:
    """Run one load in a fresh process; return its figures and its peak RSS in MB."""
    with tempfile.TemporaryDirectory(prefix="sisbridge-bench-") as tmp:
        args = [sys.executable, __file__, "--child", kind, str(csv_path), str(Path(tmp) / "w.duckdb")]
        child = subprocess.Popen(args, stdout=subprocess.PIPE, text=True)
        out = child.stdout.read()
        _, status, usage = os.wait4(child.pid, 0)
        child.returncode = os.waitstatus_to_exitcode(status)
        if child.returncode:
            raise SystemExit(f"{kind} run failed with exit code {child.returncode}")
    result = json.loads(out)
    return result, usage.ru_maxrss / 1024


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--child", nargs=3, metavar=("KIND", "CSV", "DB"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        kind, csv_path, db_path = args.child
        print(json.dumps(run_once(kind, Path(csv_path), Path(db_path))))
        return
    csv_path = DATA_DIR / f"roster_{args.rows}.csv"
    if not csv_path.exists():
        generate(csv_path, args.rows)
    duckdb_runs, load_runs, duckdb_cpu, load_cpu, rss = [], [], [], [], []
    for _ in range(args.runs):
        baseline, _ = timed("duckdb", csv_path)
        duckdb_runs.append(baseline["seconds"])
        duckdb_cpu.append(baseline["cpu_s"])
        loaded, peak = timed("load", csv_path)
        load_runs.append(loaded["seconds"])
        load_cpu.append(loaded["cpu_s"])
        rss.append(peak)
    duckdb_s, load_s = statistics.median(duckdb_runs), statistics.median(load_runs)
    figures = {
        "rows": args.rows,
        "file_mb": round(csv_path.stat().st_size / 1e6, 1),
        "duckdb_rows": baseline["rows"],
        "loaded_rows": loaded["rows"],
        "ragged_rows": loaded["ragged_rows"],
        "community_rows": loaded["community_rows"],
        "wrong_line_numbers": loaded["wrong_line_numbers"],
        "duckdb_read_s_1m": round(duckdb_s, 3),
        "load_s_1m": round(load_s, 3),
        "load_ratio_1m": round(load_s / duckdb_s, 2),
        "duckdb_read_cpu_s_1m": round(statistics.median(duckdb_cpu), 3),
        "load_cpu_s_1m": round(statistics.median(load_cpu), 3),
        "load_peak_rss_mb": round(max(rss), 1),
        "load_load_average_after": [round(x, 2) for x in os.getloadavg()],
        "duckdb_runs_s": [round(s, 3) for s in duckdb_runs],
        "load_runs_s": [round(s, 3) for s in load_runs],
    }
    print(json.dumps(figures, indent=2))
    if RESULTS.exists():
        merged = json.loads(RESULTS.read_text() or "{}")
        merged.update({key: figures[key] for key in ("duckdb_read_s_1m", "load_s_1m", "load_ratio_1m")})
        RESULTS.write_text(json.dumps(merged, indent=2, sort_keys=True) + "\n")


if __name__ == "__main__":
    main()
