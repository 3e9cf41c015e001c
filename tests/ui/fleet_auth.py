"""The auth manager of the fleet page's test: Airflow's simple auth manager, with one restricted user.

The simple auth manager gives a role every DAG or none. Production auth managers (FAB, Keycloak) can
let a user read some DAGs only; this one does that for the user `reader`, who may read only the DAGs
named in `SISBRIDGE_TEST_READER_DAGS` (comma-separated). Everyone else is as the simple one says.
"""

from __future__ import annotations

import os

from airflow.api_fastapi.auth.managers.simple.simple_auth_manager import SimpleAuthManager

READER = "reader"


class ReaderRestrictedAuthManager(SimpleAuthManager):
    def is_authorized_dag(self, *, method, user, access_entity=None, details=None) -> bool:
        if user.get_name() == READER:
            readable = set(filter(None, os.environ.get("SISBRIDGE_TEST_READER_DAGS", "").split(",")))
            if method != "GET" or details is None or details.id not in readable:
                return False
        return super().is_authorized_dag(
            method=method, user=user, access_entity=access_entity, details=details
        )
