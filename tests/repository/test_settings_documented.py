"""Every setting the code reads is in the README, where an operator looks for it."""

from __future__ import annotations

import re
from pathlib import Path

from sisbridge import notify

ROOT = Path(__file__).resolve().parents[2]
# `os.environ.get("SISBRIDGE_X", ...)`, `os.environ["SISBRIDGE_X"]`, `os.getenv("SISBRIDGE_X")`.
READ = re.compile(r"""(?:environ\.get\(|environ\[|getenv\()\s*["'](SISBRIDGE_\w+)["']""")


def settings_read_by_the_code() -> dict[str, str]:
    found = {}
    for path in sorted([*(ROOT / "plugins" / "sisbridge").rglob("*.py"), *(ROOT / "dags").glob("*.py")]):
        for number, line in enumerate(path.read_text("utf-8").splitlines(), start=1):
            for name in READ.findall(line):
                found.setdefault(name, f"{path.relative_to(ROOT)}:{number}")
    return found


def test_every_environment_setting_is_in_the_readme():
    read = settings_read_by_the_code()
    assert {"SISBRIDGE_HOME", "SISBRIDGE_SENSOR_TIMEOUT_S", "SISBRIDGE_SENSOR_POKE_S"} <= set(read)
    readme = (ROOT / "README.md").read_text("utf-8")
    assert {name: where for name, where in read.items() if f"`{name}" not in readme} == {}


def test_the_platform_notifiers_variable_is_documented():
    for doc in ("README.md", "docs/safety.md"):
        text = (ROOT / doc).read_text("utf-8")
        assert f"`{notify.PLATFORM_NOTIFIERS_VARIABLE}`" in text, doc
        assert f"`AIRFLOW_VAR_{notify.PLATFORM_NOTIFIERS_VARIABLE.upper()}`" in text, doc
