"""The school's settings as config.* tables, the data the dbt models join against."""

from __future__ import annotations

from pathlib import Path

import duckdb

from sisbridge import warehouse
from sisbridge.config import load_school
from sisbridge.transform import dbt_env, write_config_tables

SCHOOLS = Path(__file__).resolve().parents[2] / "config" / "schools"


def test_acme_config_tables():
    school = load_school(SCHOOLS / "acme.yaml")
    con = duckdb.connect()
    write_config_tables(con, school)
    # Written twice, as a retried task would: the tables are replaced, never doubled.
    write_config_tables(con, school)
    assert con.execute("select * from config.school").fetchall() == [("acme", "email", "deactivate")]
    assert con.execute("select * from config.user_types order by all").fetchall() == [
        ("Alumni", "Alumni"),
        ("Graduate", "Graduate Students"),
        ("Undergraduate", "Undergraduate Students"),
    ]
    assert con.execute("select * from config.community_columns order by all").fetchall() == [
        ("AFFINITY", "Affinity", False),
        ("PROGRAM", "Career Communities", True),
    ]
    # PROGRAM's values come from acme_programs.csv beside the YAML.
    assert con.execute(
        "select * from config.community_values where source_value in ('Econ', 'BAC-CHEM-1') order by all"
    ).fetchall() == [("PROGRAM", "BAC-CHEM-1", "Science"), ("PROGRAM", "Econ", "Business & Finance")]
    assert con.execute("select format from config.date_formats").fetchall() == [("%Y-%m-%d",), ("%m/%d/%Y",)]


def test_globex_has_no_date_formats_and_a_user_id_identifier():
    school = load_school(SCHOOLS / "globex.yaml")
    con = duckdb.connect()
    write_config_tables(con, school)
    assert con.execute("select * from config.school").fetchall() == [("globex", "user_id", "deactivate")]
    assert con.execute("select count(*) from config.date_formats").fetchone() == (0,)
    assert con.execute(
        "select source_value from config.community_values where community = 'Health' order by all"
    ).fetchall() == [("Nursing",), ("Pre-Med",)]


def test_dbt_env_points_at_the_school_lake(tmp_path, monkeypatch):
    monkeypatch.setenv("SISBRIDGE_HOME", str(tmp_path))
    env = dbt_env("acme")
    assert env["SISBRIDGE_SCHOOL_ID"] == "acme"
    lake = warehouse.LakeSettings.from_env(env[warehouse.LAKE_ENV])
    assert lake == warehouse.settings()
    assert lake.attach_sql("acme").startswith("attach 'ducklake:postgres:")
    assert "metadata_schema 'school_acme'" in lake.attach_sql("acme")
    assert "data_path 's3://sisbridge-lake/schools/acme/'" in lake.attach_sql("acme")
    # The DAG file renders Cosmos's tasks without the lake's settings (they may hold secrets).
    assert warehouse.LAKE_ENV not in dbt_env("acme", with_lake=False)
    assert env["DBT_TARGET_PATH"] == str(tmp_path / "dbt" / "acme" / "target")
    assert env["DBT_LOG_PATH"] == str(tmp_path / "dbt" / "acme" / "logs")
