"""Real clients against a real broker process: kafka-python 3.0 (defaults:
idempotence on, acks=all), confluent-kafka (librdkafka) and kcat.

Storage: the WAL + S3 engine (a volume under tmp_path and a fresh bucket on
the session's SeaweedFS), so the restart steps really restart. A developer
may set HIGHWATER_TEST_STORAGE=memory to run the protocol checks on the
non-durable store; the restart steps are then skipped, visibly.
"""
from __future__ import annotations

import os
import shutil
import signal
import socket
import struct
import subprocess
import sys
import time
from pathlib import Path

import pytest

from harness.ports import free_port

REPO = Path(__file__).resolve().parent.parent
# The one switch: "s3" (WAL + S3 engine on the session's SeaweedFS) or "memory".
STORAGE = os.environ.get("HIGHWATER_TEST_STORAGE", "s3")
DURABLE = STORAGE == "s3"


class BrokerProcess:
    """One `python -m reference.broker` child; SIGKILLed on teardown."""

    def __init__(self, workdir: Path, storage_args: list[str], node_id: int = 1, extra_args=()):
        self.workdir = workdir
        self.storage_args = storage_args
        self.node_id = node_id
        self.extra_args = list(extra_args)
        self.port = free_port()
        self.proc: subprocess.Popen | None = None
        self.log_path = workdir / "broker.log"
        self.starts = 0

    @property
    def bootstrap(self) -> str:
        return f"127.0.0.1:{self.port}"

    def start(self, timeout: float = 30.0) -> None:
        self.starts += 1
        log = open(self.log_path, "ab")
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "reference.broker", "--node-id", str(self.node_id),
             "--listen", self.bootstrap, *self.storage_args, *self.extra_args],
            cwd=REPO, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
        log.close()
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"broker exited with {self.proc.returncode}:\n{self.log_path.read_text()}")
            try:
                socket.create_connection(("127.0.0.1", self.port), timeout=0.5).close()
                return
            except OSError:
                time.sleep(0.05)
        raise RuntimeError(f"broker did not listen within {timeout}s:\n{self.log_path.read_text()}")

    def kill(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait(10)
        self.proc = None

    def restart(self) -> None:
        self.kill()
        self.start()

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def log_text(self) -> str:
        return self.log_path.read_text(errors="replace")


@pytest.fixture
def storage_args(request, tmp_path) -> list[str]:
    if STORAGE == "s3":
        endpoint, bucket = request.getfixturevalue("s3_bucket")
        return ["--volume", str(tmp_path / "volume"), "--s3-endpoint", endpoint, "--bucket", bucket,
                "--wal-capacity", "64MiB"]
    return ["--storage", "memory"]


@pytest.fixture
def broker(tmp_path, storage_args):
    process = BrokerProcess(tmp_path, storage_args)
    process.start()
    yield process
    process.kill()


# --- a minimal raw client, for byte-exact requests --------------------------------

class RawClient:
    def __init__(self, bootstrap: str):
        host, port = bootstrap.split(":")
        self.sock = socket.create_connection((host, int(port)), timeout=10)
        self.correlation_id = 0

    def send_bytes(self, frame: bytes) -> None:
        self.sock.sendall(struct.pack(">i", len(frame)) + frame)

    def receive(self) -> bytes:
        size = struct.unpack(">i", self._exactly(4))[0]
        return struct.pack(">i", size) + self._exactly(size)

    def _exactly(self, n: int) -> bytes:
        out = b""
        while len(out) < n:
            chunk = self.sock.recv(n - len(out))
            if not chunk:
                raise ConnectionError("closed by broker")
            out += chunk
        return out

    def encode(self, request, version: int) -> bytes:
        self.correlation_id += 1
        request.with_header(correlation_id=self.correlation_id, client_id="raw")
        return bytes(request.encode(version=version, header=True))

    def call(self, request, version: int, response_class):
        self.send_bytes(self.encode(request, version))
        return response_class.decode(self.receive(), version=version, header=True, framed=True)

    def close(self):
        self.sock.close()


def create_topic(bootstrap: str, name: str, partitions: int) -> None:
    from kafka import KafkaAdminClient
    admin = KafkaAdminClient(bootstrap_servers=bootstrap)
    try:
        admin.create_topics({name: {"num_partitions": partitions, "replication_factor": 1}})
    finally:
        admin.close()


def consume_all_kafka_python(bootstrap: str, topic: str, partitions: int, expected: int, timeout=20.0):
    from kafka import KafkaConsumer, TopicPartition
    consumer = KafkaConsumer(bootstrap_servers=bootstrap, enable_auto_commit=False)
    try:
        tps = [TopicPartition(topic, p) for p in range(partitions)]
        consumer.assign(tps)
        consumer.seek_to_beginning()
        got: dict[int, list] = {p: [] for p in range(partitions)}
        deadline = time.monotonic() + timeout
        while sum(map(len, got.values())) < expected and time.monotonic() < deadline:
            for tp, messages in consumer.poll(timeout_ms=500).items():
                got[tp.partition].extend((m.offset, m.value) for m in messages)
        return got
    finally:
        consumer.close()


def consume_all_confluent(bootstrap: str, topic: str, partitions: int, expected: int, timeout=20.0):
    from confluent_kafka import OFFSET_BEGINNING, Consumer, TopicPartition
    consumer = Consumer({"bootstrap.servers": bootstrap, "group.id": "assign-only",
                         "enable.auto.commit": False})
    try:
        consumer.assign([TopicPartition(topic, p, OFFSET_BEGINNING) for p in range(partitions)])
        got: dict[int, list] = {p: [] for p in range(partitions)}
        deadline = time.monotonic() + timeout
        while sum(map(len, got.values())) < expected and time.monotonic() < deadline:
            for m in consumer.consume(num_messages=1000, timeout=0.5):
                assert m.error() is None, m.error()
                got[m.partition()].append((m.offset(), m.value()))
        return got
    finally:
        consumer.close()


def assert_exactly_once_in_order(got: dict[int, list], sent: dict[int, list]):
    for partition, values in sent.items():
        offsets = [o for o, _ in got[partition]]
        assert offsets == list(range(len(values))), f"partition {partition}: offsets not dense from 0"
        assert [v for _, v in got[partition]] == values, f"partition {partition}: values differ"


# --- the tests ---------------------------------------------------------------------

N_RECORDS = 10_000


def test_kafka_python_defaults_create_produce_consume(broker):
    from kafka import KafkaProducer
    create_topic(broker.bootstrap, "kp", 2)
    producer = KafkaProducer(bootstrap_servers=broker.bootstrap, linger_ms=5)
    assert producer.config["enable_idempotence"] and producer.config["acks"] == -1
    sent = {0: [], 1: []}
    futures = []
    for i in range(N_RECORDS):
        value = str(i).encode()
        sent[i % 2].append(value)
        futures.append((i % 2, producer.send("kp", value=value, partition=i % 2)))
    producer.flush(30)
    acked = {0: [], 1: []}
    for partition, future in futures:
        acked[partition].append(future.get(timeout=10).offset)
    producer.close()
    assert acked == {p: list(range(len(v))) for p, v in sent.items()}
    got = consume_all_kafka_python(broker.bootstrap, "kp", 2, N_RECORDS)
    assert_exactly_once_in_order(got, sent)
    # and librdkafka reads what kafka-python wrote
    assert_exactly_once_in_order(consume_all_confluent(broker.bootstrap, "kp", 2, N_RECORDS), sent)


@pytest.mark.parametrize("idempotent", [False, True])
def test_confluent_kafka_produce_consume(broker, idempotent):
    from confluent_kafka import Producer
    create_topic(broker.bootstrap, "ck", 3)
    producer = Producer({"bootstrap.servers": broker.bootstrap, "enable.idempotence": idempotent,
                         "linger.ms": 5})
    sent = {p: [] for p in range(3)}
    errors = []
    def delivered(err, msg):
        if err is not None:
            errors.append(err)
    for i in range(N_RECORDS):
        value = b"v%d" % i
        sent[i % 3].append(value)
        producer.produce("ck", value=value, partition=i % 3, on_delivery=delivered)
        if i % 1000 == 0:
            producer.poll(0)
    assert producer.flush(30) == 0
    assert errors == []
    got = consume_all_confluent(broker.bootstrap, "ck", 3, N_RECORDS)
    assert_exactly_once_in_order(got, sent)
    assert_exactly_once_in_order(consume_all_kafka_python(broker.bootstrap, "ck", 3, N_RECORDS), sent)


@pytest.mark.parametrize("codec", ["gzip", "snappy", "lz4", "zstd"])
def test_compressed_batches_are_stored_as_sent(broker, codec):
    from confluent_kafka import Producer
    create_topic(broker.bootstrap, "cz", 1)
    producer = Producer({"bootstrap.servers": broker.bootstrap, "compression.type": codec, "linger.ms": 20})
    sent = [b"record-%d-%s" % (i, b"x" * (i % 50)) for i in range(500)]
    for value in sent:
        producer.produce("cz", value=value, partition=0)
    assert producer.flush(20) == 0
    got = consume_all_confluent(broker.bootstrap, "cz", 1, len(sent))
    assert_exactly_once_in_order(got, {0: sent})


@pytest.mark.skipif(shutil.which("kcat") is None, reason="kcat not installed (apt-get install kcat)")
def test_kcat_produce_and_consume(broker):
    create_topic(broker.bootstrap, "kc", 1)
    lines = [f"line-{i}" for i in range(200)]
    subprocess.run(["kcat", "-b", broker.bootstrap, "-P", "-t", "kc", "-p", "0"],
                   input="\n".join(lines) + "\n", text=True, check=True, timeout=30)
    out = subprocess.run(["kcat", "-b", broker.bootstrap, "-C", "-t", "kc", "-p", "0", "-o", "beginning",
                          "-e", "-q", "-f", "%o %s\n"], capture_output=True, text=True, check=True, timeout=30)
    assert out.stdout.splitlines() == [f"{i} {line}" for i, line in enumerate(lines)]
    listing = subprocess.run(["kcat", "-b", broker.bootstrap, "-L", "-t", "kc"], capture_output=True,
                             text=True, check=True, timeout=30).stdout
    assert "leader 1" in listing


@pytest.mark.skipif(shutil.which("kcat") is None, reason="kcat not installed (apt-get install kcat)")
@pytest.mark.timeout(180)
def test_kcat_produces_to_a_new_topic_which_is_auto_created(broker):
    """As with Kafka's defaults, producing to a topic nobody created creates it."""
    lines = [f"new-{i}" for i in range(50)]
    subprocess.run(["kcat", "-b", broker.bootstrap, "-P", "-t", "fresh"], input="\n".join(lines) + "\n",
                   text=True, check=True, timeout=30)
    out = subprocess.run(["kcat", "-b", broker.bootstrap, "-C", "-t", "fresh", "-p", "0", "-o", "beginning",
                          "-e", "-q", "-f", "%o %s\n"], capture_output=True, text=True, check=True, timeout=30)
    assert out.stdout.splitlines() == [f"{i} {line}" for i, line in enumerate(lines)]


@pytest.mark.skipif(shutil.which("kcat") is None, reason="kcat not installed (apt-get install kcat)")
@pytest.mark.timeout(180)
def test_no_auto_create_topics_turns_it_off(tmp_path, storage_args):
    process = BrokerProcess(tmp_path, storage_args, extra_args=["--no-auto-create-topics"])
    process.start()
    try:
        r = subprocess.run(["kcat", "-b", process.bootstrap, "-P", "-t", "absent", "-X", "message.timeout.ms=2000"],
                           input="x\n", text=True, capture_output=True, timeout=30)
        assert r.returncode != 0 and "Delivery failed" in r.stderr
        listing = subprocess.run(["kcat", "-b", process.bootstrap, "-L"], capture_output=True, text=True,
                                 check=True, timeout=30).stdout
        assert "absent" not in listing
    finally:
        process.kill()


def test_replayed_produce_request_gets_its_original_offset(broker):
    """An idempotent producer's retry, byte for byte (after a broker restart
    when the storage is durable), is answered with the original offset and
    appends nothing."""
    from kafka.protocol.producer import InitProducerIdRequest, InitProducerIdResponse, ProduceResponse
    from kafka.record.memory_records import MemoryRecordsBuilder
    from kafka.protocol.producer import ProduceRequest
    create_topic(broker.bootstrap, "idem", 1)
    client = RawClient(broker.bootstrap)
    pid = client.call(InitProducerIdRequest(transactional_id=None, transaction_timeout_ms=-1), 1,
                      InitProducerIdResponse).producer_id

    def produce_frame(values, sequence):
        builder = MemoryRecordsBuilder(magic=2, compression_type=0, batch_size=1 << 20,
                                       producer_id=pid, producer_epoch=0, base_sequence=sequence)
        for v in values:
            builder.append(int(time.time() * 1000), None, v)
        builder.close()
        T = ProduceRequest.TopicProduceData
        request = ProduceRequest(transactional_id=None, acks=-1, timeout_ms=5000, topic_data=[
            T(name="idem", partition_data=[T.PartitionProduceData(index=0, records=bytes(builder.buffer()))])])
        return client.encode(request, 8)

    def base_offset(raw):
        response = ProduceResponse.decode(raw, version=8, header=True, framed=True)
        part = response.responses[0].partition_responses[0]
        assert part.error_code == 0, part
        return part.base_offset

    client.send_bytes(produce_frame([b"a", b"b"], 0))
    assert base_offset(client.receive()) == 0
    captured = produce_frame([b"c", b"d", b"e"], 2)
    client.send_bytes(captured)
    original = base_offset(client.receive())
    assert original == 2
    client.close()
    if DURABLE:
        broker.restart()  # SIGKILL: the producer state must come back from the WAL / S3
        assert broker.starts == 2
    replay = RawClient(broker.bootstrap)
    replay.send_bytes(captured)  # the very same bytes, correlation id included
    assert base_offset(replay.receive()) == original
    # nothing was appended: the log is still exactly the five records
    from kafka.protocol.consumer import FetchRequest, FetchResponse
    from kafka.record.memory_records import MemoryRecords
    T = FetchRequest.FetchTopic
    part = replay.call(FetchRequest(replica_id=-1, max_wait_ms=0, min_bytes=1, max_bytes=1 << 20, isolation_level=0,
                                    topics=[T(topic="idem", partitions=[T.FetchPartition(
                                        partition=0, current_leader_epoch=-1, fetch_offset=0, log_start_offset=-1,
                                        partition_max_bytes=1 << 20)])]), 11, FetchResponse).responses[0].partitions[0]
    replay.close()
    assert part.error_code == 0 and part.high_watermark == 5
    batches, stored = MemoryRecords(part.records), []
    while batches.has_next():
        batch = batches.next_batch()
        assert batch.producer_id == pid
        stored.extend((r.offset, r.value) for r in batch)
    assert stored == list(enumerate([b"a", b"b", b"c", b"d", b"e"]))
    got = consume_all_kafka_python(broker.bootstrap, "idem", 1, 5, timeout=5)
    assert [v for _, v in got[0]] == [b"a", b"b", b"c", b"d", b"e"]


def test_pipelined_requests_are_answered_in_order(broker):
    """Ten requests written at once, a slow long-poll fetch first: the
    answers come back in request order."""
    from kafka.protocol.consumer import FetchRequest, FetchResponse
    from kafka.protocol.metadata import MetadataRequest, MetadataResponse
    create_topic(broker.bootstrap, "order", 1)
    client = RawClient(broker.bootstrap)
    T = FetchRequest.FetchTopic
    fetch = FetchRequest(replica_id=-1, max_wait_ms=400, min_bytes=1, max_bytes=1 << 20, isolation_level=0,
                         topics=[T(topic="order", partitions=[T.FetchPartition(
                             partition=0, current_leader_epoch=-1, fetch_offset=0, log_start_offset=-1,
                             partition_max_bytes=1 << 20)])])
    frames = [client.encode(fetch, 11)] + [client.encode(MetadataRequest(topics=None), 8) for _ in range(9)]
    client.sock.sendall(b"".join(struct.pack(">i", len(f)) + f for f in frames))
    ids = []
    for i in range(10):
        raw = client.receive()
        ids.append(struct.unpack_from(">i", raw, 4)[0])
    assert ids == list(range(1, 11))
    client.close()


def closed_by_broker(sock: socket.socket, within: float) -> bool:
    """Read until the broker closes the connection (True) or `within` passes."""
    sock.settimeout(within)
    try:
        while sock.recv(4096):
            pass
        return True
    except ConnectionResetError:
        return True
    except socket.timeout:
        return False


def test_hostile_connections_do_not_disturb_others(broker):
    """Each hostile opening is logged and its connection closed at once (no
    answer is owed), and the broker keeps serving a real client."""
    from kafka import KafkaProducer
    create_topic(broker.bootstrap, "safe", 1)
    producer = KafkaProducer(bootstrap_servers=broker.bootstrap)
    producer.send("safe", b"before", partition=0).get(10)
    hostile = [  # (bytes, what the broker's log says)
        (struct.pack(">i", 2**31 - 1), "frame size 2147483647 exceeds the limit"),   # oversized length
        (struct.pack(">i", -1), "frame size -1 is smaller than a request header"),    # negative length
        (struct.pack(">ihhi", 8, 777, 0, 1), "unknown api key 777"),                  # unknown api key
        (struct.pack(">ihhi", 10, 0, 8, 1) + b"\x00\x01", "cannot decode ProduceRequest v8"),  # truncated body
        (b"GET / HTTP/1.1\r\nHost: x\r\n\r\n", "exceeds the limit"),                # not Kafka at all
    ]
    for garbage, logged in hostile:
        with socket.create_connection(("127.0.0.1", broker.port), timeout=5) as s:
            s.sendall(garbage)  # and keep our side open: the broker must be the one to close
            assert closed_by_broker(s, within=5), garbage
        deadline = time.monotonic() + 5
        while logged not in broker.log_text() and time.monotonic() < deadline:
            time.sleep(0.05)
        assert logged in broker.log_text(), logged
    producer.send("safe", b"after", partition=0).get(10)
    producer.close()
    assert broker.alive()
    got = consume_all_kafka_python(broker.bootstrap, "safe", 1, 2, timeout=5)
    assert [v for _, v in got[0]] == [b"before", b"after"]


def test_idle_connections_are_closed_after_connections_max_idle_ms(tmp_path, storage_args):
    """--connections-max-idle-ms: a connection stalled inside a frame is
    closed (and logged) once idle; a client that keeps talking is not."""
    from kafka.protocol.metadata import MetadataRequest, MetadataResponse
    # 2 s of idleness allowed, a request every 0.2 s on the busy connection:
    # a wide margin on a loaded machine, where one call can take a while
    process = BrokerProcess(tmp_path, storage_args, extra_args=["--connections-max-idle-ms", "2000"])
    process.start()
    try:
        busy = RawClient(process.bootstrap)
        with socket.create_connection(("127.0.0.1", process.port), timeout=5) as stalled:
            stalled.sendall(struct.pack(">i", 1 << 20) + b"\x00\x03\x00")  # a partial frame, then nothing
            started = time.monotonic()
            for _ in range(3):  # well within the idle time: the stalled one is still open
                busy.call(MetadataRequest(topics=None), 8, MetadataResponse)
                time.sleep(0.2)
            stalled.settimeout(0.05)
            try:
                open_early = stalled.recv(1, socket.MSG_PEEK) != b""
            except socket.timeout:
                open_early = True
            assert open_early or time.monotonic() - started >= 1.9, "closed before its idle time"
            for _ in range(12):  # past the idle time, a request every 0.2 s
                busy.call(MetadataRequest(topics=None), 8, MetadataResponse)
                time.sleep(0.2)
            assert closed_by_broker(stalled, within=8)
            assert time.monotonic() - started < 12
        busy.call(MetadataRequest(topics=None), 8, MetadataResponse)  # still served
        busy.close()
        assert "idle for" in process.log_text()
    finally:
        process.kill()


def test_acks_zero_and_auto_created_topics(tmp_path, storage_args):
    """A producer's first Metadata request creates the topic (auto-creation is
    on by default); acks=0 records arrive though nothing is answered."""
    from kafka import KafkaProducer
    process = BrokerProcess(tmp_path, storage_args, extra_args=["--default-partitions", "2"])
    process.start()
    try:
        producer = KafkaProducer(bootstrap_servers=process.bootstrap, acks=0, enable_idempotence=False)
        for i in range(100):
            producer.send("auto", b"%d" % i, partition=i % 2)
        producer.flush(10)
        producer.close()
        got = consume_all_kafka_python(process.bootstrap, "auto", 2, 100, timeout=10)
        assert sorted(int(v) for records in got.values() for _, v in records) == list(range(100))
    finally:
        process.kill()


def test_sigterm_stops_the_broker_cleanly(broker):
    create_topic(broker.bootstrap, "bye", 1)
    started = time.monotonic()
    os.killpg(broker.proc.pid, signal.SIGTERM)
    assert broker.proc.wait(20) == 0
    assert time.monotonic() - started < 20
    assert "stopped" in broker.log_text()
