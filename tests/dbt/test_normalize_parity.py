"""dbt's clean_text and text_key, compiled and run by dbt, agree with sisbridge.normalize in Python.

The corpus is the whitespace that school exports carry: spaces, tabs, line breaks, the no-break
spaces Excel puts in cells, zero-width spaces and a byte order mark inside a cell.
"""

from __future__ import annotations

import duckdb
import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from sisbridge import normalize
from sisbridge.transform import (
    DBT_PROFILE,
    DBT_PROJECT_DIR,
    DBT_TARGET,
    dbt_school_env,
)
from tests.dbt.dbt_helpers import load_week, make_school, open_warehouse
from tests.dbt.dbt_invoke import invoke_dbt

CORPUS_WHITESPACE = {
    "space": " ",
    "tab": "\t",
    "carriage return": "\r",
    "line feed": "\n",
    "no-break space": "\u00a0",
    "figure space": "\u2007",
    "narrow no-break space": "\u202f",
    "zero width space": "\u200b",
    "byte order mark": "\ufeff",
}
WORDS = ("S1", "Ada", "Ada.Lovelace@Example.EDU")


def corpus() -> list[str]:
    """Every corpus character alone, repeated, before, after and around a value, and inside one."""
    values = []
    for char in CORPUS_WHITESPACE.values():
        values += [char, char * 3]
        for word in WORDS:
            values += [char + word, word + char, char + word + char, word[:2] + char + word[2:]]
    everything = "".join(CORPUS_WHITESPACE.values())
    values += [everything, everything + "S1" + everything[::-1]]
    return values


def python_side(value: str) -> tuple:
    return normalize.clean(value), normalize.key("email", value), normalize.key("user_id", value)


def _dbt(args: list[str], school) -> object:
    options = ["--project-dir", str(DBT_PROJECT_DIR), "--profiles-dir", str(DBT_PROJECT_DIR)]
    options += ["--profile", DBT_PROFILE, "--target", DBT_TARGET]
    return invoke_dbt([*args, *options], school.school_id, **dbt_school_env(school))


@pytest.fixture(scope="module")
def compiled_macros(tmp_path_factory) -> str:
    """A select of clean_text and text_key over a table `corpus (n, v)`, as dbt compiles it."""
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("SISBRIDGE_HOME", str(tmp_path_factory.mktemp("sisbridge_home")))
        inline = (
            "select n, {{ clean_text('v') }} as cleaned, {{ text_key('v') }} as email_key, "
            "{{ clean_text('v') }} as user_id_key from corpus order by n"
        )
        school = make_school(school_id="parity")
        with open_warehouse(school):
            pass  # dbt-duckdb connects to the school's warehouse even to compile
        result = _dbt(["compile", "--quiet", "--inline", inline], school)
    return result.result.results[0].node.compiled_code


def run_compiled(sql: str, values: list[str]) -> list[tuple]:
    corpus = pd.DataFrame({"n": range(len(values)), "v": values})  # noqa: F841 - scanned by DuckDB
    return [tuple(row[1:]) for row in duckdb.connect().execute(sql).fetchall()]


def test_the_corpus_cleans_the_same_in_the_compiled_macro_and_in_python(compiled_macros):
    values = corpus()
    assert run_compiled(compiled_macros, values) == [python_side(value) for value in values]
    # What the rule means, on the cases the issue names.
    assert python_side("S1\t") == python_side("S1") == ("S1", "s1", "S1")
    assert python_side("\u00a0") == (None, None, None)
    assert python_side("\ufeffAda\u200b") == ("Ada", "ada", "Ada")
    assert normalize.clean("Ad\u00a0a") == "Ad\u00a0a"


TEXT = st.text(
    alphabet=st.one_of(
        st.sampled_from([*CORPUS_WHITESPACE.values(), *normalize.WHITESPACE, "S", "1", "a", "@", "\u0130"]),
        st.characters(blacklist_characters="\x00", blacklist_categories=("Cs",)),
    ),
    max_size=10,
)


@settings(max_examples=300, deadline=None)
@given(values=st.lists(TEXT, min_size=1, max_size=20))
def test_any_text_cleans_the_same_in_the_compiled_macro_and_in_python(compiled_macros, values):
    assert run_compiled(compiled_macros, values) == [python_side(value) for value in values]


def test_the_staging_model_built_by_dbt_cleans_the_corpus_like_python(tmp_path, monkeypatch):
    monkeypatch.setenv("SISBRIDGE_HOME", str(tmp_path))
    school = make_school(school_id="paritystg")
    values = corpus()
    records = [
        {"first_name": value, "last_name": value, "email": value, "user_id": value, "user_login": value}
        for value in values
    ]
    load_week(school, "parity-1", records)
    _dbt(["run", "--select", "stg_sis__roster"], school)

    with open_warehouse(school) as con:
        rows = con.execute(
            "select first_name, last_name, email, user_id, user_login from staging.stg_sis__roster "
            "order by line_number"
        ).fetchall()
    assert rows == [
        (
            normalize.clean(value),
            normalize.clean(value),
            normalize.key("email", value),
            normalize.key("user_id", value),
            normalize.key("user_login", value),
        )
        for value in values
    ]
