"""Hostile input against a live broker process, driven by hypothesis for a
bounded time: random frames, valid headers over random bodies, mutated and
truncated real requests, garbage record batches. Throughout, a well-formed
client on its own connection keeps getting correct answers, and afterwards
the data written before the storm is intact and the broker still takes
writes from a real client."""
from __future__ import annotations

import socket
import struct
import time

from hypothesis import HealthCheck, Phase, given, settings, strategies as st
from kafka.protocol.admin import CreateTopicsRequest
from kafka.protocol.consumer import FetchRequest, FetchResponse, ListOffsetsRequest
from kafka.protocol.metadata import ApiVersionsRequest, MetadataRequest, MetadataResponse
from kafka.protocol.producer import ProduceRequest
from kafka.record.memory_records import MemoryRecordsBuilder

from reference.protocol import codec

from test_clients import (RawClient, broker, consume_all_kafka_python, create_topic,  # noqa: F401
                          storage_args)

FUZZ_SECONDS = 15    # wall-clock bound of the storm
MAX_INPUTS = 3000    # and a bound on its size (about 2 ms each)


def batch(values) -> bytes:
    builder = MemoryRecordsBuilder(magic=2, compression_type=0, batch_size=1 << 20)
    for v in values:
        builder.append(1_700_000_000_000, None, v)
    builder.close()
    return bytes(builder.buffer())


def encoded(request, version, correlation_id=1) -> bytes:
    request.with_header(correlation_id=correlation_id, client_id="fuzz")
    return bytes(request.encode(version=version, header=True))


def seed_requests() -> list[bytes]:
    """Well-formed requests (aimed at the `fuzz` topic) for mutation."""
    P = ProduceRequest.TopicProduceData
    F = FetchRequest.FetchTopic
    L = ListOffsetsRequest.ListOffsetsTopic
    return [
        encoded(ProduceRequest(transactional_id=None, acks=-1, timeout_ms=1000, topic_data=[
            P(name="fuzz", partition_data=[P.PartitionProduceData(index=0, records=batch([b"a", b"b"]))])]), 8),
        encoded(ProduceRequest(transactional_id=None, acks=1, timeout_ms=1000, topic_data=[
            P(name="fuzz", partition_data=[P.PartitionProduceData(index=0, records=batch([b"c"]))])]), 3),
        encoded(FetchRequest(replica_id=-1, max_wait_ms=0, min_bytes=1, max_bytes=1 << 16, isolation_level=0,
                             topics=[F(topic="fuzz", partitions=[F.FetchPartition(
                                 partition=0, current_leader_epoch=-1, fetch_offset=0, log_start_offset=-1,
                                 partition_max_bytes=1 << 16)])]), 11),
        encoded(MetadataRequest(topics=None, allow_auto_topic_creation=False), 8),
        encoded(ApiVersionsRequest(client_software_name="f", client_software_version="1"), 3),
        encoded(ListOffsetsRequest(replica_id=-1, isolation_level=0, topics=[L(name="fuzz", partitions=[
            L.ListOffsetsPartition(partition_index=0, current_leader_epoch=-1, timestamp=-1)])]), 5),
        encoded(CreateTopicsRequest(topics=[CreateTopicsRequest.CreatableTopic(
            name="fz", num_partitions=1, replication_factor=1, assignments=[], configs=[])],
            timeout_ms=1000, validate_only=True), 4),
    ]


SEEDS = seed_requests()
known_versions = st.sampled_from([(k, v) for k, s in codec.API_SPECS.items()
                                  for v in range(s.min_version, s.max_version + 2)])


@st.composite
def hostile_stream(draw) -> bytes:
    kind = draw(st.sampled_from(["random", "header+random", "mutated", "truncated", "bad-batch", "size-lie"]))
    if kind == "random":
        return draw(st.binary(max_size=200))
    if kind == "header+random":
        key, version = draw(st.one_of(known_versions, st.tuples(st.integers(-2, 80), st.integers(-2, 20))))
        body = struct.pack(">hhi", key, version, draw(st.integers(0, 2**31 - 1))) + draw(st.binary(max_size=120))
        return struct.pack(">i", len(body)) + body
    seed = draw(st.sampled_from(SEEDS))
    if kind == "mutated":
        frame = bytearray(seed)
        for _ in range(draw(st.integers(1, 6))):
            frame[draw(st.integers(0, len(frame) - 1))] = draw(st.integers(0, 255))
        return struct.pack(">i", len(frame)) + bytes(frame)
    if kind == "truncated":
        cut = seed[:draw(st.integers(8, len(seed) - 1))]
        return struct.pack(">i", len(cut)) + cut
    if kind == "bad-batch":
        records = bytearray(batch([b"x" * draw(st.integers(0, 30))]))
        records[draw(st.integers(21, len(records) - 1))] ^= draw(st.integers(1, 255))  # inside the CRC's cover
        P = ProduceRequest.TopicProduceData
        frame = encoded(ProduceRequest(transactional_id=None, acks=-1, timeout_ms=1000, topic_data=[
            P(name="fuzz", partition_data=[P.PartitionProduceData(index=0, records=bytes(records))])]), 8)
        return struct.pack(">i", len(frame)) + frame
    # size-lie: a declared size that disagrees with what follows
    return struct.pack(">i", draw(st.sampled_from([-1, 0, 7, len(seed) + 50, 2**31 - 1]))) + seed


def throw(port: int, data: bytes) -> None:
    """Send, half-close, read whatever comes back until the broker closes."""
    with socket.create_connection(("127.0.0.1", port), timeout=2) as s:
        try:
            s.sendall(data)
            s.shutdown(socket.SHUT_WR)
            while s.recv(65536):
                pass
        except (socket.timeout, ConnectionError):
            pass


def test_hostile_frames_leave_the_broker_serving_and_the_data_intact(broker):
    from kafka import KafkaProducer
    create_topic(broker.bootstrap, "intact", 1)
    create_topic(broker.bootstrap, "fuzz", 1)
    producer = KafkaProducer(bootstrap_servers=broker.bootstrap)
    before = [b"kept-%d" % i for i in range(200)]
    for v in before:
        producer.send("intact", v, partition=0)
    producer.flush(10)

    witness = RawClient(broker.bootstrap)  # one long-lived, well-behaved connection
    F = FetchRequest.FetchTopic
    check_fetch = FetchRequest(replica_id=-1, max_wait_ms=0, min_bytes=1, max_bytes=1 << 20, isolation_level=0,
                               topics=[F(topic="intact", partitions=[F.FetchPartition(
                                   partition=0, current_leader_epoch=-1, fetch_offset=0, log_start_offset=-1,
                                   partition_max_bytes=1 << 20)])])
    thrown = [0]
    deadline = time.monotonic() + FUZZ_SECONDS

    @settings(max_examples=MAX_INPUTS, deadline=None, database=None, phases=[Phase.generate, Phase.shrink],
              suppress_health_check=list(HealthCheck))
    @given(hostile_stream())
    def storm(data):
        if time.monotonic() > deadline:
            return
        throw(broker.port, data)
        thrown[0] += 1
        if thrown[0] % 50 == 0:
            meta = witness.call(MetadataRequest(topics=None), 8, MetadataResponse)
            assert {t.name for t in meta.topics} >= {"intact", "fuzz"}
            part = witness.call(check_fetch, 11, FetchResponse).responses[0].partitions[0]
            assert part.error_code == 0 and part.high_watermark == len(before)

    try:
        storm()
    except Exception:
        print(broker.log_text()[-5000:])
        raise
    assert thrown[0] >= 100, f"only {thrown[0]} hostile inputs within {FUZZ_SECONDS}s"
    assert broker.alive()
    producer.send("intact", b"after", partition=0).get(10)
    producer.close()
    got = consume_all_kafka_python(broker.bootstrap, "intact", 1, len(before) + 1, timeout=10)
    assert [v for _, v in got[0]] == before + [b"after"]
    assert [o for o, _ in got[0]] == list(range(len(before) + 1))
    witness.close()
    assert "Traceback" not in broker.log_text(), "a handler crashed on hostile input (see the broker log)"
    print(f"{thrown[0]} hostile inputs")
