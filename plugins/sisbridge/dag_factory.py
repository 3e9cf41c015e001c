"""One weekly roster sync DAG per school, built from `config/schools/*.yaml` by the DAG files.

The schools are spread over `SHARDS` DAG files, `dags/sis_sync_<NN>.py`, that the dag-processor
parses in parallel: each calls `build_shard` with its number and defines the DAGs of the schools
whose id hashes to it (`shard_of`). This module only wires tasks: every task calls one function of
the `sisbridge` package. Nothing here touches S3, DuckDB, the store, dbt or GX at import time.
"""

from __future__ import annotations

import hashlib
import os
from datetime import timedelta
from pathlib import Path

import pendulum
from airflow.providers.amazon.aws.sensors.s3 import S3KeySensor
from airflow.sdk import CronTriggerTimetable, TriggerRule, dag, get_parsing_context, task
from airflow.sdk.exceptions import AirflowFailException, AirflowSkipException
from cosmos import DbtTaskGroup, ExecutionConfig, ProfileConfig, ProjectConfig, RenderConfig
from cosmos.constants import (
    PRODUCER_WATCHER_TASK_ID,
    ExecutionMode,
    InvocationMode,
    LoadMode,
    TestBehavior,
)

from sisbridge import landing, notify, pipeline, review, transform, xcom_keys
from sisbridge.config import PROJECT_ROOT, dag_id, load_school, schools_dir

os.environ.setdefault("DO_NOT_TRACK", "1")

DAGS_DIR = PROJECT_ROOT / "dags"
# The number of DAG files. A school's file depends on its id and this number only, so adding or
# removing a school never moves another; changing it moves most schools (docs/scaling.md).
SHARDS = 64
DBT_PROJECT_DIR = PROJECT_ROOT / "dbt_project"
# Written by `dbt parse` (make install, sisbridge sync): parsing the DAGs never runs dbt.
DBT_MANIFEST = DBT_PROJECT_DIR / "target" / "manifest.json"


# The settings below are read each time the DAGs are built, as they were when each parse ran the
# DAG file anew: this module is imported once per process.
# How long Saturday night's run waits for a file, and how often it looks (seconds).
def sensor_timeout_s() -> float:
    return float(os.environ.get("SISBRIDGE_SENSOR_TIMEOUT_S", 6 * 3600))


def sensor_poke_s() -> float:
    return float(os.environ.get("SISBRIDGE_SENSOR_POKE_S", 300))


# Each dbt model as its own task (Cosmos watchers: 52 task instances a run), or the transform as one
# task running the same `dbt build`. Both run one build; one task is lighter for the scheduler when
# hundreds of schools run on the same night (docs/scaling.md).
def dbt_model_tasks() -> bool:
    return os.environ.get("SISBRIDGE_DBT_MODEL_TASKS", "true").strip().lower() not in ("false", "0")


DOC_MD = """
### Roster sync for {name} (`{school_id}`)
Senses `s3://{bucket}/{key}`, loads it raw into the school's warehouse (a DuckLake), checks it with Great
Expectations, builds the change set with dbt, guards it, pushes it to the uConnect user store, and
writes the audit row and reports (`$SISBRIDGE_HOME/reports/{school_id}/<run_id>/`).

- identifier: `{identifier}`; missing users: `{missing_users}`; sync mode in the YAML: `{sync_mode}`
  (`review`: no auto_sync key, so until a reviewer approves a first file every run with changes asks
  "Enable auto sync for {name} with this file?"; `auto`; `paused`: dry runs only)
- A run that crosses a mass-change threshold, or a file in onboarding review, waits in `approve` for a
  reviewer (Required Actions), who sees a sample of the changes and links to the reports: Approve pushes
  the change set (and ends the onboarding review: auto sync on); Reject, or no answer within
  {approval_timeout_hours:g} hours, pushes nothing. Under `sisbridge sync` (run conf
  `interactive_approval: false`) a held run ends as `held`, an onboarding review as `dry_run`.
- A run that stops early (rejected, unchanged, dry run, held) still finalizes its audit row and report.
- A file already processed with the same config ends as `unchanged`; "Trigger with config"
  `{{"force": true}}` processes it again.
- A held, rejected or failed run and a stale file notify the school's `notifiers:` and the platform's
  (the Airflow Variable `sisbridge_platform_notifiers`).
"""


def _stop_if(outcome: dict) -> dict:
    if outcome["stop"]:
        raise AirflowSkipException(f"{outcome['status']}: {outcome['reason']}")
    return outcome


def _producer_first(group) -> None:
    """Start the watcher's model tasks after its one `dbt build` (the producer) has finished.

    Cosmos leaves a DbtTaskGroup's root model tasks free to poll while the producer runs. Under
    `dag.test()` (which `sisbridge sync` uses) tasks run one at a time, so a model task that polls
    first would wait forever for a producer that never starts. After the producer they only read
    each model's status, so each model still shows as its own task in the UI.
    """
    producer = next(t for t in group if t.task_id.endswith(PRODUCER_WATCHER_TASK_ID))
    for model_task in group.roots:
        if model_task is not producer:
            producer >> model_task


def _review(context) -> dict | None:
    """The reviewer's answer to this run's approval request (None when nobody was asked)."""
    return context["ti"].xcom_pull(task_ids="approve", key=xcom_keys.REVIEW)


def _dbt_task_group(school) -> DbtTaskGroup:
    """The transform as Cosmos watcher tasks: one `dbt build` (the producer), one task per model."""
    return DbtTaskGroup(
        group_id="transform",
        project_config=ProjectConfig(
            DBT_PROJECT_DIR,
            manifest_path=DBT_MANIFEST,
            env_vars={
                **transform.dbt_env(school.school_id, with_lake=False),
                **transform.dbt_school_env(school),
            },
        ),
        profile_config=ProfileConfig(
            profile_name=transform.DBT_PROFILE,
            target_name=transform.DBT_TARGET,
            profiles_yml_filepath=DBT_PROJECT_DIR / "profiles.yml",
        ),
        execution_config=ExecutionConfig(
            execution_mode=ExecutionMode.WATCHER,
            invocation_mode=InvocationMode.SUBPROCESS,
            # The producer runs `dbt build` as a subprocess: Cosmos reads its info-level JSON lines,
            # whereas in-process (dbtRunner) it converts every debug event of every node to JSON,
            # which cost more than the build itself (docs/performance-history.md).
            dbt_executable_path=transform.DBT_EXECUTABLE,
        ),
        render_config=RenderConfig(
            load_method=LoadMode.DBT_MANIFEST,
            exclude=list(transform.BUILD_EXCLUDE),
            test_behavior=TestBehavior.AFTER_EACH,
            invocation_mode=InvocationMode.DBT_RUNNER,
        ),
        # The lake's settings reach the dbt process through the task's environment (they may hold
        # secrets, so they are neither rendered into the DAG nor put on a command line).
        operator_args={
            "install_deps": False,
            "pre_execute": transform.lake_pre_execute,
        },
    )


def build_dag(school):
    school_id = school.school_id

    def record_failure(context):
        pipeline.record_failure(school_id, context["run_id"], context["ti"].task_id, context.get("exception"))

    @dag(
        dag_id=dag_id(school_id),
        schedule=CronTriggerTimetable(school.schedule, timezone=school.timezone),
        start_date=pendulum.datetime(2026, 1, 1, tz="UTC"),
        catchup=False,
        max_active_runs=1,
        tags=["sis", school_id],
        doc_md=DOC_MD.format(
            **school.model_dump(), sync_mode=school.sync_mode, bucket=school.s3.bucket, key=school.s3.key
        ),
        default_args={
            "owner": "data-platform",
            "retries": 2,
            "retry_delay": timedelta(minutes=1),
            "retry_exponential_backoff": True,
            "max_retry_delay": timedelta(minutes=30),
            "on_failure_callback": record_failure,
        },
    )
    def sis_sync():
        wait_for_file = S3KeySensor(
            task_id="wait_for_file",
            bucket_name=school.s3.bucket,
            bucket_key=school.s3.key,
            aws_conn_id=school.s3.aws_conn_id,
            metadata_keys=["Key", "Size", "ETag", "VersionId"],
            check_fn=landing.record_sensed_file,
            deferrable=True,
            soft_fail=True,
            poke_interval=sensor_poke_s(),
            timeout=sensor_timeout_s(),
        )

        @task
        def load_raw(**context):
            sensed = context["ti"].xcom_pull(task_ids="wait_for_file", key=xcom_keys.SENSED_FILE)
            force = str((context["dag_run"].conf or {}).get("force", "")).strip().lower() in ("true", "1")
            return _stop_if(pipeline.load_raw(school_id, context["run_id"], sensed, force=force).as_xcom())

        @task
        def validate(**context):
            return _stop_if(pipeline.validate(school_id, context["run_id"]).as_xcom())

        @task(task_id="transform")
        def transform_build(**context):
            pipeline.transform(school_id, context["run_id"])

        if dbt_model_tasks():
            transform_models = _dbt_task_group(school)
            _producer_first(transform_models)
        else:
            transform_models = transform_build()

        @task.branch
        def guard(**context):
            interactive = (context["dag_run"].conf or {}).get("interactive_approval", True)
            outcome = _stop_if(
                pipeline.guard(school_id, context["run_id"], interactive=interactive).as_xcom()
            )
            if outcome["status"] != "held":
                return "push"
            context["ti"].xcom_push(key=xcom_keys.APPROVAL, value=outcome["approval"])
            return "approve"

        approve = review.RosterApproval(
            task_id="approve",
            subject=f"{{{{ ti.xcom_pull(task_ids='guard', key='{xcom_keys.APPROVAL}')['subject'] }}}}",
            body=f"{{{{ ti.xcom_pull(task_ids='guard', key='{xcom_keys.APPROVAL}')['body'] }}}}",
            defaults=review.RosterApproval.REJECT,  # what an unanswered request becomes after the timeout
            response_timeout=timedelta(hours=school.approval_timeout_hours),
            notifiers=[notify.ReviewRequestNotifier(school)],
        )

        @task(retry_exponential_backoff=True, trigger_rule=TriggerRule.NONE_FAILED_MIN_ONE_SUCCESS)
        def push(**context):
            from sisbridge.userstore import PermanentStoreError

            answer = _review(context)
            try:
                return pipeline.push(school_id, context["run_id"], answer=answer).as_xcom()
            except PermanentStoreError as exc:
                raise AirflowFailException(str(exc)) from exc

        @task(
            trigger_rule=TriggerRule.ALL_DONE,
            retries=0,
            on_success_callback=notify.RunEventNotifier(school),
            on_failure_callback=notify.RunEventNotifier(school, failed=True),
        )
        def finalize(**context):
            summary = pipeline.finalize(school_id, context["run_id"], answer=_review(context))
            if summary["status"] == "failed":
                raise AirflowFailException(f"run failed: {summary['status_reason']}")
            return summary

        loaded = load_raw()
        guarded, pushed = guard(), push()
        wait_for_file >> loaded >> validate() >> transform_models >> guarded
        guarded >> [approve, pushed]
        approve >> pushed >> finalize()

    return sis_sync()


def shard_of(school_id: str) -> int:
    """The number of the DAG file that defines a school's DAG: a hash of its id alone.

    sha256, not `hash()`: the number must be the same in every process and every Python version.
    """
    return int.from_bytes(hashlib.sha256(school_id.encode("utf-8")).digest()[:8], "big") % SHARDS


def shard_file(school_id: str) -> Path:
    """The DAG file that defines a school's DAG."""
    return DAGS_DIR / f"sis_sync_{shard_of(school_id):02d}.py"


def build_shard(shard: int, namespace: dict) -> None:
    """Build the DAGs of the schools in DAG file `shard` into that file's globals, in school order."""
    # A task process asks for one DAG: build only that school's (Airflow's parsing context), so a task's
    # start-up does not grow with the number of schools. The dag-processor and `dags list` build every
    # school of the file.
    # The school id is the YAML's file name (config rules), so other schools' files are not even read.
    wanted_dag_id = get_parsing_context().dag_id
    for path in sorted(schools_dir().glob("*.yaml")):
        if shard_of(path.stem) != shard or wanted_dag_id not in (None, dag_id(path.stem)):
            continue
        school = load_school(path)
        namespace[dag_id(school.school_id)] = build_dag(school)
