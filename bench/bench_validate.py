"""Benchmark the quality gate (`sisbridge.quality.validate`) on the bench school's week-1 roster.

Usage: python bench/bench_validate.py [--rows N] [--runs N]. Prints JSON. The roster is loaded once
into a warehouse file (in a child process: Linux carries a parent's peak RSS over into a forked child's
ru_maxrss); each timed run validates a fresh copy of it in a fresh process, with Data Docs written as
the pipeline does, so the peak RSS is that of one validation plus the imports (reported separately).
`findings_sha256` fingerprints every finding, to compare results across versions.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

BENCH_DIR = Path(__file__).resolve().parent
DATA_DIR = BENCH_DIR / "data"
SCHOOL_ID = "bench"
RUN_ID = "bench_validate"


def _school(yaml_path: Path):
    from sisbridge.config import load_school

    return load_school(yaml_path)


def prepare(csv_path: Path, yaml_path: Path, db_path: Path) -> dict:
    """Load the roster into `db_path` as `load_raw` does (no timing: this is the previous task)."""
    import duckdb

    from sisbridge import audit, loading

    school = _school(yaml_path)
    con = duckdb.connect(str(db_path))
    try:
        audit.ensure_schema(con)
        audit.upsert_run(con, RUN_ID, school_id=SCHOOL_ID, started_at=audit.utcnow(), status="running")
        result = loading.load_file(csv_path, school, con, file_name="roster.csv", run_id=RUN_ID)
        audit.record_findings(con, RUN_ID, "load", result.findings)
        audit.upsert_run(
            con,
            RUN_ID,
            file_encoding=result.encoding,
            header_columns=list(result.header),
            rows_in_file=result.rows_in_file,
        )
    finally:
        con.close()
    return {"rows_in_file": result.rows_in_file, "rows_loaded": result.rows_loaded}


def _cpu_seconds() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def run_once(yaml_path: Path, db_path: Path, report_dir: Path) -> dict:
    """One timed validation in this process (called in a child process by `timed`)."""
    import duckdb

    # Import cost is not validation time: a pipeline worker has these modules loaded already.
    import great_expectations  # noqa: F401
    import pandas  # noqa: F401

    from sisbridge import quality

    school = _school(yaml_path)
    con = duckdb.connect(str(db_path))
    rss_before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    cpu, started = _cpu_seconds(), time.perf_counter()
    result = quality.validate(con, school, RUN_ID, report_dir=report_dir)
    elapsed, cpu = time.perf_counter() - started, _cpu_seconds() - cpu
    con.close()
    findings = [*result.file_errors, *result.row_findings]
    digest = hashlib.sha256()
    for f in findings:
        fields = (f.rule, f.severity, f.line_number, f.identifier, f.column_name, f.value, f.message)
        digest.update(json.dumps(fields).encode() + b"\n")
    return {
        "seconds": elapsed,
        "cpu_seconds": cpu,
        "rss_before_validate_mb": rss_before,
        "accepted": result.accepted,
        "findings": len(findings),
        "rows_rejected": result.rows_rejected,
        "rows_warned": result.rows_warned,
        "data_docs": result.data_docs is not None,
        "findings_sha256": digest.hexdigest(),
    }


def timed(yaml_path: Path, prepared: Path, tmp: Path) -> tuple[dict, float]:
    """Validate a fresh copy of the prepared warehouse in a fresh process; return figures, peak RSS MB."""
    db_path, report_dir = tmp / "run.duckdb", tmp / "report"
    shutil.copyfile(prepared, db_path)
    shutil.rmtree(report_dir, ignore_errors=True)
    args = [sys.executable, __file__, "--child", str(yaml_path), str(db_path), str(report_dir)]
    child = subprocess.Popen(args, stdout=subprocess.PIPE, text=True)
    out = child.stdout.read()
    _, status, usage = os.wait4(child.pid, 0)
    if os.waitstatus_to_exitcode(status):
        raise SystemExit(f"validation failed with exit code {os.waitstatus_to_exitcode(status)}")
    db_path.unlink()
    return json.loads(out), usage.ru_maxrss / 1024


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--rows", type=int, default=1_000_000, help="users in the bench roster")
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--child", nargs=3, metavar=("YAML", "DB", "REPORT"), help=argparse.SUPPRESS)
    parser.add_argument("--prepare", nargs=3, metavar=("CSV", "YAML", "DB"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.prepare:
        print(json.dumps(prepare(*map(Path, args.prepare))))
        return
    if args.child:
        yaml_path, db_path, report_dir = map(Path, args.child)
        print(json.dumps(run_once(yaml_path, db_path, report_dir)))
        return

    sys.path.insert(0, str(BENCH_DIR))
    import roster

    csv_path = roster.ensure_rosters(DATA_DIR, args.rows)["week1"]
    with tempfile.TemporaryDirectory(prefix="sisbridge-bench-validate-") as tmp_name:
        tmp = Path(tmp_name)
        yaml_path = tmp / f"{SCHOOL_ID}.yaml"
        yaml_path.write_text(roster.school_yaml(SCHOOL_ID), encoding="utf-8")
        prepared = tmp / "loaded.duckdb"
        command = [sys.executable, __file__, "--prepare", str(csv_path), str(yaml_path), str(prepared)]
        loaded = json.loads(subprocess.run(command, check=True, stdout=subprocess.PIPE, text=True).stdout)
        runs = [timed(yaml_path, prepared, tmp) for _ in range(args.runs)]
    figures = [figure for figure, _ in runs]
    if len({figure["findings_sha256"] for figure in figures}) != 1:
        raise SystemExit("runs disagree on the findings")
    print(
        json.dumps(
            {
                "file": csv_path.name,
                **loaded,
                "runs": args.runs,
                "validate_s": round(statistics.median(f["seconds"] for f in figures), 3),
                "validate_cpu_s": round(statistics.median(f["cpu_seconds"] for f in figures), 3),
                "peak_rss_mb": round(statistics.median(rss for _, rss in runs), 1),
                "rss_before_validate_mb": round(max(f["rss_before_validate_mb"] for f in figures), 1),
                "runs_s": [round(f["seconds"], 3) for f in figures],
                "runs_cpu_s": [round(f["cpu_seconds"], 3) for f in figures],
                **{key: figures[0][key] for key in ("accepted", "findings", "rows_rejected", "rows_warned")},
                "data_docs": figures[0]["data_docs"],
                "findings_sha256": figures[0]["findings_sha256"],
            },
            indent=2,
        )
    )


if __name__ == "__main__":
    main()
