"""What each task of a school's DAG does, one function per task.

Each function opens the school's warehouse (its DuckLake, sisbridge.warehouse), runs its stages
(`sisbridge.stages`, which `sisbridge check` composes too), records each stage's result, and returns
a small `Outcome` (XCom-sized: ids and counts, never data). A stage that ends the run early returns
`stop=True`; the DAG turns that into a skip, and `finalize` still writes the audit row and reports.
"""

from __future__ import annotations

import logging
import shutil
from dataclasses import asdict, dataclass, field, replace

from sisbridge import audit, fleet, guards, landing, review, stages, xcom_keys
from sisbridge.config import (
    SchoolConfig,
    config_sha256,
    load_school,
    reports_dir,
    safe_component,
    schools_dir,
    sisbridge_home,
)

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Outcome:
    stop: bool = False
    status: str | None = None
    reason: str | None = None
    counts: dict = field(default_factory=dict)
    # What a reviewer is asked (sisbridge.review.approval_request), when the run waits for one.
    approval: dict | None = None

    def as_xcom(self) -> dict:
        return asdict(self)


def school_config(school_id: str) -> SchoolConfig:
    return load_school(schools_dir() / f"{safe_component(school_id)}.yaml")


def _outcome(result: stages.StageResult) -> Outcome:
    if result.stop:
        return Outcome(stop=True, status=result.status, reason=result.reason)
    return Outcome(counts=result.counts)


def landing_dir(school_id: str, run_id: str):
    return sisbridge_home() / "landing" / safe_component(school_id) / safe_component(run_id)


def load_raw(school_id: str, run_id: str, sensed: dict | None, s3=None, force: bool = False) -> Outcome:
    """Pin the sensed object version, skip content already processed, and load it into `raw.*`.

    Content already processed is read again when the school's config changed since, or when `force`.
    The run's row is committed first, so that a failing load still leaves it for `finalize`; the
    rest of the stage's writes are one lake commit.
    """
    school = school_config(school_id)
    s3 = s3 or landing.s3_client(school)
    config_hash = config_sha256(school)
    with audit.warehouse(school_id) as con:
        stages.start(con, school, run_id, config_sha256=config_hash)
        with audit.transaction(con):
            outcome = _load(con, school, run_id, sensed, s3, force, config_hash)
    shutil.rmtree(landing_dir(school_id, run_id), ignore_errors=True)
    return outcome


def _load(con, school: SchoolConfig, run_id: str, sensed: dict | None, s3, force: bool, config_hash: str):
    """`load_raw`'s stages (pin, load, drift), inside its one transaction."""
    school_id, bucket, key = school.school_id, school.s3.bucket, school.s3.key
    last = landing.last_processed_file(con, before_run=run_id)
    read_again = _read_again(last, config_hash, force)
    try:
        pinned = landing.pin_file(
            s3,
            bucket,
            key,
            landing_dir(school_id, run_id),
            sensed=sensed,
            max_file_mb=school.max_file_mb,
            school_id=school_id,
            known=None if read_again else last,
        )
    except landing.FileTooLarge as exc:
        too_large = stages.ended(
            stages.LOAD_STAGE, "rejected", exc.finding.message, [exc.finding], file_key=key
        )
        return _outcome(stages.record(con, run_id, too_large))
    pin = stages.StageResult("pin", fields=pinned.audit_fields())
    same_content = last is not None and last["file_sha256"] == pinned.sha256
    if same_content and read_again:
        log.info("%s was processed in run %s; read again: %s", key, last["run_id"], read_again)
        pin = replace(pin, details={"read_again": read_again})
    stages.record(con, run_id, pin)
    if same_content and not read_again:
        # Counted with this run's pinned file.
        since, runs = landing.unchanged_since(con, pinned.sha256)
        reason = f"{key} has not changed since {since:%Y-%m-%d %H:%M} UTC ({runs} runs)"
        return _outcome(stages.record(con, run_id, stages.ended("unchanged", "unchanged", reason)))
    loaded = stages.record(
        con,
        run_id,
        stages.load(con, school, run_id, pinned.local_path, file_name=key, file_meta=pinned.audit_fields()),
    )
    if not loaded.stop:
        stages.record(con, run_id, stages.drift(con, school, run_id, loaded.fields["header_columns"], key))
    return _outcome(loaded)


def _read_again(last: dict | None, config_hash: str, force: bool) -> str | None:
    """Why content already processed is processed again (None: it is not)."""
    if force:
        return "forced"
    # A run recorded before config hashes were kept counts as made with the same config.
    if last is not None and last["config_sha256"] not in (None, config_hash):
        return f"the school's config changed since run {last['run_id']}"
    return None


def validate(school_id: str, run_id: str, s3=None) -> Outcome:
    """Run the Great Expectations gate; a file-level failure ends the run as `rejected`.

    The Data Docs it renders go to the school's bucket from here: `finalize` may run on another
    worker, whose disk never had them.
    """
    from sisbridge import reports

    school = school_config(school_id)
    out_dir = reports_dir(school_id, run_id)
    with audit.warehouse(school_id) as con, audit.transaction(con):
        # Recorded first, so the quality gate counts these row errors in max_rejected_pct.
        stages.record(con, run_id, stages.identity(con, school, school.s3.key))
        gate = stages.record(con, run_id, stages.gate(con, school, run_id, report_dir=out_dir))
        log.info("%s", reports.log_summary(audit.findings_of_run(con, run_id)))
    _upload_reports(reports.data_docs_files(out_dir), school, run_id, out_dir, s3)
    return _outcome(gate)


def transform(school_id: str, run_id: str) -> None:
    """`dbt build` of the school's models and data tests (the DAG's one-task transform)."""
    stages.build(school_config(school_id), run_id)


def guard(school_id: str, run_id: str, *, interactive: bool = False, s3=None) -> Outcome:
    """Record the transform's warnings, count the change set, and apply the onboarding and thresholds.

    A held run, or a school's onboarding review with a change set, waits for a reviewer when
    `interactive`: the outcome carries the request (`Outcome.approval`), with a sample of the changes
    and links to the reports, which are written and uploaded now. Otherwise a held run stops as `held` and an
    onboarding review as `dry_run`.
    """
    from sisbridge import reports

    school = school_config(school_id)
    with audit.warehouse(school_id) as con, audit.transaction(con):
        stages.record(con, run_id, stages.built(con, run_id))
        approved = audit.auto_sync_approval(con) is not None
        decision = guards.evaluate(con, school, auto_sync_approved=approved)
        result = stages.record(con, run_id, _guard_result(decision, interactive))
        if result.stop:
            return _outcome(result)
        if result.status is None:  # the change set goes to the store
            return Outcome(counts=decision.counts.as_audit())
        kind = result.details["review_kind"]
        sample = review.change_sample(con)
        out_dir = reports_dir(school_id, run_id)
        paths = reports.write_reports(con, school, run_id, out_dir)
    keys = _upload_reports(paths, school, run_id, out_dir, s3)
    uploaded = {key.rsplit("/", 1)[-1] for key in keys}
    links = {
        name: review.reports_url(school_id, run_id, name) for name in review.REPORT_LINKS if name in uploaded
    }
    if links:
        links["all reports of the run"] = review.reports_url(school_id, run_id)
    log.info("Run %s of %s waits for a reviewer: %s", run_id, school_id, "; ".join(decision.reasons))
    request = review.approval_request(
        school, run_id, decision.counts, decision.reasons, links, kind=kind, sample=sample
    )
    return Outcome(status="held", reason=result.reason, counts=decision.counts.as_audit(), approval=request)


def _guard_result(decision: guards.GuardDecision, interactive: bool) -> stages.StageResult:
    """The guard's decision as a stage result: push, end the run, or wait for a reviewer."""
    fields = {"guard_reasons": list(decision.reasons), **decision.counts.as_audit()}
    result = stages.StageResult("guard", fields=fields)
    if decision.action == guards.DRY_RUN or (decision.action == guards.REVIEW and not interactive):
        return replace(result, status="dry_run", reason=decision.reasons[0], stop=True)
    if decision.action == guards.HOLD and not interactive:
        return replace(result, status="held", reason="; ".join(decision.reasons), stop=True)
    if decision.action in (guards.HOLD, guards.REVIEW):
        kind = review.ONBOARDING_KIND if decision.action == guards.REVIEW else review.HOLD_KIND
        reason = "waiting for a reviewer: " + "; ".join(decision.reasons)
        return replace(result, status="held", reason=reason, details={"review_kind": kind})
    return result


def _is_onboarding_review(run: dict) -> bool:
    return audit.run_details(run).get("review_kind") == review.ONBOARDING_KIND


def push(school_id: str, run_id: str, engine=None, answer: dict | None = None) -> Outcome:
    """Apply the change set to the user store, then snapshot the new applied state for auditors.

    `answer` is the approval task's result when a reviewer released a held run or approved a school's
    first file (which turns its auto sync on).
    """
    from sisbridge import transform, userstore

    school = school_config(school_id)
    outcome = review.review_outcome(answer, school)
    enables_auto_sync = None
    if outcome is not None:
        with audit.warehouse(school_id) as con, audit.transaction(con):
            # No longer held: a failing push must end the run as failed, not as held.
            released = stages.StageResult("approve", details={"review": outcome[1]}, status="running")
            stages.record(con, run_id, released)
            onboarding = _is_onboarding_review(audit.get_run(con, run_id))
        if outcome[0] and onboarding:
            enables_auto_sync = review.reviewer(answer)
    # The snapshot step needs dbt: importing it overlaps with the push, which mostly waits on I/O.
    transform.import_dbt_in_background()
    engine = engine or userstore.engine_from_connection()
    userstore.ensure_schema(engine)
    with audit.warehouse(school_id) as con:
        result = userstore.push(con, engine, school, run_id)
    transform.run_snapshot(school, run_id)
    counts = {key: getattr(result, key) for key in guards.COUNT_KEYS}
    with audit.warehouse(school_id) as con, audit.transaction(con):
        stages.record(con, run_id, stages.StageResult("push", fields=counts, status="succeeded"))
        if enables_auto_sync is not None:
            approved_by, approved_at = enables_auto_sync[0], _timestamp(enables_auto_sync[1])
            audit.record_auto_sync_approval(con, run_id, approved_by, approved_at)
    if enables_auto_sync is not None:
        log.info("%s approved %s's first file (run %s): auto sync is on", approved_by, school_id, run_id)
        fleet.publish_auto_sync(school_id, run_id, approved_by, approved_at)
    return Outcome(status="succeeded", counts=counts)


def _timestamp(text: str):
    """A reviewer's answer time (ISO 8601, maybe with an offset) as a naive UTC timestamp."""
    from datetime import UTC, datetime

    try:
        moment = datetime.fromisoformat(text)
    except ValueError:
        return audit.utcnow()
    return moment.astimezone(UTC).replace(tzinfo=None) if moment.tzinfo else moment


def record_failure(school_id: str, run_id: str, task_id: str, error: BaseException | None) -> None:
    """Keep why a task failed as the run's `status_reason`, for `finalize`, the report and the notifiers."""
    with audit.warehouse(school_id) as con:
        run = audit.get_run(con, run_id)
        if run is not None and run["status"] == "running":
            audit.upsert_run(con, run_id, status_reason=f"{task_id} failed: {error or 'see the Airflow log'}")


def finalize(school_id: str, run_id: str, s3=None, answer: dict | None = None) -> dict:
    """Close the run's audit row and write its reports, whatever happened upstream.

    A run still marked `running` had an upstream failure: it is closed as `failed`. A held run that
    the reviewer rejected (or left unanswered) ends as `rejected_by_reviewer`.
    """
    from sisbridge import reports

    school = school_config(school_id)
    out_dir = reports_dir(school_id, run_id)
    with audit.warehouse(school_id) as con:
        # The run's last write, one commit: its lake snapshot is tagged with the run id (time travel
        # by run).
        with audit.transaction(con, run_id=run_id, message=f"run {run_id} of {school_id} finished"):
            run = audit.get_run(con, run_id)
            stages.record(con, run_id, _closing(run, school, answer))
            # Counted with this run's closing status.
            stale = guards.stale_file_message(school, guards.unchanged_runs(con, run_id))
            if stale is not None:
                log.warning("Stale file: %s", stale)
                stages.record(con, run_id, stages.StageResult("stale_file", details={"stale_file": stale}))
        paths = reports.write_reports(con, school, run_id, out_dir)
        run = audit.get_run(con, run_id)
    _upload_reports(paths, school, run_id, out_dir, s3)
    log.info(
        "Run %s of %s: %s (%s). Reports: %s",
        run_id,
        school_id,
        run["status"],
        run["status_reason"] or "ok",
        out_dir,
    )
    summary = {key: run[key] for key in ("status", "status_reason", *audit.RUN_COUNT_COLUMNS)}
    return {**summary, xcom_keys.STALE_FILE_FIELD: stale}


def _closing(run: dict | None, school: SchoolConfig, answer: dict | None) -> stages.StageResult:
    """How `finalize` closes the run: the status it ends with (when not already final) and its finish time."""
    fields = {"finished_at": audit.utcnow()}
    if run is None:
        reason = (
            f"no file at s3://{school.s3.bucket}/{school.s3.key} by the sensor's timeout; "
            "the school has not uploaded a roster"
        )
        log.warning("Stale file: %s: %s", school.school_id, reason)
        fields |= {"school_id": school.school_id, "started_at": audit.utcnow()}
        return stages.StageResult("finalize", fields=fields, status="unchanged", reason=reason)
    if run["status"] == "running":
        reason = run["status_reason"] or "a task of the run failed; see the Airflow log"
        return stages.StageResult("finalize", fields=fields, status="failed", reason=reason)
    outcome = review.review_outcome(answer, school) if run["status"] == "held" else None
    if outcome is not None and not outcome[0]:
        reason = outcome[1]
        if _is_onboarding_review(run):
            reason += f"; {school.name} stays in onboarding review"
        return stages.StageResult(
            "finalize",
            fields=fields,
            details={"review": reason},
            status="rejected_by_reviewer",
            reason=reason,
        )
    return stages.StageResult("finalize", fields=fields)


def _upload_reports(paths, school: SchoolConfig, run_id: str, out_dir, s3=None) -> list[str]:
    """Upload report files of `out_dir` to the school's bucket, under the run's report folder.

    Returns the object keys; none when the upload failed, which is logged and never fails the run.
    """
    from sisbridge import reports

    if not paths:
        return []
    try:
        return reports.upload_reports(
            paths, s3 or landing.s3_client(school), school.s3.bucket, run_id, base=out_dir
        )
    except Exception as exc:  # the reports are on disk; a school-bucket hiccup must not fail the run
        log.warning("Could not upload the reports to s3://%s/sisbridge-reports/: %s", school.s3.bucket, exc)
        return []
