"""Landing: sense a school's file in S3, pin the exact object version, and download it.

Only new content starts a sync: the content's sha256 is compared with the last processed file in
`audit.sync_runs`; the ETag is the quick check that avoids a download when nothing changed.
"""

from __future__ import annotations

import hashlib
import logging
import os
import threading
import time
from dataclasses import asdict, dataclass
from datetime import datetime
from pathlib import Path

import duckdb

from sisbridge import xcom_keys
from sisbridge.audit import Finding
from sisbridge.config import SchoolConfig

log = logging.getLogger(__name__)

RULES = {
    "file_too_large": "The object is over the school's max_file_mb; it is rejected before it is downloaded.",
}
# Statuses whose file counts as processed: the same content again ends the run as `unchanged`.
# A held or dry run did not apply its file, so the same content is worth running again.
PROCESSED_STATUSES = ("succeeded", "rejected", "rejected_by_reviewer", "rolled_back")
_CHUNK = 8 * 1024 * 1024


class FileTooLarge(Exception):
    """The object exceeds the school's max_file_mb; it is rejected before it is downloaded."""

    def __init__(self, finding: Finding):
        super().__init__(finding.message)
        self.finding = finding


@dataclass(frozen=True)
class PinnedFile:
    """The one object version a run reads: key, version, ETag, size, sha256 and the local copy."""

    key: str
    version_id: str | None
    etag: str
    bytes: int
    sha256: str
    local_path: Path | None  # None: the quick check found the processed object again; nothing was read

    def audit_fields(self) -> dict:
        return {
            "file_key": self.key,
            "file_version_id": self.version_id,
            "file_etag": self.etag,
            "file_bytes": self.bytes,
            "file_sha256": self.sha256,
        }

    def as_xcom(self) -> dict:
        return {**asdict(self), "local_path": str(self.local_path)}


def record_sensed_file(files: list[dict], **context) -> bool:
    """S3KeySensor check_fn: keep the metadata of the object the sensor saw, for `load_raw` to pin."""
    if not files:
        return False
    context["ti"].xcom_push(key=xcom_keys.SENSED_FILE, value=files[0])
    return True


def _clean_etag(etag: str | None) -> str:
    return (etag or "").strip('"')


def head(s3, bucket: str, key: str, version_id: str | None = None) -> dict:
    kwargs = {"Bucket": bucket, "Key": key}
    if version_id:
        kwargs["VersionId"] = version_id
    return s3.head_object(**kwargs)


def check_size(school_id: str, key: str, size: int, max_file_mb: float) -> None:
    """Refuse a file over the school's limit before downloading it in full."""
    limit = int(max_file_mb * 1024 * 1024)
    if size > limit:
        raise FileTooLarge(
            Finding(
                rule="file_too_large",
                message=(
                    f"{key}: the file is {size / 1024 / 1024:.1f} MB, over the {max_file_mb:g} MB limit "
                    f"for {school_id}; split the export or ask uConnect to raise max_file_mb"
                ),
            )
        )


def pin_file(
    s3,
    bucket: str,
    key: str,
    dest_dir: Path,
    *,
    sensed: dict | None = None,
    max_file_mb: float = 512,
    school_id: str = "",
    known: dict | None = None,
) -> PinnedFile:
    """Download exactly one object version to `dest_dir` and hash it.

    On a versioned bucket the version the sensor saw is read; otherwise the ETag is pinned with
    IfMatch, so an overwrite during the download fails the read instead of mixing two files.
    `known` is the last processed file (`last_processed_file`): when its ETag, version and size
    match, it is the same object, and nothing is downloaded (the quick check).
    """
    sensed = sensed or {}
    version_id = sensed.get("VersionId")
    if version_id in (None, "null"):
        version_id = None
    meta = head(s3, bucket, key, version_id)
    etag = _clean_etag(meta.get("ETag"))
    if sensed.get("ETag") and _clean_etag(sensed["ETag"]) != etag and version_id is None:
        log.info("%s was overwritten after it was sensed; reading the newest upload (ETag %s)", key, etag)
    version_id = version_id or (meta.get("VersionId") if meta.get("VersionId") != "null" else None)
    size = int(meta["ContentLength"])
    if known and (known["file_etag"], known["file_version_id"], known["file_bytes"]) == (
        etag,
        version_id,
        size,
    ):
        log.info("%s is the object already processed in run %s (same ETag and version)", key, known["run_id"])
        return PinnedFile(key, version_id, etag, size, known["file_sha256"], None)
    check_size(school_id, key, size, max_file_mb)

    get_kwargs = {"Bucket": bucket, "Key": key, "IfMatch": meta["ETag"]}
    if version_id:
        get_kwargs["VersionId"] = version_id
    body = s3.get_object(**get_kwargs)["Body"]
    dest_dir.mkdir(parents=True, exist_ok=True)
    local_path = dest_dir / "source.csv"
    digest = hashlib.sha256()
    written = 0
    with local_path.open("wb") as out:
        for chunk in iter(lambda: body.read(_CHUNK), b""):
            digest.update(chunk)
            out.write(chunk)
            written += len(chunk)
    if written != size:
        raise OSError(f"s3://{bucket}/{key}: read {written} bytes, expected {size}; the download was cut")
    return PinnedFile(key, version_id, etag, size, digest.hexdigest(), local_path)


def last_processed_file(con: duckdb.DuckDBPyConnection, *, before_run: str | None = None) -> dict | None:
    """The newest run whose file was processed (any run but this one): its ETag, sha256 and config hash."""
    placeholders = ", ".join("?" for _ in PROCESSED_STATUSES)
    cursor = con.execute(
        f"""
        select run_id, file_etag, file_sha256, file_version_id, file_bytes, started_at, header_columns,
            config_sha256
        from audit.sync_runs
        where status in ({placeholders}) and file_sha256 is not null and run_id <> ?
        order by started_at desc
        limit 1
        """,
        [*PROCESSED_STATUSES, before_run or ""],
    )
    row = cursor.fetchone()
    return None if row is None else dict(zip([d[0] for d in cursor.description], row, strict=True))


def unchanged_since(con: duckdb.DuckDBPyConnection, sha256: str) -> tuple[datetime | None, int]:
    """When this content was first seen, and how many runs in a row have seen it since."""
    rows = con.execute(
        "select file_sha256, started_at from audit.sync_runs where file_sha256 is not null "
        "order by started_at desc"
    ).fetchall()
    first_seen, streak = None, 0
    for digest, started_at in rows:
        if digest != sha256:
            break
        first_seen, streak = started_at, streak + 1
    return first_seen, streak


# Each process keeps the S3 client of a connection for a few minutes: creating one costs 0.1 to 0.4 s
# (boto3 reads S3's service model anew for each session), and `sisbridge sync` runs every task of the
# run in one process. A changed connection (other keys, endpoint) gets a client of its own at once.
S3_CLIENT_TTL_S = 300.0
_s3_clients: dict[tuple, tuple[float, object]] = {}
_s3_clients_lock = threading.Lock()


def s3_client(school: SchoolConfig):
    """A boto3 S3 client on the school's own Airflow connection (its bucket, its credentials)."""
    from airflow.providers.amazon.aws.hooks.s3 import S3Hook

    conn_id = school.s3.aws_conn_id
    connection = S3Hook.get_connection(conn_id)
    # The pid: a forked child never uses its parent's client (boto3's connection pool is not fork-safe).
    key = (conn_id, os.getpid(), connection.get_uri())
    now = time.monotonic()
    with _s3_clients_lock:
        for stale in [k for k, (made, _) in _s3_clients.items() if now - made >= S3_CLIENT_TTL_S]:
            del _s3_clients[stale]
        if key in _s3_clients:
            return _s3_clients[key][1]
    client = S3Hook(aws_conn_id=conn_id).get_conn()
    with _s3_clients_lock:
        _s3_clients[key] = (now, client)
    return client
