"""A school config that breaks the rules fails when Airflow parses the DAGs, naming the file and the key."""

from __future__ import annotations

from pathlib import Path

import pytest

from sisbridge.dag_factory import shard_file
from tests.config.bad_configs import BAD_CONFIGS, GOOD

DAGS = Path(__file__).resolve().parents[2] / "dags"


@pytest.mark.parametrize(("yaml_text", "named"), BAD_CONFIGS.values(), ids=BAD_CONFIGS.keys())
def test_a_bad_school_config_is_an_import_error_of_the_dag_file(tmp_path, monkeypatch, yaml_text, named):
    from airflow.dag_processing.dagbag import DagBag

    (tmp_path / "quay.yaml").write_text(yaml_text, encoding="utf-8")
    monkeypatch.setenv("SISBRIDGE_SCHOOLS_DIR", str(tmp_path))

    bag = DagBag(dag_folder=str(DAGS))

    quay_file = str(shard_file("quay"))
    assert bag.dag_ids == [
        "sis_lake_maintenance"
    ]  # the other DAG file parses: its school list is read at run time
    assert list(bag.import_errors) == [quay_file]
    error = bag.import_errors[quay_file]
    assert f"ConfigError: {tmp_path / 'quay.yaml'}: " in error
    assert named in error


def test_the_same_school_without_the_mistake_parses(tmp_path, monkeypatch):
    from airflow.dag_processing.dagbag import DagBag

    (tmp_path / "quay.yaml").write_text(GOOD, encoding="utf-8")
    monkeypatch.setenv("SISBRIDGE_SCHOOLS_DIR", str(tmp_path))

    bag = DagBag(dag_folder=str(DAGS))

    assert (bag.import_errors, sorted(bag.dag_ids)) == ({}, ["sis_lake_maintenance", "sis_sync__quay"])
