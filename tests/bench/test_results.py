"""The harness's arithmetic on bench/results.json: the targets and where the growth goes."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import pytest

RUN_PY = Path(__file__).resolve().parents[2] / "bench" / "run.py"


def _load_harness():
    spec = importlib.util.spec_from_file_location("bench_run", RUN_PY)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


HARNESS = _load_harness()


@pytest.fixture
def harness():
    return HARNESS


def _run(seconds: float, **stages: float) -> dict:
    return {"seconds": seconds, "stages": {**dict.fromkeys(HARNESS.STAGES, 1.0), **stages}}


def _results() -> dict:
    return {
        "e2e_s_10k": 30.0,
        "e2e_s_1m_10pct": 50.0,
        "duckdb_read_s_1m": 1.5,
        "pandas_baseline_s_1m": 25.0,
        "peak_rss_mb_1m": 1500.0,
        "runs": {
            # Medians: 10k week 1 transform 10, push 3; 1M week 2 transform 20, push 8, load 4.
            "10k": {
                "initial": [
                    _run(29, transform=9, push=3),
                    _run(30, transform=10, push=2),
                    _run(31, transform=12, push=3),
                ]
            },
            "1m": {
                "week2": [
                    _run(49, transform=20, push=8, load=4),
                    _run(50, transform=19, push=9, load=4),
                    _run(52, transform=21, push=7, load=5),
                ]
            },
        },
    }


def test_the_growth_is_split_by_stage_from_the_median_runs(harness):
    growth = harness.growth_by_stage(_results())

    assert growth["transform"] == 10.0
    assert growth["push"] == 5.0
    assert growth["load"] == 3.0
    assert growth["validate"] == 0.0
    # 20 s of e2e growth, 18 s of it in the stages.
    assert growth["between_tasks"] == 2.0
    assert growth["outside_transform"] == 10.0
    assert growth["allowance_8x_duckdb_read"] == 12.0


def test_a_stage_that_did_not_run_counts_as_zero(harness):
    results = _results()
    for run in results["runs"]["10k"]["initial"]:
        run["stages"]["sense"] = None

    assert harness.growth_by_stage(results)["sense"] == 1.0


def test_the_growth_by_stage_needs_both_sizes(harness):
    results = _results()
    del results["runs"]["1m"]

    assert harness.growth_by_stage(results) == {"note": "the growth by stage needs the 10k and 1m sizes"}


def test_the_targets(harness):
    targets = harness.evaluate_targets(_results())

    assert {name: (target["value"], target["limit"], target["pass"]) for name, target in targets.items()} == {
        "growth_vs_duckdb": (20.0, 12.0, False),
        "growth_vs_pandas": (20.0, 25.0, True),
        "fixed_cost": (30.0, 45, True),
        "peak_rss": (1500.0, 2048, True),
    }


def test_evaluate_rewrites_the_targets_of_an_existing_file(harness, tmp_path, capsys):
    path = tmp_path / "results.json"
    path.write_text(json.dumps({**_results(), "targets": {}, "other_benchmark_key": 7}))

    assert harness.main(["--evaluate", "--out", str(path)]) == 0

    written = json.loads(path.read_text())
    assert written["other_benchmark_key"] == 7
    assert written["targets"]["growth_vs_pandas"]["pass"] is True
    assert written["growth_by_stage_s"]["transform"] == 10.0
    assert json.loads(capsys.readouterr().out)["growth_by_stage_s"]["push"] == 5.0
