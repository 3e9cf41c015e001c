"""Sample rosters: deterministic school files for the demo, the tests and the benchmarks.

Two generators write the same file format (RFC 4180 quoting, CRLF line ends, one `csv_line` per
record) and the same graduation formats (`graduation`: a year, an ISO date or a US date):
- `students`, `roster_csv` and `second_week`: a school's roster of a few hundred students in memory,
  under the school's own header names, with a few bad records; week 2 changes a few of them.
- `BenchRoster`, `write_week` and `truth`: the benchmarks' rosters of 10k to 1M users, drawn as
  numpy columns and streamed to disk; week 2 changes a known 10%, and `truth` says which.
Their name lists, columns and bad records stay apart: each generator's files are pinned by what
was built on them (the demo's printed counts, the benchmarks' cached files and results).
"""

from __future__ import annotations

import dataclasses
import random
import unicodedata
from collections.abc import Iterable
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    from sisbridge.config import SchoolConfig

# Graduation formats: the year alone, an ISO date, a US date (DESIGN.md: `YYYY`, or a full date).
YEAR, ISO_DATE, US_DATE = 0, 1, 2


def graduation(year: int, style: int, month: int, day: int) -> str:
    """A GRADUATION cell in one of the formats schools send (YEAR, ISO_DATE or US_DATE)."""
    if style == YEAR:
        return str(year)
    if style == ISO_DATE:
        return f"{year}-{month:02d}-{day:02d}"
    return f"{month:02d}/{day:02d}/{year}"


def quote(value: str) -> str:
    """A CSV field, double-quoted only when it holds a comma, a quote or a line break (RFC 4180)."""
    if any(ch in value for ch in ',"\r\n'):
        return '"' + value.replace('"', '""') + '"'
    return value


def csv_line(fields: Iterable[str]) -> str:
    """One CSV record, without its line end."""
    return ",".join(map(quote, fields))


# --- A school's roster: a few hundred students under the school's own header names ---------------

FIRST_NAMES = (
    "Ada",
    "Grace",
    "Alan",
    "Katherine",
    "Linus",
    "Margaret",
    "Edsger",
    "Barbara",
    "Dennis",
    "Frances",
    "Ken",
    "Radia",
    "Tim",
    "Hedy",
    "John",
    "Shafi",
    "Whitfield",
    "Adele",
    "Niklaus",
    "Sophie",
    "José",
    "Zoë",
    "Łukasz",
    "Søren",
    "Chloé",
)
LAST_NAMES = (
    "Lovelace",
    "Hopper",
    "Turing",
    "Johnson",
    "Torvalds",
    "Hamilton",
    "Dijkstra",
    "Liskov",
    "Ritchie",
    "Allen",
    "Thompson",
    "Perlman",
    "Berners-Lee",
    "Lamarr",
    "McCarthy",
    "Goldwasser",
    "Diffie",
    "Goldberg",
    "Wirth",
    "Wilson",
    "Núñez",
    "O'Brien",
    "Smith, Jr.",
    "van Rossum",
)
STAKEHOLDERS = ("Undergraduate", "Undergraduate", "Undergraduate", "Graduate", "Alumni")
AFFINITIES = ("Women in Tech", "First Generation", "Veterans", "LGBTQ+", "International Students")
COLLEGES = ("Arts & Sciences", "Engineering", "Business", "Health Sciences")
# (style, month, day) of a student's GRADUATION cell, drawn with equal odds.
GRADUATION_STYLES = ((YEAR, 0, 0), (ISO_DATE, 5, 15), (ISO_DATE, 12, 20), (US_DATE, 5, 30))
# The header of a school that identifies students by user ID: its SIS's own names for some columns.
USER_ID_HEADER = (
    "Student Number",
    "First Name",
    "Last Name",
    "EMAIL",
    "Class Of",
    "STAKEHOLDERS",
    "PROGRAM",
    "ACADEMIC_COLLEGE",
    "EMAIL_OPT_OUT",
    "DELETE",
)
EMAIL_HEADER = (
    "FIRST_NAME",
    "LAST_NAME",
    "EMAIL",
    "GRADUATION",
    "STAKEHOLDERS",
    "PROGRAM",
    "AFFINITY",
    "EMAIL_OPT_OUT",
    "DELETE",
)


@dataclasses.dataclass(frozen=True)
class Student:
    number: int
    first_name: str
    last_name: str
    email: str
    graduation: str
    stakeholder: str
    program: str
    affinity: str
    opt_out: str = ""
    delete: str = ""


def students(school: SchoolConfig, count: int, seed: int = 7) -> list[Student]:
    """A deterministic roster of `count` students for a school (its programs come from its config)."""
    rng = random.Random(f"{school.school_id}-{seed}")
    programs = sorted(next((c.values or {} for c in school.communities if c.column == "PROGRAM"), {}))
    domain = f"{school.school_id}.example.edu"
    drawn = []
    for number in range(1, count + 1):
        first, last = rng.choice(FIRST_NAMES), rng.choice(LAST_NAMES)
        year = rng.randint(2020, 2030)
        drawn.append(
            Student(
                number=100000 + number,
                first_name=first,
                last_name=last,
                email=f"{first[0].lower()}{number:05d}@{domain}",
                graduation=graduation(year, *rng.choice(GRADUATION_STYLES)),
                stakeholder=rng.choice(STAKEHOLDERS),
                program=";".join(rng.sample(programs, k=rng.choice((1, 1, 2)))) if programs else "",
                affinity=rng.choice(("", "", *AFFINITIES)),
            )
        )
    return drawn


def _fields(school: SchoolConfig, student: Student) -> list[str]:
    shared = [
        student.first_name,
        student.last_name,
        student.email,
        student.graduation,
        student.stakeholder,
        student.program,
    ]
    if school.identifier == "user_id":
        college = COLLEGES[student.number % len(COLLEGES)]
        return [str(student.number), *shared, college, student.opt_out, student.delete]
    return [*shared, student.affinity, student.opt_out, student.delete]


def _bad_records(school: SchoolConfig) -> list[list[str]]:
    """What real exports contain: a blank email, a malformed email and a nameless record."""
    blank_email = ["Noemail", "Student", "", "2027", "Undergraduate", "", "", "", ""]
    bad_email = ["Bad", "Address", "bad.address@@example", "2027", "Undergraduate", "", "", "", ""]
    no_name = ["", "Nameless", f"nameless@{school.school_id}.example.edu", "2027", "Graduate", "", "", "", ""]
    records = [blank_email, bad_email, no_name]
    if school.identifier == "user_id":
        return [[str(900001 + n), *row[:5], "", "", "", ""] for n, row in enumerate(records)]
    return records


def roster_csv(school: SchoolConfig, roster: list[Student], *, bad_rows: bool = True) -> bytes:
    """The roster as the school's SIS exports it (its own header names), with a few bad records."""
    header = USER_ID_HEADER if school.identifier == "user_id" else EMAIL_HEADER
    rows = [_fields(school, student) for student in roster]
    if bad_rows:
        for n, record in enumerate(_bad_records(school)):
            rows.insert(10 * (n + 1), record)
    return "".join(csv_line(row) + "\r\n" for row in [header, *rows]).encode("utf-8")


def second_week(roster: list[Student]) -> tuple[list[Student], dict[str, int]]:
    """Next week's roster: a few leave, a few join, some change, one asks to be deleted, one opts out."""
    kept = [s for s in roster if s.number % 40 != 0]  # 2.5% leave: under the 10% removal threshold
    changed = []
    expected = {"left": len(roster) - len(kept), "renamed": 0, "opted_out": 0, "deleted": 0}
    for student in kept:
        if student.number % 25 == 1:
            student = dataclasses.replace(student, last_name=student.last_name + "-Okafor")
            expected["renamed"] += 1
        elif student.number % 33 == 2:
            student = dataclasses.replace(student, opt_out="Yes")
            expected["opted_out"] += 1
        elif student.number == roster[2].number:
            student = dataclasses.replace(student, delete="TRUE")
            expected["deleted"] += 1
        changed.append(student)
    newcomers = [
        dataclasses.replace(s, number=s.number + 50000, email=s.email.replace("@", ".new@"))
        for s in roster[:6]
    ]
    expected["joined"] = len(newcomers)
    return changed + newcomers, expected


# --- The benchmarks' rosters: 10k to 1M users, streamed to disk -----------------------------------
# Each user has a fixed record; week 2 changes a known 10% of them in ways that always change what the
# store holds (one kind of change per user), and adds 0.5% newcomers. About 1% of the records are bad
# (ragged rows, invalid or blank emails); they are the same records in both weeks, so they never reach
# the store. The truth (which users changed, and how) comes from the generator, not from the pipeline.

BENCH_HEADER = (
    "FIRST_NAME",
    "LAST_NAME",
    "EMAIL",
    "USER_ID",
    "GRADUATION",
    "STAKEHOLDERS",
    "EMAIL_OPT_OUT",
    "DELETE",
    "PROGRAM",
    "AFFINITY",
)
BENCH_FIRST_NAMES = [
    "Ada",
    "Grace",
    "Alan",
    "Katherine",
    "Linus",
    "Barbara",
    "José",
    "Zoë",
    "Chidi",
    "Mei",
    "Ngozi",
]
BENCH_LAST_NAMES = [
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
# Program -> Career Communities (many:1), as in the bench school's config.
BENCH_PROGRAMS = {
    "Econ": "Business & Finance",
    "Marketing": "Business & Finance",
    "Nursing": "Health",
    "Pre-Med": "Health",
    "Mechanical Engineering": "Engineering",
    "Civil Engineering": "Engineering",
    "BAC-CHEM-1": "Science",
}
_PROGRAM_NAMES = list(BENCH_PROGRAMS)
BENCH_AFFINITIES = ["Chess Club", "Debate, Model UN", "Women in STEM", "First Generation", "", ""]
BENCH_TYPES = ["Undergraduate", "Undergraduate", "Graduate", "Alumni"]
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
BAD_EVERY = 100  # one bad record after every 100th user: 1% of the file
_LINES_PER_WRITE = 50_000


def _ascii(text: str) -> str:
    # Schools send names with accents, but their SIS exports addresses in ASCII.
    return unicodedata.normalize("NFKD", text).encode("ascii", "ignore").decode()


class BenchRoster:
    """Column arrays of the users' week-1 attributes (indices into the BENCH_ lists above)."""

    def __init__(self, count: int, seed: int) -> None:
        rng = np.random.default_rng(seed)
        self.count = count
        self.first = rng.integers(0, len(BENCH_FIRST_NAMES), count)
        self.last = rng.integers(0, len(BENCH_LAST_NAMES), count)
        self.upper_email = rng.random(count) < 0.05
        self.year = rng.integers(1995, 2031, count)
        self.grad_style = rng.choice(3, count, p=[0.5, 0.3, 0.2])  # YEAR, ISO_DATE, US_DATE
        self.month = rng.integers(1, 13, count)
        self.day = rng.integers(1, 29, count)
        self.user_type = rng.integers(0, len(BENCH_TYPES), count)
        self.opt_out = rng.random(count) < 0.05
        self.opt_no = rng.integers(0, len(OPT_OUT_NO), count)
        self.program_a = rng.integers(0, len(_PROGRAM_NAMES), count)
        self.program_b = np.where(rng.random(count) < 0.3, rng.integers(0, len(_PROGRAM_NAMES), count), -1)
        self.affinity = rng.integers(0, len(BENCH_AFFINITIES), count)
        changed = rng.choice(count, int(count * CHANGED_SHARE), replace=False)
        self.kind = np.full(count, -1)
        self.kind[np.sort(changed)] = np.arange(len(changed)) % len(CHANGE_KINDS)
        # An opt-out change needs a user who was opted in: the sync never opts anyone back in.
        self.opt_out[self.kind == CHANGE_KINDS.index("opt_out")] = False

    def email(self, i: int) -> str:
        last = BENCH_LAST_NAMES[self.last[i]].split(",")[0].replace("'", "")
        local = _ascii(f"{BENCH_FIRST_NAMES[self.first[i]]}.{last}{i}").lower()
        return f"{local.title()}@Bench.EDU" if self.upper_email[i] else f"{local}@bench.edu"

    def record(self, i: int, week: int) -> list[str] | None:
        kind = CHANGE_KINDS[self.kind[i]] if week == 2 and self.kind[i] >= 0 else None
        if kind == "missing":
            return None
        first = BENCH_FIRST_NAMES[self.first[i]]
        last = BENCH_LAST_NAMES[self.last[i]]
        year = int(self.year[i])
        user_type = BENCH_TYPES[self.user_type[i]]
        opt_out = "YES" if self.opt_out[i] else OPT_OUT_NO[self.opt_no[i]]
        programs = [_PROGRAM_NAMES[self.program_a[i]]]
        if self.program_b[i] >= 0 and self.program_b[i] != self.program_a[i]:
            programs.append(_PROGRAM_NAMES[self.program_b[i]])
        affinity = BENCH_AFFINITIES[self.affinity[i]]
        delete = ""
        if kind in ("last_name", "last_name_and_program"):
            last = f"{last}-Married"
        if kind in ("program", "last_name_and_program"):
            held = {BENCH_PROGRAMS[p] for p in programs}
            programs = [next(p for p in _PROGRAM_NAMES if BENCH_PROGRAMS[p] not in held)]
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
        return [
            first,
            last,
            self.email(i),
            f"U{i:08d}",
            graduation(year, int(self.grad_style[i]), int(self.month[i]), int(self.day[i])),
            user_type,
            opt_out,
            delete,
            "; ".join(programs),
            affinity,
        ]


def _bench_bad_record(n: int) -> list[str]:
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


def write_week(path: Path, users: BenchRoster, week: int) -> int:
    """Write one week's roster, streamed in batches of lines; returns the number of data records."""
    path.parent.mkdir(parents=True, exist_ok=True)
    newcomers = int(users.count * NEWCOMER_SHARE) if week == 2 else 0
    records = 0
    with path.open("w", encoding="utf-8", newline="") as out:
        out.write(csv_line(BENCH_HEADER) + "\r\n")
        lines = []
        for i in range(users.count):
            record = users.record(i, week)
            if record is not None:
                lines.append(csv_line(record))
            if i % BAD_EVERY == BAD_EVERY // 2:
                lines.append(csv_line(_bench_bad_record(i // BAD_EVERY)))
            if len(lines) >= _LINES_PER_WRITE:
                out.write("\r\n".join(lines) + "\r\n")
                records += len(lines)
                lines = []
        for n in range(newcomers):
            newcomer = [
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
            ]
            lines.append(csv_line(newcomer))
        out.write("\r\n".join(lines) + ("\r\n" if lines else ""))
        records += len(lines)
    return records


def truth(users: BenchRoster) -> dict:
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
