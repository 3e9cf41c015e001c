"""`sisbridge check` and `sisbridge sync` run the same stages, so they count a file the same way."""

from __future__ import annotations

import re

import pytest

from tests.cli.cli_helpers import counts, summary, upload

pytestmark = pytest.mark.e2e

HEADER = "FIRST_NAME,LAST_NAME,EMAIL,GRADUATION,FAVORITE_COLOR\n"
FILLERS = "".join(f"Filler{n},Student,filler{n}@example.edu,2027,blue\n" for n in range(1, 61))
# A warned row (its graduation cannot be read), two rows an error rejects (one of them also has the
# warning, so it is rejected and not warned) and a ragged row; FAVORITE_COLOR is an unknown column,
# a warning about the header and not about a row.
PROBLEMS = (
    "Wanda,Warned,wanda@example.edu,soon,green\n"
    "Ivan,Invalid,ivan@,2027,red\n"
    "Bea,Both,bea@,soon,red\n"
    "Rag,Ged,rag@example.edu\n"
)
CHECK_COUNTS = re.compile(r"(\d+) data records: (\d+) accepted, (\d+) rejected, (\d+) with warnings")


def test_check_prints_the_counts_that_a_sync_of_the_same_file_records(shell, s3_endpoint):
    school_id = "agree"
    body = HEADER + FILLERS + PROBLEMS
    shell.write_school(school_id)
    (shell.cwd / "roster.csv").write_text(body, encoding="utf-8")

    checked = shell.run("check", "roster.csv", "--school", school_id)
    (shell.cwd / "roster.csv").unlink()
    upload(s3_endpoint, school_id, body.encode())
    # The transform as one task (a supported setting) spares dag.test() the dbt model tasks.
    env = {**shell.connection_env(school_id, s3_endpoint), "SISBRIDGE_DBT_MODEL_TASKS": "false"}
    synced = shell.sync(school_id, env=env)

    assert checked.returncode == 0, checked.stdout + checked.stderr
    assert synced.returncode == 0, synced.stdout + synced.stderr
    assert summary(synced.stdout)[2] == "succeeded"
    check_counts = [int(n) for n in CHECK_COUNTS.search(checked.stdout).groups()]
    sync_counts = counts(synced.stdout)
    keys = ("rows_in_file", "rows_accepted", "rows_rejected", "rows_warned")
    assert check_counts == [sync_counts[key] for key in keys] == [64, 61, 3, 1]
