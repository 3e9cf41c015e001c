"""The pipeline's stages, written once, as functions over an open warehouse connection.

The DAG's tasks (`sisbridge.pipeline`) and `sisbridge check` (`sisbridge.check`) compose the same
stages, in this order:
- `load`: the file into `raw.*`; the file's encoding, header and `rows_in_file`; findings `load`.
- `drift`: the header against the last accepted run's; findings `drift` (a warning).
- `identity`: `raw.roster` against `state.applied_users`; findings `identity`.
- `gate`: the GX suites over `raw.*`, counting the findings so far; findings `quality`;
  `rows_rejected` and `rows_warned`; an accepted file's school config into `config.*`.
- `build`: `dbt build` from `raw.*`, `config.*` and `state.*` into `staging.*`, `intermediate.*` and
  `marts.*` (Python reads only the marts).
- `built`: dbt's row findings (`marts.roster_findings`, findings `transform`); `rows_accepted` and
  `rows_warned`.

A stage returns one `StageResult`: the findings it made, the run's columns it sets, what it notes in
the run's `details`, and whether the run ends there. `record` writes that result into
`audit.rejected_rows` and `audit.sync_runs`: one call per stage. A stage whose findings are written
by SQL (the GX gate's, dbt's) records them itself and returns no findings.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path

from sisbridge import audit, guards
from sisbridge.audit import Finding
from sisbridge.config import SchoolConfig

log = logging.getLogger(__name__)

LOAD_STAGE = "load"


@dataclass(frozen=True)
class StageResult:
    """What one stage found and decided, for `record`."""

    stage: str
    # The findings to record under `stage`, replacing a retried attempt's (an empty tuple clears
    # them); None records none: the stage wrote them itself, or makes none.
    findings: tuple[Finding, ...] | None = None
    fields: dict = field(default_factory=dict)  # audit.sync_runs columns the stage sets
    details: dict = field(default_factory=dict)  # entries for the run's details JSON
    status: str | None = None  # the run's status from this stage on (with `reason`)
    reason: str | None = None
    stop: bool = False  # the run ends at this stage
    counts: dict = field(default_factory=dict)  # for the task's XCom (ids and counts)


def ended(stage: str, status: str, reason: str, findings=None, **fields) -> StageResult:
    """The result of a stage that ends the run with `status` (and, given `findings`, records them)."""
    recorded = None if findings is None else tuple(findings)
    return StageResult(stage=stage, findings=recorded, fields=fields, status=status, reason=reason, stop=True)


def record(con, run_id: str, result: StageResult) -> StageResult:
    """Write a stage's result: its findings (replacing a retried attempt's) and the run's row, once."""
    if result.findings is not None:
        audit.record_findings(con, run_id, result.stage, result.findings)
    fields = dict(result.fields)
    if result.status is not None:
        fields |= {"status": result.status, "status_reason": result.reason}
    if result.details:
        fields["details"] = {**audit.run_details(audit.get_run(con, run_id)), **result.details}
    if fields:
        audit.upsert_run(con, run_id, **fields)
    if result.stop:
        log.info("Run %s ends at %s as %s: %s", run_id, result.stage, result.status, result.reason)
    return result


def start(con, school: SchoolConfig, run_id: str, **fields) -> None:
    """The run's row in `audit.sync_runs`, before any stage."""
    audit.upsert_run(
        con, run_id, school_id=school.school_id, started_at=audit.utcnow(), status="running", **fields
    )


def load(
    con, school: SchoolConfig, run_id: str, path: Path, *, file_name: str, file_meta: dict
) -> StageResult:
    """Read the file into `raw.*` (sisbridge.loading); a file-level error ends the run as rejected."""
    from sisbridge import loading

    loaded = loading.load_file(path, school, con, file_name=file_name, run_id=run_id, file_meta=file_meta)
    fields = {
        "file_encoding": loaded.encoding,
        "header_columns": list(loaded.header),
        "rows_in_file": loaded.rows_in_file,
    }
    counts = {"rows_in_file": loaded.rows_in_file, "rows_loaded": loaded.rows_loaded}
    if loaded.rejected:
        first_error = next(f for f in loaded.findings if f.severity == "error")
        return ended(LOAD_STAGE, "rejected", first_error.message, loaded.findings, **fields, rows_accepted=0)
    return StageResult(LOAD_STAGE, tuple(loaded.findings), fields, counts=counts)


def drift(con, school: SchoolConfig, run_id: str, header: list[str], file_name: str) -> StageResult:
    """A warning when the header differs from the last accepted run's (never ends the run)."""
    finding = guards.schema_drift(school, header, guards.previous_header(con, run_id), file_name)
    if finding is None:
        return StageResult(guards.DRIFT_STAGE, ())
    log.warning("Schema drift: %s", finding.message)
    return StageResult(guards.DRIFT_STAGE, (finding,), details={"schema_drift": finding.value})


def identity(con, school: SchoolConfig, file_name: str) -> StageResult:
    """Row errors for emails that would move between users (recorded before the gate counts them)."""
    return StageResult(guards.IDENTITY_STAGE, tuple(guards.identity_findings(con, school, file_name)))


def gate(con, school: SchoolConfig, run_id: str, *, report_dir: Path | None = None) -> StageResult:
    """The GX quality gate over `raw.*`; a file-level failure ends the run as rejected.

    An accepted file's school config goes to `config.*`, which the build reads.
    """
    from sisbridge import quality, transform

    result = quality.validate(con, school, run_id, report_dir=report_dir)
    counts = {"rows_rejected": result.rows_rejected, "rows_warned": result.rows_warned}
    if not result.accepted:
        reason = "; ".join(f.message for f in result.file_errors)
        return ended(quality.STAGE, "rejected", reason, **counts, rows_accepted=0)
    transform.write_config_tables(con, school)
    return StageResult(quality.STAGE, fields=counts, counts=counts)


def build(school: SchoolConfig, run_id: str) -> None:
    """`dbt build` of the school's models and data tests (dbt opens the warehouse itself)."""
    from sisbridge import transform

    transform.run_build(school, run_id)


def built(con, run_id: str) -> StageResult:
    """Record dbt's row findings, then the run's accepted and warned rows."""
    from sisbridge import quality, transform

    transform.record_transform_findings(con, run_id)
    fields = {"rows_accepted": rows_accepted(con, run_id), "rows_warned": quality.rows_warned(con, run_id)}
    return StageResult(transform.TRANSFORM_STAGE, fields=fields, counts=fields)


def rows_accepted(con, run_id: str) -> int:
    """The file's accepted records: every data record but those with a row-level error.

    They are the records dbt turns into users (its model `int_users_accepted`); Python reads the
    count from the run's own row rather than from an intermediate model.
    """
    run = audit.get_run(con, run_id)
    return run["rows_in_file"] - run["rows_rejected"]
