"""Airflow DAG file: the weekly upkeep of every school's lake (see sisbridge.maintenance).

Sunday 06:00 UTC, after Saturday night's syncs: one mapped task per school, so one school's failure
is its own. The school list is read when the DAG runs, never when the file is parsed.
"""

import pendulum
from airflow.sdk import CronTriggerTimetable, dag, task


@dag(
    dag_id="sis_lake_maintenance",
    schedule=CronTriggerTimetable("0 6 * * 0", timezone="UTC"),
    start_date=pendulum.datetime(2026, 1, 1, tz="UTC"),
    catchup=False,
    max_active_runs=1,
    tags=["sis", "maintenance"],
    default_args={"retries": 2, "retry_delay": pendulum.duration(minutes=10)},
    doc_md=__doc__,
)
def sis_lake_maintenance():
    @task(multiple_outputs=False)
    def schools() -> list[str]:
        from sisbridge import maintenance

        return maintenance.school_ids()

    @task(multiple_outputs=False, max_active_tis_per_dag=4)
    def maintain(school_id: str) -> dict:
        from sisbridge import maintenance

        return maintenance.run(school_id)

    maintain.expand(school_id=schools())


sis_lake_maintenance()
