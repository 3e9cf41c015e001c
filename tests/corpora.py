"""Third-party test corpora, copied into `tests/data/corpora/` with their licences (see its README.md)."""

from __future__ import annotations

from pathlib import Path

CORPORA = Path(__file__).resolve().parent / "data" / "corpora"
