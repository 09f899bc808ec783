"""Fixtures: a real moto S3-compatible server process on loopback, and fresh s3:// roots on it."""

from __future__ import annotations

import uuid
from collections.abc import Iterator

import pytest

from infra.s3_server import LocalS3Server, S3ServerConfig

# Environment that could point boto3 elsewhere than the test server.
_CONFLICTING_AWS_ENV = ("AWS_ENDPOINT_URL_S3", "AWS_PROFILE", "AWS_SESSION_TOKEN", "AWS_SECURITY_TOKEN")


@pytest.fixture(scope="session")
def s3_server() -> Iterator[LocalS3Server]:
    """One `moto_server` process for the whole test session, with bucket `clip4clip-test`."""
    with LocalS3Server(S3ServerConfig(bucket="clip4clip-test")) as server:
        yield server


@pytest.fixture
def s3_env(s3_server: LocalS3Server, monkeypatch: pytest.MonkeyPatch) -> dict[str, str]:
    """Point boto3 at the test server (os.environ, so subprocesses and Ray workers started now see it too)."""
    for name in _CONFLICTING_AWS_ENV:
        monkeypatch.delenv(name, raising=False)
    env = s3_server.env()
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    return env


@pytest.fixture
def s3_url(s3_server: LocalS3Server, s3_env: dict[str, str]) -> str:
    """A fresh, empty `s3://clip4clip-test/<unique prefix>` on the test server."""
    return f"s3://{s3_server.bucket}/test-{uuid.uuid4().hex[:12]}"
