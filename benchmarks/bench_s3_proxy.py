"""What the S3 fault proxy costs when it injects nothing: request latency
(small PUT, small GET) and large-PUT throughput, straight to SeaweedFS and
through the proxy, with the same boto3 client settings.

    python benchmarks/bench_s3_proxy.py                 # 300 small ops, 20 x 8 MiB PUTs per path

What to expect: a few hundred microseconds more per request (one more
loopback hop and the proxy's framing in Python), and large PUTs bounded by
the proxy's copying at several hundred MB/s, well above what a broker uploads.
"""
from __future__ import annotations

import argparse
import random
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from harness.s3server import SeaweedS3, s3_client  # noqa: E402
from nemeses.s3_proxy import S3FaultProxy  # noqa: E402


def percentile(values, q):
    values = sorted(values)
    return values[min(len(values) - 1, int(q * len(values)))]


def run(endpoint: str, bucket: str, small: int, large: int, large_bytes: int) -> dict:
    c = s3_client(endpoint)
    body = b"x" * 1024
    c.put_object(Bucket=bucket, Key="warm", Body=body)
    puts, gets = [], []
    for i in range(small):
        t0 = time.perf_counter()
        c.put_object(Bucket=bucket, Key=f"small/{i}", Body=body)
        puts.append(time.perf_counter() - t0)
        t0 = time.perf_counter()
        c.get_object(Bucket=bucket, Key=f"small/{i}")["Body"].read()
        gets.append(time.perf_counter() - t0)
    blob = random.Random(1).randbytes(large_bytes)
    t0 = time.perf_counter()
    for i in range(large):
        c.put_object(Bucket=bucket, Key=f"large/{i}", Body=blob)
    large_s = time.perf_counter() - t0
    return {"put_p50": statistics.median(puts), "put_p99": percentile(puts, 0.99),
            "get_p50": statistics.median(gets), "get_p99": percentile(gets, 0.99),
            "large_mb_s": large * large_bytes / large_s / 1e6}


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--small", type=int, default=300)
    p.add_argument("--large", type=int, default=20)
    p.add_argument("--large-mib", type=int, default=8)
    a = p.parse_args(argv)
    with tempfile.TemporaryDirectory() as d, SeaweedS3(Path(d)) as s3:
        with S3FaultProxy.for_endpoint(s3.endpoint) as proxy:
            rows = []
            for name, endpoint in (("direct", s3.endpoint), ("proxy", proxy.endpoint),
                                   ("direct", s3.endpoint), ("proxy", proxy.endpoint)):
                r = run(endpoint, s3.bucket, a.small, a.large, a.large_mib << 20)
                rows.append((name, r))
            print(f"{'path':8} {'PUT p50 ms':>10} {'PUT p99 ms':>10} {'GET p50 ms':>10} {'GET p99 ms':>10} "
                  f"{'8MiB PUT MB/s':>14}")
            for name, r in rows:
                print(f"{name:8} {r['put_p50'] * 1e3:10.2f} {r['put_p99'] * 1e3:10.2f} {r['get_p50'] * 1e3:10.2f} "
                      f"{r['get_p99'] * 1e3:10.2f} {r['large_mb_s']:14.0f}")
            print("proxy counters:", proxy.stats())
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
