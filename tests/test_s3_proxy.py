"""The delaying S3 proxy adds its latency once per request and passes bytes intact."""
from __future__ import annotations

import time

from harness.s3server import s3_client
from nemeses.s3_proxy import DelayProxy


def test_delay_proxy_adds_latency_per_request(s3_bucket):
    endpoint, bucket = s3_bucket
    host, port = endpoint[len("http://"):].rsplit(":", 1)
    proxy = DelayProxy(host, int(port), latency=0.2).start()
    try:
        direct, delayed = s3_client(endpoint), s3_client(proxy.endpoint)
        body = bytes(range(256)) * 400
        delayed.put_object(Bucket=bucket, Key="warm", Body=b"x")  # connection set-up outside the timing
        before = proxy.requests_delayed
        t0 = time.monotonic()
        delayed.put_object(Bucket=bucket, Key="k", Body=body)    # with Expect: 100-continue
        put = time.monotonic() - t0
        assert proxy.requests_delayed == before + 1              # once, not once per chunk
        t0 = time.monotonic()
        got = delayed.get_object(Bucket=bucket, Key="k")["Body"].read()
        get = time.monotonic() - t0
        assert proxy.requests_delayed == before + 2
        assert got == body
        assert direct.get_object(Bucket=bucket, Key="k")["Body"].read() == body
        assert put >= 0.2 and get >= 0.2
    finally:
        proxy.stop()
