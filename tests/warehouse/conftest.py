"""The CLI tests' plain shell and S3 endpoint, for syncs against the lake."""

from tests.cli.conftest import module_sisbridge_home, s3_endpoint, shell  # noqa: F401
