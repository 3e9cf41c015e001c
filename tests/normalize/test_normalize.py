"""One definition of whitespace, blank and keys: the Python side, its DuckDB SQL, and the dbt macro file."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import duckdb
import pandas as pd
import pytest

from sisbridge import dbt_macros, normalize

ROOT = Path(__file__).resolve().parents[2]


def test_the_dbt_macro_file_is_what_the_module_generates():
    assert dbt_macros.MACRO_PATH.read_text(encoding="utf-8") == dbt_macros.macros(), (
        "dbt_project/macros/normalize.sql is out of date: run python -m sisbridge.dbt_macros"
    )
    check = subprocess.run(
        [sys.executable, "-m", "sisbridge.dbt_macros", "--check"], capture_output=True, text=True, check=False
    )
    assert (check.returncode, check.stderr) == (0, "")


def test_whitespace_is_python_s_and_the_invisible_spaces_of_exported_cells():
    python_whitespace = {chr(code) for code in range(sys.maxunicode + 1) if chr(code).isspace()}
    invisible = {"\u180e", "\u200b", "\u2060", "\ufeff"}
    assert set(normalize.WHITESPACE) == python_whitespace | invisible
    assert len(normalize.WHITESPACE) == len(set(normalize.WHITESPACE))


@pytest.mark.parametrize(
    ("value", "cleaned"),
    [
        ("S1", "S1"),
        ("S1\t", "S1"),
        (" \r\nS1\r\n", "S1"),
        ("\u00a0Ada\u00a0", "Ada"),  # Excel's no-break space
        ("\u2007\u202fAda", "Ada"),
        ("\ufeff\u200bAda\u200b", "Ada"),
        ("Ada\u00a0Lovelace", "Ada\u00a0Lovelace"),  # whitespace inside a value is kept
        ("\u00a0", None),
        ("\t \r\n\u200b\ufeff", None),
        ("", None),
        (None, None),
        ("\u200c", "\u200c"),  # zero width non-joiner carries meaning in some scripts: not whitespace
    ],
)
def test_clean_trims_every_kind_of_whitespace_and_blank_is_none(value, cleaned):
    assert normalize.clean(value) == cleaned
    assert normalize.is_blank(value) == (cleaned is None)


def test_keys_of_emails_and_logins_ignore_case_and_user_ids_do_not():
    assert normalize.key("email", " Ada@Example.EDU\u00a0") == "ada@example.edu"
    assert normalize.key("user_login", "\tALove") == "alove"
    assert normalize.key("user_id", "S1\t") == normalize.key("user_id", "S1") == "S1"
    assert normalize.key("user_id", "s1") != normalize.key("user_id", "S1")
    assert normalize.key("email", "\u00a0 ") is None
    with pytest.raises(ValueError, match="unknown identifier kind 'phone'"):
        normalize.key("phone", "x")


def test_python_lowercase_matches_duckdb_over_the_whole_unicode_range():
    characters = [chr(code) for code in range(1, sys.maxunicode + 1) if not 0xD800 <= code <= 0xDFFF]
    chars = pd.DataFrame({"c": characters})  # noqa: F841 - scanned by DuckDB
    rows = duckdb.connect().execute("select c, lower(c) from chars").fetchall()
    assert [c for c, lowered in rows if normalize.lower(c) != lowered] == []


def test_sql_and_python_agree_on_every_single_character_around_a_value():
    # Each code point alone, before and after a value: whitespace is trimmed by both, nothing else is.
    values = []
    for code in range(1, sys.maxunicode + 1, 7):
        if 0xD800 <= code <= 0xDFFF:
            continue
        char = chr(code)
        values += [char, f"{char}S1", f"S1{char}"]
    values += [f"{char}S1{char}" for char in normalize.WHITESPACE]
    corpus = pd.DataFrame({"v": values})  # noqa: F841 - scanned by DuckDB
    sql = f"select v, {normalize.clean_sql('v')}, {normalize.key_sql('email', 'v')} from corpus"
    mismatches = [
        (value, cleaned, key)
        for value, cleaned, key in duckdb.connect().execute(sql).fetchall()
        if (cleaned, key) != (normalize.clean(value), normalize.key("email", value))
    ]
    assert mismatches == []


def test_no_stage_trims_values_in_sql_its_own_way():
    # DuckDB's trim() strips spaces only: every stage's SQL goes through sisbridge.normalize instead.
    own_trim = re.compile(r"(?<![.\w])trim\(")
    offenders = []
    for path in [*(ROOT / "plugins" / "sisbridge").rglob("*.py"), *(ROOT / "dbt_project").rglob("*.sql")]:
        if path.name in ("normalize.py", "normalize.sql") or "target" in path.parts:
            continue
        for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
            if own_trim.search(line):
                offenders.append(f"{path.relative_to(ROOT)}:{number}: {line.strip()}")
    assert offenders == []
