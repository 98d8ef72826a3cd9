"""Shared fixtures: one real SeaweedFS S3 server per test session."""
from __future__ import annotations

import itertools
import uuid

import pytest

from harness.s3server import SeaweedS3, s3_client


@pytest.fixture(scope="session")
def s3_server(tmp_path_factory):
    server = SeaweedS3(tmp_path_factory.mktemp("seaweedfs"))
    server.start()
    yield server
    server.stop()


_bucket_ids = itertools.count()


@pytest.fixture
def s3_bucket(s3_server):
    """A fresh, empty bucket on the session's S3 server: (endpoint, bucket)."""
    name = f"t{next(_bucket_ids)}-{uuid.uuid4().hex[:10]}"
    s3_client(s3_server.endpoint).create_bucket(Bucket=name)
    return s3_server.endpoint, name
