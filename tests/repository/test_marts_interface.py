"""Marts are the interface (STYLE.md): the package reads dbt's output from `marts.*` only, never from a
staging or intermediate model, which the analytics engineers may change freely."""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
PACKAGE = ROOT / "plugins" / "sisbridge"
MODELS = ROOT / "dbt_project" / "models"


def test_the_package_queries_no_staging_or_intermediate_relation():
    # A query names a relation by schema (a school's warehouse has no default schema for dbt's); a
    # comment may still name a model, e.g. the dbt test that checks a key.
    queried = {}
    for path in sorted(PACKAGE.rglob("*.py")):
        found = re.findall(r"\b(?:staging|intermediate)\.\w+", path.read_text(encoding="utf-8"))
        if found:
            queried[str(path.relative_to(ROOT))] = sorted(set(found))
    assert queried == {}


def test_the_marts_the_package_reads_are_models_of_the_project():
    marts = {path.stem for path in (MODELS / "marts").glob("*.sql")}
    read = set()
    for path in PACKAGE.rglob("*.py"):
        read |= set(re.findall(r"\bmarts\.(\w+)", path.read_text(encoding="utf-8")))
    assert read, "the package reads no mart at all"
    assert read <= marts, sorted(read - marts)
