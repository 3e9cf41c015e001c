"""No school_id, S3 key or run id can climb out of the warehouse, landing or report folders."""

from __future__ import annotations

import uuid
from pathlib import Path

import pytest
import yaml
from hypothesis import given, settings
from hypothesis import strategies as st

from sisbridge import locals3, pipeline, reports, transform, warehouse
from sisbridge.config import ConfigError, load_school, reports_dir, sisbridge_home

CLIMBERS = [
    "..",
    "../..",
    "../../etc/passwd",
    "..\\..\\windows",
    "a/../../b",
    "/etc/passwd",
    ".hidden",
    "./.",
    "%2e%2e%2f",
    "run\x00id",
    "manual__2026-11-28T23:00:00+00:00",
]


def base_config(**changes) -> dict:
    config = {
        "school_id": "acme",
        "name": "Acme University",
        "s3": {"bucket": "uconnect-sis-acme", "key": "roster.csv", "aws_conn_id": "sis_s3_acme"},
    }
    config.update(changes)
    return config


def write_config(folder: Path, name: str, config: dict) -> Path:
    path = folder / f"{name}.yaml"
    path.write_text(yaml.safe_dump(config))
    return path


def is_one_folder_below(path: Path, root: Path) -> bool:
    resolved = path.resolve()
    return resolved.parent == root.resolve() and resolved.name not in ("", ".", "..")


@pytest.mark.parametrize("school_id", ["../evil", "..", "acme/../../x", "Acme", "a", "acme\x00"])
def test_a_config_with_a_climbing_school_id_is_refused(tmp_path, school_id):
    path = write_config(tmp_path, "acme", base_config(school_id=school_id))

    with pytest.raises(ConfigError) as error:
        load_school(path)

    assert str(error.value).startswith(f"{path}: school_id")


@pytest.mark.parametrize(
    "key", ["../roster.csv", "uploads/../../roster.csv", "/etc/passwd", "a//b.csv", "./x"]
)
def test_a_config_with_a_climbing_s3_key_is_refused(tmp_path, key):
    config = base_config(s3={"bucket": "uconnect-sis-acme", "key": key, "aws_conn_id": "sis_s3_acme"})
    path = write_config(tmp_path, "acme", config)

    with pytest.raises(ConfigError) as error:
        load_school(path)

    assert f"{path}: s3.key: Value error, must be a plain object key" in str(error.value)


def test_a_values_file_outside_the_config_folder_is_refused(tmp_path):
    (tmp_path / "secret.csv").write_text("value,community\nx,y\n")
    folder = tmp_path / "schools"
    folder.mkdir()
    config = base_config(communities=[{"column": "PROGRAM", "group": "G", "values_file": "../secret.csv"}])
    path = write_config(folder, "acme", config)

    with pytest.raises(ConfigError) as error:
        load_school(path)

    assert str(error.value) == (
        f"{path}: communities.0.values_file: '../secret.csv' points outside the config folder"
    )


def stays_below(make_path, root: Path) -> bool:
    """True when the path is one folder below root, or when the id is refused outright."""
    try:
        path = make_path()
    except ValueError as error:  # an id of only dots has no safe name: refused, never used
        return "cannot be used as a path component" in str(error)
    return is_one_folder_below(path, root)


@pytest.mark.parametrize("hostile", CLIMBERS)
def test_hostile_ids_stay_inside_their_folders(hostile):
    home = sisbridge_home()
    embedded = warehouse.embedded_settings()
    assert stays_below(lambda: embedded.school_dir(hostile), home / "lake" / "schools")
    assert stays_below(lambda: reports_dir(hostile, "run").parent, home / "reports")
    assert stays_below(lambda: reports_dir("acme", hostile), home / "reports" / "acme")
    assert stays_below(lambda: pipeline.landing_dir("acme", hostile), home / "landing" / "acme")
    assert stays_below(lambda: Path(transform.dbt_env(hostile)["DBT_TARGET_PATH"]).parent, home / "dbt")


@settings(max_examples=200, deadline=None)
@given(st.text(min_size=1, max_size=60))
def test_any_run_id_is_one_folder_below_the_schools_reports(run_id):
    assert stays_below(lambda: reports_dir("acme", run_id), sisbridge_home() / "reports" / "acme")
    assert stays_below(lambda: pipeline.landing_dir("acme", run_id), sisbridge_home() / "landing" / "acme")


def test_reading_a_school_config_never_leaves_the_schools_folder(tmp_path, monkeypatch):
    schools = tmp_path / "schools"
    schools.mkdir()
    write_config(tmp_path, "outside", base_config(school_id="outside"))
    monkeypatch.setenv("SISBRIDGE_SCHOOLS_DIR", str(schools))

    with pytest.raises(ConfigError) as error:
        pipeline.school_config("../outside")

    assert str(error.value).startswith(f"{schools}/")
    assert "cannot read" in str(error.value)


def test_report_keys_in_the_bucket_stay_under_the_report_prefix(tmp_path):
    folder = tmp_path / "report"
    folder.mkdir()
    summary = folder / "summary.json"
    summary.write_text("{}")
    # moto keeps its buckets per process, so this test's bucket has a name no other test uses.
    bucket = f"uconnect-sis-traversal-{uuid.uuid4().hex[:8]}"
    with locals3.local_s3() as endpoint:
        s3 = locals3.s3_client(endpoint)
        locals3.create_bucket(s3, bucket)
        keys = reports.upload_reports([summary], s3, bucket, "../../../roster.csv")
        stored = [o["Key"] for o in s3.list_objects_v2(Bucket=bucket)["Contents"]]

    assert keys == stored == ["sisbridge-reports/_.._.._roster.csv/summary.json"]
