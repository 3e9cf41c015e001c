"""The report of one run, for the school that sent the file: summary, findings, change set, Data Docs.

Written from the warehouse (`audit.sync_runs`, `audit.rejected_rows`, `marts.user_changes`) into
`reports_dir(school_id, run_id)`, and uploaded to `sisbridge-reports/<run_id>/` in the school's bucket.
"""

from __future__ import annotations

import csv
import json
import mimetypes
import os
from collections import Counter, defaultdict
from collections.abc import Iterable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from sisbridge import audit, warehouse
from sisbridge.audit import Finding
from sisbridge.config import SchoolConfig, safe_component

REPORT_PREFIX = "sisbridge-reports"
UPLOAD_THREADS = 8
FINDINGS_COLUMNS = ("line", "identifier", "severity", "rule", "column", "message", "value")
CHANGES_COLUMNS = (
    "change_id",
    "external_id",
    "change_type",
    "field",
    "old_value",
    "new_value",
    "line_number",
)
# Only these runs computed a change set; after any other status marts.user_changes is a previous run's.
STATUSES_WITH_CHANGES = frozenset({"succeeded", "dry_run", "held", "rejected_by_reviewer", "rolled_back"})
# A spreadsheet treats a cell that starts with one of these as a formula (CSV injection).
_FORMULA_STARTS = ("=", "+", "-", "@", "\t", "\r")
LOG_EXAMPLES = 3
SAFETY_DETAILS = ("schema_drift", "stale_file", "review")


def excel_safe(value: object) -> object:
    """Neutralise a text cell that a spreadsheet would run as a formula, by prefixing a quote."""
    if isinstance(value, str) and value.startswith(_FORMULA_STARTS):
        return "'" + value
    return value


def _write_csv(path: Path, header: Iterable[str], rows: Iterable[Iterable[object]]) -> Path:
    # utf-8-sig: Excel only reads a CSV as UTF-8 when it starts with a BOM.
    with path.open("w", newline="", encoding="utf-8-sig") as handle:
        writer = csv.writer(handle)
        writer.writerow(header)
        for row in rows:
            writer.writerow(["" if cell is None else excel_safe(cell) for cell in row])
    return path


def _summary(run: dict, school: SchoolConfig, findings: list[Finding]) -> dict:
    by_rule: dict[str, dict] = {}
    for finding in findings:
        entry = by_rule.setdefault(finding.rule, {"severity": finding.severity, "count": 0})
        entry["count"] += 1
    severities = Counter(finding.severity for finding in findings)
    details = audit.run_details(run)
    return {
        "school_id": school.school_id,
        "school_name": school.name,
        "run_id": run["run_id"],
        "status": run["status"],
        "status_reason": run["status_reason"],
        "started_at": run["started_at"],
        "finished_at": run["finished_at"],
        "file": {
            "key": run["file_key"],
            "version_id": run["file_version_id"],
            "etag": run["file_etag"],
            "sha256": run["file_sha256"],
            "bytes": run["file_bytes"],
            "encoding": run["file_encoding"],
        },
        "counts": {column: run[column] for column in audit.RUN_COUNT_COLUMNS},
        "findings": {"errors": severities["error"], "warnings": severities["warning"]},
        "rules": dict(sorted(by_rule.items())),
        "guard_reasons": run["guard_reasons"] or [],
        # What the stages noted on the run: schema drift, a stale file, the reviewer's answer.
        "safety": {key: details.get(key) for key in SAFETY_DETAILS},
    }


def write_reports(con, school: SchoolConfig, run_id: str, out_dir: Path) -> list[Path]:
    """Write summary.json, findings.csv and (when the run built one) changes.csv; list the files written.

    The GX Data Docs in `out_dir/data_docs/` are not listed: the validation task that renders them
    uploads them (`data_docs_files`), on its own worker.
    """
    run = audit.get_run(con, run_id)
    if run is None:
        raise ValueError(f"run {run_id!r} has no row in audit.sync_runs")
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    findings = audit.findings_of_run(con, run_id)

    summary = out_dir / "summary.json"
    summary.write_text(
        json.dumps(_summary(run, school, findings), indent=2, default=str) + "\n", encoding="utf-8"
    )
    paths = [summary]
    paths.append(
        _write_csv(
            out_dir / "findings.csv",
            FINDINGS_COLUMNS,
            (
                (f.line_number, f.identifier, f.severity, f.rule, f.column_name, f.message, f.value)
                for f in findings
            ),
        )
    )
    changes = out_dir / "changes.csv"
    if run["status"] in STATUSES_WITH_CHANGES and warehouse.has_table(con, "marts", "user_changes"):
        rows = con.execute(
            f"select {', '.join(CHANGES_COLUMNS)} from marts.user_changes "
            "order by line_number nulls last, external_id, change_type, field"
        ).fetchall()
        paths.append(_write_csv(changes, CHANGES_COLUMNS, rows))
    elif changes.exists():
        changes.unlink()  # a retried finalize must not keep a change set this run never built
    return paths


def data_docs_files(out_dir: Path) -> list[Path]:
    """The files of the GX Data Docs that `quality.validate` rendered under `out_dir/data_docs/`."""
    docs = Path(out_dir) / "data_docs"
    return sorted(path for path in docs.rglob("*") if path.is_file()) if docs.is_dir() else []


def upload_reports(
    paths: Iterable[Path], s3_hook_or_client, bucket: str, run_id: str, base: Path | None = None
) -> list[str]:
    """Upload report files to `sisbridge-reports/<run_id>/` in `bucket`; return the object keys.

    Keys keep the files' layout below `base`, the run's report folder (by default the folder that
    holds them all). Takes a boto3 S3 client, or anything with `get_conn()` returning one (an S3Hook).
    """
    paths = [Path(path) for path in paths]
    if not paths:
        return []
    client = s3_hook_or_client.get_conn() if hasattr(s3_hook_or_client, "get_conn") else s3_hook_or_client
    # data_docs/... links are relative: the pages must keep their places below the report folder.
    base = Path(base) if base is not None else Path(os.path.commonpath([path.parent for path in paths]))
    keys = [f"{REPORT_PREFIX}/{safe_component(run_id)}/{path.relative_to(base).as_posix()}" for path in paths]

    def upload(path: Path, key: str) -> None:
        content_type = mimetypes.guess_type(path.name)[0] or "application/octet-stream"
        client.upload_file(str(path), bucket, key, ExtraArgs={"ContentType": content_type})

    # The Data Docs are a few dozen small files: one request each, several at a time (boto3's clients
    # are thread-safe). The first failure is raised once the others have finished.
    with ThreadPoolExecutor(max_workers=UPLOAD_THREADS) as pool:
        for done in [pool.submit(upload, path, key) for path, key in zip(paths, keys, strict=True)]:
            done.result()
    return keys


def _count(number: int, noun: str) -> str:
    return f"{number} {noun}" + ("" if number == 1 else "s")


def log_summary(findings: Iterable[Finding]) -> str:
    """Counts by rule with the first few lines of each: short enough for an INFO log line."""
    findings = list(findings)
    if not findings:
        return "no findings"
    by_rule: dict[tuple[str, str], list[Finding]] = defaultdict(list)
    for finding in findings:
        by_rule[(finding.severity, finding.rule)].append(finding)
    severities = Counter(finding.severity for finding in findings)
    lines = [
        f"{_count(len(findings), 'finding')}: {_count(severities['error'], 'error')}, "
        f"{_count(severities['warning'], 'warning')}"
    ]
    # Errors first, then the rules with most findings.
    for (severity, rule), group in sorted(by_rule.items(), key=lambda item: (item[0][0], -len(item[1]))):
        lines.append(f"{rule} ({severity}): {len(group)}")
        for finding in group[:LOG_EXAMPLES]:
            where = f"line {finding.line_number}" if finding.line_number is not None else "file"
            lines.append(f"  {where}: {finding.message}")
        if len(group) > LOG_EXAMPLES:
            lines.append(f"  ... and {len(group) - LOG_EXAMPLES} more")
    return "\n".join(lines)
