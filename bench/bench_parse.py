"""How long parsing the DAG file takes as the number of schools grows.

Airflow parses `dags/sis_sync.py` in the dag-processor, and again in every task process to find the
task's DAG, so this cost is paid per task, not once. Each count runs in a fresh process: the first
`DagBag` (cold: imports) and a second one (warm) are timed. Merges `parse_s_<n>_schools` into
bench/results.json.

    .venv/bin/python bench/bench_parse.py [--schools 1,20,50]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "bench" / "results.json"
sys.path.insert(0, str(ROOT / "bench"))

import roster  # noqa: E402

CHILD = """
import json, time
from airflow.dag_processing.dagbag import DagBag
import cosmos, sisbridge.transform  # imported by any worker before it parses: not parse time
started = time.perf_counter()
bag = DagBag(dag_folder={dags!r})
cold = time.perf_counter() - started
started = time.perf_counter()
bag = DagBag(dag_folder={dags!r})
warm = time.perf_counter() - started
tasks = sum(len(dag.tasks) for dag in bag.dags.values())
errors = len(bag.import_errors)
print(json.dumps({{"dags": len(bag.dags), "tasks": tasks, "cold_s": cold, "warm_s": warm, "errors": errors}}))
"""


def parse_time(count: int, workdir: Path) -> dict:
    schools = workdir / f"schools_{count}"
    schools.mkdir()
    for n in range(1, count + 1):
        (schools / f"bparse_{n:04d}.yaml").write_text(roster.school_yaml(f"bparse_{n:04d}"))
    env = {
        **os.environ,
        "SISBRIDGE_SCHOOLS_DIR": str(schools),
        "AIRFLOW_HOME": str(workdir / "airflow"),
        "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
        "DO_NOT_TRACK": "1",
    }
    out = subprocess.run(
        [sys.executable, "-c", CHILD.format(dags=str(ROOT / "dags"))],
        env=env,
        capture_output=True,
        text=True,
        check=True,
    )
    return json.loads(out.stdout.strip().splitlines()[-1])


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--schools", default="1,20,50")
    args = parser.parse_args(argv)
    figures = {}
    with tempfile.TemporaryDirectory(prefix="sisbridge-bench-parse-") as tmp:
        for count in [int(n) for n in args.schools.split(",")]:
            result = parse_time(count, Path(tmp))
            print(f"{count} schools: {result}", flush=True)
            figures[f"parse_s_{count}_schools"] = round(result["warm_s"], 2)
            figures[f"parse_cold_s_{count}_schools"] = round(result["cold_s"], 2)
            figures[f"parse_tasks_{count}_schools"] = result["tasks"]
    figures["parse_load_average_after"] = [round(x, 2) for x in os.getloadavg()]
    merged = json.loads(RESULTS.read_text()) if RESULTS.exists() else {}
    merged.update(figures)
    RESULTS.write_text(json.dumps(merged, indent=2, sort_keys=True, default=str) + "\n")
    print(json.dumps(figures, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
