"""docs/rules.md is the school's reference: it must list every rule the code can report."""

from __future__ import annotations

import ast
import json
import re
from pathlib import Path

from sisbridge import guards, landing, loading, normalize, quality

ROOT = Path(__file__).resolve().parents[2]
RULES_DOC = ROOT / "docs" / "rules.md"
# Rules computed by the dbt project (marts.roster_findings).
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
    expected = {*quality.RULES, *loading.RULES, *landing.RULES, *DBT_RULES, *guards.RULES}
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


def _rules_written_by_the_code() -> dict[str, str]:
    """{rule: where} for every rule name the Python package or a GX suite can put in a finding.

    Read from the source, so that a rule added without its module's RULES entry is found too:
    `Finding("x", ...)` and `Finding(rule="x")`, the loader's `_reject("x", ...)` and
    `_reject_as(encoding, "x", ...)`, `rule = "x"`, and `meta.rule` in `expectations/*.json`.
    """
    found = {}
    for path in sorted((ROOT / "plugins" / "sisbridge").glob("*.py")):
        for node in ast.walk(ast.parse(path.read_text("utf-8"))):
            values = []
            if isinstance(node, ast.Call) and isinstance(node.func, ast.Name):
                position = {"Finding": 0, "_reject": 0, "_reject_as": 1}.get(node.func.id)
                if position is not None and len(node.args) > position:
                    values.append(node.args[position])
                values += [kw.value for kw in node.keywords if kw.arg == "rule"]
            elif isinstance(node, ast.Assign) and any(
                isinstance(target, ast.Name) and target.id == "rule" for target in node.targets
            ):
                values.append(node.value)
            for value in values:
                if isinstance(value, ast.Constant) and isinstance(value.value, str):
                    found[value.value] = f"{path.name}:{value.lineno}"
    for path in sorted((ROOT / "expectations").glob("*.json")):
        for expectation in json.loads(path.read_text("utf-8"))["expectations"]:
            if "rule" in expectation.get("meta", {}):  # the uniqueness suite's rules come from quality.py
                found[expectation["meta"]["rule"]] = path.name
    return found


def test_every_rule_the_code_writes_is_in_the_doc_and_in_its_module_rules():
    written = _rules_written_by_the_code()
    samples = {"file_too_large", "ragged_row", "duplicate_in_file", "email_blank", "schema_drift"}
    assert samples <= set(written)
    listed = {*quality.RULES, *loading.RULES, *landing.RULES, *guards.RULES}
    assert {rule: where for rule, where in written.items() if rule not in listed} == {}
    assert {rule: where for rule, where in written.items() if rule not in documented()} == {}


def test_the_landing_rules_are_file_errors():
    docs = documented()
    for rule in landing.RULES:
        assert docs[rule] == ("file", "error"), rule
