"""The command sets Airflow's settings before anything imports Airflow, which reads them only once."""

from __future__ import annotations

import subprocess
import sys

HEAVY = ("airflow", "cosmos", "dbt", "great_expectations")


def test_importing_the_command_imports_no_airflow(shell):
    code = (
        "import sys, sisbridge.cli; "
        f"print(sorted({{name.split('.')[0] for name in sys.modules}} & set({HEAVY!r})))"
    )
    done = subprocess.run(
        [sys.executable, "-c", code],
        cwd=shell.cwd,
        env=shell.env,
        capture_output=True,
        text=True,
        timeout=120,
    )

    assert (done.returncode, done.stdout.strip()) == (0, "[]"), done.stderr
    shell.assert_home_untouched()
