"""The AWS side of onboarding: the platform's clients, the school's bucket, IAM user and access key.

Each step reads what exists and changes only what differs, so a second run changes nothing.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field

from sisbridge.config import SchoolConfig
from sisbridge.onboarding.school import InvalidRequest
from sisbridge.reports import REPORT_PREFIX

PLATFORM_CONN_ID = "sisbridge_platform_aws"
DEFAULT_ROSTER_VERSIONS_DAYS = 90
DEFAULT_REPORTS_DAYS = 180
ROSTER_RULE_ID = "sisbridge-old-roster-versions"
REPORTS_RULE_ID = "sisbridge-old-reports"
# An upload cut off halfway leaves parts that cost money and are never listed; the school's key may
# not abort them itself (it may only put its roster), so the bucket drops them.
ABORT_INCOMPLETE_UPLOAD_DAYS = 7
POLICY_NAME = "sisbridge-school-access"
IAM_PATH = "/sisbridge/"
_PUBLIC_ACCESS_BLOCK = {
    "BlockPublicAcls": True,
    "IgnorePublicAcls": True,
    "BlockPublicPolicy": True,
    "RestrictPublicBuckets": True,
}


class ProvisioningError(RuntimeError):
    """S3 or IAM refused a step; the message names the step and the resource."""


@dataclass(frozen=True)
class AccessKey:
    access_key_id: str
    secret_access_key: str = field(repr=False)


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


def call(step: str, resource: str, function, /, **kwargs):
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
    """Like `call`, but an error whose code is in `missing` means "not set yet" and returns None."""
    from botocore.exceptions import ClientError

    try:
        return function(**kwargs)
    except ClientError as exc:
        if _error_code(exc) in missing:
            return None
        return call(step, resource, function, **kwargs)


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
        call("create bucket", where, s3.create_bucket, **kwargs)
        steps.append(f"bucket {where}: created")

    versioning = call("read versioning of", where, s3.get_bucket_versioning, Bucket=bucket)
    if versioning.get("Status") == "Enabled":
        steps.append("versioning: on")
    else:
        call(
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
        call(
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
        call(
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
    call(
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
        call(
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
        call(
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
    keys = call("list access keys of", user, iam.list_access_keys, UserName=user)["AccessKeyMetadata"]
    keys = sorted(keys, key=lambda meta: meta["CreateDate"])
    if keys and not rotate:
        return None, (f"access key: {user} has one already (not shown again; --rotate-key replaces it)")
    # IAM allows two keys per user: make room, keeping the newest until its successor exists.
    for meta in keys[:-1]:
        call(
            "delete access key of",
            user,
            iam.delete_access_key,
            UserName=user,
            AccessKeyId=meta["AccessKeyId"],
        )
    created = call("create access key for", user, iam.create_access_key, UserName=user)["AccessKey"]
    for meta in keys[-1:]:
        call(
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
