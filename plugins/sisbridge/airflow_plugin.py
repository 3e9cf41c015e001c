"""sisbridge's Airflow plugin: the fleet page (sisbridge.fleet_page) on the api-server at `/sisbridge`.

Registered through the `airflow.plugins` entry point of the installed package, so every Airflow
component finds it without a plugins folder. The "SIS syncs" entry of Airflow's navigation shows the page.
"""

from __future__ import annotations

from airflow.plugins_manager import AirflowPlugin

from sisbridge import fleet_page


class SisbridgePlugin(AirflowPlugin):
    name = "sisbridge"
    fastapi_apps = [{"app": fleet_page.app, "url_prefix": fleet_page.MOUNT, "name": "SIS syncs"}]
    external_views = [
        {
            "name": "SIS syncs",
            "href": f"{fleet_page.MOUNT}/",
            "url_route": "sis-syncs",
            "destination": "nav",
        }
    ]
