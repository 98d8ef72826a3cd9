"""Measuring a failover from the outside, as a client sees it: steady
acks=all idempotent load, the time until every partition a victim led
accepts writes again, and a final read that every acknowledged record is
still there. Used by the cluster tests and benchmarks/bench_failover.py."""
from __future__ import annotations

import logging
import threading
import time

log = logging.getLogger(__name__)


def _producer(bootstrap: str, **kw):
    from kafka import KafkaProducer
    opts = dict(bootstrap_servers=bootstrap, acks="all", enable_idempotence=True, linger_ms=0,
                request_timeout_ms=3000, retry_backoff_ms=50, metadata_max_age_ms=1000,
                max_in_flight_requests_per_connection=1)
    opts.update(kw)
    return KafkaProducer(**opts)


class SteadyLoad:
    """One thread sending value i to partition i mod P, one at a time;
    remembers every acknowledged (partition, offset, value)."""

    def __init__(self, bootstrap: str, topic: str, partitions: int, pause: float = 0.002):
        self.bootstrap, self.topic, self.partitions, self.pause = bootstrap, topic, partitions, pause
        self.acked: list[tuple[int, int, int]] = []
        self.errors = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="steady-load", daemon=True)

    def start(self) -> "SteadyLoad":
        self._thread.start()
        return self

    def _run(self) -> None:
        p = _producer(self.bootstrap)
        i = 0
        try:
            while not self._stop.is_set():
                part = i % self.partitions
                try:
                    md = p.send(self.topic, str(i).encode(), partition=part).get(timeout=10)
                    self.acked.append((md.partition, md.offset, i))
                except Exception as e:
                    self.errors += 1
                    log.debug("steady load: send %d failed: %r", i, e)
                i += 1
                if self.pause:
                    time.sleep(self.pause)
        finally:
            p.close(timeout=2)

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(30)


def time_until_writable(bootstrap: str, topic: str, partitions: list[int], since: float,
                        deadline: float = 30.0) -> dict[int, float]:
    """For each partition, seconds from `since` (time.monotonic()) until a
    write to it was acknowledged; partitions that never took one within
    `deadline` are missing from the answer."""
    p = _producer(bootstrap, request_timeout_ms=1000, retries=0, enable_idempotence=False,
                  max_block_ms=1000)
    out: dict[int, float] = {}
    end = since + deadline
    try:
        while len(out) < len(partitions) and time.monotonic() < end:
            for part in partitions:
                if part in out:
                    continue
                try:
                    p.send(topic, b"probe", partition=part).get(timeout=1.5)
                    out[part] = time.monotonic() - since
                except Exception:
                    pass
            time.sleep(0.02)
    finally:
        p.close(timeout=2)
    return out


def read_all(bootstrap: str, topic: str, partitions: int, timeout: float = 30.0) -> dict[int, dict[int, bytes]]:
    """partition -> offset -> value, everything up to the high watermark."""
    from kafka import KafkaConsumer, TopicPartition
    c = KafkaConsumer(bootstrap_servers=bootstrap, enable_auto_commit=False, request_timeout_ms=5000,
                      fetch_max_wait_ms=100, metadata_max_age_ms=1000)
    tps = [TopicPartition(topic, p) for p in range(partitions)]
    c.assign(tps)
    c.seek_to_beginning(*tps)
    ends = c.end_offsets(tps)
    out: dict[int, dict[int, bytes]] = {p: {} for p in range(partitions)}
    deadline = time.monotonic() + timeout
    try:
        while time.monotonic() < deadline and any(c.position(tp) < ends[tp] for tp in tps):
            for tp, msgs in c.poll(timeout_ms=200).items():
                for m in msgs:
                    out[tp.partition][m.offset] = m.value
    finally:
        c.close()
    return out


def lost_acked(acked: list[tuple[int, int, int]], log_contents: dict[int, dict[int, bytes]]) -> list:
    """Acknowledged (partition, offset, value) not found at their offset."""
    return [(p, o, v) for p, o, v in acked if log_contents.get(p, {}).get(o) != str(v).encode()]
