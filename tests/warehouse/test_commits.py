"""Each stage of a run commits its warehouse writes once (the production lake: PostgreSQL catalog, S3 data).

A lake commit is a catalog transaction and, beyond the inlining limit, a Parquet file: one per audit
row would cost a round trip each and leave tiny files for the maintenance to merge.
"""

from __future__ import annotations

import lakes
import pytest

from sisbridge import audit, locals3, pipeline, warehouse
from tests.cli.cli_helpers import STUDENTS, roster, school_yaml, upload

SCHOOL = "lake_commits"


def _snapshots() -> list[int]:
    con = warehouse.connect(SCHOOL, read_only=True)
    try:
        rows = con.execute(f"select snapshot_id from {warehouse.ALIAS}.snapshots()").fetchall()
        return [row[0] for row in rows]
    finally:
        con.close()


@pytest.fixture
def school(tmp_path, monkeypatch, s3_endpoint):
    (tmp_path / f"{SCHOOL}.yaml").write_text(school_yaml(SCHOOL), encoding="utf-8")
    monkeypatch.setenv("SISBRIDGE_SCHOOLS_DIR", str(tmp_path))
    monkeypatch.setenv("SISBRIDGE_HOME", str(tmp_path / "home"))
    lakes.wipe(SCHOOL)
    with audit.warehouse(SCHOOL):
        pass  # the school's lake and audit tables exist, as after any earlier run
    warehouse.release(SCHOOL)
    return locals3.s3_client(s3_endpoint)


def test_the_load_commits_the_run_row_then_the_rest_of_the_stage_and_validate_commits_once(
    school, s3_endpoint
):
    upload(s3_endpoint, SCHOOL, roster())
    start = _snapshots()

    loaded = pipeline.load_raw(SCHOOL, "run_1", sensed=None, s3=school)
    after_load = _snapshots()
    validated = pipeline.validate(SCHOOL, "run_1")
    after_validate = _snapshots()

    assert not loaded.stop and loaded.counts["rows_in_file"] == len(STUDENTS)
    assert not validated.stop
    # The run's row first (a failing load leaves it for `finalize`), then the file, raw and config tables.
    assert len(after_load) - len(start) == 2
    assert len(after_validate) - len(after_load) == 1
    with audit.warehouse(SCHOOL, read_only=True) as con:
        run = audit.get_run(con, "run_1")
        raw_rows = con.execute("select count(*) from raw.roster").fetchone()[0]
    assert (run["status"], run["rows_in_file"], run["rows_rejected"], raw_rows) == ("running", 20, 0, 20)


def test_a_load_that_fails_midway_leaves_only_the_run_row(school, s3_endpoint):
    upload(s3_endpoint, SCHOOL, roster())
    bucket = school_yaml(SCHOOL).split("bucket: ")[1].split(",")[0]
    for version in school.list_object_versions(Bucket=bucket).get("Versions", []):
        school.delete_object(Bucket=bucket, Key=version["Key"], VersionId=version["VersionId"])
    start = _snapshots()

    # No roster: the download fails after the run's row was committed.
    with pytest.raises(Exception, match="NoSuchKey|Not Found|404"):
        pipeline.load_raw(SCHOOL, "run_2", sensed=None, s3=school)

    assert len(_snapshots()) - len(start) == 1
    with audit.warehouse(SCHOOL, read_only=True) as con:
        run = audit.get_run(con, "run_2")
        findings = con.execute("select count(*) from audit.rejected_rows where run_id = 'run_2'").fetchone()
    assert (run["status"], run["file_sha256"], findings[0]) == ("running", None, 0)
