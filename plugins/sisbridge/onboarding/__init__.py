"""Onboarding a school: its bucket, upload-only credentials, its YAML in review, its upload instructions.

Everything is done with the platform's Airflow `aws` connection `sisbridge_platform_aws`. The
school's secret key is returned to the command, which prints it once; it is stored nowhere.
`school` holds the request and the YAML, `aws` the bucket, the IAM user and the key.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

from sisbridge.config import SchoolConfig, load_school, schools_dir
from sisbridge.onboarding.aws import (
    PLATFORM_CONN_ID,
    AccessKey,
    ProvisioningError,
    call,
    ensure_bucket,
    ensure_user,
    issue_key,
    platform,
)
from sisbridge.onboarding.school import (
    InvalidRequest,
    Request,
    check_days,
    check_school_id,
    plan_config,
    write_config,
)
from sisbridge.reports import REPORT_PREFIX

__all__ = ["InvalidRequest", "Onboarded", "ProvisioningError", "Request", "onboard", "report", "upload_url"]

DEFAULT_SCHEDULE = SchoolConfig.model_fields["schedule"].default
# SigV4, the only signature S3 accepts everywhere, caps a presigned URL at 7 days.
MAX_UPLOAD_URL_DAYS = 7


@dataclass
class Onboarded:
    """The outcome: the school's config, one line per step, and the new key when one was issued."""

    school: SchoolConfig
    config_path: Path
    steps: list[str]
    endpoint_url: str | None
    region: str | None
    access_key: AccessKey | None = None


def onboard(request: Request, conn_id: str = PLATFORM_CONN_ID) -> Onboarded:
    """Provision the school step by step; the access key is created last, once everything else is in place."""
    school, path, exists = plan_config(request)
    aws = platform(conn_id)
    steps = [f"through the Airflow connection {conn_id}"]
    steps += ensure_bucket(
        aws.s3,
        school.s3.bucket,
        aws.region,
        school.s3.key,
        request.roster_versions_days,
        request.reports_days,
    )
    steps += ensure_user(aws.iam, school, aws.partition)
    if exists:
        steps.append(f"config: {path}: exists, left as it is")
    else:
        write_config(school, path)
        steps.append(
            f"config: {path}: written, in onboarding review (no auto_sync): every run is a dry run "
            "until a reviewer approves one in the Airflow UI"
        )
    key, key_step = issue_key(aws.iam, school.school_id, request.rotate_key)
    steps.append(key_step)
    return Onboarded(school, path, steps, aws.endpoint_url, aws.region, key)


def schedule_words(school: SchoolConfig) -> str:
    if school.schedule == DEFAULT_SCHEDULE:
        return f"every Saturday at 23:00 ({school.timezone})"
    return f"on the cron schedule {school.schedule!r} ({school.timezone})"


def report(result: Onboarded) -> str:
    """What the operator reads, then what they send to the school, with the key when one was issued."""
    school = result.school
    s3_url = f"s3://{school.s3.bucket}/{school.s3.key}"
    reports_url = f"s3://{school.s3.bucket}/{REPORT_PREFIX}/"
    cli_options = "".join(
        f" {option} {value}"
        for option, value in (("--region", result.region), ("--endpoint-url", result.endpoint_url))
        if value
    )
    lines = [f"Onboarded {school.school_id} ({school.name}):"]
    lines += [f"  {step}" for step in result.steps]
    lines += [
        "",
        f"The sync reads {s3_url} with the platform's credentials, through the Airflow aws connection "
        f"{school.s3.aws_conn_id!r}: define it like {PLATFORM_CONN_ID} (never with the school's key).",
        "",
        f"--- For {school.name}'s IT team ---",
        f"Upload your roster as one CSV file to {s3_url}, overwriting it each time.",
    ]
    if result.access_key:
        lines += [
            "Your access key (shown once; uConnect keeps no copy, so store it safely):",
            f"AWS_ACCESS_KEY_ID={result.access_key.access_key_id}",
            f"AWS_SECRET_ACCESS_KEY={result.access_key.secret_access_key}",
        ]
    else:
        lines.append("Use the access key uConnect gave you when your bucket was set up.")
    lines += [
        "1. With an S3 client, e.g. the AWS CLI, with AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY in its "
        "environment:",
        f"     aws s3 cp roster.csv {s3_url}{cli_options}",
        f"2. Or with an HTTP PUT to an upload URL that uConnect sends you (valid up to {MAX_UPLOAD_URL_DAYS} "
        f"days; `sisbridge upload-url --school {school.school_id}` makes one):",
        '     curl --fail -T roster.csv "UPLOAD_URL"',
        f"The sync runs {schedule_words(school)}. The report of each run appears in "
        f"{reports_url}<run_id>/ (summary.json, findings.csv, changes.csv, data_docs/):",
        f"     aws s3 ls {reports_url}{cli_options}",
        f"     aws s3 cp --recursive {reports_url}<run_id>/ report/{cli_options}",
        "The file rules, the schedule and how to read the reports: the page for schools "
        "(sisbridge's docs/for-schools.md).",
    ]
    return "\n".join(lines)


def upload_url(school_id: str, days: int = MAX_UPLOAD_URL_DAYS, conn_id: str = PLATFORM_CONN_ID):
    """A presigned HTTP PUT URL for the school's roster key, and when it expires (UTC)."""
    check_school_id(school_id)
    check_days("--days", days, MAX_UPLOAD_URL_DAYS)
    school = load_school(schools_dir() / f"{school_id}.yaml")
    aws = platform(conn_id, signature_v4=True)
    seconds = days * 24 * 3600
    url = call(
        "presign an upload to",
        f"s3://{school.s3.bucket}/{school.s3.key}",
        aws.s3.generate_presigned_url,
        ClientMethod="put_object",
        Params={"Bucket": school.s3.bucket, "Key": school.s3.key},
        ExpiresIn=seconds,
        HttpMethod="PUT",
    )
    return url, datetime.now(UTC) + timedelta(seconds=seconds)
