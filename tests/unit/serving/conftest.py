"""Shared by the serving unit tests: team mode's object store, in process."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from moto import mock_aws

from mlops_template.core import objectstore


@pytest.fixture
def store(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """An empty bucket named by the test module's ``BUCKET``, in moto's in-process S3."""
    for key, value in {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing",
                       "AWS_DEFAULT_REGION": "us-east-1"}.items():
        monkeypatch.setenv(key, value)
    monkeypatch.delenv("AWS_ENDPOINT_URL", raising=False)
    objectstore._client.cache_clear()
    with mock_aws():
        objectstore._client().create_bucket(Bucket=request.module.BUCKET)
        yield
    objectstore._client.cache_clear()
