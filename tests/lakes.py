"""Helpers for the schools' lakes (sisbridge.warehouse): wipe one school's lake; set up a production lake."""

from __future__ import annotations

import shutil

from sisbridge import warehouse


def wipe(school_id: str) -> None:
    """Remove the school's lake (catalog schema and data files), so its next run starts empty."""
    warehouse.release(school_id)
    lake = warehouse.settings()
    if lake.kind != warehouse.POSTGRES:
        shutil.rmtree(lake.school_dir(school_id), ignore_errors=True)
        lake.school_dir(school_id).with_suffix(".duckdb").unlink(missing_ok=True)
        return
    import psycopg2

    with psycopg2.connect(lake.catalog_dsn) as conn, conn.cursor() as cur:
        cur.execute(f'drop schema if exists "{lake.metadata_schema(school_id)}" cascade')
    conn.close()
    prefix = lake.school_data_path(school_id)
    if prefix.startswith("s3://"):
        import boto3

        bucket, _, key = prefix[len("s3://") :].partition("/")
        s3 = boto3.resource(
            "s3",
            endpoint_url=f"{'https' if lake.s3_use_ssl else 'http'}://{lake.s3_endpoint}",
            aws_access_key_id=lake.s3_key_id,
            aws_secret_access_key=lake.s3_secret,
            region_name=lake.s3_region,
        )
        s3.Bucket(bucket).objects.filter(Prefix=key).delete()
    else:
        shutil.rmtree(prefix, ignore_errors=True)


LAKE_BUCKET = "sisbridge-lake"
# The lake's own credentials, unlike any school's (the S3 server takes any key without IAM).
LAKE_KEYS = ("lake-access-key", "lake-secret-key")


def add_lake_argument(parser) -> None:
    """The benchmarks' `--lake` option (environment: BENCH_LAKE)."""
    import os

    parser.add_argument(
        "--lake",
        choices=("postgres", "embedded"),
        default=os.environ.get("BENCH_LAKE", "postgres"),
        help="the warehouse: the production lake (catalog in the bench's PostgreSQL, data in its S3) "
        "or the embedded one under the runs' SISBRIDGE_HOME",
    )


def production_lake(server, endpoint_url: str) -> dict[str, str]:
    """A production-shaped lake for tests and benchmarks: catalog in `server` (database `lake`), data in S3.

    Creates the database and the bucket, and returns the `sisbridge_lake` connection and its `aws`
    connection (with the lake's own keys) as environment variables. `server` is a tests/pgserver.py
    server; `endpoint_url` an S3 endpoint without IAM.
    """
    import json
    from urllib.parse import urlencode

    import sqlalchemy as sa

    from sisbridge import locals3

    admin = sa.create_engine(server.url("postgres"), isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.exec_driver_sql("create database lake template template0")
    admin.dispose()
    locals3.create_bucket(locals3.s3_client(endpoint_url), LAKE_BUCKET, versioned=False)
    extras = urlencode({"data_path": f"s3://{LAKE_BUCKET}/", "aws_conn_id": "sisbridge_lake_aws"})
    catalog = server.url("lake").replace("postgresql://", "postgres://")
    return {
        "AIRFLOW_CONN_SISBRIDGE_LAKE": f"{catalog}?{extras}",
        "AIRFLOW_CONN_SISBRIDGE_LAKE_AWS": json.dumps(
            {
                "conn_type": "aws",
                "login": LAKE_KEYS[0],
                "password": LAKE_KEYS[1],
                "extra": {"endpoint_url": endpoint_url, "region_name": "us-east-1"},
            }
        ),
    }
