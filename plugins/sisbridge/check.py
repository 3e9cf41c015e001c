"""`sisbridge check FILE`: the pipeline's parsing and checks on one file, with no side effects.

The file goes through the pipeline's own stages (`sisbridge.stages`: the loader, the identity checks,
the GX gate, and the dbt models whose warnings cover graduation, user types and communities) in a
throwaway warehouse under a temporary home; a summary is printed and, with `--out`, the report written.
"""

from __future__ import annotations

import dataclasses
import hashlib
import tempfile
from pathlib import Path

from sisbridge import audit, reports, stages, warehouse
from sisbridge.config import S3Location, SchoolConfig
from sisbridge.transform import environment

ACCEPTED_REASON = "accepted; sisbridge check pushes nothing"


def default_school_config() -> SchoolConfig:
    """A permissive config for `sisbridge check` without --school: identifier email, no communities."""
    return SchoolConfig(
        school_id="check",
        name="default checks, no --school given",
        s3=S3Location(bucket="sisbridge-check", key="roster.csv", aws_conn_id="sisbridge_check"),
        identifier="email",
        duplicates="reject_file",
    )


def check_file(path: Path, school: SchoolConfig, out_dir: Path | None) -> int:
    """Parse and check one file in a throwaway warehouse; print a summary; 0 accepted, 1 rejected.

    It runs the pipeline's own stages (`sisbridge.stages`: load, identity, gate, build) against a
    temporary home, so nothing else is touched, and prints the counts the pipeline would record.
    """
    path = Path(path)
    # The warehouse is a plain DuckDB file in the temporary home (no lake, no extensions: fast, and
    # nothing of the school's lake is touched). DBT_QUIET: a school running `sisbridge check` wants
    # the verdict, not dbt's progress lines.
    with tempfile.TemporaryDirectory(prefix="sisbridge-check-") as tmp:
        scratch = warehouse.scratch_settings(Path(tmp) / "warehouse").to_env()
        env = {"SISBRIDGE_HOME": tmp, warehouse.LAKE_ENV: scratch, "DBT_QUIET": "true"}
        with environment(env):
            run, findings = _check_in_warehouse(path, school, out_dir)
    print(_check_summary(path, school, run, findings, out_dir))
    return 0 if run["status"] == "dry_run" else 1


def _check_in_warehouse(path: Path, school: SchoolConfig, out_dir: Path | None) -> tuple[dict, list]:
    """The stages of a run, up to the change set (a check has no store to compare with)."""
    run_id = "check"
    meta = {"file_key": path.name, "file_sha256": _sha256(path), "file_bytes": path.stat().st_size}
    with audit.warehouse(school.school_id) as con:
        stages.start(con, school, run_id, **meta)
        result = stages.record(
            con, run_id, stages.load(con, school, run_id, path, file_name=path.name, file_meta=meta)
        )
        if not result.stop:
            stages.record(con, run_id, stages.identity(con, school, path.name))
            result = stages.record(con, run_id, stages.gate(con, school, run_id, report_dir=out_dir))
    if not result.stop:
        stages.build(school, run_id)
    with audit.warehouse(school.school_id) as con:
        closing = stages.StageResult("check", fields={"finished_at": audit.utcnow()})
        if not result.stop:
            stages.record(con, run_id, stages.built(con, run_id))
            # A check knows nothing of what was applied before, so it has no change set to report.
            con.execute("drop table if exists marts.user_changes")
            closing = dataclasses.replace(closing, status="dry_run", reason=ACCEPTED_REASON)
        stages.record(con, run_id, closing)
        run = audit.get_run(con, run_id)
        findings = audit.findings_of_run(con, run_id)
        if out_dir is not None:
            reports.write_reports(con, school, run_id, Path(out_dir))
    return run, findings


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _check_summary(path: Path, school: SchoolConfig, run: dict, findings: list, out_dir: Path | None) -> str:
    verdict = "ACCEPTED" if run["status"] == "dry_run" else "REJECTED"
    lines = [
        f"{path.name}: {verdict}",
        f"school: {school.school_id} ({school.name}); identifier {school.identifier}, "
        f"duplicates {school.duplicates}, max_rejected_pct {school.thresholds.max_rejected_pct:g}",
        f"encoding {run['file_encoding'] or 'unknown'}; {run['rows_in_file']} data records: "
        f"{run['rows_accepted'] or 0} accepted, {run['rows_rejected'] or 0} rejected, "
        f"{run['rows_warned'] or 0} with warnings",
        reports.log_summary(findings),
    ]
    if out_dir is not None:
        lines.append(f"report written to {out_dir}")
    return "\n".join(lines)
