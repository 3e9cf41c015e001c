"""A local S3 endpoint (moto's server on 127.0.0.1) and the client and Airflow connection that reach it.

`sisbridge demo`, the tests and the benchmarks run against it instead of AWS.
"""

from __future__ import annotations

import json
from collections.abc import Generator
from contextlib import contextmanager

from sisbridge.config import SchoolConfig

ACCESS_KEY_ID, SECRET_ACCESS_KEY, REGION = "demo-access-key", "demo-secret-key", "us-east-1"


@contextmanager
def local_s3() -> Generator[str, None, None]:
    """moto's S3 server on 127.0.0.1, on a free port; yields its endpoint URL."""
    import logging

    from moto.server import ThreadedMotoServer

    logging.getLogger("werkzeug").setLevel(logging.WARNING)  # one line per request is noise here
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    try:
        yield f"http://{host}:{port}"
    finally:
        server.stop()


def aws_connection_uri(endpoint_url: str) -> str:
    """An Airflow `aws` connection (JSON form) for a local S3 endpoint with demo credentials."""
    return json.dumps(
        {
            "conn_type": "aws",
            "login": ACCESS_KEY_ID,
            "password": SECRET_ACCESS_KEY,
            "extra": {"endpoint_url": endpoint_url, "region_name": REGION},
        }
    )


def s3_client(endpoint_url: str):
    """A boto3 S3 client for a local endpoint, with the demo credentials."""
    import boto3

    return boto3.client(
        "s3",
        endpoint_url=endpoint_url,
        aws_access_key_id=ACCESS_KEY_ID,
        aws_secret_access_key=SECRET_ACCESS_KEY,
        region_name=REGION,
    )


def create_bucket(s3, bucket: str, *, versioned: bool = True) -> None:
    """Create a bucket, versioned as a school's bucket is unless told otherwise."""
    s3.create_bucket(Bucket=bucket)
    if versioned:
        s3.put_bucket_versioning(Bucket=bucket, VersioningConfiguration={"Status": "Enabled"})


def upload(s3, school: SchoolConfig, body: bytes) -> None:
    """Put a roster where the school uploads it: its bucket, its key."""
    s3.put_object(Bucket=school.s3.bucket, Key=school.s3.key, Body=body)
