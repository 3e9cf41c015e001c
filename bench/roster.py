"""Deterministic benchmark rosters: week 1, and week 2 with 10% of the users changed.

Each user has a fixed record; week 2 changes a known 10% of them in ways that always change what the
store holds (one kind of change per user), and adds 0.5% newcomers. About 1% of the records are bad
(ragged rows, invalid or blank emails); they are the same records in both weeks, so they never reach
the store. The truth (which users changed, and how) comes from the generator, not from the pipeline.
"""

from __future__ import annotations

import json
import unicodedata
from pathlib import Path

import numpy as np

HEADER = "FIRST_NAME,LAST_NAME,EMAIL,USER_ID,GRADUATION,STAKEHOLDERS,EMAIL_OPT_OUT,DELETE,PROGRAM,AFFINITY"
FIRST = ["Ada", "Grace", "Alan", "Katherine", "Linus", "Barbara", "José", "Zoë", "Chidi", "Mei", "Ngozi"]
LAST = [
    "Lovelace",
    "Hopper",
    "Turing",
    "Johnson",
    "Torvalds",
    "Liskov",
    "Núñez",
    "O'Neil",
    "Okafor",
    "Smith, Jr.",
]
# Program -> Career Communities (many:1), as in the bench school's config below.
PROGRAMS = {
    "Econ": "Business & Finance",
    "Marketing": "Business & Finance",
    "Nursing": "Health",
    "Pre-Med": "Health",
    "Mechanical Engineering": "Engineering",
    "Civil Engineering": "Engineering",
    "BAC-CHEM-1": "Science",
}
PROGRAM_NAMES = list(PROGRAMS)
AFFINITIES = ["Chess Club", "Debate, Model UN", "Women in STEM", "First Generation", "", ""]
TYPES = ["Undergraduate", "Undergraduate", "Graduate", "Alumni"]
OPT_OUT_NO = ["0", "", "no", ""]
CHANGE_KINDS = (
    "last_name",
    "program",
    "graduation",
    "opt_out",
    "missing",
    "delete",
    "first_name",
    "user_type",
    "affinity",
    "last_name_and_program",
)
CHANGED_SHARE = 0.10
NEWCOMER_SHARE = 0.005
DEFAULT_SEED = 20260101
BAD_EVERY = 100  # one bad record after every 100th user: 1% of the file

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
    programs = json.dumps(PROGRAMS)
    return SCHOOL_YAML.format(
        school_id=school_id, bucket=f"bench-{school_id.replace('_', '-')}", programs=programs
    )


def _ascii(text: str) -> str:
    # Schools send names with accents, but their SIS exports addresses in ASCII.
    return unicodedata.normalize("NFKD", text).encode("ascii", "ignore").decode()


def _quote(value: str) -> str:
    if any(ch in value for ch in ',"\r\n'):
        return '"' + value.replace('"', '""') + '"'
    return value


def _graduation(year: int, style: int, month: int, day: int) -> str:
    if style == 0:
        return str(year)
    if style == 1:
        return f"{year}-{month:02d}-{day:02d}"
    return f"{month:02d}/{day:02d}/{year}"


class _Users:
    """Column arrays of the users' week-1 attributes (indices into the lists above)."""

    def __init__(self, count: int, seed: int) -> None:
        rng = np.random.default_rng(seed)
        self.count = count
        self.first = rng.integers(0, len(FIRST), count)
        self.last = rng.integers(0, len(LAST), count)
        self.upper_email = rng.random(count) < 0.05
        self.year = rng.integers(1995, 2031, count)
        self.grad_style = rng.choice(3, count, p=[0.5, 0.3, 0.2])
        self.month = rng.integers(1, 13, count)
        self.day = rng.integers(1, 29, count)
        self.user_type = rng.integers(0, len(TYPES), count)
        self.opt_out = rng.random(count) < 0.05
        self.opt_no = rng.integers(0, len(OPT_OUT_NO), count)
        self.program_a = rng.integers(0, len(PROGRAM_NAMES), count)
        self.program_b = np.where(rng.random(count) < 0.3, rng.integers(0, len(PROGRAM_NAMES), count), -1)
        self.affinity = rng.integers(0, len(AFFINITIES), count)
        changed = rng.choice(count, int(count * CHANGED_SHARE), replace=False)
        self.kind = np.full(count, -1)
        self.kind[np.sort(changed)] = np.arange(len(changed)) % len(CHANGE_KINDS)
        # An opt-out change needs a user who was opted in: the sync never opts anyone back in.
        self.opt_out[self.kind == CHANGE_KINDS.index("opt_out")] = False

    def email(self, i: int) -> str:
        last = LAST[self.last[i]].split(",")[0].replace("'", "")
        local = _ascii(f"{FIRST[self.first[i]]}.{last}{i}").lower()
        return f"{local.title()}@Bench.EDU" if self.upper_email[i] else f"{local}@bench.edu"

    def record(self, i: int, week: int) -> list[str] | None:
        kind = CHANGE_KINDS[self.kind[i]] if week == 2 and self.kind[i] >= 0 else None
        if kind == "missing":
            return None
        first = FIRST[self.first[i]]
        last = LAST[self.last[i]]
        year = int(self.year[i])
        user_type = TYPES[self.user_type[i]]
        opt_out = "YES" if self.opt_out[i] else OPT_OUT_NO[self.opt_no[i]]
        programs = [PROGRAM_NAMES[self.program_a[i]]]
        if self.program_b[i] >= 0 and self.program_b[i] != self.program_a[i]:
            programs.append(PROGRAM_NAMES[self.program_b[i]])
        affinity = AFFINITIES[self.affinity[i]]
        delete = ""
        if kind in ("last_name", "last_name_and_program"):
            last = f"{last}-Married"
        if kind in ("program", "last_name_and_program"):
            held = {PROGRAMS[p] for p in programs}
            programs = [next(p for p in PROGRAM_NAMES if PROGRAMS[p] not in held)]
        if kind == "graduation":
            year += 1
        if kind == "opt_out":
            opt_out = " yes "
        if kind == "delete":
            delete = "TRUE"
        if kind == "first_name":
            first = f"{first}-Marie"
        if kind == "user_type":
            user_type = "Alumni" if user_type != "Alumni" else "Graduate"
        if kind == "affinity":
            affinity = "Rowing" if not affinity else f"{affinity}; Rowing"
        graduation = _graduation(year, int(self.grad_style[i]), int(self.month[i]), int(self.day[i]))
        return [
            first,
            last,
            self.email(i),
            f"U{i:08d}",
            graduation,
            user_type,
            opt_out,
            delete,
            "; ".join(programs),
            affinity,
        ]


def _bad_record(n: int) -> list[str]:
    """The n-th bad record: the same in every week; none of them can become a user."""
    good = ["Bad", "Record", f"bad{n}@bench.edu", f"B{n:08d}", "2026", "Graduate", "", "", "Econ", ""]
    style = n % 4
    if style == 0:
        return [*good, "extra field"]
    if style == 1:
        return good[:-1]
    if style == 2:
        return [*good[:2], f"bad{n} at bench.edu", *good[3:]]
    return [*good[:2], "  ", *good[3:]]


def write_week(path: Path, users: _Users, week: int) -> int:
    """Write one week's roster; returns the number of data records."""
    path.parent.mkdir(parents=True, exist_ok=True)
    newcomers = int(users.count * NEWCOMER_SHARE) if week == 2 else 0
    records = 0
    with path.open("w", encoding="utf-8", newline="") as out:
        out.write(HEADER + "\r\n")
        lines = []
        for i in range(users.count):
            record = users.record(i, week)
            if record is not None:
                lines.append(",".join(map(_quote, record)))
            if i % BAD_EVERY == BAD_EVERY // 2:
                lines.append(",".join(map(_quote, _bad_record(i // BAD_EVERY))))
            if len(lines) >= 50_000:
                out.write("\r\n".join(lines) + "\r\n")
                records += len(lines)
                lines = []
        for n in range(newcomers):
            lines.append(
                ",".join(
                    map(
                        _quote,
                        [
                            "New",
                            "Student",
                            f"new{n}@bench.edu",
                            f"N{n:08d}",
                            "2030",
                            "Undergraduate",
                            "",
                            "",
                            "Econ",
                            "",
                        ],
                    )
                )
            )
        out.write("\r\n".join(lines) + ("\r\n" if lines else ""))
        records += len(lines)
    return records


def truth(users: _Users) -> dict:
    """Which users' store rows differ between week 1 and week 2, by kind of change."""
    changed = np.flatnonzero(users.kind >= 0)
    newcomers = int(users.count * NEWCOMER_SHARE)
    by_kind = {kind: int((users.kind == n).sum()) for n, kind in enumerate(CHANGE_KINDS)}
    external_ids = sorted(users.email(int(i)).strip().lower() for i in changed)
    external_ids += [f"new{n}@bench.edu" for n in range(newcomers)]
    return {
        "users_week_1": users.count,
        "changed_users": len(changed),
        "newcomers": newcomers,
        "users_that_changed": len(changed) + newcomers,
        "by_kind": by_kind,
        "external_ids": sorted(external_ids),
        "bad_records": len(range(BAD_EVERY // 2, users.count, BAD_EVERY)),
    }


def ensure_rosters(data_dir: Path, users: int, seed: int = DEFAULT_SEED) -> dict:
    """Generate (once) week 1, week 2 and the truth for `users` users; return their paths and truth."""
    stem = f"roster_{users}" if seed == DEFAULT_SEED else f"roster_{users}_seed{seed}"
    week1, week2 = data_dir / f"{stem}_week1.csv", data_dir / f"{stem}_week2.csv"
    truth_path = data_dir / f"{stem}_truth.json"
    if not (week1.exists() and week2.exists() and truth_path.exists()):
        model = _Users(users, seed)
        write_week(week1, model, 1)
        write_week(week2, model, 2)
        truth_path.write_text(json.dumps(truth(model)))
    return {"week1": week1, "week2": week2, "truth": json.loads(truth_path.read_text())}
