"""Test helpers for the schools' lakes (sisbridge.warehouse): wipe one school's lake."""

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
