"""`sisbridge check FILE`: the pipeline's parsing and checks on one file, with no side effects.

The file goes through the pipeline's own stages (the loader, the GX gate of `sisbridge.quality`,
and the dbt models whose warnings cover graduation, user types and communities) in a throwaway
warehouse under a temporary home; a summary is printed and, with `--out`, the report written.
"""

from __future__ import annotations

import dataclasses
import hashlib
import tempfile
from pathlib import Path

from sisbridge import audit, loading, quality, reports, transform, warehouse
from sisbridge.config import S3Location, SchoolConfig
from sisbridge.transform import environment


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

    It runs the pipeline's own stages (loader, GX gate, and the dbt models whose warnings cover
    graduation, user types and communities) against a temporary home, so nothing else is touched.
    """
    path = Path(path)
    # The warehouse is a plain DuckDB file in the temporary home (no lake, no extensions: fast, and
    # nothing of the school's lake is touched). DBT_QUIET: a school running `sisbridge check` wants
    # the verdict, not dbt's progress lines.
    with tempfile.TemporaryDirectory(prefix="sisbridge-check-") as tmp:
        scratch = warehouse.scratch_settings(Path(tmp) / "warehouse").to_env()
        env = {"SISBRIDGE_HOME": tmp, warehouse.LAKE_ENV: scratch, "DBT_QUIET": "true"}
        with environment(env):
            loaded, result, accepted, findings = _check_in_warehouse(path, school, out_dir)
    rows_accepted = loaded.rows_in_file - result.rows_rejected if accepted else 0
    print(_check_summary(path, school, loaded, result, rows_accepted, findings, out_dir))
    return 0 if accepted else 1


def _check_in_warehouse(path: Path, school: SchoolConfig, out_dir: Path | None):
    run_id = "check"
    meta = {"file_key": path.name, "file_sha256": _sha256(path), "file_bytes": path.stat().st_size}
    result = None
    with audit.warehouse(school.school_id) as con:
        audit.upsert_run(con, run_id, school_id=school.school_id, started_at=audit.utcnow(), **meta)
        loaded = loading.load_file(path, school, con, file_name=path.name, run_id=run_id, file_meta=meta)
        audit.record_findings(con, run_id, "load", loaded.findings)
        audit.upsert_run(
            con,
            run_id,
            file_encoding=loaded.encoding,
            rows_in_file=loaded.rows_in_file,
            header_columns=list(loaded.header),
        )
        if loaded.rejected:
            file_errors = [f for f in loaded.findings if f.severity == "error"]
        else:
            result = quality.validate(con, school, run_id, report_dir=out_dir)
            file_errors = list(result.file_errors)
            if not file_errors:
                transform.write_config_tables(con, school)
    accepted = not file_errors
    if accepted:
        transform.run_build(school, run_id)
    with audit.warehouse(school.school_id) as con:
        if accepted:
            transform.record_transform_findings(con, run_id)
            # A check knows nothing of what was applied before, so it has no change set to report.
            con.execute("drop table if exists marts.user_changes")
            result = dataclasses.replace(result, rows_warned=quality.rows_warned(con, run_id))
        reason = "; ".join(f.message for f in file_errors) or "accepted; sisbridge check pushes nothing"
        audit.upsert_run(
            con,
            run_id,
            status="dry_run" if accepted else "rejected",
            status_reason=reason,
            rows_accepted=loaded.rows_in_file - result.rows_rejected if accepted else 0,
            rows_warned=result.rows_warned if result else 0,
            finished_at=audit.utcnow(),
        )
        findings = audit.findings_of_run(con, run_id)
        if out_dir is not None:
            reports.write_reports(con, school, run_id, Path(out_dir))
    return loaded, result, accepted, findings


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _check_summary(path, school, loaded, result, rows_accepted, findings, out_dir) -> str:
    verdict = "REJECTED" if result is None or not result.accepted else "ACCEPTED"
    lines = [
        f"{path.name}: {verdict}",
        f"school: {school.school_id} ({school.name}); identifier {school.identifier}, "
        f"duplicates {school.duplicates}, max_rejected_pct {school.thresholds.max_rejected_pct:g}",
        f"encoding {loaded.encoding or 'unknown'}; {loaded.rows_in_file} data records: "
        f"{rows_accepted} accepted, {result.rows_rejected if result else 0} rejected, "
        f"{result.rows_warned if result else 0} with warnings",
        reports.log_summary(findings),
    ]
    if out_dir is not None:
        lines.append(f"report written to {out_dir}")
    return "\n".join(lines)
