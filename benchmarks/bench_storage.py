"""Produce latency and throughput of the reference broker: EBS-style WAL
(a file on the volume) against `--wal s3`, with and without added S3 latency.

For each mode × added S3 latency, one broker process on one node (SeaweedFS
behind a delaying proxy), kafka-python producing 1 KiB records with acks=all
for --seconds. Prints MB/s, produce latency p50/p99/p999, uploads during the
window (a comparison only counts if uploads really happen: at least 10), and
the broker's peak resident memory.

    python benchmarks/bench_storage.py                     # 20 s per cell
    python benchmarks/bench_storage.py --seconds 60 --latency 0,100ms,200ms

What to expect: the WAL-file mode acks after a local fsync, so its p99 must
not grow with S3 latency; the S3-WAL mode acks after a PUT, so its must.
"""
from __future__ import annotations

import argparse
import re
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from harness.db.reference import ReferenceCluster  # noqa: E402
from harness.durations import parse_duration  # noqa: E402
from harness.s3server import SeaweedS3, s3_client  # noqa: E402
from nemeses.s3_proxy import DelayProxy  # noqa: E402


def broker_supports(flag: str) -> bool:
    out = subprocess.run([sys.executable, "-m", "reference.broker", "--help"], capture_output=True, text=True).stdout
    return flag in out


def percentile(sorted_values, q):
    if not sorted_values:
        return float("nan")
    return sorted_values[min(len(sorted_values) - 1, int(q * len(sorted_values)))]


def peak_rss_mib(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def measure(bootstrap: str, seconds: float, record_bytes: int, max_outstanding: int) -> dict:
    from kafka import KafkaProducer
    from kafka.admin import KafkaAdminClient, NewTopic
    admin = KafkaAdminClient(bootstrap_servers=bootstrap)
    admin.create_topics([NewTopic("bench", 4, 1)])
    admin.close()
    producer = KafkaProducer(bootstrap_servers=bootstrap, acks="all", linger_ms=1, batch_size=64 * 1024)
    payload = b"x" * record_bytes
    latencies: list[float] = []
    errors = [0]
    window = threading.Semaphore(max_outstanding)

    def done(started, ok):
        if ok:
            latencies.append(time.perf_counter() - started)
        else:
            errors[0] += 1
        window.release()

    # warm-up: connections, metadata
    producer.send("bench", payload).get(30)
    t0 = time.perf_counter()
    sent = 0
    while time.perf_counter() - t0 < seconds:
        window.acquire()
        started = time.perf_counter()
        fut = producer.send("bench", payload, partition=sent % 4)
        fut.add_callback(lambda _m, s=started: done(s, True))
        fut.add_errback(lambda _e, s=started: done(s, False))
        sent += 1
    producer.flush(60)
    elapsed = time.perf_counter() - t0
    producer.close()
    lat = sorted(latencies)
    return {"records": len(lat), "errors": errors[0], "mb_s": len(lat) * record_bytes / elapsed / 1e6,
            "p50_ms": percentile(lat, 0.50) * 1000, "p99_ms": percentile(lat, 0.99) * 1000,
            "p999_ms": percentile(lat, 0.999) * 1000, "mean_ms": statistics.fmean(lat) * 1000 if lat else 0}


def run_cell(s3: SeaweedS3, mode: str, latency: float, args) -> dict:
    bucket = f"bench-{mode}-{int(latency * 1000)}-{int(time.time())}"
    s3_client(s3.endpoint).create_bucket(Bucket=bucket)
    proxy = DelayProxy("127.0.0.1", s3.port, latency).start()
    broker_args = ["--upload-bytes", args.upload_bytes, "--upload-interval", args.upload_interval,
                   "--cache-size", args.cache_size, "--wal-capacity", args.wal_capacity]
    if mode == "s3":
        broker_args += ["--wal", "s3"]
    with tempfile.TemporaryDirectory() as d:
        cluster = ReferenceCluster(Path(d), s3_endpoint=proxy.endpoint, bucket=bucket, broker_args=broker_args)
        cluster.setup()
        try:
            node = cluster.nodes["n1"]
            uploads_before = len(re.findall("uploaded and committed", node.log_path.read_text()))
            result = measure(cluster.bootstrap_servers, args.seconds, args.record_bytes, args.max_outstanding)
            log = node.log_path.read_text()
            result["uploads"] = len(re.findall("uploaded and committed", log)) - uploads_before
            result["peak_rss_mib"] = peak_rss_mib(node.pid)
        finally:
            cluster.teardown()
            proxy.stop()
    return result


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--seconds", type=float, default=20)
    p.add_argument("--record-bytes", type=int, default=1024)
    p.add_argument("--latency", default="0,100ms", help="added S3 latencies, comma-separated")
    p.add_argument("--modes", default="file,s3", help="WAL modes: file (volume), s3")
    p.add_argument("--max-outstanding", type=int, default=100,
                   help="records in flight; higher measures queueing more than the WAL")
    p.add_argument("--upload-bytes", default="1MiB")
    p.add_argument("--upload-interval", default="1s")
    p.add_argument("--cache-size", default="64MiB")
    p.add_argument("--wal-capacity", default="256MiB")
    args = p.parse_args(argv)
    latencies = [parse_duration(x) for x in args.latency.split(",")]
    modes = args.modes.split(",")
    if "s3" in modes and not broker_supports("--wal "):
        print("note: this broker has no `--wal s3` mode yet; measuring the WAL-file mode only", file=sys.stderr)
        modes = [m for m in modes if m != "s3"]
    print(f"{'wal':5} {'+S3 lat':>8} {'records':>8} {'MB/s':>6} {'p50 ms':>8} {'p99 ms':>8} {'p999 ms':>8} "
          f"{'uploads':>7} {'peak RSS MiB':>12}")
    with tempfile.TemporaryDirectory() as d, SeaweedS3(Path(d)) as s3:
        for mode in modes:
            for lat in latencies:
                r = run_cell(s3, mode, lat, args)
                flag = "" if r["uploads"] >= 10 else "  (fewer than 10 uploads: not comparable)"
                print(f"{mode:5} {lat * 1000:6.0f}ms {r['records']:8d} {r['mb_s']:6.2f} {r['p50_ms']:8.1f} "
                      f"{r['p99_ms']:8.1f} {r['p999_ms']:8.1f} {r['uploads']:7d} {r['peak_rss_mib']:12.0f}{flag}",
                      flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
