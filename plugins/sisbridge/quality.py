"""The quality gate: Great Expectations suites from `expectations/` run over a school's `raw.*` tables.

File-level failures reject the whole file; row-level errors drop the row. Every finding names the line.
GX's SQL datasource fails on DuckDB, so the suites validate narrow pandas frames taken from DuckDB.
"""

from __future__ import annotations

import json
import re
import shutil
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path

from email_validator import EmailNotValidError, validate_email

from sisbridge import audit, normalize
from sisbridge.audit import Finding
from sisbridge.config import PROJECT_ROOT, RAW_COLUMNS, SchoolConfig, normalize_header, safe_component

EXPECTATIONS_DIR = PROJECT_ROOT / "expectations"
SUITES = ("file_structure", "required_values", "uniqueness")
STAGE = "quality"

# Our own rules; the loader's are in sisbridge.loading.RULES and dbt's are listed in docs/rules.md.
RULES = {
    "missing_required_column": "A required column (FIRST_NAME, LAST_NAME, EMAIL and the school's "
    "identifier column) is not in the header. The file is rejected.",
    "no_data_records": "The file has a header but no data record. The file is rejected, so that an "
    "empty upload can never remove users.",
    "duplicate_in_file": "With `duplicates: reject_file`, an EMAIL, USER_ID or USER_LOGIN value is on "
    "more than one line. The file is rejected.",
    "too_many_rejected_rows": "The share of rows with a row-level error is above "
    "thresholds.max_rejected_pct. The file is rejected.",
    "duplicate_row": "With `duplicates: reject_rows`, an EMAIL, USER_ID or USER_LOGIN value is on more "
    "than one line. Every line of the group is ignored.",
    "email_blank": "EMAIL is blank. The row is ignored.",
    "email_invalid": "EMAIL is not a valid email address. The row is ignored.",
    "first_name_blank": "FIRST_NAME is blank. The row is ignored.",
    "last_name_blank": "LAST_NAME is blank. The row is ignored.",
    "identifier_blank": "The school's identifier column (USER_ID or USER_LOGIN) is blank. The row is "
    "ignored.",
}
FILE_RULES = frozenset(
    {"missing_required_column", "no_data_records", "duplicate_in_file", "too_many_rejected_rows"}
)
_ROW_RULE_COLUMNS = {
    "email_blank": "EMAIL",
    "email_invalid": "EMAIL",
    "first_name_blank": "FIRST_NAME",
    "last_name_blank": "LAST_NAME",
}
# The uniqueness keys as raw.roster expressions (sisbridge.normalize): the same keys dbt builds users by.
_KEYS = {f"{kind}_key": normalize.key_sql(kind, kind) for kind in normalize.KINDS}
# The shape of an address the SQL fast path accepts without email-validator (see `emails_to_check`):
# an ASCII dot-atom local part, and two or more letter/digit labels joined by single hyphens (so no
# Punycode or other "xx--" label) ending in a letters-only top-level domain. With the RFC lengths and
# no special-use name, email-validator accepts every such address (its syntax.py checks nothing that
# such an address can fail); test_quality_email_fast_path holds the fast path to that.
_FAST_EMAIL = (
    r"[A-Za-z0-9_+-]+(\.[A-Za-z0-9_+-]+)*"
    r"@[A-Za-z0-9]+(-[A-Za-z0-9]+)*(\.[A-Za-z0-9]+(-[A-Za-z0-9]+)*)*\.[A-Za-z]{2,}"
)


@dataclass(frozen=True)
class QualityResult:
    accepted: bool  # False: a file-level rule failed -> run status rejected
    file_errors: tuple[Finding, ...]
    row_findings: tuple[Finding, ...]
    rows_rejected: int  # distinct lines with a row-level error (all stages so far)
    rows_warned: int
    data_docs: Path | None  # the GX Data Docs index.html of this validation


def email_problem(value: str) -> str | None:
    """Why `value` is not an acceptable email address (email-validator, no DNS), or None when it is."""
    try:
        validate_email(value, check_deliverability=False)
    except EmailNotValidError as exc:
        return str(exc)
    return None


def load_suite(name: str) -> dict:
    """One suite from `expectations/<name>.json` as a plain dict (GX's own suite JSON shape)."""
    return json.loads((EXPECTATIONS_DIR / f"{name}.json").read_text(encoding="utf-8"))


def _header_labels(con) -> dict[str, str]:
    """How a message names a column: the school's own header, with the standard name when aliased."""
    rows = con.execute(
        "select source_name, canonical_name from raw.file_columns order by position"
    ).fetchall()
    labels = {}
    for source, canonical in rows:
        source = normalize.trim(source)
        labels.setdefault(
            canonical, canonical if normalize_header(source) == canonical else f"{source} ({canonical})"
        )
    return labels


def _file_frame(con):
    """The file's standard columns (canonical names) over one row per data record, without values.

    The structure suite looks only at the column names and the row count, so the cells are zeros.
    """
    import numpy as np
    import pandas as pd

    rows = con.execute(
        "select canonical_name from raw.file_columns where kind = 'standard' order by position"
    ).fetchall()
    columns = ["line_number", *dict.fromkeys(name for (name,) in rows)]
    (records,) = con.execute("select count(*) from raw.roster").fetchone()
    return pd.DataFrame(np.zeros((records, len(columns)), dtype=np.int8), columns=columns)


def emails_to_check(con, table: str = "raw.roster") -> list[str]:
    """The distinct trimmed, non-blank `email` values of `table` that the SQL fast path does not accept:
    only these need email-validator (`email_problem`)."""
    from email_validator import SPECIAL_USE_DOMAIN_NAMES

    # email-validator refuses a special-use name and every name under it (it compares lowercased).
    special_use = "(^|\\.)(" + "|".join(re.escape(name.lower()) for name in SPECIAL_USE_DOMAIN_NAMES) + ")$"
    sql = f"""
        with emails as (
            select {normalize.clean_sql("email")} as email from {table}
        ),

        parts as (
            select email, lower(split_part(email, '@', 2)) as domain from emails where email is not null
        )

        select distinct email from parts
        where not coalesce(
            regexp_full_match(email, '{_FAST_EMAIL}')
            and length(email) <= 254
            and strpos(email, '@') <= 65
            and length(domain) <= 253
            and not regexp_matches(domain, '[^.]{{64}}')
            and not regexp_matches(domain, $special_use),
            false
        )
        order by email
    """
    return [email for (email,) in con.execute(sql, {"special_use": special_use}).fetchall()]


def _roster_frame(con, school: SchoolConfig):
    """The narrow frame the row suites check, one row per data record, with nulls for blank values.

    The name, EMAIL and identifier columns only say whether the trimmed value is present, `email_check`
    is the email-validator verdict, and each key is an integer code: two lines share a code exactly
    when they share the compared value (`_KEYS`). The messages quote raw values, which are read back
    from `raw.roster` for the failing lines only (`_line_values`).
    """
    problems = {value: email_problem(value) for value in emails_to_check(con)}
    invalid = [value for value, problem in problems.items() if problem]
    identifier = RAW_COLUMNS[school.identifier_column]
    frame = con.execute(
        f"""
        with roster as (
            select
                line_number,
                {normalize.clean_sql("first_name")} as first_name,
                {normalize.clean_sql("last_name")} as last_name,
                {normalize.clean_sql("email")} as email,
                {normalize.clean_sql(identifier)} as identifier
            from raw.roster
        )

        select
            line_number,
            case when first_name is not null then true end as first_name,
            case when last_name is not null then true end as last_name,
            case when email is not null then true end as email,
            case when identifier is not null then true end as identifier,
            cast(
                case
                    when email is null then null
                    when email in (select unnest($invalid::varchar [])) then 'invalid'
                    else 'valid'
                end as enum ('valid', 'invalid')
            ) as email_check
        from roster
        order by line_number
        """,
        {"invalid": invalid},
    ).df()
    for key, value in _KEYS.items():
        # One key at a time: ranking all three in one query holds every key string at once.
        codes = con.execute(
            f"""
            select case when key is not null then dense_rank() over (order by key) end::integer as code
            from (select line_number, {value} as key from raw.roster)
            order by line_number
            """
        ).df()
        frame[key] = codes["code"].array
    return frame, problems


def _line_values(con, school: SchoolConfig, lines: list[int]) -> dict[int, dict]:
    """The failing lines' raw values by standard column name, their trimmed EMAIL and identifier, and
    their compared keys: what the messages quote."""
    identifier = RAW_COLUMNS[school.identifier_column]
    keys = ", ".join(f"{value} as {key}" for key, value in _KEYS.items())
    cursor = con.execute(
        f"""
        select
            line_number,
            first_name as "FIRST_NAME",
            last_name as "LAST_NAME",
            email as "EMAIL",
            user_id as "USER_ID",
            user_login as "USER_LOGIN",
            {normalize.clean_sql("email")} as email,
            {normalize.clean_sql(identifier)} as identifier,
            {keys}
        from raw.roster
        where line_number in (select unnest($lines::integer []))
        """,
        {"lines": lines},
    )
    names = [column[0] for column in cursor.description]
    return {row[0]: dict(zip(names, row, strict=True)) for row in cursor.fetchall()}


def _gx_context(report_dir: Path | None):
    import great_expectations as gx
    from great_expectations.data_context.types.base import (
        DataContextConfig,
        InMemoryStoreBackendDefaults,
        ProgressBarsConfig,
    )

    sites = {}
    if report_dir is not None:
        sites["run_report"] = {
            "class_name": "SiteBuilder",
            "store_backend": {
                "class_name": "TupleFilesystemStoreBackend",
                "base_directory": str(report_dir / "data_docs"),
            },
            "site_index_builder": {"class_name": "DefaultSiteIndexBuilder"},
        }
    config = DataContextConfig(
        store_backend_defaults=InMemoryStoreBackendDefaults(),
        data_docs_sites=sites,
        analytics_enabled=False,
        progress_bars=ProgressBarsConfig(globally=False),
    )
    return gx.get_context(project_config=config, mode="ephemeral")


def _run_suites(context, asset_name: str, frame, suites: list[dict], parameters: dict, run_id: str):
    """Validate `frame` against `suites` in one GX Checkpoint; return {suite name: [results]}."""
    import great_expectations as gx
    from great_expectations.core.run_identifier import RunIdentifier

    source = context.data_sources.add_or_update_pandas(f"sisbridge_{asset_name}")
    batch = source.add_dataframe_asset(asset_name).add_batch_definition_whole_dataframe("whole_file")
    definitions = []
    for suite_dict in suites:
        suite = gx.ExpectationSuite(**suite_dict)
        if len(suite.expectations) != len(suite_dict["expectations"]):
            raise ValueError(f"expectations/{suite_dict['name']}.json has an invalid expectation")
        suite = context.suites.add(suite)
        definitions.append(
            context.validation_definitions.add(
                gx.ValidationDefinition(name=suite.name, data=batch, suite=suite)
            )
        )
    checkpoint = context.checkpoints.add(
        gx.Checkpoint(
            name=f"sisbridge_{asset_name}",
            validation_definitions=definitions,
            result_format={"result_format": "COMPLETE", "unexpected_index_column_names": ["line_number"]},
        )
    )
    result = checkpoint.run(
        batch_parameters={"dataframe": frame},
        expectation_parameters=parameters,
        run_id=RunIdentifier(run_name=safe_component(run_id or "run")),
    )
    return {run.suite_name: run.results for run in result.run_results.values()}


def _failed_lines(result) -> list[int]:
    return sorted({int(entry["line_number"]) for entry in result.result.get("unexpected_index_list", [])})


def _structure_findings(results, file_frame, school: SchoolConfig, rows_in_file: int) -> list[Finding]:
    findings = []
    for result in results:
        if result.success:
            continue
        rule = result.expectation_config.meta["rule"]
        if rule == "missing_required_column":
            present = set(file_frame.columns)
            for column in school.required_columns:
                if column not in present:
                    findings.append(
                        Finding(
                            rule=rule,
                            message=f"the header has no {column} column (required: "
                            f"{', '.join(school.required_columns)})",
                            line_number=1,
                            column_name=column,
                        )
                    )
        else:
            message = "the file has a header but no data record"
            if rows_in_file:
                message = f"none of the file's {rows_in_file} data records could be read"
            findings.append(Finding(rule=rule, message=message))
    return findings


def _row_findings(results, values: dict, problems: dict, school: SchoolConfig, labels: dict) -> list[Finding]:
    findings = []
    for result in results:
        if result.success:
            continue
        rule = result.expectation_config.meta["rule"]
        column = _ROW_RULE_COLUMNS.get(rule, school.identifier_column)
        for line in _failed_lines(result):
            row = values[line]
            if rule == "email_invalid":
                message = f"{labels['EMAIL']} {row['email']!r} is not valid: {problems[row['email']]}"
            else:
                message = f"{labels[column]} is blank"
            findings.append(
                Finding(
                    rule=rule,
                    message=message,
                    line_number=line,
                    identifier=row["identifier"],
                    column_name=column,
                    value=row[column],
                )
            )
    return findings


def _lines_text(lines: list[int], shown: int = 10) -> str:
    """'2, 4, 7', cut short for a large group so that each message stays one readable line."""
    text = ", ".join(str(line) for line in lines[:shown])
    return text if len(lines) <= shown else f"{text} and {len(lines) - shown} more"


def _duplicate_findings(results, values: dict, school: SchoolConfig, labels: dict) -> list[Finding]:
    findings = []
    for result in results:
        if result.success:
            continue
        column = result.expectation_config.meta["column"]
        key = result.expectation_config.kwargs["column"]
        groups: dict[str, list[int]] = defaultdict(list)
        for line in _failed_lines(result):
            groups[values[line][key]].append(line)
        how = "trimmed" if column == "USER_ID" else "trimmed, ignoring case"  # sisbridge.normalize.key
        for lines in sorted(groups.values()):
            first = values[lines[0]]
            raw = first[column]
            shown = normalize.trim(raw)
            where = f"{labels[column]} {shown!r} is on lines {_lines_text(lines)} (compared {how})"
            if school.duplicates == "reject_file":
                findings.append(
                    Finding(
                        rule="duplicate_in_file",
                        message=f"{where}; each user must have exactly one record",
                        line_number=lines[0],
                        identifier=first["identifier"],
                        column_name=column,
                        value=raw,
                    )
                )
                continue
            for line in lines:
                findings.append(
                    Finding(
                        rule="duplicate_row",
                        message=f"{where}; every line of the group is ignored",
                        line_number=line,
                        identifier=values[line]["identifier"],
                        column_name=column,
                        value=values[line][column],
                    )
                )
    return findings


def _earlier_findings(con, run_id: str) -> list[tuple[str, int | None, str, str]]:
    return con.execute(
        "select stage, line_number, severity, rule from audit.rejected_rows where run_id = ? and stage <> ?",
        [run_id, STAGE],
    ).fetchall()


def _is_row_error(line_number: int | None, severity: str, rule: str) -> bool:
    # The header (line 1) and line-less findings are about the file, not about one row.
    return severity == "error" and line_number is not None and line_number > 1 and rule not in FILE_RULES


def validate(con, school: SchoolConfig, run_id: str, *, report_dir: Path | None = None) -> QualityResult:
    """Run the GX suites over `raw.*`, record the findings (stage `quality`) and return the verdict.

    The run's counts are the caller's to record (`sisbridge.stages.gate`). With `report_dir`, the GX
    Data Docs of this validation are written to `report_dir/data_docs/`.
    """
    audit.ensure_schema(con)
    if report_dir is not None:
        # A retried task must not leave the first attempt's validation pages in the index.
        shutil.rmtree(Path(report_dir) / "data_docs", ignore_errors=True)
    context = _gx_context(report_dir)
    parameters = {"required_columns": list(school.required_columns)}

    file_frame = _file_frame(con)
    rows_in_file = _rows_in_file(con, len(file_frame))
    labels = _header_labels(con)
    structure = _run_suites(context, "file", file_frame, [load_suite("file_structure")], parameters, run_id)
    file_errors = _structure_findings(structure["file_structure"], file_frame, school, rows_in_file)
    row_findings: list[Finding] = []
    has_columns = not any(f.rule == "missing_required_column" for f in file_errors)
    if has_columns and len(file_frame):
        # Without the required columns every row would fail; the missing header is the whole story.
        frame, problems = _roster_frame(con, school)
        required = load_suite("required_values")
        if school.identifier == "email":
            required["expectations"] = [
                e for e in required["expectations"] if e["meta"]["rule"] != "identifier_blank"
            ]
        results = _run_suites(context, "roster", frame, [required, load_suite("uniqueness")], {}, run_id)
        del frame
        failed = {line for suite in results.values() for result in suite for line in _failed_lines(result)}
        values = _line_values(con, school, sorted(failed))
        row_findings = _row_findings(results["required_values"], values, problems, school, labels)
        duplicates = _duplicate_findings(results["uniqueness"], values, school, labels)
        if school.duplicates == "reject_file":
            file_errors.extend(duplicates)
        else:
            row_findings.extend(duplicates)
        row_findings.sort(key=lambda f: (f.line_number, f.rule))

    earlier = _earlier_findings(con, run_id)
    rejected_lines = {f.line_number for f in row_findings if _is_row_error(f.line_number, f.severity, f.rule)}
    rejected_lines |= {line for _, line, severity, rule in earlier if _is_row_error(line, severity, rule)}
    limit = school.thresholds.max_rejected_pct
    if rows_in_file and len(rejected_lines) * 100 > limit * rows_in_file:
        share = 100 * len(rejected_lines) / rows_in_file
        file_errors.append(
            Finding(
                rule="too_many_rejected_rows",
                message=f"{len(rejected_lines)} of {rows_in_file} data records ({share:.1f}%) have a "
                f"row-level error; thresholds.max_rejected_pct allows {limit:g}%",
                value=f"{share:.1f}",
            )
        )

    if report_dir is not None:
        # One build renders every page of this validation; an UpdateDataDocsAction in each checkpoint
        # would render the index (and compile its templates) once per suite.
        context.build_data_docs(site_names=["run_report"])
    audit.record_findings(con, run_id, STAGE, [*file_errors, *row_findings])
    warned = rows_warned(con, run_id)
    docs = report_dir / "data_docs" / "index.html" if report_dir is not None else None
    return QualityResult(
        accepted=not file_errors,
        file_errors=tuple(file_errors),
        row_findings=tuple(row_findings),
        rows_rejected=len(rejected_lines),
        rows_warned=warned,
        data_docs=docs if docs is not None and docs.is_file() else None,
    )


def rows_warned(con, run_id: str) -> int:
    """The run's data records with a warning and no row error, over every stage recorded so far.

    The one definition of `rows_warned`: the gate, the guard (after dbt's warnings) and `sisbridge
    check` all count with it. A warning on the header or on a skipped blank line is not a row's, and a
    row that an error rejects is counted as rejected, not as warned.
    """
    return con.execute(
        """
        select count(distinct line_number) from audit.rejected_rows
        where run_id = $run and severity = 'warning'
          and line_number in (select line_number from raw.roster)
          and line_number not in (
              select line_number from audit.rejected_rows
              where run_id = $run and severity = 'error' and line_number > 1
                and not list_contains($file_rules, rule)
          )
        """,
        {"run": run_id, "file_rules": sorted(FILE_RULES)},
    ).fetchone()[0]


def _rows_in_file(con, loaded: int) -> int:
    """Data records in the file, counting ragged ones the loader could not put in raw.roster."""
    try:
        row = con.execute("select rows_in_file from raw.file").fetchone()
    except Exception:  # noqa: BLE001 - raw.file is optional for the checks themselves
        return loaded
    return int(row[0]) if row and row[0] is not None else loaded
