"""`pip install -e .`, as `make install` runs it, builds the package without a deprecation warning."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_the_editable_install_builds_without_warnings():
    # --dry-run still builds the editable metadata in pip's isolated build environment (setuptools
    # from the package index, as pyproject.toml's build-system asks), which is where setuptools warns.
    result = subprocess.run(
        [sys.executable, "-m", "pip", "install", "--no-deps", "--dry-run", "-e", str(ROOT)],
        capture_output=True,
        text=True,
        timeout=600,
    )
    output = result.stdout + result.stderr
    assert result.returncode == 0, output[-3000:]
    assert "Would install sisbridge-0.1.0" in output
    assert "Warning" not in output, output[-3000:]
