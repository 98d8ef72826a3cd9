"""Reassignment cost follows the delta, not the partition's size.

Seeds two partitions through the storage engine itself (no clients): `small`
with 10 MB and `big` with 1 GB, all uploaded to S3. Then starts a 2-node
reference cluster on that bucket, gives each partition the same
not-yet-uploaded delta (through a client), and moves each to the other node
(AlterPartitionReassignments' path: the source uploads only the delta,
commits, lets go; the target opens at the committed end). Several rounds;
prints each move's time and delta, the medians, and how much they differ.

    python3 benchmarks/bench_reassign.py [--big 1GiB] [--small 10MiB] [--delta 8MiB] [--rounds 3]

Aim (issue 10): the two times differ by less than 50 %.
"""
from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from harness.db.reference import ReferenceCluster  # noqa: E402
from harness.s3server import SeaweedS3  # noqa: E402
from reference.storage.config import EngineConfig, parse_size  # noqa: E402
from reference.storage.engine import S3Engine  # noqa: E402
from reference.storage.testing import make_batch  # noqa: E402

RECORD = 1000


async def seed(endpoint: str, bucket: str, work: Path, sizes: dict[str, int]) -> None:
    cfg = EngineConfig(wal_capacity=256 << 20, cache_size=256 << 20, upload_bytes=64 << 20)
    engine = S3Engine(1, work / "seed-volume", endpoint, bucket, cfg)
    await engine.start()
    batch = make_batch([b"s" * RECORD] * 1000)          # ~1 MB
    try:
        for topic, size in sizes.items():
            await engine.create_topic(topic, 1)
            n = max(1, size // len(batch))
            t = time.monotonic()
            for start in range(0, n, 16):
                await asyncio.gather(*(engine.append(topic, 0, batch) for _ in range(min(16, n - start))))
            await engine.upload_now()
            print(f"seeded {topic}: {n * len(batch) / 1e6:.0f} MB through the engine in {time.monotonic() - t:.1f}s",
                  flush=True)
    finally:
        await engine.close()


def produce(bootstrap: str, topic: str, nbytes: int) -> int:
    from kafka import KafkaProducer
    p = KafkaProducer(bootstrap_servers=bootstrap, acks="all", linger_ms=5, batch_size=256 << 10,
                      max_request_size=8 << 20)
    n = max(1, nbytes // RECORD)
    futures = [p.send(topic, b"d" * RECORD, partition=0) for _ in range(n)]
    for f in futures:
        f.get(timeout=60)
    p.close()
    return n * RECORD


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--big", default="1GiB")
    ap.add_argument("--small", default="10MiB")
    ap.add_argument("--delta", default="8MiB")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--dir")
    args = ap.parse_args()
    work = Path(args.dir or tempfile.mkdtemp(prefix="hw-bench-reassign-"))
    s3 = SeaweedS3(work / "s3", bucket="bench").start()
    c = None
    times: dict[str, list[float]] = {"small": [], "big": []}
    deltas: dict[str, list[int]] = {"small": [], "big": []}
    try:
        asyncio.run(seed(s3.endpoint, "bench", work, {"small": parse_size(args.small), "big": parse_size(args.big)}))
        c = ReferenceCluster(work / "cluster", nodes_count=2, s3_endpoint=s3.endpoint, bucket="bench",
                             broker_args=["--wal-capacity", "256MiB", "--upload-interval", "3600",
                                          "--upload-bytes", "1GiB"])
        c.setup()
        time.sleep(1)
        for r in range(args.rounds):
            for topic in ("small", "big"):
                produce(c.bootstrap_servers, topic, parse_size(args.delta))
                lead = {t: o for t, _p, o, _e in c.controller_call("cluster")["streams"]}
                target = next(n.node_id for n in c.nodes.values() if n.node_id != lead[topic])
                t0 = time.monotonic()
                reply = c.controller_call("reassign", {"moves": [[topic, 0, target]]}, timeout=300)
                wall = time.monotonic() - t0
                if reply["errors"]:
                    print(f"reassign {topic}: {reply['errors']}", file=sys.stderr)
                    return 2
                rec = reply["moved"][0]
                times[topic].append(wall)
                deltas[topic].append(rec["delta_bytes"])
                print(json.dumps({"round": r, "topic": topic, "seconds": round(wall, 3), **rec}), flush=True)
    finally:
        if c is not None:
            c.teardown()
        s3.stop()
    med = {t: statistics.median(v) for t, v in times.items()}
    diff = abs(med["big"] - med["small"]) / min(med.values())
    for t in ("small", "big"):
        print(f"{t:5s} ({args.small if t == 'small' else args.big}): delta {statistics.median(deltas[t]) / 1e6:.1f} MB "
              f"not yet uploaded; move median {med[t]:.3f} s, all {[round(x, 3) for x in times[t]]}")
    print(f"difference of the medians: {diff * 100:.0f} % (aim: < 50 %)")
    return 0 if diff < 0.5 else 1


if __name__ == "__main__":
    sys.exit(main())
