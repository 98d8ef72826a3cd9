"""The simulated object store, as a boto3 S3 client: the reference's real
`ObjectStore` (conditional writes, the ambiguous-success read-back) runs on
it unchanged, and it answers with botocore's own exceptions.

Server semantics (S3's, as SeaweedFS and AWS give them): strong
read-after-write consistency; `If-None-Match: *` fails with 412 when the key
exists; `If-Match: <etag>` fails with 412 on another ETag and 404 when the
key is gone; the ETag is the MD5 of the body, quoted.

Client semantics (boto3's "standard" retry mode, 3 attempts): 500, 503
SlowDown, a reset connection and a read timeout are retried; 412/404 are
not. Each attempt may be, by the faults in force:
- slow (latency, charged to the calling blocking job),
- refused before it is applied (503, 500, reset),
- *ambiguous*: applied, and then its response lost (reset), so the retry
  meets its own write (a conditional PUT then gets 412),
- hung: nothing comes back until the client's read timeout (applied or not).
When every attempt failed, the last error is raised, as boto3 does.
"""
from __future__ import annotations

import hashlib
import random
from dataclasses import dataclass

from botocore.exceptions import ClientError, ConnectionClosedError, ReadTimeoutError

ENDPOINT = "http://s3.sim"


@dataclass
class S3Faults:
    latency: float = 0.0        # extra seconds per request (s3-slow)
    error_rate: float = 0.0     # 503/500 before applying (s3-error)
    reset_rate: float = 0.0     # connection reset before applying (s3-reset)
    hang_rate: float = 0.0      # no answer until the read timeout (s3-hang)
    ambiguous_rate: float = 0.0  # applied, response lost (s3-ambiguous)


class _Body:
    def __init__(self, data: bytes):
        self._data = data

    def read(self) -> bytes:
        return self._data


def _client_error(status: int, code: str, op: str, message: str = "") -> ClientError:
    return ClientError({"Error": {"Code": code, "Message": message or code},
                        "ResponseMetadata": {"HTTPStatusCode": status}}, op)


class SimBucket:
    """The server side: keys -> (body, etag)."""

    def __init__(self):
        self.objects: dict[str, tuple[bytes, str]] = {}
        self.puts = self.gets = self.lists = self.deletes = 0

    @staticmethod
    def etag(body: bytes) -> str:
        return '"' + hashlib.md5(body).hexdigest() + '"'


class _Paginator:
    def __init__(self, client: "SimS3Client"):
        self.client = client

    def paginate(self, Bucket, Prefix="", StartAfter=None, **_):
        keys = self.client._attempt("ListObjectsV2", lambda: self.client._list(Prefix, StartAfter))
        for i in range(0, max(len(keys), 1), 1000):
            page = keys[i:i + 1000]
            yield {"Contents": [{"Key": k, "Size": n} for k, n in page]} if page else {}


class SimS3Client:
    """One process's S3 client (boto3 API subset the ObjectStore uses)."""

    def __init__(self, bucket: SimBucket, loop, rng: random.Random, faults: S3Faults, timeout: float,
                 base_latency: float, attempts: int = 3):
        self.bucket = bucket
        self.loop = loop
        self.rng = rng
        self.faults = faults
        self.timeout = timeout
        self.base_latency = base_latency
        self.attempts = attempts
        self.requests = 0
        self.failed_attempts = 0

    # -- transport and retries -------------------------------------------------
    def _latency(self) -> float:
        d = self.base_latency * (0.5 + self.rng.expovariate(1.0))
        if self.rng.random() < 0.01:
            d += self.rng.uniform(0.05, 1.0)    # the long tail S3 is known for
        return d + self.faults.latency

    def _attempt(self, op: str, apply):
        """Run `apply` (the server's side) under the client's retries."""
        f = self.faults
        last = None
        for attempt in range(self.attempts):
            self.requests += 1
            self.loop.charge(self._latency())
            r = self.rng.random()
            if r < f.error_rate:
                last = _client_error(503, "SlowDown", op, "Please reduce your request rate.") \
                    if self.rng.random() < 0.5 else _client_error(500, "InternalError", op)
            elif r < f.error_rate + f.reset_rate:
                last = ConnectionClosedError(endpoint_url=ENDPOINT)
            elif r < f.error_rate + f.reset_rate + f.hang_rate:
                if self.rng.random() < 0.5:
                    self._apply_quietly(apply)   # it was applied; the answer never came
                self.loop.charge(self.timeout)
                last = ReadTimeoutError(endpoint_url=ENDPOINT)
            elif r < f.error_rate + f.reset_rate + f.hang_rate + f.ambiguous_rate:
                self._apply_quietly(apply)       # applied; then the response was lost
                last = ConnectionClosedError(endpoint_url=ENDPOINT)
            else:
                return apply()      # ClientErrors from the server (412, 404) are not retried
            self.failed_attempts += 1
            self.loop.charge(min(20.0, 0.05 * 2 ** attempt) * self.rng.random())   # boto3's jittered back-off
        raise last

    @staticmethod
    def _apply_quietly(apply) -> None:
        try:
            apply()
        except ClientError:
            pass            # its answer (412, 404) was lost with the rest

    # -- the server's side -------------------------------------------------------
    def _put(self, key: str, body: bytes, if_none_match, if_match):
        objs = self.bucket.objects
        cur = objs.get(key)
        if if_none_match == "*" and cur is not None:
            raise _client_error(412, "PreconditionFailed", "PutObject", "At least one of the pre-conditions failed")
        if if_match is not None:
            if cur is None:
                raise _client_error(404, "NoSuchKey", "PutObject")
            if cur[1] != if_match:
                raise _client_error(412, "PreconditionFailed", "PutObject", "At least one of the pre-conditions failed")
        etag = SimBucket.etag(body)
        objs[key] = (body, etag)
        self.bucket.puts += 1
        return {"ETag": etag}

    def _get(self, key: str, rng):
        cur = self.bucket.objects.get(key)
        self.bucket.gets += 1
        if cur is None:
            raise _client_error(404, "NoSuchKey", "GetObject", "The specified key does not exist.")
        body, etag = cur
        if rng is not None:
            spec = rng.split("=", 1)[1]
            a, _, b = spec.partition("-")
            start = int(a)
            end = len(body) if b == "" else min(len(body), int(b) + 1)
            if start >= len(body) and len(body) > 0:
                raise _client_error(416, "InvalidRange", "GetObject")
            body = body[start:end]
        return {"Body": _Body(body), "ETag": etag}

    def _list(self, prefix: str, start_after):
        self.bucket.lists += 1
        out = [(k, len(v[0])) for k, v in self.bucket.objects.items()
               if k.startswith(prefix) and (start_after is None or k > start_after)]
        out.sort()
        return out

    def _delete(self, key: str):
        self.bucket.deletes += 1
        self.bucket.objects.pop(key, None)
        return {}

    # -- boto3's API ------------------------------------------------------------------
    def put_object(self, Bucket, Key, Body, IfNoneMatch=None, IfMatch=None, **_):
        body = bytes(Body)
        return self._attempt("PutObject", lambda: self._put(Key, body, IfNoneMatch, IfMatch))

    def get_object(self, Bucket, Key, Range=None, **_):
        return self._attempt("GetObject", lambda: self._get(Key, Range))

    def get_paginator(self, name: str):
        if name != "list_objects_v2":
            raise NotImplementedError(name)
        return _Paginator(self)

    def delete_object(self, Bucket, Key, **_):
        return self._attempt("DeleteObject", lambda: self._delete(Key))
