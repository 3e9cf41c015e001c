"""Airflow DAG file: the roster sync DAGs of the schools in shard 44 (see sisbridge.dag_factory)."""

from sisbridge.dag_factory import build_shard

build_shard(44, globals())
