"""The thin object-store adapter: the only module that talks to boto3.

Every call here is blocking; the engine runs them in its S3 thread pool so the
broker's event loop never waits on the network.

`put_if_absent` is the primitive the metadata log is built on: a PUT with
`If-None-Match: *`, which the store refuses (412) when the key exists. It
also copes with *ambiguous success* (the PUT was applied but its response was
lost and the retry then hit 412): on a 412 it reads the key back and, if the
body is byte-for-byte ours, reports success.
"""
from __future__ import annotations

import logging
import os

log = logging.getLogger(__name__)

ACCESS_KEY = "highwater"
SECRET_KEY = "highwater-secret"


class ObjectExists(Exception):
    """A conditional PUT lost: the key already holds someone else's bytes."""


class NoSuchKey(Exception):
    pass


def make_client(endpoint: str, timeout: float = 10.0, retries: int = 3):
    import boto3
    from botocore.config import Config
    return boto3.client(
        "s3", endpoint_url=endpoint, region_name=os.environ.get("AWS_REGION", "us-east-1"),
        aws_access_key_id=os.environ.get("AWS_ACCESS_KEY_ID", ACCESS_KEY),
        aws_secret_access_key=os.environ.get("AWS_SECRET_ACCESS_KEY", SECRET_KEY),
        config=Config(connect_timeout=timeout, read_timeout=timeout,
                      retries={"max_attempts": retries, "mode": "standard"},
                      s3={"addressing_style": "path"},
                      max_pool_connections=32))


def _code(exc) -> str:
    try:
        return str(exc.response["Error"]["Code"])
    except Exception:
        return ""


def _status(exc) -> int:
    try:
        return int(exc.response["ResponseMetadata"]["HTTPStatusCode"])
    except Exception:
        return 0


class ObjectStore:
    """A bucket, optionally under a key prefix (so several clusters or test
    cases can share one bucket): every key below is relative to it."""

    def __init__(self, endpoint: str, bucket: str, timeout: float = 10.0, prefix: str = "", client=None):
        self.endpoint = endpoint
        self.bucket = bucket
        self.prefix = prefix.strip("/") + "/" if prefix.strip("/") else ""
        # `client`: a boto3-compatible S3 client (the deterministic simulator
        # passes its simulated object store; errors are botocore's)
        self.client = client if client is not None else make_client(endpoint, timeout)

    def put(self, key: str, body: bytes) -> None:
        self.client.put_object(Bucket=self.bucket, Key=self.prefix + key, Body=body)

    def put_if_absent(self, key: str, body: bytes) -> None:
        """Create `key` only if it does not exist. Raises ObjectExists if
        another writer got there first."""
        from botocore.exceptions import ClientError
        try:
            self.client.put_object(Bucket=self.bucket, Key=self.prefix + key, Body=body, IfNoneMatch="*")
            return
        except ClientError as e:
            if _status(e) != 412 and _code(e) not in ("PreconditionFailed", "ConditionalRequestConflict"):
                raise
        try:
            existing = self.get(key)
        except NoSuchKey:
            existing = None
        if existing == body:
            log.info("conditional PUT of %s: 412 but the stored body is ours (ambiguous success)", key)
            return
        raise ObjectExists(key)

    def put_conditional(self, key: str, body: bytes, etag: str | None) -> str:
        """Compare-and-swap: create `key` if `etag` is None (If-None-Match: *),
        else replace it only if it still has that ETag (If-Match). Returns the
        new ETag; raises ObjectExists when the condition fails. Unlike
        put_if_absent, an ambiguous success is not recognised here: the
        caller re-reads and decides (the controller lease does)."""
        from botocore.exceptions import ClientError
        cond = {"IfNoneMatch": "*"} if etag is None else {"IfMatch": etag}
        try:
            resp = self.client.put_object(Bucket=self.bucket, Key=self.prefix + key, Body=body, **cond)
        except ClientError as e:
            if _status(e) in (409, 412) or _code(e) in ("PreconditionFailed", "ConditionalRequestConflict"):
                raise ObjectExists(key) from None
            if etag is not None and (_status(e) == 404 or _code(e) in ("NoSuchKey", "404")):
                raise ObjectExists(key) from None
            raise
        return resp["ETag"]

    def get_with_etag(self, key: str) -> tuple[bytes, str]:
        """The object's bytes and its ETag; NoSuchKey if absent."""
        from botocore.exceptions import ClientError
        try:
            resp = self.client.get_object(Bucket=self.bucket, Key=self.prefix + key)
        except ClientError as e:
            if _code(e) in ("NoSuchKey", "404") or _status(e) == 404:
                raise NoSuchKey(key) from None
            raise
        return resp["Body"].read(), resp["ETag"]

    def get(self, key: str, start: int | None = None, end: int | None = None) -> bytes:
        """The object's bytes, or [start, end) of them."""
        from botocore.exceptions import ClientError
        kwargs = {}
        if start is not None:
            kwargs["Range"] = f"bytes={start}-{'' if end is None else end - 1}"
        try:
            resp = self.client.get_object(Bucket=self.bucket, Key=self.prefix + key, **kwargs)
        except ClientError as e:
            if _code(e) in ("NoSuchKey", "404") or _status(e) == 404:
                raise NoSuchKey(key) from None
            raise
        return resp["Body"].read()

    def list(self, prefix: str, start_after: str | None = None) -> list[tuple[str, int]]:
        """(key, size) for every key under prefix, in key order."""
        out = []
        kwargs = {"Bucket": self.bucket, "Prefix": self.prefix + prefix}
        if start_after:
            kwargs["StartAfter"] = self.prefix + start_after
        paginator = self.client.get_paginator("list_objects_v2")
        for page in paginator.paginate(**kwargs):
            for item in page.get("Contents", ()):
                out.append((item["Key"][len(self.prefix):], item["Size"]))
        out.sort()
        return out

    def delete(self, key: str) -> None:
        self.client.delete_object(Bucket=self.bucket, Key=self.prefix + key)
