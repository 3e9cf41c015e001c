"""dbt in the test's process on one school's lake, as `sisbridge.transform` runs it, with other arguments."""

from __future__ import annotations

from sisbridge.transform import _release_warehouse, dbt_env, environment


def invoke_dbt(args: list[str], school_id: str, **env: str):
    """Run dbt with `args` in the school's dbt environment (plus `env`); asserts that it succeeded."""
    from dbt.cli.main import dbtRunner

    with environment({**dbt_env(school_id), **env}):
        try:
            result = dbtRunner().invoke(args)
        finally:
            _release_warehouse()
    assert result.success, result.exception
    return result
