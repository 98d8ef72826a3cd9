"""Issue 4's compatibility cycle, once for each of the three clients:
kafka-python 3.0 (its defaults: idempotence on, acks=all), confluent-kafka
(librdkafka 2.x, enable.idempotence=true, acks=all) and Debian's kcat (the
librdkafka CLI, `-X enable.idempotence=true -X acks=all`), against a real
broker process (`python -m reference.broker`, WAL + S3 engine on the
session's SeaweedFS when present):

 1. create a topic of 4 partitions;
 2. two consumers of the client join one group and split the partitions;
 3. produce 10 000 records, idempotent, acks=all; every batch stored carries
    a producer id (idempotence really was on);
 4. consume them by assign (the client's own assign / `kcat -C -e`):
    every record exactly once, in order, per partition;
 5. the group's two consumers read them too, each only its own partitions;
 6. one consumer leaves; the other takes over its partitions and reads the
    1 000 records produced next, on every partition, nothing twice;
 7. committed offsets are the end offsets, as the client itself fetches
    them (kcat has no command for that: the raw OffsetFetch covers it) and
    as a raw OffsetFetch request sees them;
 8. kill -9 the broker and restart it (durable storage only);
 9. committed offsets survived; consume by assign again: all 11 000 records
    exactly once, in order, per partition (also checked batch by batch over
    the raw protocol); 500 more are produced; a new consumer of the group
    resumes from its committed offsets: it gets exactly those 500.

kcat has no topic creation: for it the topic is created with
confluent-kafka's AdminClient, librdkafka being the library kcat is built on.
"""
from __future__ import annotations

import re
import shutil
import signal
import subprocess
import threading
import time

import pytest

from test_clients import (DURABLE, RawClient, assert_exactly_once_in_order, broker,  # noqa: F401
                          consume_all_confluent, consume_all_kafka_python, create_topic, storage_args)

PARTITIONS = 4
N_RECORDS = 10_000
N_AFTER_LEAVE = 1_000
N_AFTER_RESTART = 500
TOPIC = "cycle"
GROUP = "cycle-group"
REBALANCE_TIMEOUT = 45.0  # librdkafka and kafka-python heartbeat every 3 s by default


def values(start: int, stop: int) -> dict[int, list[bytes]]:
    """Records start..stop-1, record i on partition i mod 4, its decimal value."""
    out: dict[int, list[bytes]] = {p: [] for p in range(PARTITIONS)}
    for i in range(start, stop):
        out[i % PARTITIONS].append(b"%d" % i)
    return out


def extend(sent: dict, more: dict) -> None:
    for p, vs in more.items():
        sent[p].extend(vs)


def wait_until(condition, timeout: float, step) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        step()
        if condition():
            return True
    return False


class Ledger:
    """Every record group consumers delivered, per partition, in delivery
    order, with who read it."""

    def __init__(self):
        self.seen: dict[int, list] = {p: [] for p in range(PARTITIONS)}
        self.readers: dict[int, set] = {p: set() for p in range(PARTITIONS)}

    def add(self, reader: str, partition: int, offset: int, value: bytes) -> None:
        self.seen[partition].append((offset, value))
        self.readers[partition].add(reader)

    def count(self) -> int:
        return sum(map(len, self.seen.values()))

    def assert_log(self, sent: dict, start: dict | None = None) -> None:
        """Exactly the records from `start` (default 0) to the end of `sent`,
        once each, in offset order, on every partition."""
        for p, vs in sent.items():
            first = start[p] if start else 0
            expected = [(first + i, v) for i, v in enumerate(vs[first:])]
            assert self.seen[p] == expected, (
                f"partition {p}: {len(self.seen[p])} records delivered, {len(expected)} expected; "
                f"first differences: {[x for x in self.seen[p] if x not in expected][:5]} / "
                f"{[x for x in expected if x not in self.seen[p]][:5]}")


# --- the raw protocol view, client-independent ---------------------------------------

def raw_committed(bootstrap: str, group: str) -> dict[int, int]:
    from kafka.protocol.consumer import OffsetFetchRequest, OffsetFetchResponse
    F = OffsetFetchRequest.OffsetFetchRequestTopic
    client = RawClient(bootstrap)
    try:
        response = client.call(OffsetFetchRequest(group_id=group, topics=[
            F(name=TOPIC, partition_indexes=list(range(PARTITIONS)))]), 5, OffsetFetchResponse)
    finally:
        client.close()
    assert response.error_code == 0
    parts = response.topics[0].partitions
    assert all(p.error_code == 0 for p in parts), parts
    return {p.partition_index: p.committed_offset for p in parts}


def raw_log(bootstrap: str, partition: int) -> tuple[list, set]:
    """The partition's whole log over plain Fetch requests: [(offset, value)]
    and the set of producer ids of its batches."""
    from kafka.protocol.consumer import FetchRequest, FetchResponse
    from kafka.record.memory_records import MemoryRecords
    T = FetchRequest.FetchTopic
    client = RawClient(bootstrap)
    records, producer_ids, offset = [], set(), 0
    try:
        while True:
            request = FetchRequest(replica_id=-1, max_wait_ms=0, min_bytes=1, max_bytes=4 << 20, isolation_level=0,
                                   topics=[T(topic=TOPIC, partitions=[T.FetchPartition(
                                       partition=partition, current_leader_epoch=-1, fetch_offset=offset,
                                       log_start_offset=-1, partition_max_bytes=4 << 20)])])
            part = client.call(request, 11, FetchResponse).responses[0].partitions[0]
            assert part.error_code == 0, part
            batches = MemoryRecords(part.records)
            while batches.has_next():
                batch = batches.next_batch()
                producer_ids.add(batch.producer_id)
                records.extend((r.offset, r.value) for r in batch if r.offset >= offset)
            offset = records[-1][0] + 1 if records else 0
            if offset >= part.high_watermark:
                return records, producer_ids
    finally:
        client.close()


# --- the clients, behind one small interface ----------------------------------------

class KafkaPythonClient:
    name = "kafka-python"

    def create_topic(self, bootstrap):
        create_topic(bootstrap, TOPIC, PARTITIONS)

    def produce(self, bootstrap, batch: dict):
        from kafka import KafkaProducer
        producer = KafkaProducer(bootstrap_servers=bootstrap, linger_ms=5)
        try:
            assert producer.config["enable_idempotence"] and producer.config["acks"] == -1  # the defaults
            futures = {p: [producer.send(TOPIC, value=v, partition=p) for v in vs] for p, vs in batch.items()}
            producer.flush(60)
            acked = {p: [f.get(timeout=10).offset for f in fs] for p, fs in futures.items()}
        finally:
            producer.close()
        for p, offsets in acked.items():  # dense, in send order
            assert offsets == list(range(offsets[0], offsets[0] + len(offsets))) if offsets else True, p

    def read_assigned(self, bootstrap, expected):
        return consume_all_kafka_python(bootstrap, TOPIC, PARTITIONS, expected, timeout=60)

    def member(self, bootstrap, tag):
        return KafkaPythonMember(bootstrap, tag)


class KafkaPythonMember:
    def __init__(self, bootstrap, tag):
        from kafka import KafkaConsumer
        self.tag = tag
        self.consumer = KafkaConsumer(bootstrap_servers=bootstrap, group_id=GROUP, auto_offset_reset="earliest",
                                      enable_auto_commit=False)
        self.consumer.subscribe([TOPIC])
        self.closed = False

    def step(self, ledger):
        batch = self.consumer.poll(timeout_ms=200)
        for tp, messages in batch.items():
            for m in messages:
                ledger.add(self.tag, tp.partition, m.offset, m.value)
        if batch:
            self.consumer.commit()  # synchronous, before the next poll can rebalance

    def assigned(self) -> set:
        return {tp.partition for tp in self.consumer.assignment()}

    def committed(self) -> dict:
        from kafka import TopicPartition
        return {p: self.consumer.committed(TopicPartition(TOPIC, p)) for p in range(PARTITIONS)}

    def leave(self, ledger):
        self.closed = True
        self.consumer.close()  # LeaveGroup

    def kill(self):
        if not self.closed:
            self.closed = True
            self.consumer.close()


class ConfluentClient:
    name = "confluent-kafka"
    PRODUCER = {"enable.idempotence": True, "acks": "all", "linger.ms": 5}

    def create_topic(self, bootstrap):
        from confluent_kafka.admin import AdminClient, NewTopic
        admin = AdminClient({"bootstrap.servers": bootstrap})
        for future in admin.create_topics([NewTopic(TOPIC, PARTITIONS, 1)]).values():
            future.result(30)

    def produce(self, bootstrap, batch: dict):
        from confluent_kafka import Producer
        producer = Producer({"bootstrap.servers": bootstrap, **self.PRODUCER})
        acked: dict[int, list] = {p: [] for p in batch}
        errors = []

        def delivered(err, msg):
            if err is not None:
                errors.append(err)
            else:
                acked[msg.partition()].append((msg.offset(), msg.value()))
        n = 0
        for p, vs in batch.items():
            for v in vs:
                producer.produce(TOPIC, value=v, partition=p, on_delivery=delivered)
                n += 1
                if n % 1000 == 0:
                    producer.poll(0)
        assert producer.flush(60) == 0
        assert errors == []
        for p, pairs in acked.items():  # delivery reports come in order per partition
            assert [v for _, v in pairs] == batch[p]
            offsets = [o for o, _ in pairs]
            assert offsets == list(range(offsets[0], offsets[0] + len(offsets))) if offsets else True, p

    def read_assigned(self, bootstrap, expected):
        return consume_all_confluent(bootstrap, TOPIC, PARTITIONS, expected, timeout=60)

    def member(self, bootstrap, tag):
        return ConfluentMember(bootstrap, tag)


class ConfluentMember:
    def __init__(self, bootstrap, tag):
        from confluent_kafka import Consumer
        self.tag = tag
        self.consumer = Consumer({"bootstrap.servers": bootstrap, "group.id": GROUP,
                                  "auto.offset.reset": "earliest", "enable.auto.commit": False})
        self.consumer.subscribe([TOPIC])
        self.closed = False

    def step(self, ledger):
        messages = self.consumer.consume(num_messages=1000, timeout=0.2)
        for m in messages:
            assert m.error() is None, m.error()
            ledger.add(self.tag, m.partition(), m.offset(), m.value())
        if messages:
            self.consumer.commit(asynchronous=False)

    def assigned(self) -> set:
        return {tp.partition for tp in self.consumer.assignment()}

    def committed(self) -> dict:
        from confluent_kafka import TopicPartition
        tps = self.consumer.committed([TopicPartition(TOPIC, p) for p in range(PARTITIONS)], timeout=10)
        return {tp.partition: tp.offset for tp in tps}

    def leave(self, ledger):
        self.closed = True
        self.consumer.close()  # LeaveGroup

    def kill(self):
        if not self.closed:
            self.closed = True
            self.consumer.close()


class KcatClient:
    """`kcat -P` per partition (-p) with idempotence and acks=all; `kcat -C
    -e` to read by assign; `kcat -G` processes as group members (their
    offsets auto-committed by librdkafka, and on close at SIGTERM)."""
    name = "kcat"
    PRODUCER = ["-X", "enable.idempotence=true", "-X", "acks=all", "-X", "linger.ms=5"]

    def create_topic(self, bootstrap):
        ConfluentClient().create_topic(bootstrap)  # kcat cannot create topics; librdkafka's admin API

    def produce(self, bootstrap, batch: dict):
        procs = {p: subprocess.Popen(["kcat", "-b", bootstrap, "-P", "-t", TOPIC, "-p", str(p), *self.PRODUCER],
                                     stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
                 for p in batch}
        try:
            for p, proc in procs.items():  # kcat exits 1 if any delivery failed
                out, err = proc.communicate(b"".join(v + b"\n" for v in batch[p]), timeout=60)
                assert proc.returncode == 0, (p, err.decode(errors="replace"))
        finally:
            for proc in procs.values():
                if proc.poll() is None:
                    proc.kill()
                    proc.wait()

    def read_assigned(self, bootstrap, expected):
        out = subprocess.run(["kcat", "-b", bootstrap, "-C", "-t", TOPIC, "-o", "beginning", "-e", "-q",
                              "-f", "%p %o %s\n"], capture_output=True, check=True, timeout=60).stdout
        got: dict[int, list] = {p: [] for p in range(PARTITIONS)}
        for line in out.splitlines():
            p, o, v = line.split(b" ", 2)
            got[int(p)].append((int(o), v))
        return got

    def member(self, bootstrap, tag):
        return KcatMember(bootstrap, tag)


class KcatMember:
    """A `kcat -G` process; its stdout is the records (`%p %o %s`), its
    stderr tells its assignment ("% Group ... rebalanced ...: assigned: t [0],
    t [1]" / "revoked: ...")."""
    EVENT = re.compile(r"(assigned|revoked): ([^%\n]*)")

    def __init__(self, bootstrap, tag):
        self.tag = tag
        self.proc = subprocess.Popen(
            ["kcat", "-b", bootstrap, "-X", "auto.offset.reset=earliest", "-u", "-f", "%p %o %s\n",
             "-G", GROUP, TOPIC], stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        self.lines: list[bytes] = []
        self.taken = 0
        self.stderr = ""
        self.lock = threading.Lock()
        self.readers = [threading.Thread(target=self._read_stdout, daemon=True),
                        threading.Thread(target=self._read_stderr, daemon=True)]
        for t in self.readers:
            t.start()

    def _read_stdout(self):
        for line in self.proc.stdout:
            with self.lock:
                self.lines.append(line.rstrip(b"\n"))

    def _read_stderr(self):
        while True:
            chunk = self.proc.stderr.read1(65536)
            if not chunk:
                return
            with self.lock:
                self.stderr += chunk.decode(errors="replace")

    def _drain(self, ledger):
        with self.lock:
            new, self.taken = self.lines[self.taken:], len(self.lines)
        for line in new:
            p, o, v = line.split(b" ", 2)
            ledger.add(self.tag, int(p), int(o), v)

    def step(self, ledger):
        time.sleep(0.1)
        self._drain(ledger)

    def assigned(self) -> set:
        with self.lock:
            text = self.stderr
        current: set = set()
        for kind, parts in self.EVENT.findall(text):
            partitions = {int(x) for x in re.findall(r"\[(\d+)\]", parts)}
            current = current | partitions if kind == "assigned" else current - partitions
        return current

    def committed(self):
        return None  # kcat cannot show committed offsets; the raw OffsetFetch check covers it

    def leave(self, ledger):
        self.proc.send_signal(signal.SIGTERM)  # kcat closes its consumer: final commit, LeaveGroup
        assert self.proc.wait(30) == 0, self.stderr
        for t in self.readers:
            t.join(10)
        self._drain(ledger)

    def kill(self):
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()


CLIENTS = [KafkaPythonClient(), ConfluentClient(), KcatClient()]


@pytest.mark.parametrize("client", CLIENTS, ids=[c.name for c in CLIENTS])
def test_client_full_cycle(broker, client):
    if client.name == "kcat" and shutil.which("kcat") is None:
        pytest.skip("kcat not installed (apt-get install kcat)")
    bootstrap = broker.bootstrap
    client.create_topic(bootstrap)
    sent: dict[int, list] = {p: [] for p in range(PARTITIONS)}
    ledger = Ledger()
    a, b = client.member(bootstrap, "a"), client.member(bootstrap, "b")
    try:
        def both():
            a.step(ledger)
            b.step(ledger)

        def split():
            pa, pb = a.assigned(), b.assigned()
            return pa and pb and not pa & pb and pa | pb == set(range(PARTITIONS))
        assert wait_until(split, REBALANCE_TIMEOUT, both), (a.assigned(), b.assigned())
        a_parts = a.assigned()

        extend(sent, first := values(0, N_RECORDS))
        client.produce(bootstrap, first)
        assert_exactly_once_in_order(client.read_assigned(bootstrap, N_RECORDS), sent)

        assert wait_until(lambda: ledger.count() >= N_RECORDS, 60, both), ledger.count()
        both()
        ledger.assert_log(sent)
        for p in range(PARTITIONS):  # each member read only its own partitions
            assert ledger.readers[p] == {"a" if p in a_parts else "b"}, (p, a_parts)

        a.leave(ledger)
        assert wait_until(lambda: b.assigned() == set(range(PARTITIONS)), REBALANCE_TIMEOUT,
                          lambda: b.step(ledger)), b.assigned()
        extend(sent, more := values(N_RECORDS, N_RECORDS + N_AFTER_LEAVE))
        client.produce(bootstrap, more)
        total = N_RECORDS + N_AFTER_LEAVE
        assert wait_until(lambda: ledger.count() >= total, 60, lambda: b.step(ledger)), ledger.count()
        b.step(ledger)
        ledger.assert_log(sent)  # b took a's partitions over at a's committed offsets: nothing twice
        for p in a_parts:
            assert ledger.readers[p] == {"a", "b"}

        end = {p: len(vs) for p, vs in sent.items()}
        own = b.committed()
        if own is not None:  # the library clients committed synchronously after each poll
            assert own == end
            assert raw_committed(bootstrap, GROUP) == end
        b.leave(ledger)  # kcat: its auto-commit runs every 5 s, and at close
    finally:
        a.kill()
        b.kill()
    ledger.assert_log(sent)
    assert raw_committed(bootstrap, GROUP) == end

    if DURABLE:
        broker.restart()  # SIGKILL, then start again on the same volume and bucket
        assert broker.starts == 2
    assert raw_committed(bootstrap, GROUP) == end
    assert_exactly_once_in_order(client.read_assigned(bootstrap, total), sent)
    for p in range(PARTITIONS):
        records, producer_ids = raw_log(bootstrap, p)
        assert records == list(enumerate(sent[p])), p
        assert -1 not in producer_ids, f"partition {p}: a batch without a producer id (not idempotent)"

    extend(sent, last := values(total, total + N_AFTER_RESTART))
    client.produce(bootstrap, last)
    resumed = Ledger()
    c = client.member(bootstrap, "c")
    try:
        assert wait_until(lambda: resumed.count() >= N_AFTER_RESTART, REBALANCE_TIMEOUT,
                          lambda: c.step(resumed)), resumed.count()
        c.step(resumed)
        resumed.assert_log(sent, start=end)  # from the committed offsets: nothing re-read, nothing skipped
        c.leave(resumed)
    finally:
        c.kill()
    resumed.assert_log(sent, start=end)
    assert raw_committed(bootstrap, GROUP) == {p: len(vs) for p, vs in sent.items()}
    assert "Traceback" not in broker.log_text()
