"""Security fixtures: moto's S3 server (the helpers are in tests/security/security_helpers.py)."""

from __future__ import annotations

import pytest

from sisbridge import locals3


@pytest.fixture(scope="session")
def s3_endpoint():
    with locals3.local_s3() as endpoint_url:
        yield endpoint_url
