"""`sisbridge sync` and `rollback` from a plain shell: no Airflow variable, an empty HOME, any folder."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from sisbridge import audit, locals3, warehouse
from tests.cli.cli_helpers import BIN, STUDENTS, counts, roster, summary, upload

pytestmark = pytest.mark.e2e

EMAILS = sorted(student[2] for student in STUDENTS)


def test_sync_and_rollback_with_connections_in_sisbridges_default_metadata_db(shell, s3_endpoint):
    school_id = "plain_metadb"
    shell.sisbridge_home = shell.root / "sisbridge"  # its own metadata DB, set up below
    shell.env["SISBRIDGE_HOME"] = str(shell.sisbridge_home)
    shell.write_school(school_id)
    upload(s3_endpoint, school_id, roster())
    # What a user who configured Airflow has: the connections in the metadata DB that sisbridge
    # uses by default, `$SISBRIDGE_HOME/airflow`, added with Airflow's own command beforehand.
    setup = {"AIRFLOW_HOME": str(shell.sisbridge_home / "airflow")}
    for args in (
        ["db", "migrate"],
        ["connections", "add", f"sis_s3_{school_id}", "--conn-json", locals3.aws_connection_uri(s3_endpoint)],
        ["connections", "add", "uconnect_user_store", "--conn-uri", shell.store_uri()],
    ):
        done = shell.run(*args, command=BIN / "airflow", env=setup)
        assert done.returncode == 0, done.stdout + done.stderr

    synced = shell.sync(school_id)

    assert (synced.returncode, synced.stderr) == (0, ""), synced.stdout + synced.stderr
    synced_school, run_id, status = summary(synced.stdout)
    assert (synced_school, status) == (school_id, "succeeded")
    assert run_id.startswith("manual__")
    synced_counts = counts(synced.stdout)
    assert (synced_counts["rows_in_file"], synced_counts["rows_accepted"], synced_counts["creates"]) == (
        20,
        20,
        20,
    )
    assert shell.store_users(school_id) == EMAILS

    rolled_back = shell.run("rollback", "--school", school_id, "--run", run_id)

    assert (rolled_back.returncode, rolled_back.stderr) == (0, ""), rolled_back.stdout + rolled_back.stderr
    assert rolled_back.stdout == (
        f"rolled back run {run_id} of {school_id}: 0 users restored, 0 recreated, 20 removed; "
        f"audit row rollback__{run_id} (the run is now rolled_back)\n"
    )
    assert shell.store_users(school_id) == []
    shell.assert_home_untouched()


@pytest.mark.parametrize("airflow_home", [False, True], ids=["connections-only", "and-AIRFLOW_HOME"])
def test_sync_and_rollback_from_a_shell_that_exports_connection_variables(shell, s3_endpoint, airflow_home):
    school_id = f"plain_env_{int(airflow_home)}"
    shell.write_school(school_id)
    upload(s3_endpoint, school_id, roster())
    connections = shell.connection_env(school_id, s3_endpoint)
    if airflow_home:  # an Airflow home of the user's own, with no DAGs folder or database set up yet
        connections["AIRFLOW_HOME"] = str(shell.root / "my-airflow")
    assert sorted(name for name in {**shell.env, **connections} if name.startswith("AIRFLOW")) == sorted(
        [f"AIRFLOW_CONN_SIS_S3_{school_id.upper()}", "AIRFLOW_CONN_UCONNECT_USER_STORE"]
        + (["AIRFLOW_HOME"] if airflow_home else [])
    )

    synced = shell.sync(school_id, env=connections)

    assert (synced.returncode, synced.stderr) == (0, ""), synced.stdout + synced.stderr
    _, run_id, status = summary(synced.stdout)
    assert status == "succeeded"
    assert counts(synced.stdout)["creates"] == 20
    assert shell.store_users(school_id) == EMAILS
    log = Path(synced.stdout.splitlines()[2].removeprefix("  log: "))
    assert log.parent == shell.sisbridge_home / "logs"
    assert "DagRun Finished" in log.read_text(encoding="utf-8")

    rolled_back = shell.run("rollback", "--school", school_id, "--run", run_id, env=connections)

    assert (rolled_back.returncode, rolled_back.stderr) == (0, ""), rolled_back.stdout + rolled_back.stderr
    assert f"rolled back run {run_id} of {school_id}:" in rolled_back.stdout
    assert shell.store_users(school_id) == []
    assert (shell.root / "my-airflow" / "airflow.db").is_file() == airflow_home
    shell.assert_home_untouched()


@pytest.mark.parametrize(
    "args", [["sync", "--school", "nosuch"], ["rollback", "--school", "nosuch", "--run", "r1"]]
)
def test_an_unknown_school_is_one_line_that_names_the_schools_folder(shell, args):
    shell.write_school("plain_known")

    result = shell.run(*args)

    assert (result.returncode, result.stdout) == (2, "")
    assert result.stderr.splitlines() == [
        f"sisbridge: no school 'nosuch': there is no nosuch.yaml in {shell.schools} "
        "(SISBRIDGE_SCHOOLS_DIR; schools there: plain_known)"
    ]
    shell.assert_home_untouched()


def test_an_auditor_reading_the_embedded_lake_neither_blocks_nor_fails_a_sync(
    shell, s3_endpoint, monkeypatch
):
    # A user with no `sisbridge_lake` connection gets the embedded lake under SISBRIDGE_HOME.
    school_id = "plain_audited"
    shell.write_school(school_id)
    upload(s3_endpoint, school_id, roster())
    monkeypatch.setenv("SISBRIDGE_HOME", str(shell.sisbridge_home))
    embedded = warehouse.embedded_settings()
    con = warehouse.connect(school_id, lake=embedded)
    audit.ensure_schema(con)  # the lake exists, as after any earlier run
    con.close()
    warehouse.release(school_id)

    # The auditor (this process) holds a transaction open for the whole sync (another process).
    with warehouse.connect(school_id, read_only=True, lake=embedded) as auditor:
        auditor.execute("begin")
        assert auditor.execute("select count(*) from audit.sync_runs").fetchone() == (0,)
        synced = shell.sync(school_id, env=shell.connection_env(school_id, s3_endpoint))
        assert auditor.execute("select count(*) from audit.sync_runs").fetchone() == (0,)
        auditor.execute("commit")

    assert (synced.returncode, synced.stderr) == (0, ""), synced.stdout + synced.stderr
    assert summary(synced.stdout)[2] == "succeeded"
    assert shell.store_users(school_id) == EMAILS
    school_dir = shell.sisbridge_home / "lake" / "schools" / school_id
    # The lake is the school's SQLite catalog (a run this small is inlined in it) and its data folder.
    assert (school_dir / "catalog.sqlite").is_file() and (school_dir / "data").is_dir()
    with warehouse.connect(school_id, read_only=True, lake=embedded) as auditor:
        assert auditor.execute("select status, creates from audit.sync_runs").fetchall() == [
            ("succeeded", 20)
        ]
        assert auditor.execute("select count(*) from marts.users").fetchone() == (20,)
    shell.assert_home_untouched()


def test_a_run_that_fails_before_its_audit_row_exits_non_zero_with_its_summary(shell, s3_endpoint):
    school_id = "plain_broken_lake"
    shell.write_school(school_id)
    upload(s3_endpoint, school_id, roster())
    # The school's embedded lake has a catalog that is not a database: no task can open it.
    school_dir = shell.sisbridge_home / "lake" / "schools" / school_id
    school_dir.mkdir(parents=True)
    (school_dir / "catalog.sqlite").write_bytes(
        b"this is not a SQLite database, but long enough to look at" * 4
    )

    failed = shell.sync(school_id, env=shell.connection_env(school_id, s3_endpoint))

    assert (failed.returncode, failed.stderr) == (1, ""), failed.stdout + failed.stderr
    failed_school, run_id, status = summary(failed.stdout)
    assert (failed_school, run_id[:8]) == (school_id, "manual__")
    reason = (
        rf"the DAG run failed and its warehouse cannot be read: cannot open the warehouse of "
        rf"'{school_id}' \(embedded DuckLake \(SQLite catalogs\) in .*\): .*not a database.*"
    )
    assert re.fullmatch(rf"failed \({reason}; failed tasks: finalize, load_raw\)", status), status
    assert set(counts(failed.stdout).values()) == {0}
    assert "Traceback" not in failed.stdout
    log = Path(failed.stdout.splitlines()[2].removeprefix("  log: "))
    assert "not a database" in log.read_text(encoding="utf-8")
    shell.assert_home_untouched()


@pytest.mark.parametrize(
    "args",
    [["sync", "--school", "plain_broken"], ["rollback", "--school", "plain_broken", "--run", "r1"], ["demo"]],
)
def test_an_internal_error_is_one_line_naming_the_failure_and_the_log_with_its_traceback(shell, args):
    shell.write_school("plain_broken")
    not_a_folder = shell.root / "not-a-folder"
    not_a_folder.write_text("", encoding="utf-8")

    # SISBRIDGE_HOME (the Airflow home, the warehouse, the logs) cannot be created.
    result = shell.run(*args, env={"SISBRIDGE_HOME": str(not_a_folder / "home")})

    assert (result.returncode, result.stdout) == (3, "")
    [line] = result.stderr.splitlines()
    match = re.fullmatch(
        rf"sisbridge {args[0]}: internal error: NotADirectoryError: \[Errno 20\] Not a directory: "
        rf"'{re.escape(str(not_a_folder))}/home[^']*'; the traceback is in (\S+)",
        line,
    )
    assert match, line
    log = Path(match[1])
    assert log.parent == shell.root / "tmp" / "sisbridge-logs"  # where SISBRIDGE_HOME could not be
    text = log.read_text(encoding="utf-8")
    assert text.startswith("Traceback (most recent call last):")
    assert text.rstrip().splitlines()[-1].startswith("NotADirectoryError: [Errno 20] Not a directory")
    shell.assert_home_untouched()


def test_check_reports_an_internal_error_in_one_line(shell):
    path = shell.root / "roster.csv"
    path.write_bytes(roster())

    # DuckDB refuses the warehouse's memory limit: the check cannot open its throwaway warehouse.
    result = shell.run("check", str(path), env={"SISBRIDGE_DUCKDB_MEMORY_LIMIT": "lots"})

    assert (result.returncode, result.stdout) == (3, "")
    [line] = result.stderr.splitlines()
    match = re.fullmatch(
        r"sisbridge check: internal error: ParserException: Parser Error: Memory must have a number "
        r"\(e\.g\. 1GB\); the traceback is in (\S+)",
        line,
    )
    assert match, line
    log = Path(match[1])
    assert log.parent == shell.sisbridge_home / "logs"
    assert "Traceback (most recent call last):" in log.read_text(encoding="utf-8")
    shell.assert_home_untouched()
