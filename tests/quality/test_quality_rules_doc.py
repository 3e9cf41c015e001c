"""docs/rules.md is the school's reference: it must list every rule the code can report."""

from __future__ import annotations

import re
from pathlib import Path

from sisbridge import guards, loading, quality

RULES_DOC = Path(__file__).resolve().parents[2] / "docs" / "rules.md"
# Rules computed by the dbt project (intermediate.int_roster_findings).
DBT_RULES = (
    "graduation_unparseable",
    "graduation_out_of_range",
    "user_type_multiple",
    "user_type_unmapped",
    "community_unmapped",
)


def documented() -> dict[str, tuple[str, str]]:
    """{rule: (level, severity)} from the tables of docs/rules.md."""
    rows = re.findall(r"^\| `(\w+)` \| (file|row) \| (error|warning) \|", RULES_DOC.read_text("utf-8"), re.M)
    return {rule: (level, severity) for rule, level, severity in rows}


def test_every_rule_in_the_code_is_documented_once():
    expected = {*quality.RULES, *loading.RULES, *DBT_RULES, *guards.RULES}
    text = RULES_DOC.read_text("utf-8")
    assert set(documented()) == expected
    for rule in expected:
        assert len(re.findall(rf"^\| `{rule}` \|", text, re.M)) == 1, rule


def test_the_documented_level_matches_the_quality_code():
    docs = documented()
    for rule in quality.RULES:
        assert (docs[rule][0] == "file") == (rule in quality.FILE_RULES), rule
        assert docs[rule][1] == "error"
    for rule in DBT_RULES:
        assert docs[rule] == ("row", "warning")
    for rule in guards.RULES:
        assert docs[rule] == (("row", "error") if rule in guards.ROW_RULES else ("file", "warning")), rule
