"""Landing against moto's S3 server: pin one object version, refuse big files, spot unchanged content."""

from __future__ import annotations

import hashlib

import lakes
import pytest

from sisbridge import audit, landing, locals3, xcom_keys


@pytest.fixture(scope="module")
def s3():
    with locals3.local_s3() as endpoint_url:
        client = locals3.s3_client(endpoint_url)
        locals3.create_bucket(client, "versioned-bucket", versioned=True)
        locals3.create_bucket(client, "plain-bucket", versioned=False)
        yield client


def test_reads_exactly_the_version_the_sensor_saw_even_after_an_overwrite(s3, tmp_path):
    first = s3.put_object(Bucket="versioned-bucket", Key="roster.csv", Body=b"FIRST_NAME\nAda\n")
    sensed = {"Key": "roster.csv", "VersionId": first["VersionId"], "ETag": first["ETag"]}
    s3.put_object(Bucket="versioned-bucket", Key="roster.csv", Body=b"FIRST_NAME\nAlan\n")

    pinned = landing.pin_file(s3, "versioned-bucket", "roster.csv", tmp_path, sensed=sensed)

    assert pinned.local_path.read_bytes() == b"FIRST_NAME\nAda\n"
    assert pinned.version_id == first["VersionId"]
    assert pinned.sha256 == hashlib.sha256(b"FIRST_NAME\nAda\n").hexdigest()
    assert (pinned.bytes, pinned.etag) == (15, first["ETag"].strip('"'))


def test_unversioned_bucket_reads_the_newest_upload_whole(s3, tmp_path):
    s3.put_object(Bucket="plain-bucket", Key="roster.csv", Body=b"old")
    newest = s3.put_object(Bucket="plain-bucket", Key="roster.csv", Body=b"newest content")

    pinned = landing.pin_file(s3, "plain-bucket", "roster.csv", tmp_path, sensed={"ETag": '"stale"'})

    assert pinned.local_path.read_bytes() == b"newest content"
    assert pinned.version_id is None and pinned.etag == newest["ETag"].strip('"')


def test_a_file_over_the_limit_is_refused_before_it_is_downloaded(s3, tmp_path):
    s3.put_object(Bucket="plain-bucket", Key="big.csv", Body=b"x" * (2 * 1024 * 1024))

    with pytest.raises(landing.FileTooLarge) as refused:
        landing.pin_file(s3, "plain-bucket", "big.csv", tmp_path, max_file_mb=1, school_id="acme")

    assert refused.value.finding.rule == "file_too_large"
    assert refused.value.finding.message == (
        "big.csv: the file is 2.0 MB, over the 1 MB limit for acme; "
        "split the export or ask uConnect to raise max_file_mb"
    )
    assert list(tmp_path.iterdir()) == []


def test_sensor_check_keeps_what_it_saw_for_load_raw():
    pushed = {}

    class TaskInstance:
        def xcom_push(self, key, value):
            pushed[key] = value

    seen = {"Key": "roster.csv", "Size": 10, "ETag": '"abc"', "VersionId": "v1"}
    assert landing.record_sensed_file([seen], ti=TaskInstance()) is True
    assert pushed == {xcom_keys.SENSED_FILE: seen}
    assert landing.record_sensed_file([], ti=TaskInstance()) is False


def _run(con, run_id: str, sha: str | None, status: str, started_at: str) -> None:
    audit.upsert_run(con, run_id, school_id="acme", status=status, file_sha256=sha, started_at=started_at)


def test_last_processed_file_ignores_runs_that_applied_nothing(tmp_path):
    lakes.wipe("acme")
    with audit.warehouse("acme") as con:
        _run(con, "r1", "aaa", "succeeded", "2026-11-07 23:00")
        _run(con, "r2", "bbb", "held", "2026-11-14 23:00")
        _run(con, "r3", "ccc", "failed", "2026-11-21 23:00")
        _run(con, "r4", None, "running", "2026-11-28 23:00")

        last = landing.last_processed_file(con, before_run="r4")

    assert (last["run_id"], last["file_sha256"]) == ("r1", "aaa")


def test_unchanged_since_counts_the_runs_that_saw_the_same_content(tmp_path):
    lakes.wipe("acme")
    with audit.warehouse("acme") as con:
        _run(con, "r1", "old", "succeeded", "2026-11-07 23:00")
        _run(con, "r2", "same", "succeeded", "2026-11-14 23:00")
        _run(con, "r3", "same", "unchanged", "2026-11-21 23:00")
        _run(con, "r4", "same", "unchanged", "2026-11-28 23:00")

        since, runs = landing.unchanged_since(con, "same")

    assert (str(since), runs) == ("2026-11-14 23:00:00", 3)


def test_the_processed_object_again_is_recognised_without_a_download(s3, tmp_path):
    put = s3.put_object(Bucket="plain-bucket", Key="same.csv", Body=b"FIRST_NAME\nAda\n")
    first = landing.pin_file(s3, "plain-bucket", "same.csv", tmp_path / "first")
    known = {
        "run_id": "r1",
        "file_etag": first.etag,
        "file_version_id": None,
        "file_bytes": first.bytes,
        "file_sha256": first.sha256,
    }

    again = landing.pin_file(s3, "plain-bucket", "same.csv", tmp_path / "again", known=known)

    assert (again.sha256, again.etag, again.local_path) == (first.sha256, put["ETag"].strip('"'), None)
    assert not (tmp_path / "again").exists()
    s3.put_object(Bucket="plain-bucket", Key="same.csv", Body=b"FIRST_NAME\nAlan\n")
    changed = landing.pin_file(s3, "plain-bucket", "same.csv", tmp_path / "changed", known=known)
    assert changed.local_path.read_bytes() == b"FIRST_NAME\nAlan\n" and changed.sha256 != first.sha256
