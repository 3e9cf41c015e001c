"""A school config that breaks the rules is a loud error naming the file and the field."""

from __future__ import annotations

from pathlib import Path

import pytest

from sisbridge.config import ConfigError, load_school, load_schools

ROOT = Path(__file__).resolve().parents[2]
GOOD = """\
school_id: {school_id}
name: Test University
s3: {{bucket: uconnect-sis-test, key: roster.csv, aws_conn_id: sis_s3_test}}
"""


BASE = GOOD.format(school_id="tester")


def write(tmp_path: Path, name: str, text: str) -> Path:
    path = tmp_path / f"{name}.yaml"
    path.write_text(text)
    return path


def test_minimal_config_gets_the_documented_defaults(tmp_path):
    school = load_school(write(tmp_path, "tester", GOOD.format(school_id="tester")))
    defaults = (school.identifier, school.missing_users, school.duplicates)
    assert defaults == ("email", "deactivate", "reject_file")
    assert (school.schedule, school.timezone) == ("0 23 * * 6", "UTC")
    # No auto_sync key: the school is in onboarding review, every run a dry run until approved.
    assert (school.auto_sync, school.sync_mode) == (None, "review")
    assert school.thresholds.model_dump() == {
        "max_removed_pct": 10,
        "max_removed": 500,
        "max_updated_pct": 75,
        "max_email_changed_pct": 10,
        "max_rejected_pct": 5,
    }


def test_the_demo_configs_are_valid():
    assert [s.school_id for s in load_schools(ROOT / "config" / "schools")] == ["acme", "globex"]


@pytest.mark.parametrize(
    ("text", "field"),
    [
        (BASE + "identifier: student_number\n", "identifier"),
        (BASE + "missing_users: purge\n", "missing_users"),
        (BASE + "thresholds: {max_removed_pct: 150}\n", "thresholds.max_removed_pct"),
        (BASE + "schedule: every saturday\n", "schedule"),
        (BASE + "timezone: Mars/Olympus\n", "timezone"),
        (BASE + "colour: blue\n", "colour"),
        (GOOD.format(school_id="tester").replace("roster.csv", "../other/roster.csv"), "s3.key"),
        (BASE + "communities: [{column: EMAIL, group: Oops}]\n", "communities.0.column"),
        (BASE + "graduation: {date_formats: ['%m/%d']}\n", "graduation.date_formats"),
        ("school_id: tester\nname: No bucket\n", "s3"),
    ],
)
def test_bad_field_is_named_with_the_file(tmp_path, text, field):
    path = write(tmp_path, "tester", text)
    with pytest.raises(ConfigError) as error:
        load_school(path)
    message = str(error.value)
    assert message.startswith(f"{path}: ")
    assert f"{field}:" in message


def test_school_id_must_match_the_file_name(tmp_path):
    path = write(tmp_path, "other", GOOD.format(school_id="tester"))
    expected = r"other\.yaml: school_id: 'tester' must equal the file name 'other'"
    with pytest.raises(ConfigError, match=expected):
        load_school(path)


def test_school_id_pattern_blocks_path_tricks(tmp_path):
    path = write(tmp_path, "tester", GOOD.format(school_id="../etc"))
    with pytest.raises(ConfigError, match="school_id"):
        load_school(path)


def test_invalid_yaml_is_named(tmp_path):
    path = write(tmp_path, "tester", "school_id: [unclosed\n")
    with pytest.raises(ConfigError, match=r"tester\.yaml: not valid YAML"):
        load_school(path)


def test_values_file_is_read_relative_to_the_yaml(tmp_path):
    (tmp_path / "programs.csv").write_text("value,community\nEcon,Business & Finance\n")
    text = BASE + "communities: [{column: program, group: Career, values_file: programs.csv}]"
    school = load_school(write(tmp_path, "tester", text))
    assert school.community_columns["PROGRAM"].values == {"Econ": "Business & Finance"}


def test_missing_values_file_is_named(tmp_path):
    text = BASE + "communities: [{column: program, group: Career, values_file: nope.csv}]"
    with pytest.raises(ConfigError, match=r"communities\.0\.values_file: file 'nope.csv' does not exist"):
        load_school(write(tmp_path, "tester", text))


def test_a_broken_config_fails_dag_parsing_loudly(tmp_path, monkeypatch):
    import runpy

    from sisbridge.dag_factory import shard_file

    write(tmp_path, "tester", BASE + "missing_users: purge\n")
    monkeypatch.setenv("SISBRIDGE_SCHOOLS_DIR", str(tmp_path))
    with pytest.raises(ConfigError, match="missing_users"):
        runpy.run_path(str(shard_file("tester")))


def test_program_is_a_built_in_community_column_unless_the_config_says_otherwise(tmp_path):
    plain = load_school(write(tmp_path, "tester", BASE))
    assert {c.column: (c.group, c.values) for c in plain.community_columns.values()} == {
        "PROGRAM": ("Career Communities", None)
    }
    # An alias may point at the built-in column.
    aliased = load_school(write(tmp_path, "tester", BASE + 'header_aliases: {"Major": program}\n'))
    assert aliased.canonical_header(" major ") == "PROGRAM"
    mapped = load_school(
        write(tmp_path, "tester", BASE + "communities: [{column: Program, group: Careers, values: {A: B}}]\n")
    )
    assert {c.column: (c.group, c.values) for c in mapped.community_columns.values()} == {
        "PROGRAM": ("Careers", {"A": "B"})
    }
    # Another column already feeds Career Communities: one column per group, so PROGRAM is not built in.
    major = load_school(
        write(tmp_path, "tester", BASE + "communities: [{column: MAJOR, group: Career Communities}]\n")
    )
    assert list(major.community_columns) == ["MAJOR"]


def test_user_type_and_stakeholders_are_two_standard_columns(tmp_path):
    school = load_school(write(tmp_path, "tester", BASE))
    assert (school.canonical_header("User_Type"), school.canonical_header("stakeholders")) == (
        "USER_TYPE",
        "STAKEHOLDERS",
    )


@pytest.mark.parametrize(("value", "mode"), [("true", "auto"), ("false", "paused"), ("null", "review")])
def test_auto_sync_says_the_sync_mode(tmp_path, value, mode):
    assert load_school(write(tmp_path, "tester", BASE + f"auto_sync: {value}\n")).sync_mode == mode


def test_a_yaml_error_is_one_line(tmp_path):
    path = write(tmp_path, "tester", BASE + "name: [unclosed\n")
    with pytest.raises(ConfigError) as error:
        load_school(path)
    assert "\n" not in str(error.value)
    assert str(error.value).startswith(f"{path}: not valid YAML: ")
