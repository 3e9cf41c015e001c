"""Any worker runs any task of a school's run, and a worker's disk may be wiped between runs.

A real Airflow 3 with CeleryExecutor (tests/airflow_cluster.py): scheduler, dag-processor, triggerer
and api-server, a redis-server broker, and two Celery workers standing in for two hosts without a
shared disk: each has its own queue and its own empty `SISBRIDGE_HOME`, HOME and TMPDIR. The metadata
DB, the user store and the lake's catalog are in PostgreSQL, the lake's data and the school's bucket
in moto's S3 server (tests/airflow_env.py). A cluster policy written into this Airflow's config
folder (test-only, Airflow's own `task_policy` hook) sends the DAG's tasks to the two hosts in turn,
by their position in the DAG, so each task finds what the one before it left only where every host
can reach it.

Week 1 runs on the two hosts. Then both workers stop, their disks are wiped, and they start again
with empty homes for week 2. The reference is a second school with the same two files, synced on
one host and never wiped: the installed `sisbridge sync` from a plain shell with the same lake and
store connections. Both schools must end with the same store, change set and audit history.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import threading
import time
import traceback
from dataclasses import dataclass, field
from pathlib import Path

import lakes
import pytest
import sqlalchemy as sa

from sisbridge import audit, locals3, sample_roster, warehouse
from sisbridge.config import dag_id, load_school
from sisbridge.dag_factory import shard_file
from tests import airflow_env
from tests.airflow_cluster import (
    AIRFLOW,
    Api,
    Stack,
    celery_env,
    create_databases,
    free_port,
    migrate,
    parsed_dags,
    service_env,
    start_control_plane,
    start_redis,
    wait_for,
    wait_runs,
)
from tests.cli.cli_helpers import SISBRIDGE, counts, plain_env, summary

pytestmark = pytest.mark.e2e

# Ids without "_": the generated emails use the first school's id as their domain.
SPLIT, REFERENCE = "twohosts", "onehost"
HOSTS = ("host-a", "host-b")
ROSTER_USERS = 200
RUN_TIMEOUT_S = 900
LAKE_CONNECTIONS = ("AIRFLOW_CONN_SISBRIDGE_LAKE", "AIRFLOW_CONN_SISBRIDGE_LAKE_AWS")
SCHOOL_YAML = """\
school_id: {school_id}
name: Two Hosts College
s3: {{bucket: {bucket}, key: roster.csv, aws_conn_id: sis_s3_{school_id}}}
identifier: email
auto_sync: true
missing_users: deactivate
user_types: {{Undergraduate: Undergraduate Students, Graduate: Graduate Students, Alumni: Alumni}}
graduation: {{date_formats: ["%m/%d/%Y"]}}
communities:
  - {{column: PROGRAM, group: Career Communities, values: {{Econ: Business & Finance, Biology: Science}}}}
  - {{column: AFFINITY, group: Affinity}}
"""
# Airflow's cluster policy (airflow_local_settings.py in $AIRFLOW_HOME/config): the tasks of a sync
# DAG alternate between the two hosts' queues in the DAG's order, so consecutive tasks never share
# a disk. `host_name` is each worker's [core] hostname_callable: what it records in task_instance.
LOCAL_SETTINGS = """\
import os


def task_policy(task):
    order = [t.task_id for t in task.dag.task_group.topological_sort()]
    if task.dag.dag_id.startswith("sis_sync__"):
        task.queue = ("host_a", "host_b")[order.index(task.task_id) % 2]
    else:
        task.queue = "host_a"


def host_name():
    return os.environ["SISBRIDGE_TEST_HOST"]
"""


def bucket(school_id: str) -> str:
    return "uconnect-sis-" + school_id.replace("_", "-")


def school_yaml(school_id: str) -> str:
    return SCHOOL_YAML.format(school_id=school_id, bucket=bucket(school_id))


@dataclass
class Host:
    """One worker machine: its queue and its own disk (SISBRIDGE_HOME, HOME, TMPDIR)."""

    name: str
    root: Path

    @property
    def queue(self) -> str:
        return self.name.replace("-", "_")

    @property
    def sisbridge_home(self) -> Path:
        return self.root / "disk" / "sisbridge"

    def fresh_disk(self) -> None:
        """An empty disk, as a new machine has: HOME and TMPDIR exist, SISBRIDGE_HOME does not yet."""
        shutil.rmtree(self.root / "disk", ignore_errors=True)
        for name in ("home", "tmp"):
            (self.root / "disk" / name).mkdir(parents=True)

    def env(self, base: dict) -> dict:
        return {
            **base,
            "SISBRIDGE_HOME": str(self.sisbridge_home),
            "HOME": str(self.root / "disk" / "home"),
            "TMPDIR": str(self.root / "disk" / "tmp"),
            "SISBRIDGE_TEST_HOST": self.name,
            "AIRFLOW__CORE__HOSTNAME_CALLABLE": "airflow_local_settings.host_name",
            # Task logs stay off the wiped disk, for whoever debugs a failure.
            "AIRFLOW__LOGGING__BASE_LOG_FOLDER": str(self.root / "logs"),
        }

    def worker_args(self) -> list[str]:
        return [
            *AIRFLOW,
            "celery",
            "worker",
            "--queues",
            self.queue,
            "--celery-hostname",
            f"{self.queue}@%h",
            "--concurrency",
            "1",
            # The test reads Airflow's metadata, not the logs through the api-server.
            "--skip-serve-logs",
            "--without-gossip",
            "--without-mingle",
        ]


def store_state(store_url: str, school_id: str) -> tuple[list[tuple], list[tuple]]:
    """The school's users (every column but the school and the timestamps) and memberships."""
    engine = sa.create_engine(store_url)
    if not sa.inspect(engine).has_table("users"):
        engine.dispose()
        return [], []  # no run has pushed yet
    with engine.connect() as conn:
        users = conn.execute(
            sa.text(
                "select external_id, email, user_id, user_login, first_name, last_name, user_type, "
                "graduation_year, status, email_opt_out, email_prefs_customized "
                "from users where school_id = :s order by external_id"
            ),
            {"s": school_id},
        ).fetchall()
        memberships = conn.execute(
            sa.text(
                "select external_id, community_group, community from user_communities "
                "where school_id = :s order by 1, 2, 3"
            ),
            {"s": school_id},
        ).fetchall()
    engine.dispose()
    return [tuple(row) for row in users], [tuple(row) for row in memberships]


def lake_state(school_id: str) -> dict:
    """What an auditor reads in the school's lake: the runs, the last change set, its applied changes."""
    columns = ("status", "status_reason", "file_sha256", "file_bytes", *audit.RUN_COUNT_COLUMNS)
    with warehouse.connect(school_id, read_only=True) as con:
        runs = con.execute(
            f"select run_id, {', '.join(columns)} from audit.sync_runs order by started_at"
        ).fetchall()
        changes = con.execute(
            "select external_id, change_type, field, old_value, new_value, line_number "
            "from marts.user_changes order by all"
        ).fetchall()
        applied = con.execute(
            "select run_id, external_id, change_type, field, old_value, new_value "
            "from audit.applied_changes order by all"
        ).fetchall()
    run_ids = [row[0] for row in runs]
    return {
        "run_ids": run_ids,
        "runs": [dict(zip(columns, row[1:], strict=True)) for row in runs],
        "changes": changes,
        # Per run, in run order, without the run's id.
        "applied": [sorted(row[1:] for row in applied if row[0] == run_id) for run_id in run_ids],
    }


def task_hosts(metadata_url: str, dag: str, run_id: str) -> dict[str, tuple]:
    """Each task instance of the run: (state, queue, hostname), from Airflow's metadata DB."""
    engine = sa.create_engine(metadata_url)
    with engine.connect() as conn:
        rows = conn.execute(
            sa.text(
                "select task_id, state, queue, hostname from task_instance "
                "where dag_id = :dag and run_id = :run"
            ),
            {"dag": dag, "run": run_id},
        ).fetchall()
    engine.dispose()
    return {task_id: (state, queue, hostname) for task_id, state, queue, hostname in rows}


def report_files(s3, school_id: str, run_id: str) -> list[str]:
    """The run's report in the school's bucket: its files, without the run's id and the GX timestamps."""
    prefix = f"sisbridge-reports/{run_id.replace(':', '_')}/"
    listed = s3.list_objects_v2(Bucket=bucket(school_id), Prefix=prefix).get("Contents", [])
    # data_docs/validations/<suite>/<run id>/<validation time>/<page>.html
    return sorted(
        re.sub(r"^(data_docs/validations/[^/]+)/[^/]+/[^/]+/", r"\1/", item["Key"].removeprefix(prefix))
        for item in listed
    )


def disk_files(host: Host) -> list[str]:
    return sorted(str(p.relative_to(host.sisbridge_home)) for p in host.sisbridge_home.rglob("*"))


@dataclass
class Observed:
    """Everything the tests compare, gathered in one pass over the two weeks."""

    runs: dict = field(default_factory=dict)  # week -> (run state, run id)
    tasks: dict = field(default_factory=dict)  # week -> task_hosts()
    store: dict = field(default_factory=dict)  # (school, week) -> store_state()
    reports: dict = field(default_factory=dict)  # (school, week) -> report_files()
    disk_before_wipe: dict = field(default_factory=dict)  # host -> files in its SISBRIDGE_HOME
    reference: dict = field(default_factory=dict)  # week -> (exit code, summary, counts, output)
    lakes: dict = field(default_factory=dict)  # school -> lake_state()
    week2_changes: dict = field(default_factory=dict)  # what the generator changed in week 2
    seconds: dict = field(default_factory=dict)  # how long each phase took, for whoever reads -s


def sync_reference(ref: Path, env: dict, s3, week2: bytes, store_url: str, observed: Observed) -> None:
    """The reference school on one host that is never wiped: `sisbridge sync`, week 1 then week 2."""
    try:
        _sync_reference(ref, env, s3, week2, store_url, observed)
    except Exception:  # the tests report it; a thread's exception would only be printed
        observed.reference["error"] = traceback.format_exc()


def _sync_reference(ref: Path, env: dict, s3, week2: bytes, store_url: str, observed: Observed) -> None:
    started = time.monotonic()
    for week in (1, 2):
        if week == 2:
            s3.put_object(Bucket=bucket(REFERENCE), Key="roster.csv", Body=week2)
        done = subprocess.run(
            [str(SISBRIDGE), "sync", "--school", REFERENCE],
            cwd=ref / "cwd",
            env=env,
            capture_output=True,
            text=True,
            timeout=RUN_TIMEOUT_S,
        )
        output = done.stdout + done.stderr
        ok = done.returncode == 0 and done.stdout
        observed.seconds[f"reference week {week} done"] = time.monotonic() - started
        observed.reference[week] = (
            done.returncode,
            summary(done.stdout) if ok else None,
            counts(done.stdout) if ok else None,
            output,
        )
        observed.store[(REFERENCE, week)] = store_state(store_url, REFERENCE)
        if done.returncode != 0:
            return


@pytest.fixture(scope="module")
def observed(tmp_path_factory) -> Observed:
    base = tmp_path_factory.mktemp("hosts")
    pg, endpoint = airflow_env.servers["pg"], airflow_env.servers["s3"]
    create_databases(pg.url(), ["hosts_airflow", "hosts_store"])
    metadata_url, store_url = pg.url("hosts_airflow"), pg.url("hosts_store")
    for school_id in (SPLIT, REFERENCE):
        lakes.wipe(school_id)

    # The same two files for both schools.
    cluster_schools, ref = base / "cluster-schools", base / "reference"
    for folder in (cluster_schools, *(ref / name for name in ("schools", "home", "cwd", "tmp"))):
        folder.mkdir(parents=True)
    (cluster_schools / f"{SPLIT}.yaml").write_text(school_yaml(SPLIT), encoding="utf-8")
    (ref / "schools" / f"{REFERENCE}.yaml").write_text(school_yaml(REFERENCE), encoding="utf-8")
    school = load_school(cluster_schools / f"{SPLIT}.yaml")
    users = sample_roster.students(school, ROSTER_USERS)
    week1 = sample_roster.roster_csv(school, users)
    week2_users, observed_changes = sample_roster.second_week(users)
    week2 = sample_roster.roster_csv(school, week2_users)
    s3 = locals3.s3_client(endpoint)
    for school_id in (SPLIT, REFERENCE):
        locals3.create_bucket(s3, bucket(school_id))
        s3.put_object(Bucket=bucket(school_id), Key="roster.csv", Body=week1)

    started = time.monotonic()
    observed = Observed(week2_changes=observed_changes)
    connections = {
        "AIRFLOW_CONN_UCONNECT_USER_STORE": store_url,
        **{name: os.environ[name] for name in LAKE_CONNECTIONS},
    }
    # The reference runs meanwhile, in a plain shell: no AIRFLOW_* but the connections.
    ref_env = {
        **plain_env(ref / "home", ref / "sisbridge", ref / "schools", ref / "tmp"),
        **connections,
        f"AIRFLOW_CONN_SIS_S3_{REFERENCE.upper()}": locals3.aws_connection_uri(endpoint),
        # The transform as one task, as on the two hosts: the comparison is about disks, not dbt's tasks.
        "SISBRIDGE_DBT_MODEL_TASKS": "false",
    }
    reference = threading.Thread(
        target=sync_reference, args=(ref, ref_env, s3, week2, store_url, observed), daemon=True
    )
    reference.start()

    control = base / "control"
    control.mkdir()
    (control / "airflow" / "config").mkdir(parents=True)
    (control / "airflow" / "config" / "airflow_local_settings.py").write_text(LOCAL_SETTINGS)
    # The school's own DAG file, as deployed: the dag-processor parses it alone, not 64 shards of
    # other schools (about a minute of CPU that two cores would take from the runs).
    dags = control / "dags"
    dags.mkdir()
    shutil.copy(shard_file(SPLIT), dags)
    api_port = free_port()
    base_env = {name: value for name, value in os.environ.items() if not name.startswith("AIRFLOW")}
    env = {
        **service_env(control, metadata_url, api_port, executor="CeleryExecutor", base=base_env),
        **connections,
        f"AIRFLOW_CONN_SIS_S3_{SPLIT.upper()}": locals3.aws_connection_uri(endpoint),
        "AIRFLOW__CORE__DAGS_FOLDER": str(dags),
        "SISBRIDGE_HOME": str(control / "sisbridge"),
        "SISBRIDGE_SCHOOLS_DIR": str(cluster_schools),
        # The transform as one task (docs/scaling.md): seven task instances a run, not fifty.
        "SISBRIDGE_DBT_MODEL_TASKS": "false",
        # Only the runs the test triggers, and one pass of the dag-processor over the DAG files.
        "AIRFLOW__SCHEDULER__USE_JOB_SCHEDULE": "False",
        "AIRFLOW__DAG_PROCESSOR__MIN_FILE_PROCESS_INTERVAL": "3600",
    }
    stack = Stack(control, env)
    hosts = [Host(name, base / name) for name in HOSTS]
    dag = dag_id(SPLIT)
    try:
        env.update(celery_env(start_redis(control, stack), metadata_url))
        migrate(env)
        start_control_plane(stack)
        for host in hosts:
            host.fresh_disk()
            stack.start(f"worker-{host.name}", host.worker_args(), env=host.env(env))
        api = Api(f"http://127.0.0.1:{api_port}")
        wait_for(lambda: stack.check_alive() or api.healthy(), "the api-server", 300)
        wait_for(lambda: stack.check_alive() or parsed_dags(metadata_url, [dag]), "the DAG", 600, 3)
        observed.seconds["services up, DAG parsed"] = time.monotonic() - started

        for week in (1, 2):
            if week == 2:
                # Both machines lose their disks between the two weekly runs.
                stack.stop(*(f"worker-{host.name}" for host in hosts))
                for host in hosts:
                    observed.disk_before_wipe[host.name] = disk_files(host)
                    host.fresh_disk()
                    stack.start(f"worker-{host.name}", host.worker_args(), env=host.env(env))
                s3.put_object(Bucket=bucket(SPLIT), Key="roster.csv", Body=week2)
            triggered = time.monotonic()
            run_id = api.trigger(dag)
            wait_runs(api, stack, {dag: run_id}, RUN_TIMEOUT_S)
            observed.seconds[f"week {week} on two hosts"] = time.monotonic() - triggered
            observed.runs[week] = (api.run(dag, run_id)["state"], run_id)
            observed.tasks[week] = task_hosts(metadata_url, dag, run_id)
            observed.store[(SPLIT, week)] = store_state(store_url, SPLIT)
            observed.reports[(SPLIT, week)] = report_files(s3, SPLIT, run_id)
    finally:
        stack.stop()
    reference.join(timeout=2 * RUN_TIMEOUT_S)
    assert not reference.is_alive(), "the reference school's `sisbridge sync` did not finish"
    observed.seconds["reference done"] = time.monotonic() - started
    for school_id in (SPLIT, REFERENCE):
        observed.lakes[school_id] = lake_state(school_id)
    for week, run_id in enumerate(observed.lakes[REFERENCE]["run_ids"], start=1):
        observed.reports[(REFERENCE, week)] = report_files(s3, REFERENCE, run_id)
    print(observed.seconds)
    return observed


# The sync DAG's tasks in the DAG's order, and the host the policy gives each: every task runs on
# the other host than the task before it (`approve` is skipped when the guard passes).
EXPECTED_HOSTS = {
    "wait_for_file": "host-a",
    "load_raw": "host-b",
    "validate": "host-a",
    "transform": "host-b",
    "guard": "host-a",
    "approve": "host-b",
    "push": "host-a",
    "finalize": "host-b",
}


def assert_ran_on_both_hosts(tasks: dict[str, tuple]) -> None:
    ran = {task_id: hostname for task_id, (state, _, hostname) in tasks.items() if state == "success"}
    assert {task_id: state for task_id, (state, _, _) in tasks.items()} == {
        **{task_id: "success" for task_id in EXPECTED_HOSTS},
        "approve": "skipped",
    }
    assert {task_id: queue for task_id, (_, queue, _) in tasks.items()} == {
        task_id: host.replace("-", "_") for task_id, host in EXPECTED_HOSTS.items()
    }
    # The hostname each worker recorded when it ran the task.
    assert ran == {task_id: host for task_id, host in EXPECTED_HOSTS.items() if task_id != "approve"}


def assert_whole_report(observed: Observed, week: int) -> None:
    files = observed.reports[(SPLIT, week)]
    assert files == observed.reports[(REFERENCE, week)]
    assert {"summary.json", "findings.csv", "changes.csv", "data_docs/index.html"} <= set(files), files
    assert "data_docs/validations/uniqueness/sisbridge_roster-roster.html" in files, files


def assert_reference_succeeded(observed: Observed, week: int) -> None:
    assert week in observed.reference, observed.reference.get("error", "the reference did not run")
    code, head, _, output = observed.reference[week]
    assert code == 0, output[-3000:]
    assert head[0] == REFERENCE and head[2] == "succeeded", output[-3000:]


def test_the_tasks_of_one_run_on_two_hosts_without_a_shared_disk_give_a_one_host_runs_store(observed):
    state, run_id = observed.runs[1]
    assert state == "success"
    assert_ran_on_both_hosts(observed.tasks[1])
    assert_reference_succeeded(observed, 1)

    users, memberships = observed.store[(SPLIT, 1)]
    assert (users, memberships) == observed.store[(REFERENCE, 1)]
    assert len(users) == ROSTER_USERS and len(memberships) > ROSTER_USERS
    split, reference = observed.lakes[SPLIT], observed.lakes[REFERENCE]
    assert split["runs"][0] == reference["runs"][0]
    assert split["runs"][0]["status"] == "succeeded" and split["runs"][0]["creates"] == ROSTER_USERS
    assert split["applied"][0] == reference["applied"][0]
    # The school's report is whole although validate (Data Docs) and finalize ran on different hosts.
    assert_whole_report(observed, 1)


def test_wiping_sisbridge_home_between_two_weekly_runs_changes_nothing(observed):
    # Both hosts had used their disks (reports, dbt's target) before they were wiped.
    for host in HOSTS:
        assert any(name.startswith("reports/") for name in observed.disk_before_wipe[host]), host
    state, run_id = observed.runs[2]
    assert state == "success"
    assert_ran_on_both_hosts(observed.tasks[2])
    assert_reference_succeeded(observed, 2)

    # The same store,
    assert observed.store[(SPLIT, 2)] == observed.store[(REFERENCE, 2)]
    assert observed.store[(SPLIT, 2)] != observed.store[(SPLIT, 1)]
    split, reference = observed.lakes[SPLIT], observed.lakes[REFERENCE]
    # the same change set (week 2's: marts.user_changes, and what the push applied),
    assert split["changes"] == reference["changes"] and split["changes"]
    assert split["applied"][1] == reference["applied"][1] and split["applied"][1]
    # and the audit history of both runs, with the same counts.
    assert split["run_ids"][1] == run_id and len(split["run_ids"]) == 2
    assert split["runs"] == reference["runs"]
    assert [run["status"] for run in split["runs"]] == ["succeeded", "succeeded"]
    week2_counts = {key: split["runs"][1][key] for key in ("creates", "deactivations", "deletes")}
    truth = observed.week2_changes
    assert week2_counts == {"creates": truth["joined"], "deactivations": truth["left"], "deletes": 1}
    _, _, reference_counts, _ = observed.reference[2]
    assert {key: reference_counts[key] for key in week2_counts} == week2_counts
    assert_whole_report(observed, 2)
