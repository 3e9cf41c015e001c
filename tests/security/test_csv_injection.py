"""Report CSVs never start a cell with what a spreadsheet would run as a formula, yet keep the value."""

from __future__ import annotations

import csv
import io

import pytest

from sisbridge import cli

FORMULAS = [
    '=HYPERLINK("http://evil.example","fix your file")',
    "=cmd|' /C calc'!A0",
    "+SUM(1,2)",
    "-2+3",
    "@SUM(A1:A2)",
    "\t=1+1",
    "\r=1+1",
]
FORMULA_STARTS = ("=", "+", "-", "@", "\t", "\r")


def roster(rows: list[list[str]]) -> bytes:
    buffer = io.StringIO()
    header = ["FIRST_NAME", "LAST_NAME", "EMAIL", "GRADUATION", "STAKEHOLDERS", "PROGRAM", "=1+1"]
    csv.writer(buffer, lineterminator="\r\n").writerows([header, *rows])
    return buffer.getvalue().encode()


def report_cells(path) -> list[list[str]]:
    with path.open(encoding="utf-8-sig", newline="") as handle:
        return list(csv.reader(handle))


@pytest.fixture
def checked(tmp_path, capsys):
    # Each formula is an invalid email, an unmapped community value and an unknown column's header.
    rows = [
        [f"First{n}", "Last", formula, "2027", "Undergraduate", formula.strip(), ""]
        for n, formula in enumerate(FORMULAS)
    ]
    rows += [
        [f"Good{n}", "Student", f"good{n:03d}@northwind.edu", "2027", "Graduate", "", ""] for n in range(3)
    ]
    path = tmp_path / "roster.csv"
    path.write_bytes(roster(rows))
    out = tmp_path / "report"
    code = cli.main(["check", str(path), "--school", "northwind", "--out", str(out)])
    return code, out, capsys.readouterr().out


def test_findings_report_neutralises_formulas_and_keeps_their_text(checked):
    code, out, printed = checked
    cells = report_cells(out / "findings.csv")

    assert code == 1 and "roster.csv: REJECTED" in printed  # 7 of 10 rows have a bad email
    assert cells[0] == ["line", "identifier", "severity", "rule", "column", "message", "value"]
    dangerous = [cell for row in cells for cell in row if cell.startswith(FORMULA_STARTS)]
    assert dangerous == []
    email_values = [row[6] for row in cells[1:] if row[3] == "email_invalid"]
    assert email_values == ["'" + formula for formula in FORMULAS]
    unknown = [row for row in cells[1:] if row[3] == "unknown_column"]
    assert [row[4] for row in unknown] == ["'=1+1"]
