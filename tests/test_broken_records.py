"""One bad producer must not poison a partition: against a real broker
process (WAL + S3), each kind of broken record (plain and compressed; every
batch with a right CRC and length) is refused with Kafka's error code,
nothing of it is stored, and the partition stays readable by kafka-python
and confluent-kafka."""
from __future__ import annotations

import time
import uuid

import pytest
from kafka.protocol.consumer import ListOffsetsRequest, ListOffsetsResponse
from kafka.protocol.producer import ProduceRequest, ProduceResponse

from harness.s3server import s3_client
from reference import errors
from reference.broken_batches import BROKEN, CODECS, COMPRESSED_ONLY, EXPECTED, bomb, build
from test_clients import BrokerProcess, RawClient, create_topic

pytestmark = pytest.mark.timeout(300)
COMPRESSIONS = ["gzip", "snappy", "lz4", "zstd"]
# every kind plain, and each under one codec (taking the codecs in turn); undecompressable under all four
CASES = ([(kind, "none") for kind in BROKEN if kind not in COMPRESSED_ONLY]
         + [(kind, COMPRESSIONS[i % 4]) for i, kind in enumerate(k for k in BROKEN if k not in COMPRESSED_ONLY)]
         + [("undecompressable", c) for c in COMPRESSIONS] + [("bomb", c) for c in ("gzip", "zstd")])
TOPIC = "broken"
VALUES = [b"broken-%d" % i for i in range(4)]


@pytest.fixture(scope="module")
def broker(s3_server, tmp_path_factory):
    bucket = f"broken-{uuid.uuid4().hex[:10]}"
    s3_client(s3_server.endpoint).create_bucket(Bucket=bucket)
    workdir = tmp_path_factory.mktemp("broken")
    process = BrokerProcess(workdir, ["--volume", str(workdir / "volume"), "--s3-endpoint", s3_server.endpoint,
                                      "--bucket", bucket, "--wal-capacity", "64MiB",
                                      "--max-decompressed-batch", "4MiB"])
    process.start()
    create_topic(process.bootstrap, TOPIC, len(CASES))
    yield process
    process.kill()


def produce(client: RawClient, partition: int, data: bytes, version: int = 8):
    P = ProduceRequest.TopicProduceData
    request = ProduceRequest(transactional_id=None, acks=-1, timeout_ms=5000, topic_data=[
        P(name=TOPIC, partition_data=[P.PartitionProduceData(index=partition, records=data)])])
    return client.call(request, version, ProduceResponse).responses[0].partition_responses[0]


def high_watermark(client: RawClient, partition: int) -> int:
    T = ListOffsetsRequest.ListOffsetsTopic
    request = ListOffsetsRequest(replica_id=-1, isolation_level=0, topics=[
        T(name=TOPIC, partitions=[T.ListOffsetsPartition(partition_index=partition, current_leader_epoch=-1,
                                                          timestamp=-1)])])
    return client.call(request, 5, ListOffsetsResponse).topics[0].partitions[0].offset


def read_kafka_python(bootstrap: str, partition: int, expected: int) -> list:
    from kafka import KafkaConsumer, TopicPartition
    consumer = KafkaConsumer(bootstrap_servers=bootstrap, enable_auto_commit=False)
    try:
        tp = TopicPartition(TOPIC, partition)
        consumer.assign([tp])
        consumer.seek_to_beginning(tp)
        got, deadline = [], time.monotonic() + 20
        while len(got) < expected and time.monotonic() < deadline:
            for messages in consumer.poll(timeout_ms=300).values():
                got.extend((m.offset, m.value) for m in messages)
        return got
    finally:
        consumer.close()


def read_confluent(bootstrap: str, partition: int, expected: int) -> list:
    from confluent_kafka import OFFSET_BEGINNING, Consumer, TopicPartition
    consumer = Consumer({"bootstrap.servers": bootstrap, "group.id": "assign-only", "enable.auto.commit": False})
    try:
        consumer.assign([TopicPartition(TOPIC, partition, OFFSET_BEGINNING)])
        got, deadline = [], time.monotonic() + 20
        while len(got) < expected and time.monotonic() < deadline:
            for m in consumer.consume(num_messages=100, timeout=0.3):
                assert m.error() is None, m.error()
                got.append((m.offset(), m.value()))
        return got
    finally:
        consumer.close()


@pytest.mark.parametrize("kind,codec", CASES, ids=[f"{k}-{c}" for k, c in CASES])
def test_broken_batch_is_refused_and_the_partition_stays_readable(broker, kind, codec):
    partition = CASES.index((kind, codec))
    if kind == "bomb":
        data, expected = bomb(CODECS[codec], 5 << 20), errors.MESSAGE_TOO_LARGE  # past --max-decompressed-batch
    else:
        data, expected = BROKEN[kind](VALUES, CODECS[codec]), EXPECTED[kind]
    client = RawClient(broker.bootstrap)
    try:
        good_before = produce(client, partition, build([b"before"], CODECS[codec]))
        refused = produce(client, partition, data)
        assert refused.error_code == expected, refused
        assert refused.error_message and refused.base_offset == -1
        good_after = produce(client, partition, build([b"after-1", b"after-2"]))
        assert (good_before.error_code, good_after.error_code) == (0, 0)
        assert (good_before.base_offset, good_after.base_offset) == (0, 1), "nothing of the broken batch is stored"
        assert high_watermark(client, partition) == 3
    finally:
        client.close()
    want = [(0, b"before"), (1, b"after-1"), (2, b"after-2")]
    assert read_kafka_python(broker.bootstrap, partition, 3) == want
    assert read_confluent(broker.bootstrap, partition, 3) == want
    assert broker.alive()
