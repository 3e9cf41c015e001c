"""`sisbridge onboard` and `sisbridge upload-url`, run as installed, against moto's server with IAM enforced.

After onboarding, every check is made with the school's own printed key, the way the school's IT
team would use it, or read back with the platform's key.
"""

from __future__ import annotations

import hashlib
import hmac
import re
import subprocess
from pathlib import Path
from urllib.parse import parse_qsl, quote, urlsplit

import pytest
import yaml
from botocore.exceptions import ClientError

from sisbridge import reports
from sisbridge.config import load_school, safe_component
from tests.onboarding.onboarding_helpers import REGION, Moto, Workspace

ACME_BUCKET = "uconnect-sis-acme"
GLOBEX_BUCKET = "uconnect-sis-globex-corp"
RUN_ID = "scheduled__2026-11-28T23:00:00+00:00"
REPORTS = f"sisbridge-reports/{safe_component(RUN_ID)}"
ROSTER = b"FIRST_NAME,LAST_NAME,EMAIL\r\nAda,Lovelace,ada@acme.edu\r\n"


def printed_key(result: subprocess.CompletedProcess) -> tuple[str, str]:
    """The key from the two lines of their own; each must appear exactly once."""
    ids = re.findall(r"^AWS_ACCESS_KEY_ID=(\S+)$", result.stdout, re.MULTILINE)
    secrets = re.findall(r"^AWS_SECRET_ACCESS_KEY=(\S+)$", result.stdout, re.MULTILINE)
    assert len(ids) == len(secrets) == 1, result.stdout
    return ids[0], secrets[0]


def denied(call) -> str:
    with pytest.raises(ClientError) as caught:
        call()
    return caught.value.response["Error"]["Code"]


def bucket_state(moto: Moto, bucket: str) -> dict:
    s3 = moto.client("s3")
    return {
        "versioning": s3.get_bucket_versioning(Bucket=bucket).get("Status"),
        "encryption": s3.get_bucket_encryption(Bucket=bucket)["ServerSideEncryptionConfiguration"]["Rules"],
        "public_access_block": s3.get_public_access_block(Bucket=bucket)["PublicAccessBlockConfiguration"],
        "lifecycle": sorted(
            s3.get_bucket_lifecycle_configuration(Bucket=bucket)["Rules"], key=lambda rule: rule["ID"]
        ),
    }


def iam_state(moto: Moto, school_id: str) -> dict:
    iam = moto.client("iam")
    user = f"sisbridge-school-{school_id}"
    return {
        "keys": [meta["AccessKeyId"] for meta in iam.list_access_keys(UserName=user)["AccessKeyMetadata"]],
        "policies": iam.list_user_policies(UserName=user)["PolicyNames"],
        "attached": iam.list_attached_user_policies(UserName=user)["AttachedPolicies"],
        "policy": iam.get_user_policy(UserName=user, PolicyName="sisbridge-school-access")["PolicyDocument"],
    }


@pytest.fixture(scope="module")
def onboarded(moto: Moto, workspace: Workspace, tmp_path_factory) -> dict:
    """Two schools onboarded by the command; acme's first report uploaded as the sync uploads it."""
    acme = workspace.run("onboard", "acme", "--name", "Acme University")
    globex = workspace.run(
        "onboard",
        "globex_corp",
        "--name",
        "Globex Corporation",
        "--identifier",
        "user_id",
        "--timezone",
        "America/Chicago",
        "--roster-versions-days",
        "14",
        "--reports-days",
        "30",
    )
    for result in (acme, globex):
        assert (result.returncode, result.stderr) == (0, ""), result.stdout + result.stderr
    report_dir = tmp_path_factory.mktemp("report") / RUN_ID.replace(":", "_")
    (report_dir / "data_docs").mkdir(parents=True)
    (report_dir / "summary.json").write_text('{"status": "dry_run"}\n')
    (report_dir / "findings.csv").write_text("line,identifier,severity,rule,column,message,value\n")
    (report_dir / "data_docs" / "index.html").write_text("<html></html>")
    reports.upload_reports(sorted(report_dir.rglob("*.*")), moto.client("s3"), ACME_BUCKET, RUN_ID)
    return {
        "acme": acme,
        "globex": globex,
        "acme_key": printed_key(acme),
        "globex_key": printed_key(globex),
    }


def test_the_config_is_written_in_onboarding_review_and_loads(onboarded, workspace):
    path = workspace.schools_dir / "acme.yaml"
    school = load_school(path)
    raw = yaml.safe_load(path.read_text())

    assert "auto_sync" not in raw
    assert (school.school_id, school.name, school.identifier) == ("acme", "Acme University", "email")
    assert (school.s3.bucket, school.s3.key, school.s3.aws_conn_id) == (
        ACME_BUCKET,
        "roster.csv",
        "sis_s3_acme",
    )
    globex = load_school(workspace.schools_dir / "globex_corp.yaml")
    assert (globex.s3.bucket, globex.identifier, globex.timezone) == (
        GLOBEX_BUCKET,
        "user_id",
        "America/Chicago",
    )
    assert "auto_sync" not in yaml.safe_load((workspace.schools_dir / "globex_corp.yaml").read_text())


def test_a_name_with_a_line_break_cannot_add_keys_to_the_config(onboarded, workspace):
    name = "Umbrella\nauto_sync: true\n# University"

    result = workspace.run("onboard", "umbrella", "--name", name)

    assert result.returncode == 0, result.stderr
    path = workspace.schools_dir / "umbrella.yaml"
    assert load_school(path).name == name
    assert set(yaml.safe_load(path.read_text())) == {"school_id", "name", "s3", "identifier"}


def test_the_output_gives_both_ways_to_upload_and_names_the_sync_connection(onboarded):
    out = onboarded["acme"].stdout

    assert f"aws s3 cp roster.csv s3://{ACME_BUCKET}/roster.csv --region {REGION} --endpoint-url " in out
    assert 'curl --fail -T roster.csv "UPLOAD_URL"' in out
    assert "sisbridge upload-url --school acme" in out
    assert "with the platform's credentials, through the Airflow aws connection 'sis_s3_acme'" in out
    assert f"s3://{ACME_BUCKET}/sisbridge-reports/<run_id>/" in out
    assert "every Saturday at 23:00 (UTC)" in out
    assert "every Saturday at 23:00 (America/Chicago)" in onboarded["globex"].stdout
    assert "in onboarding review (no auto_sync)" in out


def test_the_bucket_is_versioned_encrypted_private_and_expires_old_versions_and_reports(onboarded, moto):
    acme = bucket_state(moto, ACME_BUCKET)

    assert acme["versioning"] == "Enabled"
    assert [rule["ApplyServerSideEncryptionByDefault"]["SSEAlgorithm"] for rule in acme["encryption"]] == [
        "AES256"
    ]
    assert acme["public_access_block"] == {
        "BlockPublicAcls": True,
        "IgnorePublicAcls": True,
        "BlockPublicPolicy": True,
        "RestrictPublicBuckets": True,
    }
    assert acme["lifecycle"] == [
        {
            "ID": "sisbridge-old-reports",
            "Filter": {"Prefix": "sisbridge-reports/"},
            "Status": "Enabled",
            "Expiration": {"Days": 180},
            "NoncurrentVersionExpiration": {"NoncurrentDays": 1},
        },
        {
            "ID": "sisbridge-old-roster-versions",
            "Filter": {"Prefix": "roster.csv"},
            "Status": "Enabled",
            "NoncurrentVersionExpiration": {"NoncurrentDays": 90},
            "AbortIncompleteMultipartUpload": {"DaysAfterInitiation": 7},
        },
    ]
    globex_days = {
        rule["ID"]: rule.get("Expiration", rule["NoncurrentVersionExpiration"])
        for rule in bucket_state(moto, GLOBEX_BUCKET)["lifecycle"]
    }
    assert globex_days == {
        "sisbridge-old-reports": {"Days": 30},
        "sisbridge-old-roster-versions": {"NoncurrentDays": 14},
    }


def test_the_school_user_has_one_inline_policy_with_exactly_its_rights(onboarded, moto):
    state = iam_state(moto, "acme")

    assert state["keys"] == [onboarded["acme_key"][0]]
    assert (state["policies"], state["attached"]) == (["sisbridge-school-access"], [])
    arn = f"arn:aws:s3:::{ACME_BUCKET}"
    assert state["policy"]["Statement"] == [
        {"Sid": "UploadRoster", "Effect": "Allow", "Action": "s3:PutObject", "Resource": f"{arn}/roster.csv"},
        {
            "Sid": "ReadReports",
            "Effect": "Allow",
            "Action": "s3:GetObject",
            "Resource": f"{arn}/sisbridge-reports/*",
        },
        {
            "Sid": "ListReports",
            "Effect": "Allow",
            "Action": "s3:ListBucket",
            "Resource": arn,
            "Condition": {"StringLike": {"s3:prefix": ["sisbridge-reports/", "sisbridge-reports/*"]}},
        },
    ]


def test_the_school_key_uploads_its_roster_and_reads_its_reports(onboarded, moto, tmp_path):
    school = moto.client("s3", onboarded["acme_key"])

    school.put_object(Bucket=ACME_BUCKET, Key="roster.csv", Body=ROSTER)
    # Over 8 MB the AWS CLI uploads in parts: the same PutObject right must cover them.
    big = tmp_path / "roster.csv"
    big.write_bytes(ROSTER + b"Grace,Hopper,grace@acme.edu\r\n" * 320_000)
    school.upload_file(str(big), ACME_BUCKET, "roster.csv")

    platform = moto.client("s3")
    stored = platform.get_object(Bucket=ACME_BUCKET, Key="roster.csv")["Body"].read()
    assert stored == big.read_bytes()
    versions = platform.list_object_versions(Bucket=ACME_BUCKET, Prefix="roster.csv")["Versions"]
    assert len(versions) == 2
    listed = school.list_objects_v2(Bucket=ACME_BUCKET, Prefix="sisbridge-reports/")["Contents"]
    report_keys = sorted(item["Key"] for item in listed)
    assert report_keys == [
        f"{REPORTS}/data_docs/index.html",
        f"{REPORTS}/findings.csv",
        f"{REPORTS}/summary.json",
    ]
    summary = school.get_object(Bucket=ACME_BUCKET, Key=f"{REPORTS}/summary.json")
    assert summary["Body"].read() == b'{"status": "dry_run"}\n'


def test_the_school_key_cannot_write_or_read_anything_else_in_its_bucket(onboarded, moto):
    school = moto.client("s3", onboarded["acme_key"])
    report = f"{REPORTS}/summary.json"

    assert denied(lambda: school.put_object(Bucket=ACME_BUCKET, Key="other.csv", Body=b"x")) == "AccessDenied"
    assert denied(lambda: school.put_object(Bucket=ACME_BUCKET, Key=report, Body=b"{}")) == "AccessDenied"
    assert denied(lambda: school.delete_object(Bucket=ACME_BUCKET, Key="roster.csv")) == "AccessDenied"
    assert denied(lambda: school.get_object(Bucket=ACME_BUCKET, Key="roster.csv")) == "AccessDenied"
    assert (
        denied(
            lambda: school.put_bucket_versioning(
                Bucket=ACME_BUCKET, VersioningConfiguration={"Status": "Suspended"}
            )
        )
        == "AccessDenied"
    )
    assert denied(lambda: school.delete_public_access_block(Bucket=ACME_BUCKET)) == "AccessDenied"
    assert (
        denied(
            lambda: school.put_bucket_lifecycle_configuration(
                Bucket=ACME_BUCKET, LifecycleConfiguration={"Rules": []}
            )
        )
        == "AccessDenied"
    )
    platform = moto.client("s3")
    assert platform.get_object(Bucket=ACME_BUCKET, Key=report)["Body"].read() == b'{"status": "dry_run"}\n'
    assert bucket_state(moto, ACME_BUCKET)["versioning"] == "Enabled"


def test_the_school_key_cannot_touch_another_schools_bucket_list_buckets_or_use_iam(onboarded, moto):
    acme = moto.client("s3", onboarded["acme_key"])
    globex = moto.client("s3", onboarded["globex_key"])
    globex.put_object(Bucket=GLOBEX_BUCKET, Key="roster.csv", Body=b"globex")
    moto.client("s3").put_object(Bucket=GLOBEX_BUCKET, Key=f"{REPORTS}/summary.json", Body=b"{}")

    assert (
        denied(lambda: acme.put_object(Bucket=GLOBEX_BUCKET, Key="roster.csv", Body=b"x")) == "AccessDenied"
    )
    assert (
        denied(lambda: acme.get_object(Bucket=GLOBEX_BUCKET, Key=f"{REPORTS}/summary.json")) == "AccessDenied"
    )
    assert (
        denied(lambda: acme.list_objects_v2(Bucket=GLOBEX_BUCKET, Prefix="sisbridge-reports/"))
        == "AccessDenied"
    )
    assert denied(lambda: globex.get_object(Bucket=ACME_BUCKET, Key=f"{REPORTS}/summary.json")) == (
        "AccessDenied"
    )
    assert denied(acme.list_buckets) == "AccessDenied"
    iam = moto.client("iam", onboarded["acme_key"])
    assert denied(lambda: iam.create_access_key(UserName="sisbridge-school-acme")) == "AccessDenied"
    assert (
        denied(
            lambda: iam.put_user_policy(
                UserName="sisbridge-school-acme",
                PolicyName="more",
                PolicyDocument='{"Version": "2012-10-17"}',
            )
        )
        == "AccessDenied"
    )
    assert moto.client("s3").get_object(Bucket=GLOBEX_BUCKET, Key="roster.csv")["Body"].read() == b"globex"


def sigv4_query_signature(url: str, secret: str, method: str = "PUT") -> str:
    """The SigV4 query-string signature of `url`, computed from AWS's published algorithm."""
    parts = urlsplit(url)
    params = dict(parse_qsl(parts.query, keep_blank_values=True))
    params.pop("X-Amz-Signature")
    query = "&".join(f"{quote(k, safe='-_.~')}={quote(v, safe='-_.~')}" for k, v in sorted(params.items()))
    canonical = "\n".join([method, parts.path, query, f"host:{parts.netloc}\n", "host", "UNSIGNED-PAYLOAD"])
    scope = params["X-Amz-Credential"].split("/", 1)[1]
    to_sign = "\n".join(
        ["AWS4-HMAC-SHA256", params["X-Amz-Date"], scope, hashlib.sha256(canonical.encode()).hexdigest()]
    )
    key = f"AWS4{secret}".encode()
    for part in scope.split("/"):
        key = hmac.new(key, part.encode(), hashlib.sha256).digest()
    return hmac.new(key, to_sign.encode(), hashlib.sha256).hexdigest()


def test_upload_url_is_a_presigned_put_of_the_roster_that_curl_can_use(onboarded, moto, workspace, tmp_path):
    result = workspace.run("upload-url", "--school", "acme", "--days", "2")

    assert result.returncode == 0, result.stderr
    url = result.stdout.strip()
    assert "\n" not in url
    assert re.fullmatch(r"valid until \d{4}-\d\d-\d\d \d\d:\d\d UTC; .*\n", result.stderr)
    parts = urlsplit(url)
    params = dict(parse_qsl(parts.query))
    assert f"{parts.scheme}://{parts.netloc}" == moto.endpoint_url
    assert parts.path == f"/{ACME_BUCKET}/roster.csv"
    assert params["X-Amz-Algorithm"] == "AWS4-HMAC-SHA256"
    assert params["X-Amz-Expires"] == str(2 * 24 * 3600)
    assert params["X-Amz-SignedHeaders"] == "host"
    platform_id, platform_secret = moto.platform_key
    assert params["X-Amz-Credential"].startswith(f"{platform_id}/")
    assert params["X-Amz-Credential"].endswith(f"/{REGION}/s3/aws4_request")
    # moto cannot check a presigned signature while it enforces IAM, so check it here...
    assert sigv4_query_signature(url, platform_secret) == params["X-Amz-Signature"]
    assert (
        sigv4_query_signature(url.replace("/roster.csv?", "/other.csv?"), platform_secret)
        != (params["X-Amz-Signature"])
    )
    # ...and let this one request through unsigned-checked, to see that curl's PUT lands on the roster.
    roster = tmp_path / "roster.csv"
    roster.write_bytes(ROSTER + b"Curl,Upload,curl@acme.edu\r\n")
    moto.allow_unsigned_requests(1)
    curl = subprocess.run(["curl", "--fail", "-sS", "-T", str(roster), url], capture_output=True, text=True)
    assert curl.returncode == 0, curl.stderr
    assert (
        moto.client("s3").get_object(Bucket=ACME_BUCKET, Key="roster.csv")["Body"].read()
        == roster.read_bytes()
    )
    assert (
        denied(moto.client("s3", onboarded["acme_key"]).list_buckets) == "AccessDenied"
    )  # enforcement is back


@pytest.mark.parametrize("days", ["0", "8"])
def test_upload_url_refuses_more_than_the_seven_days_sigv4_allows(onboarded, workspace, days):
    result = workspace.run("upload-url", "--school", "acme", "--days", days)

    assert (result.returncode, result.stdout) == (2, "")
    assert result.stderr == f"sisbridge: --days {days}: must be a whole number of days between 1 and 7\n"


def test_upload_url_for_a_school_without_a_config_names_the_missing_file(workspace):
    result = workspace.run("upload-url", "--school", "nosuch")

    assert (result.returncode, result.stdout) == (2, "")
    assert result.stderr == (
        f"sisbridge: {workspace.schools_dir}/nosuch.yaml: cannot read: No such file or directory\n"
    )


def test_a_second_run_changes_nothing_and_prints_no_key(onboarded, moto, workspace):
    path = workspace.schools_dir / "acme.yaml"
    before = (
        path.read_bytes(),
        path.stat().st_mtime_ns,
        bucket_state(moto, ACME_BUCKET),
        iam_state(moto, "acme"),
    )
    globex_before = bucket_state(moto, GLOBEX_BUCKET)

    again = workspace.run("onboard", "acme", "--name", "Acme University")
    globex_again = workspace.run("onboard", "globex_corp")

    for result in (again, globex_again):
        assert (result.returncode, result.stderr) == (0, "")
        assert not re.search(r"^AWS_(ACCESS_KEY_ID|SECRET_ACCESS_KEY)=", result.stdout, re.MULTILINE)
    assert onboarded["acme_key"][0] not in again.stdout and onboarded["acme_key"][1] not in again.stdout
    assert "has one already (not shown again; --rotate-key replaces it)" in again.stdout
    assert f"config: {path}: exists, left as it is" in again.stdout
    assert not re.search(r"created|: set|turned on|blocked now|written", again.stdout)
    after = (
        path.read_bytes(),
        path.stat().st_mtime_ns,
        bucket_state(moto, ACME_BUCKET),
        iam_state(moto, "acme"),
    )
    assert after == before
    # Days set by an earlier run are kept when the options are not given again.
    assert bucket_state(moto, GLOBEX_BUCKET) == globex_before
    assert moto.client("s3", onboarded["acme_key"]).put_object(
        Bucket=ACME_BUCKET, Key="roster.csv", Body=ROSTER
    )


def test_the_key_is_written_nowhere(onboarded, workspace):
    files = [path for path in workspace.root.rglob("*") if path.is_file()]
    assert workspace.schools_dir / "acme.yaml" in files  # the walk does see what the command wrote
    for school in ("acme", "globex"):
        access_key_id, secret = onboarded[f"{school}_key"]
        for path in files:
            content = path.read_bytes()
            assert access_key_id.encode() not in content, path
            assert secret.encode() not in content, path


def test_rotate_key_prints_a_new_key_once_and_the_old_one_stops_working(moto, workspace):
    first = workspace.run("onboard", "initech", "--name", "Initech")
    old_key = printed_key(first)
    moto.client("s3", old_key).put_object(Bucket="uconnect-sis-initech", Key="roster.csv", Body=ROSTER)

    rotated = workspace.run("onboard", "initech", "--rotate-key")

    assert (rotated.returncode, rotated.stderr) == (0, "")
    new_key = printed_key(rotated)
    assert new_key[0] != old_key[0]
    assert "access key: replaced; the old key no longer works" in rotated.stdout
    assert iam_state(moto, "initech")["keys"] == [new_key[0]]
    old = moto.client("s3", old_key)
    assert denied(lambda: old.put_object(Bucket="uconnect-sis-initech", Key="roster.csv", Body=b"x")) == (
        "InvalidAccessKeyId"
    )
    moto.client("s3", new_key).put_object(Bucket="uconnect-sis-initech", Key="roster.csv", Body=ROSTER)
    for path in (p for p in workspace.root.rglob("*") if p.is_file()):
        assert new_key[1].encode() not in path.read_bytes(), path


def buckets(moto: Moto) -> list[str]:
    return sorted(bucket["Name"] for bucket in moto.client("s3").list_buckets()["Buckets"])


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (
            ["Acme"],
            "school id 'Acme': must match ^[a-z][a-z0-9_]{1,39}$ (2-40 lowercase letters, digits or _, "
            "starting with a letter)",
        ),
        (
            ["newschool"],
            "--name is required to onboard a new school ({schools}/newschool.yaml does not exist)",
        ),
        (
            ["trailing_", "--name", "T"],
            "bucket name 'uconnect-sis-trailing-' (--bucket-prefix and the school id) is not a valid S3 "
            "bucket name: 3-63 lowercase letters, digits, '.' or '-', starting and ending with a letter "
            "or digit",
        ),
        (
            ["newschool", "--name", "N", "--identifier", "sso"],
            "--identifier: Input should be 'email', 'user_id' or 'user_login'",
        ),
        (
            ["acme", "--name", "Acme College"],
            "{schools}/acme.yaml exists with a different name ('Acme University', not 'Acme College'); "
            "edit the YAML to change it",
        ),
    ],
)
def test_a_usage_error_is_one_line_exit_2_and_changes_nothing(onboarded, moto, workspace, args, message):
    files_before = sorted(workspace.schools_dir.iterdir())
    buckets_before = buckets(moto)

    result = workspace.run("onboard", *args)

    assert (result.returncode, result.stdout) == (2, "")
    assert result.stderr == f"sisbridge: {message.replace('{schools}', str(workspace.schools_dir))}\n"
    assert sorted(workspace.schools_dir.iterdir()) == files_before
    assert buckets(moto) == buckets_before


def test_without_the_platform_connection_it_stops_before_touching_anything(onboarded, moto, workspace):
    env = {k: v for k, v in workspace.env.items() if not k.startswith("AIRFLOW_CONN_")}

    result = workspace.run("onboard", "hooli", "--name", "Hooli", env=env)

    assert (result.returncode, result.stdout) == (2, "")
    assert result.stderr == (
        "sisbridge: the Airflow connection 'sisbridge_platform_aws' is not defined: add it in Airflow, "
        "or set AIRFLOW_CONN_SISBRIDGE_PLATFORM_AWS (an aws connection with the platform's credentials)\n"
    )
    assert not (workspace.schools_dir / "hooli.yaml").exists()
    assert "uconnect-sis-hooli" not in buckets(moto)


def test_a_refusal_from_aws_is_one_line_exit_1_and_writes_no_config(onboarded, moto, workspace):
    iam = moto.client("iam")
    iam.create_user(UserName="powerless")
    powerless = iam.create_access_key(UserName="powerless")["AccessKey"]
    env = {
        **workspace.env,
        "AIRFLOW_CONN_SISBRIDGE_PLATFORM_AWS": moto.connection(
            (powerless["AccessKeyId"], powerless["SecretAccessKey"])
        ),
    }

    result = workspace.run("onboard", "hooli", "--name", "Hooli", env=env)

    assert (result.returncode, result.stdout) == (1, "")
    assert result.stderr.startswith("sisbridge: onboard hooli: ")
    assert "bucket s3://uconnect-sis-hooli: refused (403)" in result.stderr
    assert result.stderr.count("\n") == 1
    assert not (workspace.schools_dir / "hooli.yaml").exists()
    assert "uconnect-sis-hooli" not in buckets(moto)


def test_the_for_schools_page_documents_the_report_columns():
    page = (Path(__file__).resolve().parents[2] / "docs" / "for-schools.md").read_text()

    for column in reports.FINDINGS_COLUMNS:
        assert f"`{column}`" in page
    for name in (
        "summary.json",
        "findings.csv",
        "changes.csv",
        "sisbridge-reports/<run_id>/",
        "curl",
        "aws s3 cp",
    ):
        assert name in page
