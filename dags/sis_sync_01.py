"""Airflow DAG file: the roster sync DAGs of the schools in shard 1 (see sisbridge.dag_factory)."""

from sisbridge.dag_factory import build_shard

build_shard(1, globals())
