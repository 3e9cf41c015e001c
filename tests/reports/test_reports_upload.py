"""Uploading the report to the school's bucket, against a local S3 endpoint (moto's server)."""

from __future__ import annotations

import socket

import boto3
import pytest
from moto.server import ThreadedMotoServer

from sisbridge import reports

BUCKET = "uconnect-sis-acme"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture(scope="module")
def s3():
    port = free_port()
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port)
    server.start()
    client = boto3.client(
        "s3",
        endpoint_url=f"http://127.0.0.1:{port}",
        region_name="us-east-1",
        aws_access_key_id="testing",
        aws_secret_access_key="testing",
    )
    client.create_bucket(Bucket=BUCKET)
    yield client
    server.stop()


def report_files(tmp_path):
    out = tmp_path / "reports" / "acme" / "run_1"
    (out / "data_docs" / "validations").mkdir(parents=True)
    files = {
        "summary.json": '{"status": "dry_run"}\n',
        "findings.csv": "line,rule\n",
        "data_docs/index.html": "<html>index</html>",
        "data_docs/validations/v.html": "<html>v</html>",
    }
    for name, text in files.items():
        (out / name).write_text(text, encoding="utf-8")
    return [out / name for name in files], files


def objects(client, prefix):
    listed = client.list_objects_v2(Bucket=BUCKET, Prefix=prefix).get("Contents", [])
    return {item["Key"]: client.get_object(Bucket=BUCKET, Key=item["Key"]) for item in listed}


def test_reports_land_under_the_run_prefix_keeping_their_layout(s3, tmp_path):
    paths, files = report_files(tmp_path)
    keys = reports.upload_reports(paths, s3, BUCKET, "manual__2026-11-28T23:00:00+00:00")
    prefix = "sisbridge-reports/manual__2026-11-28T23_00_00+00_00/"
    assert keys == [prefix + name for name in files]
    stored = objects(s3, prefix)
    assert {key: obj["Body"].read().decode() for key, obj in stored.items()} == {
        prefix + name: text for name, text in files.items()
    }
    assert stored[prefix + "data_docs/index.html"]["ContentType"] == "text/html"
    assert stored[prefix + "summary.json"]["ContentType"] == "application/json"


def test_the_data_docs_alone_keep_their_place_below_the_report_folder(s3, tmp_path):
    paths, _ = report_files(tmp_path)
    out = tmp_path / "reports" / "acme" / "run_1"
    docs = reports.data_docs_files(out)
    keys = reports.upload_reports(docs, s3, BUCKET, "run_1", base=out)
    assert keys == [
        "sisbridge-reports/run_1/data_docs/index.html",
        "sisbridge-reports/run_1/data_docs/validations/v.html",
    ]


def test_an_airflow_style_hook_is_used_through_its_client(s3, tmp_path):
    class Hook:
        def get_conn(self):
            return s3

    paths, _ = report_files(tmp_path)
    keys = reports.upload_reports(paths[:1], Hook(), BUCKET, "run_2")
    assert keys == ["sisbridge-reports/run_2/summary.json"]
    assert list(objects(s3, "sisbridge-reports/run_2/")) == keys


def test_nothing_to_upload_makes_no_call():
    assert reports.upload_reports([], object(), BUCKET, "run_3") == []
