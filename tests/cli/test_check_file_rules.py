"""`sisbridge check` as a school runs it: the installed command, a clean environment, a fresh HOME.

Whitespace follows one rule in every stage (a user ID and the same ID with a tab are duplicates, a
name of only no-break spaces is blank), and a school config that breaks the rules is a usage error
that names the file and the key.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from tests.config.bad_configs import BAD_CONFIGS

SISBRIDGE = Path(sys.executable).parent / "sisbridge"
SCHOOL = """\
school_id: {school_id}
name: Quay College
s3: {{bucket: uconnect-sis-{school_id}, key: roster.csv, aws_conn_id: sis_s3_{school_id}}}
identifier: user_id
duplicates: {duplicates}
"""
HEADER = "FIRST_NAME,LAST_NAME,EMAIL,USER_ID\n"
# Enough good rows that two rejected ones stay under the default max_rejected_pct (5%).
FILLERS = "".join(f"Filler{n},Student,filler{n}@quay.edu,F{n}\n" for n in range(1, 41))


@pytest.fixture
def check(tmp_path):
    """Run `sisbridge check FILE --school ID` with no Airflow variable, a fresh HOME and working folder."""
    schools = tmp_path / "schools"
    schools.mkdir()
    home, cwd = tmp_path / "home", tmp_path / "cwd"
    home.mkdir()
    cwd.mkdir()

    def run(csv_text: str, school_id: str, yaml_text: str | None = None) -> subprocess.CompletedProcess:
        duplicates = "reject_rows" if school_id == "wharf" else "reject_file"
        text = (
            yaml_text if yaml_text is not None else SCHOOL.format(school_id=school_id, duplicates=duplicates)
        )
        (schools / f"{school_id}.yaml").write_text(text, encoding="utf-8")
        roster = tmp_path / "roster.csv"
        roster.write_text(csv_text, encoding="utf-8")
        env = {"PATH": "/usr/bin:/bin", "HOME": str(home), "SISBRIDGE_SCHOOLS_DIR": str(schools)}
        return subprocess.run(
            [str(SISBRIDGE), "check", str(roster), "--school", school_id],
            capture_output=True,
            text=True,
            env=env,
            cwd=cwd,
            timeout=600,
            check=False,
        )

    run.schools = schools
    return run


def test_a_user_id_repeated_with_a_trailing_tab_rejects_the_file_and_names_both_lines(check):
    result = check(
        HEADER + 'Ada,Lovelace,ada@quay.edu,S1\nAlan,Turing,alan@quay.edu,"S1\t"\n' + FILLERS, "quay"
    )

    assert result.returncode == 1, result.stdout + result.stderr
    assert "Traceback" not in result.stderr
    assert result.stdout.splitlines()[0] == "roster.csv: REJECTED"
    assert "duplicate_in_file (error): 1" in result.stdout
    assert (
        "  line 2: USER_ID 'S1' is on lines 2, 3 (compared trimmed); each user must have exactly one record"
        in result.stdout.splitlines()
    )


def test_under_reject_rows_both_lines_are_dropped_and_the_file_goes_on(check):
    rows = "Ada,Lovelace,ada@quay.edu,\u00a0S1\nAlan,Turing,alan@quay.edu,S1\u200b\n"
    result = check(HEADER + rows + FILLERS, "wharf")

    assert result.returncode == 0, result.stdout + result.stderr
    lines = result.stdout.splitlines()
    assert lines[0] == "roster.csv: ACCEPTED"
    assert "encoding utf-8; 42 data records: 40 accepted, 2 rejected, 0 with warnings" in lines
    for line in (2, 3):
        message = "USER_ID 'S1' is on lines 2, 3 (compared trimmed); every line of the group is ignored"
        assert f"  line {line}: {message}" in lines


def test_a_first_name_of_only_no_break_spaces_is_blank_with_its_line(check):
    rows = (
        "Ada,Lovelace,ada@quay.edu,S1\n"
        "\u00a0\u00a0,Turing,alan@quay.edu,S2\n"
        "\ufeff\u200b,Hopper,grace@quay.edu,S3\n"
    )
    result = check(HEADER + rows + FILLERS, "quay")

    lines = result.stdout.splitlines()
    assert result.returncode == 0, result.stdout + result.stderr
    assert "first_name_blank (error): 2" in lines
    assert "  line 3: FIRST_NAME is blank" in lines
    assert "  line 4: FIRST_NAME is blank" in lines


@pytest.mark.parametrize(("yaml_text", "named"), BAD_CONFIGS.values(), ids=BAD_CONFIGS.keys())
def test_a_config_that_breaks_the_rules_is_one_line_naming_the_file_and_the_key(check, yaml_text, named):
    result = check(HEADER + "Ada,Lovelace,ada@quay.edu,S1\n", "quay", yaml_text)

    assert result.returncode == 2, result.stdout + result.stderr
    assert result.stdout == ""
    assert result.stderr.count("\n") == 1, result.stderr
    assert result.stderr.startswith(f"sisbridge: {check.schools / 'quay.yaml'}: ")
    assert named in result.stderr
