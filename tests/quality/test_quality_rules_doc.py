"""docs/rules.md is the school's reference: it must list every rule the code can report."""

from __future__ import annotations

import re
from pathlib import Path

from sisbridge import guards, loading, normalize, quality

RULES_DOC = Path(__file__).resolve().parents[2] / "docs" / "rules.md"
# Rules computed by the dbt project (intermediate.int_roster_findings).
DBT_RULES = (
    "graduation_unparseable",
    "graduation_out_of_range",
    "user_type_multiple",
    "user_type_unmapped",
    "user_type_conflict",
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


def test_the_documented_whitespace_is_the_code_s():
    text = RULES_DOC.read_text("utf-8")
    listed = re.search(r"<!-- whitespace:.*?-->(.*?)<!-- /whitespace -->", text, re.S).group(1)
    documented_codes = set()
    for first, last in re.findall(r"U\+([0-9A-F]{4})(?: to U\+([0-9A-F]{4}))?", listed):
        documented_codes |= set(range(int(first, 16), int(last or first, 16) + 1))
    # "figure space U+2007 among them" names a code point inside a range already listed.
    assert documented_codes == {ord(char) for char in normalize.WHITESPACE}
