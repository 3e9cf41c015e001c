"""The hash of a school's config that each run records: what changes it and what does not."""

from __future__ import annotations

from sisbridge.config import config_sha256, load_school

BASE = """\
school_id: tester
name: Test University
s3: {bucket: uconnect-sis-test, key: roster.csv, aws_conn_id: sis_s3_test}
"""
MAPS = "user_types: {Undergraduate: Students, Alumni: Alumni}\n"


def digest(tmp_path, text: str) -> str:
    path = tmp_path / "tester.yaml"
    path.write_text(text, encoding="utf-8")
    return config_sha256(load_school(path))


def test_comments_layout_and_key_order_do_not_change_the_hash(tmp_path):
    reordered = "user_types: {Alumni: Alumni, Undergraduate: Students}\n# moved\n"
    assert digest(tmp_path, BASE + MAPS) == digest(tmp_path, reordered + "\n" + BASE)


def test_a_new_alias_or_a_changed_values_file_changes_the_hash(tmp_path):
    (tmp_path / "programs.csv").write_text("value,community\nEcon,Business\n", encoding="utf-8")
    with_file = BASE + "communities: [{column: PROGRAM, group: Career, values_file: programs.csv}]\n"
    before = digest(tmp_path, with_file)
    (tmp_path / "programs.csv").write_text("value,community\nEcon,Finance\n", encoding="utf-8")

    assert digest(tmp_path, with_file) != before
    assert digest(tmp_path, BASE + 'header_aliases: {"Given Name": FIRST_NAME}\n') != digest(tmp_path, BASE)
