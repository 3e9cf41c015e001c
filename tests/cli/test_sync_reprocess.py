"""A file already processed is `unchanged`, unless the school's config changed since, or the run is forced."""

from __future__ import annotations

import json

import pytest

from sisbridge import audit, warehouse
from tests.cli.cli_helpers import HEADER, STUDENTS, counts, roster, summary, upload

pytestmark = pytest.mark.e2e


def sync_env(shell, school_id: str, s3_endpoint: str) -> dict:
    # What is under test is load_raw's choice; the transform as one task (a supported setting) spares
    # dag.test() the 50-odd dbt model tasks of each run.
    return {**shell.connection_env(school_id, s3_endpoint), "SISBRIDGE_DBT_MODEL_TASKS": "false"}


def audit_rows(shell, school_id: str, monkeypatch) -> list[dict]:
    # The command ran with a clean environment: it used the embedded lake under its SISBRIDGE_HOME.
    monkeypatch.setenv("SISBRIDGE_HOME", str(shell.sisbridge_home))
    with warehouse.connect(school_id, read_only=True, lake=warehouse.embedded_settings()) as con:
        run_ids = [
            row[0] for row in con.execute("select run_id from audit.sync_runs order by started_at").fetchall()
        ]
        return [audit.get_run(con, run_id) for run_id in run_ids]


def test_a_file_rejected_for_the_config_is_processed_once_the_config_is_fixed(
    shell, s3_endpoint, monkeypatch
):
    school_id = "alias_fix"
    shell.write_school(school_id)
    # The export calls FIRST_NAME "Given Name", and the school's YAML has no alias for it yet.
    upload(s3_endpoint, school_id, roster(["Given Name", *HEADER[1:]]))
    env = sync_env(shell, school_id, s3_endpoint)

    rejected = shell.sync(school_id, env=env)
    same_config = shell.sync(school_id, env=env)
    shell.write_school(school_id, 'header_aliases: {"Given Name": FIRST_NAME}\n')
    fixed = shell.sync(school_id, env=env)
    fixed_again = shell.sync(school_id, env=env)

    for result in (rejected, same_config, fixed, fixed_again):
        assert (result.returncode, result.stderr) == (0, ""), result.stdout + result.stderr
    assert summary(rejected.stdout)[2].startswith("rejected (")
    assert "FIRST_NAME" in summary(rejected.stdout)[2]
    assert summary(same_config.stdout)[2].startswith("unchanged (roster.csv has not changed since")
    assert summary(fixed.stdout)[2] == "succeeded"
    assert counts(fixed.stdout)["creates"] == len(STUDENTS)
    assert shell.store_users(school_id) == sorted(student[2] for student in STUDENTS)
    assert summary(fixed_again.stdout)[2].startswith("unchanged (roster.csv has not changed since")

    runs = audit_rows(shell, school_id, monkeypatch)
    assert [run["status"] for run in runs] == ["rejected", "unchanged", "succeeded", "unchanged"]
    assert len({run["file_sha256"] for run in runs}) == 1
    first_config, fixed_config = runs[0]["config_sha256"], runs[2]["config_sha256"]
    assert [run["config_sha256"] for run in runs] == [first_config, first_config, fixed_config, fixed_config]
    assert first_config != fixed_config
    assert json.loads(runs[2]["details"])["read_again"] == (
        f"the school's config changed since run {runs[0]['run_id']}"
    )
    shell.assert_home_untouched()


def test_an_unchanged_file_stays_unchanged_unless_the_sync_is_forced(shell, s3_endpoint, monkeypatch):
    school_id = "force_again"
    shell.write_school(school_id)
    upload(s3_endpoint, school_id, roster())
    env = sync_env(shell, school_id, s3_endpoint)

    first = shell.sync(school_id, env=env)
    unchanged = shell.sync(school_id, env=env)
    forced = shell.sync(school_id, "--force", env=env)

    for result in (first, unchanged, forced):
        assert (result.returncode, result.stderr) == (0, ""), result.stdout + result.stderr
    assert (summary(first.stdout)[2], counts(first.stdout)["creates"]) == ("succeeded", len(STUDENTS))
    assert summary(unchanged.stdout)[2].startswith("unchanged (roster.csv has not changed since")
    # Read, checked and transformed again; nothing new to push.
    assert summary(forced.stdout)[2] == "succeeded"
    forced_counts = counts(forced.stdout)
    assert (forced_counts["rows_in_file"], forced_counts["rows_accepted"]) == (len(STUDENTS), len(STUDENTS))
    assert forced_counts["creates"] + forced_counts["updates"] + forced_counts["deactivations"] == 0
    assert shell.store_users(school_id) == sorted(student[2] for student in STUDENTS)

    runs = audit_rows(shell, school_id, monkeypatch)
    assert [run["status"] for run in runs] == ["succeeded", "unchanged", "succeeded"]
    assert len({run["config_sha256"] for run in runs}) == 1
    assert json.loads(runs[2]["details"])["read_again"] == "forced"
    shell.assert_home_untouched()
