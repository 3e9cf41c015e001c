"""The bench school and its rosters: week 1, and week 2 with 10% of the users changed.

The rosters come from `sisbridge.sample_roster` (`BenchRoster`, `write_week`, `truth`); this module
writes the bench school's config and keeps each size's files, generated once, under the data folder.
"""

from __future__ import annotations

import json
from pathlib import Path

from sisbridge.sample_roster import BENCH_PROGRAMS, BenchRoster, truth, write_week

DEFAULT_SEED = 20260101

SCHOOL_YAML = """\
# Benchmark school (generated): permissive thresholds so that a 10% week is pushed, not held.
school_id: {school_id}
name: Bench University {school_id}
s3: {{bucket: {bucket}, key: roster.csv, aws_conn_id: sis_s3_{school_id}}}
identifier: email
auto_sync: true
# Only ever triggered by the benchmarks: Feb 29 at midnight, so unpausing never starts a run.
schedule: "0 0 29 2 *"
missing_users: deactivate
duplicates: reject_rows
thresholds:
  {{max_removed_pct: 100, max_removed: 100000000, max_updated_pct: 100, max_email_changed_pct: 100,
   max_rejected_pct: 5}}
user_types: {{Undergraduate: Undergraduate Students, Graduate: Graduate Students, Alumni: Alumni}}
graduation: {{date_formats: ["%Y-%m-%d", "%m/%d/%Y"]}}
communities:
  - column: PROGRAM
    group: Career Communities
    values: {programs}
  - {{column: AFFINITY, group: Affinity}}
"""


def school_yaml(school_id: str) -> str:
    """The bench school's config; its bucket is `bench-<school_id>`."""
    programs = json.dumps(BENCH_PROGRAMS)
    return SCHOOL_YAML.format(
        school_id=school_id, bucket=f"bench-{school_id.replace('_', '-')}", programs=programs
    )


def ensure_rosters(data_dir: Path, users: int, seed: int = DEFAULT_SEED) -> dict:
    """Generate (once) week 1, week 2 and the truth for `users` users; return their paths and truth."""
    stem = f"roster_{users}" if seed == DEFAULT_SEED else f"roster_{users}_seed{seed}"
    week1, week2 = data_dir / f"{stem}_week1.csv", data_dir / f"{stem}_week2.csv"
    truth_path = data_dir / f"{stem}_truth.json"
    if not (week1.exists() and week2.exists() and truth_path.exists()):
        model = BenchRoster(users, seed)
        write_week(week1, model, 1)
        write_week(week2, model, 2)
        truth_path.write_text(json.dumps(truth(model)))
    return {"week1": week1, "week2": week2, "truth": json.loads(truth_path.read_text())}
