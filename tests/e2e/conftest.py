"""End-to-end fixtures: moto's S3 server on 127.0.0.1, Airflow connections to it, a SQLite store."""

from __future__ import annotations

import os
import shutil

import lakes
import pytest

from sisbridge import locals3
from sisbridge.config import load_school, schools_dir, sisbridge_home


@pytest.fixture(scope="session")
def s3_endpoint():
    with locals3.local_s3() as endpoint_url:
        yield endpoint_url


@pytest.fixture(scope="session")
def airflow_ready():
    from sisbridge.localrun import prepare_airflow

    return prepare_airflow()


@pytest.fixture
def store_url(tmp_path):
    return f"sqlite:///{tmp_path / 'userstore.db'}"


@pytest.fixture
def school_env(s3_endpoint, airflow_ready, store_url, monkeypatch):
    """A clean slate for one school: fresh bucket, no warehouse, no reports, an empty store."""

    def setup(school_id: str):
        school = load_school(schools_dir() / f"{school_id}.yaml")
        monkeypatch.setenv(
            f"AIRFLOW_CONN_{school.s3.aws_conn_id.upper()}", locals3.aws_connection_uri(s3_endpoint)
        )
        monkeypatch.setenv("AIRFLOW_CONN_UCONNECT_USER_STORE", store_url)
        s3 = locals3.s3_client(s3_endpoint)
        existing = {b["Name"] for b in s3.list_buckets().get("Buckets", [])}
        if school.s3.bucket in existing:
            for version in s3.list_object_versions(Bucket=school.s3.bucket).get("Versions", []):
                s3.delete_object(Bucket=school.s3.bucket, Key=version["Key"], VersionId=version["VersionId"])
        else:
            locals3.create_bucket(s3, school.s3.bucket)
        lakes.wipe(school_id)
        shutil.rmtree(sisbridge_home() / "reports" / school_id, ignore_errors=True)
        return school, s3

    return setup


os.environ.setdefault("SISBRIDGE_SENSOR_TIMEOUT_S", "3600")
