"""SISBRIDGE_PUSH_WORKERS: how many push batches a school applies at a time."""

from __future__ import annotations

import pytest

from sisbridge.config import push_workers


def test_two_workers_by_default(monkeypatch):
    monkeypatch.delenv("SISBRIDGE_PUSH_WORKERS", raising=False)
    assert push_workers() == 2


def test_the_setting_is_read(monkeypatch):
    monkeypatch.setenv("SISBRIDGE_PUSH_WORKERS", "3")
    assert push_workers() == 3


@pytest.mark.parametrize("value", ["0", "-1", "two", ""])
def test_a_bad_setting_is_named(monkeypatch, value):
    monkeypatch.setenv("SISBRIDGE_PUSH_WORKERS", value)
    with pytest.raises(
        ValueError, match=f"SISBRIDGE_PUSH_WORKERS must be a whole number of at least 1, not '{value}'"
    ):
        push_workers()
