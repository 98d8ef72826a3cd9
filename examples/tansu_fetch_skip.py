"""Reproduce the fetch skip Highwater found in Tansu 0.6.0 (S3 engine), in
isolation: several idempotent producers append to one partition while one
consumer tails it; afterwards a fresh consumer reads the partition from the
beginning. Every offset the tailing consumer jumped over although it exists
in the log is printed with its witness (who wrote it, when it was acked, and
when the consumer read the offset after it).

    python3 examples/tansu_fetch_skip.py [--seconds 20] [--producers 4] [--s3-latency 0.05]

--s3-latency delays every S3 request by that much in the proxy the tansu
target puts in front of SeaweedFS (what the s3-slow fault does): the race
window widens and the skips become frequent. Exit 1 if a skip was seen.
"""
from __future__ import annotations

import argparse
import shutil
import sys
import tempfile
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--seconds", type=float, default=20)
    p.add_argument("--producers", type=int, default=4)
    p.add_argument("--s3-latency", type=float, default=0.0)
    a = p.parse_args()

    from kafka import KafkaConsumer, KafkaProducer, TopicPartition
    from harness.db.tansu import TansuTarget
    from harness.workloads.kafka_python_client import create_topics

    work = Path(tempfile.mkdtemp(prefix="tansu-skip-"))
    target = TansuTarget(work)
    stop = threading.Event()
    acks: dict[int, tuple[str, float, float]] = {}      # offset -> (value, invoked, acked)
    try:
        target.setup()
        target.s3_proxy("n1").latency = a.s3_latency
        bootstrap = target.bootstrap_servers
        create_topics(bootstrap, ["skip"])
        tp = TopicPartition("skip", 0)
        t0 = time.monotonic()

        def produce(w: int) -> None:
            producer = KafkaProducer(bootstrap_servers=bootstrap)   # idempotent, acks=all
            i = 0
            while not stop.is_set():
                invoked = time.monotonic() - t0
                offset = producer.send("skip", value=f"p{w}-{i}".encode(), partition=0).get(30).offset
                acks[offset] = (f"p{w}-{i}", invoked, time.monotonic() - t0)
                i += 1
            producer.close()

        threads = [threading.Thread(target=produce, args=(w,), daemon=True) for w in range(a.producers)]
        for t in threads:
            t.start()
        tail = KafkaConsumer(bootstrap_servers=bootstrap, fetch_max_wait_ms=100)
        tail.assign([tp])
        tail.seek_to_beginning(tp)
        seen: list[tuple[int, float]] = []
        while time.monotonic() - t0 < a.seconds:
            for records in tail.poll(200).values():
                seen.extend((r.offset, time.monotonic() - t0) for r in records)
        stop.set()
        for t in threads:
            t.join(60)
        tail.close()

        full: dict[int, str] = {}
        reader = KafkaConsumer(bootstrap_servers=bootstrap, fetch_max_wait_ms=100)
        reader.assign([tp])
        reader.seek_to_beginning(tp)
        deadline = time.monotonic() + 30 + 2 * len(acks) * a.s3_latency   # each batch is one GET
        while time.monotonic() < deadline and not set(acks) <= set(full):
            for records in reader.poll(500).values():
                full.update((r.offset, r.value.decode()) for r in records)
        reader.close()

        skips = []
        for (a_off, _), (b_off, read_at) in zip(seen, seen[1:]):
            skips.extend((m, b_off, read_at) for m in range(a_off + 1, b_off) if m in full)
        lost = sorted(set(acks) - set(full))
        print(f"acked {len(acks)} sends; the tail read {len(seen)} records; "
              f"{len(skips)} offsets skipped by the tail although they are in the log; "
              f"{len(lost)} acked offsets missing from the full read")
        for m, after, read_at in skips[:10]:
            value, invoked, acked = acks.get(m, (full[m], float("nan"), float("nan")))
            b_value, _, b_acked = acks.get(after, ("?", 0, float("nan")))
            print(f"  offset {m} ({value!r}, send {invoked:.3f}-{acked:.3f}s) skipped: the tail read offset "
                  f"{after} ({b_value!r}, acked {b_acked:.3f}s) at {read_at:.3f}s without it")
        return 1 if skips or lost else 0
    finally:
        stop.set()
        target.teardown()
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    raise SystemExit(main())
