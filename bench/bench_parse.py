"""How long the DAG files take to parse, and a task its DAG, as the number of schools grows.

The schools are spread over the DAG files `dags/sis_sync_NN.py` (`sisbridge.dag_factory`). For each
number of schools (generated configs in a temporary folder):
- **file parse**, as the dag-processor parses a file: in a fresh process that has imported Airflow
  (the processor forks its parsing processes from one that has), Airflow's own `_parse_file` (the
  DagBag of that one file, then every DAG serialized). Its time counts against the processor's
  `dag_file_processor_timeout`. Median and max over the files; the target is 10 s each.
- **task start**, as a task process finds its DAG: a fresh process with Airflow's parsing context set
  to one school's DAG and task, the DagBag of that school's file (`cold`, imports included), then
  the same again (`build`: the DAG alone), wall and CPU seconds. Median over three schools.

Merges `parse_file_*_<n>_schools` and `task_start_*_<n>_schools` into bench/results.json.

    .venv/bin/python bench/bench_parse.py [--schools 10,100,1000] [--file-parse-at 1000]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
DAGS = ROOT / "dags"
RESULTS = ROOT / "bench" / "results.json"
sys.path.insert(0, str(ROOT / "bench"))

import roster  # noqa: E402

from sisbridge.dag_factory import shard_file  # noqa: E402

FILE_PARSE_CHILD = """
import json, sys, time
import structlog
from airflow.dag_processing.processor import DagFileParseRequest, _parse_file
request = DagFileParseRequest(file=sys.argv[1], bundle_path=sys.argv[2], bundle_name="dags-folder")
started, cpu_started = time.perf_counter(), time.process_time()
result = _parse_file(request, structlog.get_logger())
seconds, cpu = time.perf_counter() - started, time.process_time() - cpu_started
errors = dict(result.import_errors)
print(json.dumps({"seconds": seconds, "cpu_s": cpu, "dags": len(result.serialized_dags), "errors": errors}))
"""

TASK_START_CHILD = """
import json, sys, time
from airflow.dag_processing.dagbag import BundleDagBag
def bag():
    started, cpu_started = time.perf_counter(), time.process_time()
    dags = BundleDagBag(
        dag_folder=sys.argv[1], safe_mode=False, load_op_links=False, bundle_path=sys.argv[2],
        bundle_name="dags-folder",
    )
    seconds, cpu = time.perf_counter() - started, time.process_time() - cpu_started
    return seconds, cpu, sorted(dags.dag_ids), dict(dags.import_errors)
cold, cold_cpu, dag_ids, errors = bag()
build, build_cpu, _, _ = bag()
print(json.dumps({
    "cold_s": cold, "cold_cpu_s": cold_cpu, "build_s": build, "build_cpu_s": build_cpu, "dag_ids": dag_ids,
    "errors": errors,
}))
"""


def _env(schools: Path, workdir: Path, **extra: str) -> dict:
    return {
        **os.environ,
        "SISBRIDGE_SCHOOLS_DIR": str(schools),
        "AIRFLOW_HOME": str(workdir / "airflow"),
        "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
        "AIRFLOW__LOGGING__LOGGING_LEVEL": "WARNING",
        "DO_NOT_TRACK": "1",
        **extra,
    }


def _child(code: str, args: list[str], env: dict) -> dict:
    out = subprocess.run(
        [sys.executable, "-c", code, *args], env=env, capture_output=True, text=True, check=True
    )
    result = json.loads(out.stdout.strip().splitlines()[-1])
    if result["errors"]:
        raise SystemExit(f"{args[0]}: import errors: {result['errors']}")
    return result


def write_schools(count: int, workdir: Path) -> tuple[Path, list[str]]:
    schools = workdir / f"schools_{count}"
    schools.mkdir()
    school_ids = [f"bparse_{n:04d}" for n in range(1, count + 1)]
    for school_id in school_ids:
        (schools / f"{school_id}.yaml").write_text(roster.school_yaml(school_id))
    return schools, school_ids


def file_parse(schools: Path, school_ids: list[str], workdir: Path) -> dict:
    """Parse every DAG file in its own process; return the figures over the files."""
    env = _env(schools, workdir)
    runs = [_child(FILE_PARSE_CHILD, [str(path), str(DAGS)], env) for path in sorted(DAGS.glob("*.py"))]
    dags = sum(run["dags"] for run in runs)
    if dags != len(school_ids):
        raise SystemExit(f"{dags} DAGs parsed for {len(school_ids)} schools")
    seconds = [run["seconds"] for run in runs]
    slowest = max(runs, key=lambda run: run["seconds"])
    return {
        "files": len(runs),
        "median_s": round(statistics.median(seconds), 2),
        "max_s": round(max(seconds), 2),
        "cpu_median_s": round(statistics.median(run["cpu_s"] for run in runs), 2),
        "cpu_max_s": round(max(run["cpu_s"] for run in runs), 2),
        "max_dags_in_a_file": max(run["dags"] for run in runs),
        "dags_in_the_slowest_file": slowest["dags"],
        "sum_s": round(sum(seconds), 1),
    }


def task_start(dag_file: Path, dag_id: str, schools: Path, workdir: Path) -> dict:
    """Find one school's DAG as its task process does (Airflow's parsing context set)."""
    env = _env(
        schools,
        workdir,
        _AIRFLOW_PARSING_CONTEXT_DAG_ID=dag_id,
        _AIRFLOW_PARSING_CONTEXT_TASK_ID="load_raw",
    )
    result = _child(TASK_START_CHILD, [str(dag_file), str(dag_file.parent)], env)
    if result["dag_ids"] != [dag_id]:
        raise SystemExit(f"{dag_file}: built {result['dag_ids']}, not only {dag_id}")
    return result


def task_starts(schools: Path, school_ids: list[str], workdir: Path) -> dict:
    picked = [school_ids[0], school_ids[len(school_ids) // 2], school_ids[-1]]
    runs = [task_start(shard_file(s), f"sis_sync__{s}", schools, workdir) for s in picked]
    keys = ("cold_s", "cold_cpu_s", "build_s", "build_cpu_s")
    return {key: round(statistics.median(run[key] for run in runs), 3) for key in keys}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--schools", default="10,100,1000", help="numbers of schools for the task start")
    parser.add_argument("--file-parse-at", default="1000", help="numbers of schools for the file parse")
    args = parser.parse_args(argv)
    task_start_at = {int(n) for n in args.schools.split(",") if n}
    file_parse_at = {int(n) for n in args.file_parse_at.split(",") if n}
    figures = {}
    with tempfile.TemporaryDirectory(prefix="sisbridge-bench-parse-") as tmp:
        for count in sorted(task_start_at | file_parse_at):
            schools, school_ids = write_schools(count, Path(tmp))
            if count in task_start_at:
                started = task_starts(schools, school_ids, Path(tmp))
                print(f"{count} schools, task start: {started}", flush=True)
                for key, value in started.items():
                    figures[f"task_start_{key}_{count}_schools"] = value
                figures["task_start_load_average_after"] = [round(x, 2) for x in os.getloadavg()]
            if count in file_parse_at:
                parsed = file_parse(schools, school_ids, Path(tmp))
                print(f"{count} schools, file parse: {parsed}", flush=True)
                for key, value in parsed.items():
                    figures[f"parse_file_{key}_{count}_schools"] = value
                figures["parse_file_load_average_after"] = [round(x, 2) for x in os.getloadavg()]
    merged = json.loads(RESULTS.read_text()) if RESULTS.exists() else {}
    merged.update(figures)
    RESULTS.write_text(json.dumps(merged, indent=2, sort_keys=True, default=str) + "\n")
    print(json.dumps(figures, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
