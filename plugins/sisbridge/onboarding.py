"""Onboarding a school: its bucket, upload-only credentials, its YAML in review, its upload instructions.

Everything is done with the platform's Airflow `aws` connection `sisbridge_platform_aws`. Each step
reads what exists and changes only what differs, so a second run changes nothing. The school's
secret key is returned to the command, which prints it once; it is stored nowhere.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path

import yaml
from pydantic import ValidationError

from sisbridge.config import SCHOOL_ID_PATTERN, ConfigError, SchoolConfig, load_school, schools_dir
from sisbridge.reports import REPORT_PREFIX

PLATFORM_CONN_ID = "sisbridge_platform_aws"
DEFAULT_BUCKET_PREFIX = "uconnect-sis-"
DEFAULT_KEY = "roster.csv"
DEFAULT_IDENTIFIER = "email"
DEFAULT_ROSTER_VERSIONS_DAYS = 90
DEFAULT_REPORTS_DAYS = 180
DEFAULT_SCHEDULE = "0 23 * * 6"
# SigV4, the only signature S3 accepts everywhere, caps a presigned URL at 7 days.
MAX_UPLOAD_URL_DAYS = 7
ROSTER_RULE_ID = "sisbridge-old-roster-versions"
REPORTS_RULE_ID = "sisbridge-old-reports"
# An upload cut off halfway leaves parts that cost money and are never listed; the school's key may
# not abort them itself (it may only put its roster), so the bucket drops them.
ABORT_INCOMPLETE_UPLOAD_DAYS = 7
POLICY_NAME = "sisbridge-school-access"
IAM_PATH = "/sisbridge/"
_BUCKET_NAME = re.compile(r"^[a-z0-9][a-z0-9.\-]{1,61}[a-z0-9]$")
_PUBLIC_ACCESS_BLOCK = {
    "BlockPublicAcls": True,
    "IgnorePublicAcls": True,
    "BlockPublicPolicy": True,
    "RestrictPublicBuckets": True,
}
# pydantic's field path -> the option that sets it, so an error names what the operator typed.
_OPTION_OF_FIELD = {
    "name": "--name",
    "s3.key": "--key",
    "s3.bucket": "--bucket-prefix",
    "s3.aws_conn_id": "--aws-conn-id",
    "identifier": "--identifier",
    "timezone": "--timezone",
}


class InvalidRequest(ValueError):
    """The command line or its environment is wrong (exit 2); nothing was changed."""


class ProvisioningError(RuntimeError):
    """S3 or IAM refused a step; the message names the step and the resource."""


@dataclass(frozen=True)
class Request:
    """What `sisbridge onboard` was asked for; None means "not given": keep what exists, else default."""

    school_id: str
    name: str | None = None
    identifier: str | None = None
    key: str | None = None
    bucket_prefix: str | None = None
    aws_conn_id: str | None = None
    timezone: str | None = None
    roster_versions_days: int | None = None
    reports_days: int | None = None
    rotate_key: bool = False


@dataclass(frozen=True)
class AccessKey:
    access_key_id: str
    secret_access_key: str = field(repr=False)


@dataclass
class Onboarded:
    """The outcome: the school's config, one line per step, and the new key when one was issued."""

    school: SchoolConfig
    config_path: Path
    steps: list[str]
    endpoint_url: str | None
    region: str | None
    access_key: AccessKey | None = None


def bucket_name(school_id: str, prefix: str = DEFAULT_BUCKET_PREFIX) -> str:
    """The school's bucket: the prefix and the school id, with `_` (not allowed in bucket names) as `-`."""
    return f"{prefix}{school_id.replace('_', '-')}"


def iam_user_name(school_id: str) -> str:
    return f"sisbridge-school-{school_id}"


def school_policy(bucket: str, key: str, partition: str = "aws") -> dict:
    """The school's only rights: put its roster, and list and read its own reports."""
    arn = f"arn:{partition}:s3:::{bucket}"
    return {
        "Version": "2012-10-17",
        "Statement": [
            {"Sid": "UploadRoster", "Effect": "Allow", "Action": "s3:PutObject", "Resource": f"{arn}/{key}"},
            {
                "Sid": "ReadReports",
                "Effect": "Allow",
                "Action": "s3:GetObject",
                "Resource": f"{arn}/{REPORT_PREFIX}/*",
            },
            {
                "Sid": "ListReports",
                "Effect": "Allow",
                "Action": "s3:ListBucket",
                "Resource": arn,
                "Condition": {"StringLike": {"s3:prefix": [f"{REPORT_PREFIX}/", f"{REPORT_PREFIX}/*"]}},
            },
        ],
    }


def lifecycle_rules(key: str, roster_versions_days: int, reports_days: int) -> list[dict]:
    """Replaced roster versions expire after `roster_versions_days`; reports after `reports_days`."""
    return [
        {
            "ID": ROSTER_RULE_ID,
            "Status": "Enabled",
            "Filter": {"Prefix": key},
            "NoncurrentVersionExpiration": {"NoncurrentDays": roster_versions_days},
            "AbortIncompleteMultipartUpload": {"DaysAfterInitiation": ABORT_INCOMPLETE_UPLOAD_DAYS},
        },
        {
            "ID": REPORTS_RULE_ID,
            "Status": "Enabled",
            "Filter": {"Prefix": f"{REPORT_PREFIX}/"},
            "Expiration": {"Days": reports_days},
            # In a versioned bucket expiring only hides a report; this removes it a day later.
            "NoncurrentVersionExpiration": {"NoncurrentDays": 1},
        },
    ]


def _check_school_id(school_id: str) -> None:
    if not re.fullmatch(SCHOOL_ID_PATTERN, school_id):
        raise InvalidRequest(
            f"school id {school_id!r}: must match {SCHOOL_ID_PATTERN} "
            "(2-40 lowercase letters, digits or _, starting with a letter)"
        )


def _check_days(option: str, days: int | None, maximum: int | None = None) -> None:
    if days is None:
        return
    if days < 1 or (maximum is not None and days > maximum):
        bound = f"between 1 and {maximum}" if maximum else "at least 1"
        raise InvalidRequest(f"{option} {days}: must be a whole number of days {bound}")


def _check_bucket_name(bucket: str) -> None:
    if not _BUCKET_NAME.match(bucket) or ".." in bucket or bucket.startswith("xn--"):
        raise InvalidRequest(
            f"bucket name {bucket!r} (--bucket-prefix and the school id) is not a valid S3 bucket name: "
            "3-63 lowercase letters, digits, '.' or '-', starting and ending with a letter or digit"
        )


def _validated(data: dict) -> SchoolConfig:
    try:
        return SchoolConfig.model_validate(data)
    except ValidationError as exc:
        problems = []
        for error in exc.errors():
            where = ".".join(str(part) for part in error["loc"])
            problems.append(f"{_OPTION_OF_FIELD.get(where, where)}: {error['msg']}")
        raise InvalidRequest("; ".join(problems)) from exc


def plan_config(request: Request, directory: Path | None = None) -> tuple[SchoolConfig, Path, bool]:
    """The school's config: the existing YAML, or the one to write. No side effects.

    Returns (config, path, exists). An option that contradicts an existing YAML is an error: the
    YAML is the platform team's to edit, and a rerun must never undo their changes.
    """
    _check_school_id(request.school_id)
    _check_days("--roster-versions-days", request.roster_versions_days)
    _check_days("--reports-days", request.reports_days)
    path = (directory or schools_dir()) / f"{request.school_id}.yaml"
    if path.exists():
        school = load_school(path)
        given = {
            "--name": (request.name, school.name),
            "--identifier": (request.identifier, school.identifier),
            "--key": (request.key, school.s3.key),
            "--aws-conn-id": (request.aws_conn_id, school.s3.aws_conn_id),
            "--timezone": (request.timezone, school.timezone),
            "--bucket-prefix": (
                request.bucket_prefix and bucket_name(request.school_id, request.bucket_prefix),
                school.s3.bucket,
            ),
        }
        for option, (wanted, current) in given.items():
            if wanted is not None and wanted != current:
                raise InvalidRequest(
                    f"{path} exists with a different {option.removeprefix('--')} ({current!r}, not "
                    f"{wanted!r}); edit the YAML to change it"
                )
        return school, path, True
    if not request.name:
        raise InvalidRequest(f"--name is required to onboard a new school ({path} does not exist)")
    bucket = bucket_name(request.school_id, request.bucket_prefix or DEFAULT_BUCKET_PREFIX)
    _check_bucket_name(bucket)
    data = {
        "school_id": request.school_id,
        "name": request.name,
        "s3": {
            "bucket": bucket,
            "key": request.key or DEFAULT_KEY,
            "aws_conn_id": request.aws_conn_id or f"sis_s3_{request.school_id}",
        },
        "identifier": request.identifier or DEFAULT_IDENTIFIER,
    }
    if request.timezone:
        data["timezone"] = request.timezone
    return _validated(data), path, False


# No value of the school's goes into the comment: a name with a line break could write a key there.
_CONFIG_HEADER = (
    "# Written by `sisbridge onboard`. No auto_sync key: the school is in onboarding review. Every run\n"
    "# is a dry run until a reviewer approves one in the Airflow UI, which pushes that run and turns\n"
    "# auto sync on. s3.aws_conn_id is the Airflow connection the sync reads the bucket with: the\n"
    "# platform's credentials, never the school's key.\n"
)


def write_config(school: SchoolConfig, path: Path) -> None:
    """Write the YAML without auto_sync, atomically, and check that it loads as the same config."""
    data = {
        "school_id": school.school_id,
        "name": school.name,
        "s3": {"bucket": school.s3.bucket, "key": school.s3.key, "aws_conn_id": school.s3.aws_conn_id},
        "identifier": school.identifier,
    }
    if school.timezone != "UTC":
        data["timezone"] = school.timezone
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_name(f".{path.name}.partial")
    text = _CONFIG_HEADER + yaml.safe_dump(data, sort_keys=False, allow_unicode=True, width=100)
    partial.write_text(text, encoding="utf-8")
    partial.replace(path)
    loaded = load_school(path)
    if loaded.s3 != school.s3 or loaded.name != school.name:
        raise ConfigError(f"{path}: does not read back as written")


@dataclass(frozen=True)
class Platform:
    """boto3 clients on the platform's connection, and where that connection points."""

    s3: object
    iam: object
    endpoint_url: str | None
    region: str | None
    partition: str


def platform(conn_id: str = PLATFORM_CONN_ID, *, signature_v4: bool = False) -> Platform:
    """Clients from the platform's Airflow `aws` connection; refuse to fall back to ambient credentials."""
    from airflow.providers.amazon.aws.hooks.base_aws import AwsBaseHook
    from airflow.sdk import BaseHook
    from airflow.sdk.exceptions import AirflowNotFoundException
    from botocore.config import Config

    try:
        conn = BaseHook.get_connection(conn_id)
    except AirflowNotFoundException as exc:
        raise InvalidRequest(
            f"the Airflow connection {conn_id!r} is not defined: add it in Airflow, or set "
            f"AIRFLOW_CONN_{conn_id.upper()} (an aws connection with the platform's credentials)"
        ) from exc
    if conn.conn_type != "aws":
        raise InvalidRequest(f"the Airflow connection {conn_id!r} has type {conn.conn_type!r}, not 'aws'")
    s3_hook = AwsBaseHook(aws_conn_id=conn_id, client_type="s3")
    settings = s3_hook.conn_config
    config = s3_hook.config
    if signature_v4:
        config = config.merge(Config(signature_version="s3v4"))
    session = s3_hook.get_session(region_name=settings.region_name)
    region = settings.region_name or session.region_name
    return Platform(
        s3=s3_hook.get_client_type(region_name=region, config=config),
        iam=AwsBaseHook(aws_conn_id=conn_id, client_type="iam").get_client_type(region_name=region),
        endpoint_url=settings.endpoint_url,
        region=region,
        partition=session.get_partition_for_region(region or "us-east-1"),
    )


def _error_code(exc: Exception) -> str:
    return getattr(exc, "response", {}).get("Error", {}).get("Code", "")


def _call(step: str, resource: str, function, /, **kwargs):
    """Call boto3; a refusal becomes one ProvisioningError line naming the step and the resource."""
    from botocore.exceptions import BotoCoreError, ClientError

    try:
        return function(**kwargs)
    except ClientError as exc:
        error = exc.response.get("Error", {})
        raise ProvisioningError(
            f"{step} {resource}: {error.get('Code', 'error')}: {error.get('Message', exc)}"
        ) from exc
    except BotoCoreError as exc:
        raise ProvisioningError(f"{step} {resource}: {exc}") from exc


def _read(step: str, resource: str, missing: tuple[str, ...], function, /, **kwargs):
    """Like `_call`, but an error whose code is in `missing` means "not set yet" and returns None."""
    from botocore.exceptions import ClientError

    try:
        return function(**kwargs)
    except ClientError as exc:
        if _error_code(exc) in missing:
            return None
        return _call(step, resource, function, **kwargs)


def ensure_bucket(
    s3,
    bucket: str,
    region: str | None,
    key: str,
    roster_versions_days: int | None,
    reports_days: int | None,
) -> list[str]:
    """Create the bucket if needed; versioning, default encryption, no public access, the lifecycle."""
    where = f"s3://{bucket}"
    steps = []
    from botocore.exceptions import ClientError

    try:
        s3.head_bucket(Bucket=bucket)
        steps.append(f"bucket {where}: exists")
    except ClientError as exc:
        if _error_code(exc) not in ("404", "NoSuchBucket", "NotFound"):
            raise ProvisioningError(
                f"bucket {where}: refused ({_error_code(exc) or exc}): another AWS account owns this name "
                "(choose another --bucket-prefix), or the connection's credentials may not use it"
            ) from exc
        kwargs = {"Bucket": bucket}
        if region and region != "us-east-1":
            kwargs["CreateBucketConfiguration"] = {"LocationConstraint": region}
        _call("create bucket", where, s3.create_bucket, **kwargs)
        steps.append(f"bucket {where}: created")

    versioning = _call("read versioning of", where, s3.get_bucket_versioning, Bucket=bucket)
    if versioning.get("Status") == "Enabled":
        steps.append("versioning: on")
    else:
        _call(
            "turn on versioning of",
            where,
            s3.put_bucket_versioning,
            Bucket=bucket,
            VersioningConfiguration={"Status": "Enabled"},
        )
        steps.append("versioning: turned on")

    encryption = _read(
        "read default encryption of",
        where,
        ("ServerSideEncryptionConfigurationNotFoundError",),
        s3.get_bucket_encryption,
        Bucket=bucket,
    )
    algorithms = [
        rule.get("ApplyServerSideEncryptionByDefault", {}).get("SSEAlgorithm")
        for rule in (encryption or {}).get("ServerSideEncryptionConfiguration", {}).get("Rules", [])
    ]
    if "AES256" in algorithms:
        steps.append("default encryption: SSE-S3 (AES256)")
    elif any(algorithms):
        # Someone chose KMS on purpose; keep it, but the school's key then needs that KMS key too.
        steps.append(f"default encryption: {', '.join(filter(None, algorithms))} (kept as it is)")
    else:
        _call(
            "set default encryption of",
            where,
            s3.put_bucket_encryption,
            Bucket=bucket,
            ServerSideEncryptionConfiguration={
                "Rules": [{"ApplyServerSideEncryptionByDefault": {"SSEAlgorithm": "AES256"}}]
            },
        )
        steps.append("default encryption: set to SSE-S3 (AES256)")

    block = _read(
        "read the public access block of",
        where,
        ("NoSuchPublicAccessBlockConfiguration",),
        s3.get_public_access_block,
        Bucket=bucket,
    )
    if block and all(block["PublicAccessBlockConfiguration"].get(k) for k in _PUBLIC_ACCESS_BLOCK):
        steps.append("public access: all blocked")
    else:
        _call(
            "block public access to",
            where,
            s3.put_public_access_block,
            Bucket=bucket,
            PublicAccessBlockConfiguration=_PUBLIC_ACCESS_BLOCK,
        )
        steps.append("public access: all blocked now")

    steps.append(_ensure_lifecycle(s3, bucket, key, roster_versions_days, reports_days))
    return steps


def _rule_days(rules: dict[str, dict], rule_id: str, *path: str) -> int | None:
    value = rules.get(rule_id)
    for part in path:
        value = value.get(part) if isinstance(value, dict) else None
    return value


def _ensure_lifecycle(s3, bucket: str, key: str, roster_versions_days, reports_days) -> str:
    where = f"s3://{bucket}"
    current = _read(
        "read the lifecycle of",
        where,
        ("NoSuchLifecycleConfiguration",),
        s3.get_bucket_lifecycle_configuration,
        Bucket=bucket,
    )
    rules = {rule.get("ID"): rule for rule in (current or {}).get("Rules", [])}
    # An option not given keeps what an earlier run (or the platform team) set.
    roster_days = (
        roster_versions_days
        or _rule_days(rules, ROSTER_RULE_ID, "NoncurrentVersionExpiration", "NoncurrentDays")
        or DEFAULT_ROSTER_VERSIONS_DAYS
    )
    report_days = (
        reports_days or _rule_days(rules, REPORTS_RULE_ID, "Expiration", "Days") or DEFAULT_REPORTS_DAYS
    )
    wanted = {rule["ID"]: rule for rule in lifecycle_rules(key, roster_days, report_days)}
    summary = (
        f"old roster versions expire {roster_days} days after they are replaced, "
        f"reports {report_days} days after their run"
    )
    if all(_same_rule(rules.get(rule_id), rule) for rule_id, rule in wanted.items()):
        return f"lifecycle: {summary}"
    others = [rule for rule_id, rule in rules.items() if rule_id not in wanted]  # the platform team's own
    _call(
        "set the lifecycle of",
        where,
        s3.put_bucket_lifecycle_configuration,
        Bucket=bucket,
        LifecycleConfiguration={"Rules": [*others, *wanted.values()]},
    )
    return f"lifecycle: set: {summary}"


def _same_rule(current: dict | None, wanted: dict) -> bool:
    if current is None:
        return False
    current = dict(current)
    if "Prefix" in current and "Filter" not in current:  # the older form of the same filter
        current["Filter"] = {"Prefix": current.pop("Prefix")}
    return all(current.get(part) == value for part, value in wanted.items())


def ensure_user(iam, school: SchoolConfig, partition: str) -> list[str]:
    """The school's IAM user with exactly the school's policy (replaced when it differs)."""
    user = iam_user_name(school.school_id)
    steps = []
    existing = _read("read IAM user", user, ("NoSuchEntity",), iam.get_user, UserName=user)
    if existing is None:
        _call(
            "create IAM user",
            user,
            iam.create_user,
            UserName=user,
            Path=IAM_PATH,
            Tags=[{"Key": "sisbridge:school_id", "Value": school.school_id}],
        )
        steps.append(f"IAM user {user}: created")
    else:
        steps.append(f"IAM user {user}: exists")
    policy = school_policy(school.s3.bucket, school.s3.key, partition)
    current = _read(
        "read policy of",
        user,
        ("NoSuchEntity",),
        iam.get_user_policy,
        UserName=user,
        PolicyName=POLICY_NAME,
    )
    document = (current or {}).get("PolicyDocument")
    if isinstance(document, str):
        document = json.loads(document)
    rights = f"PutObject on {school.s3.key}; list and read {REPORT_PREFIX}/; nothing else"
    if document == policy:
        steps.append(f"policy {POLICY_NAME}: {rights}")
    else:
        _call(
            "set policy of",
            user,
            iam.put_user_policy,
            UserName=user,
            PolicyName=POLICY_NAME,
            PolicyDocument=json.dumps(policy),
        )
        steps.append(f"policy {POLICY_NAME}: set: {rights}")
    return steps


def issue_key(iam, school_id: str, rotate: bool) -> tuple[AccessKey | None, str]:
    """A new access key when the user has none, or when rotating (the old ones are then deleted)."""
    user = iam_user_name(school_id)
    keys = _call("list access keys of", user, iam.list_access_keys, UserName=user)["AccessKeyMetadata"]
    keys = sorted(keys, key=lambda meta: meta["CreateDate"])
    if keys and not rotate:
        return None, (f"access key: {user} has one already (not shown again; --rotate-key replaces it)")
    # IAM allows two keys per user: make room, keeping the newest until its successor exists.
    for meta in keys[:-1]:
        _call(
            "delete access key of",
            user,
            iam.delete_access_key,
            UserName=user,
            AccessKeyId=meta["AccessKeyId"],
        )
    created = _call("create access key for", user, iam.create_access_key, UserName=user)["AccessKey"]
    for meta in keys[-1:]:
        _call(
            "delete access key of",
            user,
            iam.delete_access_key,
            UserName=user,
            AccessKeyId=meta["AccessKeyId"],
        )
    key = AccessKey(created["AccessKeyId"], created["SecretAccessKey"])
    if keys:
        return key, "access key: replaced; the old key no longer works"
    return key, "access key: issued"


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
    _check_school_id(school_id)
    _check_days("--days", days, MAX_UPLOAD_URL_DAYS)
    school = load_school(schools_dir() / f"{school_id}.yaml")
    aws = platform(conn_id, signature_v4=True)
    seconds = days * 24 * 3600
    url = _call(
        "presign an upload to",
        f"s3://{school.s3.bucket}/{school.s3.key}",
        aws.s3.generate_presigned_url,
        ClientMethod="put_object",
        Params={"Bucket": school.s3.bucket, "Key": school.s3.key},
        ExpiresIn=seconds,
        HttpMethod="PUT",
    )
    return url, datetime.now(UTC) + timedelta(seconds=seconds)
