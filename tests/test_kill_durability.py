"""Issue 2's promise: SIGKILL the broker again and again in the middle of
acks=all traffic, and no acknowledged record is lost or duplicated. Between
kills, objects reach S3 and the WAL is trimmed, so each recovery really
combines what is in S3 with what is left in the WAL."""
from __future__ import annotations

import re
import threading
import time

import pytest

from harness.db.reference import ReferenceCluster
from harness.s3server import s3_client
from reference.storage.wal import read_header

TOPIC = "durable"
PARTITIONS = 3
KILLS = 5


def _object_count(endpoint, bucket, prefix="") -> int:
    s3 = s3_client(endpoint)
    count = 0
    prefix = prefix.strip("/") + "/" if prefix.strip("/") else ""
    for page in s3.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix + "objects/"):
        count += page.get("KeyCount", 0)
    return count


class Producer(threading.Thread):
    """Sends 0, 1, 2, … round-robin over the partitions with kafka-python's
    defaults (idempotence on, acks=all), one at a time, noting every ack."""

    def __init__(self, bootstrap):
        super().__init__(daemon=True)
        self.bootstrap = bootstrap
        self.acked: dict[int, tuple[int, int]] = {}   # value -> (partition, offset)
        self.in_doubt: set[int] = set()
        self.stop = threading.Event()

    def _producer(self):
        from kafka import KafkaProducer
        return KafkaProducer(bootstrap_servers=self.bootstrap, request_timeout_ms=4000, max_block_ms=4000,
                             delivery_timeout_ms=20000, reconnect_backoff_max_ms=500)

    def run(self):
        producer, value = None, 0
        while not self.stop.is_set():
            try:
                if producer is None:
                    producer = self._producer()
                meta = producer.send(TOPIC, value=str(value).encode(), partition=value % PARTITIONS).get(25)
                self.acked[value] = (meta.partition, meta.offset)
            except Exception:
                self.in_doubt.add(value)
                if producer is not None:
                    producer.close(timeout=0)
                producer = None
                time.sleep(0.2)
            value += 1
        if producer is not None:
            producer.close(timeout=1)


def _consume_all(bootstrap) -> dict[int, list[tuple[int, int]]]:
    from kafka import KafkaConsumer, TopicPartition
    consumer = KafkaConsumer(bootstrap_servers=bootstrap, group_id=None, enable_auto_commit=False,
                             auto_offset_reset="earliest")
    tps = [TopicPartition(TOPIC, p) for p in range(PARTITIONS)]
    consumer.assign(tps)
    consumer.seek_to_beginning(*tps)
    ends = consumer.end_offsets(tps)
    got: dict[int, list[tuple[int, int]]] = {p: [] for p in range(PARTITIONS)}
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and any(consumer.position(tp) < ends[tp] for tp in tps):
        for tp, records in consumer.poll(timeout_ms=1000).items():
            got[tp.partition].extend((r.offset, int(r.value)) for r in records)
    consumer.close()
    return got


@pytest.mark.timeout(240)
def test_sigkill_during_acks_all_loses_and_duplicates_nothing(tmp_path, s3_bucket):
    endpoint, bucket = s3_bucket
    cluster = ReferenceCluster(tmp_path, s3_endpoint=endpoint, bucket=bucket,
                               broker_args=["--upload-bytes", "32KiB", "--upload-interval", "1500ms",
                                            "--wal-capacity", "16MiB"])
    cluster.setup()
    producer = None
    try:
        from harness.workloads.kafka_python_client import create_topics  # noqa: F401 (same admin path as runs)
        from kafka.admin import KafkaAdminClient, NewTopic
        admin = KafkaAdminClient(bootstrap_servers=cluster.bootstrap_servers)
        admin.create_topics([NewTopic(TOPIC, PARTITIONS, 1)])
        admin.close()

        producer = Producer(cluster.bootstrap_servers)
        producer.start()
        node = cluster.nodes["n1"]
        observations = []
        for _ in range(KILLS):
            time.sleep(3.0)
            before = (_object_count(endpoint, bucket, cluster.s3_prefix), read_header(node.volume)["trim_offset"], len(producer.acked))
            cluster.kill_node("n1")
            observations.append(before)
            time.sleep(0.5)
            cluster.start_node("n1")
        time.sleep(3.0)
        producer.stop.set()
        producer.join(60)
        got = _consume_all(cluster.bootstrap_servers)
        log = node.log_path.read_text()
    finally:
        if producer is not None:
            producer.stop.set()
        cluster.teardown()

    acked = producer.acked
    assert len(acked) > 200, f"too little traffic to mean anything: {len(acked)} acks"

    # No acknowledged record lost: each is at the offset its ack named.
    by_offset = {(p, off): v for p, records in got.items() for off, v in records}
    lost = {v: po for v, po in acked.items() if by_offset.get(po) != v}
    assert not lost, f"{len(lost)} acknowledged records lost or moved, e.g. {sorted(lost.items())[:5]}"

    # No duplicates, no gaps: each partition's offsets are 0..n-1, each value once.
    values = [v for records in got.values() for _, v in records]
    assert len(values) == len(set(values)), "a value appears twice"
    for p, records in got.items():
        assert [off for off, _ in records] == list(range(len(records))), f"partition {p} offsets not dense"
    unexpected = set(values) - set(acked) - producer.in_doubt
    assert not unexpected, f"values nobody sent: {sorted(unexpected)[:5]}"

    # Between kills, data reached S3 and the WAL was trimmed behind it.
    objects = [o for o, _, _ in observations]
    trims = [t for _, t, _ in observations]
    assert objects[-1] > objects[0] > 0, f"objects in S3 at each kill: {objects}"
    assert trims[-1] > trims[0], f"WAL trim offset at each kill: {trims}"
    # And recovery replayed records from the WAL that were not yet in S3.
    replayed = [int(n) for n in re.findall(r"recovered \d+ records from WAL .*?: (\d+) replayed", log)]
    assert len(replayed) >= KILLS and sum(replayed) > 0, f"replayed per recovery: {replayed}"
    print(f"\n{len(acked)} acks, {len(producer.in_doubt)} in doubt, {KILLS} SIGKILLs; objects in S3 at each kill "
          f"{objects}; WAL trim offset at each kill {trims}; WAL records replayed per recovery {replayed}")
