"""Stale files: the streak of runs without a new file, the alert, and notifiers in the school config."""

from __future__ import annotations

import pytest

from sisbridge import audit, guards
from sisbridge.config import ConfigError, load_school
from tests.guards.guard_helpers import school
from tests.guards.recording_notifier import RecordingNotifier


def _runs(con, *statuses: str) -> None:
    for day, status in enumerate(statuses, start=1):
        audit.upsert_run(
            con, f"run_{day}", school_id="harbor", status=status, started_at=f"2026-11-{day:02d}"
        )


def test_the_streak_counts_unchanged_runs_up_to_this_one(con):
    _runs(con, "unchanged", "succeeded", "unchanged", "unchanged", "unchanged")
    # A rollback is not a sync: it does not break the streak.
    audit.upsert_run(
        con,
        "rollback__x",
        school_id="harbor",
        status="succeeded",
        started_at="2026-11-04 12:00",
        details={"rollback_of": "x"},
    )

    assert [guards.unchanged_runs(con, f"run_{day}") for day in range(1, 6)] == [1, 0, 1, 2, 3]


def test_a_school_is_stale_after_stale_after_runs():
    harbor = school(stale_after_runs=2)

    assert guards.stale_file_message(harbor, 1) is None
    assert guards.stale_file_message(harbor, 2) == (
        "harbor (Harbor University): s3://uconnect-sis-harbor/roster.csv has not changed for 2 runs "
        "(stale_after_runs = 2); ask the school for a new export"
    )


def _write_config(tmp_path, notifiers: str):
    path = tmp_path / "harbor.yaml"
    path.write_text(
        "school_id: harbor\nname: Harbor University\n"
        "s3: {bucket: uconnect-sis-harbor, key: roster.csv, aws_conn_id: sis_s3_harbor}\n" + notifiers,
        encoding="utf-8",
    )
    return path


def test_a_notifier_is_plugged_in_by_config(tmp_path):
    path = _write_config(
        tmp_path,
        "notifiers:\n"
        "  - {class: tests.guards.recording_notifier.RecordingNotifier, kwargs: {path: alerts.log}}\n",
    )

    notifiers = [spec.build() for spec in load_school(path).notifiers]

    assert [type(n) for n in notifiers] == [RecordingNotifier]
    assert notifiers[0].path == "alerts.log"


@pytest.mark.parametrize(
    ("notifiers", "problem"),
    [
        (
            "[{class: tests.guards.no_such_module.Notifier}]",
            "notifiers.0: Value error, cannot import notifier class",
        ),
        ("[{class: sisbridge.config.SchoolConfig}]", "is not an Airflow notifier (airflow.sdk.BaseNotifier)"),
        (
            "[{class: tests.guards.recording_notifier.RecordingNotifier, kwargs: {colour: red}}]",
            "does not take these kwargs",
        ),
        ("[{class: 'not a class path'}]", "notifiers.0.class: String should match pattern"),
        ("[{class: tests.guards.recording_notifier.RecordingNotifier, args: [1]}]", "notifiers.0.args"),
    ],
)
def test_a_bad_notifier_fails_loudly_naming_file_and_field(tmp_path, notifiers, problem):
    path = _write_config(tmp_path, f"notifiers: {notifiers}\n")

    with pytest.raises(ConfigError) as error:
        load_school(path)

    assert str(error.value).startswith(f"{path}: ")
    assert problem in str(error.value)
