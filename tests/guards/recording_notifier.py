"""A real Airflow notifier for the tests: it appends its rendered message to a file."""

from __future__ import annotations

from pathlib import Path

from airflow.sdk import BaseNotifier


class RecordingNotifier(BaseNotifier):
    template_fields = ("message",)

    def __init__(self, path: str, message: str = "{{ sisbridge_alert }}"):
        super().__init__()
        self.path = path
        self.message = message

    def notify(self, context) -> None:
        with Path(self.path).open("a", encoding="utf-8") as handle:
            handle.write(self.message + "\n")
