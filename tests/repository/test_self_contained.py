"""A clone of the repository is all the tests need: nothing reads a folder beside it.

The third-party corpora live in `tests/data/corpora/`, byte for byte as published.
"""

from __future__ import annotations

import hashlib
import re
import subprocess
from pathlib import Path

from tests.corpora import CORPORA

ROOT = Path(__file__).resolve().parents[2]
# A path into a `shared` folder next to the repository, however it is spelled: a relative path in
# text, a pathlib parent joined with it, or a ".." joined with it by `/` or `os.path.join`.
OUTSIDE = re.compile(
    rb"""\.\./shared\b"""
    rb"""|\.parents?(\[\d+\])?\s*/\s*["']shared["']"""
    rb"""|["']\.\.["']\s*[/,]\s*["']shared["']"""
)


def repository_files() -> list[Path]:
    """Every file a clone has, plus new files not yet committed (git's own ignore rules apply)."""
    listed = subprocess.run(
        ["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"],
        cwd=ROOT,
        capture_output=True,
        check=True,
    ).stdout
    return [ROOT / name for name in listed.decode().split("\0") if name and (ROOT / name).is_file()]


def test_no_file_refers_to_a_folder_beside_the_repository():
    files = repository_files()
    assert ROOT / "tests" / "repository" / "test_self_contained.py" in files
    offenders = []
    for path in files:
        for number, line in enumerate(path.read_bytes().splitlines(), start=1):
            if OUTSIDE.search(line):
                text = line.decode(errors="replace").strip()
                offenders.append(f"{path.relative_to(ROOT)}:{number}: {text}")
    assert offenders == []


def test_the_pattern_catches_each_spelling():
    # Split in two, so that this file does not itself hold what it looks for.
    for start, end in (
        (b"FIXTURES = PROJECT_ROOT.parent / ", b'"shared" / "fixtures"'),
        (b'Path(__file__).parents[2] / ".." / ', b'"shared"'),
        (b'os.path.join("..", ', b'"shared", "fixtures")'),
        (b"Read them as `../", b"shared/fixtures/...`"),
    ):
        spelling = start + end
        assert OUTSIDE.search(spelling), spelling
    assert not OUTSIDE.search(b"a store shared with another school")


def test_the_corpora_are_unchanged_and_each_has_its_licence():
    listed = {}
    for line in (CORPORA / "SHA256SUMS").read_text(encoding="utf-8").splitlines():
        digest, name = line.split("  ", 1)
        listed[name] = digest
    on_disk = {
        path.relative_to(CORPORA).as_posix(): hashlib.sha256(path.read_bytes()).hexdigest()
        for path in CORPORA.rglob("*")
        if path.is_file() and path.parent != CORPORA and path.name != "LICENSE"
    }
    assert on_disk == listed
    folders = {name.split("/", 1)[0] for name in listed}
    assert folders == {"csv-spectrum", "csvlint", "duckdb-csv", "isemail", "naughty-strings", "sds-samples"}
    readme = (CORPORA / "README.md").read_text(encoding="utf-8")
    for folder in folders:
        assert (CORPORA / folder / "LICENSE").stat().st_size > 0, folder
        assert f"| `{folder}/` |" in readme, folder
