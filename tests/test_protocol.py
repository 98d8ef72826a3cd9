"""Request handling without sockets: encoded request frames go through
`reference.protocol.dispatch` onto a MemoryEngine, responses are decoded
with kafka-python's classes, as a client would."""
from __future__ import annotations

import asyncio
import struct
import time

import pytest
from kafka.protocol.admin import CreateTopicsRequest, CreateTopicsResponse, DeleteTopicsRequest, DeleteTopicsResponse
from kafka.protocol.consumer import FetchRequest, FetchResponse, ListOffsetsRequest, ListOffsetsResponse
from kafka.protocol.metadata import ApiVersionsRequest, ApiVersionsResponse, MetadataRequest, MetadataResponse
from kafka.protocol.producer import (InitProducerIdRequest, InitProducerIdResponse, ProduceRequest,
                                     ProduceResponse)
from kafka.record.memory_records import MemoryRecordsBuilder

from reference import errors
from reference.batch import iter_batches
from reference.protocol import codec, dispatch
from reference.protocol.context import make_context
from reference.storage.memory import MemoryEngine

RESPONSES = {spec.request_class: spec.response_class for spec in codec.API_SPECS.values()}


def run(coro):
    return asyncio.run(coro)


def new_ctx(**options):
    return make_context(MemoryEngine(1), 1, "127.0.0.1", 9092, **options)


async def call(ctx, request, version, correlation_id=7):
    """Encode as a client would, dispatch, decode the answer (None: no answer)."""
    request.with_header(correlation_id=correlation_id, client_id="test")
    frame = bytes(request.encode(version=version, header=True))
    out = await dispatch.handle_frame(ctx, frame)
    if out is None:
        return None
    response = RESPONSES[type(request)].decode(out, version=version, header=True, framed=True)
    assert response.header.correlation_id == correlation_id
    return response


def records(values, producer_id=-1, epoch=-1, sequence=-1, timestamp=None, compression=0):
    builder = MemoryRecordsBuilder(magic=2, compression_type=compression, batch_size=1 << 20,
                                   producer_id=producer_id, producer_epoch=epoch, base_sequence=sequence)
    now = timestamp if timestamp is not None else int(time.time() * 1000)
    for v in values:
        builder.append(now, None, v)
    builder.close()
    return bytes(builder.buffer())


def produce_request(topic, partition, data, acks=-1):
    P = ProduceRequest.TopicProduceData
    return ProduceRequest(transactional_id=None, acks=acks, timeout_ms=5000, topic_data=[
        P(name=topic, partition_data=[P.PartitionProduceData(index=partition, records=data)])])


def fetch_request(topic, partition, offset, max_wait_ms=0, min_bytes=1, current_leader_epoch=-1):
    T = FetchRequest.FetchTopic
    return FetchRequest(replica_id=-1, max_wait_ms=max_wait_ms, min_bytes=min_bytes, max_bytes=1 << 20,
                        isolation_level=0, session_id=0, session_epoch=-1, topics=[
                            T(topic=topic, partitions=[T.FetchPartition(
                                partition=partition, current_leader_epoch=current_leader_epoch,
                                fetch_offset=offset, log_start_offset=-1, partition_max_bytes=1 << 20)])],
                        forgotten_topics_data=[], rack_id="")


def create_topics_request(*topics, validate_only=False):
    T = CreateTopicsRequest.CreatableTopic
    return CreateTopicsRequest(topics=[T(name=n, num_partitions=p, replication_factor=r, assignments=[], configs=[])
                                       for n, p, r in topics], timeout_ms=1000, validate_only=validate_only)


async def create(ctx, name, partitions=1):
    response = await call(ctx, create_topics_request((name, partitions, 1)), 4)
    assert response.topics[0].error_code == 0


def partition_of(produce_response):
    return produce_response.responses[0].partition_responses[0]


# --- frames and headers ------------------------------------------------------

def test_frame_reader_reassembles_split_frames():
    reader = codec.FrameReader()
    frame = struct.pack(">hhi", 18, 0, 1) + b"rest"
    stream = struct.pack(">i", len(frame)) + frame
    for byte in stream[:-1]:
        reader.receive_data(bytes([byte]))
        assert reader.next_frame() is None
    reader.receive_data(stream[-1:] + stream)
    assert reader.next_frame() == frame
    assert reader.next_frame() == frame
    assert reader.next_frame() is None and reader.buffered == 0


def test_frame_reader_refuses_oversized_and_negative_sizes_before_buffering():
    reader = codec.FrameReader(max_frame_size=1000)
    reader.receive_data(struct.pack(">i", 1001))
    with pytest.raises(codec.FrameTooLarge):
        reader.next_frame()
    reader = codec.FrameReader()
    reader.receive_data(struct.pack(">i", -5))
    with pytest.raises(codec.FrameError):
        reader.next_frame()


def test_advertised_ranges_are_decodable_and_start_at_schema_minimum():
    for key, spec in codec.API_SPECS.items():
        assert spec.request_class.API_KEY == key
        assert spec.request_class.valid_versions[0] <= spec.min_version <= spec.max_version
        assert spec.max_version <= spec.request_class.max_version
        if key not in (codec.API_VERSIONS_KEY, 45, 46):
            # below each API's flexible versions, so every body is the classic encoding
            # (the reassignment APIs have no classic encoding: flexible from v0)
            assert not spec.request_class.flexible_version_q(spec.max_version), key


@pytest.mark.parametrize("version", [0, 1, 2, 3, 4])
def test_api_versions_lists_every_api_with_its_range(version):
    ctx = new_ctx()
    response = run(call(ctx, ApiVersionsRequest(client_software_name="t", client_software_version="1"), version))
    assert response.error_code == 0
    ranges = {k.api_key: (k.min_version, k.max_version) for k in response.api_keys}
    assert ranges == {key: (s.min_version, s.max_version) for key, s in codec.API_SPECS.items()}


def test_api_versions_of_an_unknown_flexible_version_gets_35_in_a_v0_body():
    # v5+ does not exist yet: header v2 (flexible), body unknown to us.
    frame = struct.pack(">hhi", 18, 9, 4242) + struct.pack(">h", 3) + b"new" + b"\x00" + b"\x05soft\x021\x00"
    out = run(dispatch.handle_frame(new_ctx(), frame))
    response = ApiVersionsResponse.decode(out, version=0, header=True, framed=True)
    assert response.header.correlation_id == 4242
    assert response.error_code == errors.UNSUPPORTED_VERSION
    assert {k.api_key for k in response.api_keys} == set(codec.API_SPECS)


def test_produce_of_an_unadvertised_version_closes_the_connection():
    request = produce_request("t", 0, records([b"x"]))
    request.with_header(correlation_id=1, client_id="t")
    frame = bytes(request.encode(version=9, header=True))
    with pytest.raises(dispatch.CloseConnection):
        run(dispatch.handle_frame(new_ctx(), frame))


@pytest.mark.parametrize("frame", [
    struct.pack(">hhi", 999, 0, 1),                       # unknown api key
    struct.pack(">hhi", 3, 5, 1) + b"\x00",               # truncated metadata request
    struct.pack(">hh", 0, 3),                             # shorter than a header
    struct.pack(">hhi", 0, 8, 1) + b"\xff" * 40,          # garbage produce body
])
def test_unreadable_requests_close_the_connection(frame):
    with pytest.raises(dispatch.CloseConnection):
        run(dispatch.handle_frame(new_ctx(), frame))


# --- topics ---------------------------------------------------------------------

def test_create_topics_validates_and_creates():
    async def scenario():
        ctx = new_ctx(default_partitions=3)
        response = await call(ctx, create_topics_request(
            ("a", 2, 1), ("b", -1, -1), ("bad/name", 1, 1), ("c", 1, 3), ("d", 0, 1), ("e", 2**31 - 1, 1)), 4)
        codes = {t.name: t.error_code for t in response.topics}
        assert codes == {"a": 0, "b": 0, "bad/name": errors.INVALID_TOPIC_EXCEPTION,
                         "c": errors.INVALID_REPLICATION_FACTOR, "d": errors.INVALID_PARTITIONS,
                         "e": errors.INVALID_PARTITIONS}
        topics = ctx.engine.list_topics()
        assert topics["a"].partitions == 2 and topics["b"].partitions == 3
        again = await call(ctx, create_topics_request(("a", 2, 1)), 2)
        assert again.topics[0].error_code == errors.TOPIC_ALREADY_EXISTS
        dry = await call(ctx, create_topics_request(("e", 1, 1), validate_only=True), 3)
        assert dry.topics[0].error_code == 0 and "e" not in ctx.engine.list_topics()
    run(scenario())


def test_delete_topics():
    async def scenario():
        ctx = new_ctx()
        await create(ctx, "gone")
        response = await call(ctx, DeleteTopicsRequest(topic_names=["gone", "never"], timeout_ms=1000), 3)
        assert {r.name: r.error_code for r in response.responses} == {
            "gone": 0, "never": errors.UNKNOWN_TOPIC_OR_PARTITION}
        assert "gone" not in ctx.engine.list_topics()
    run(scenario())


@pytest.mark.parametrize("version", [0, 1, 4, 7, 8])
def test_metadata_describes_this_broker_as_leader(version):
    async def scenario():
        ctx = new_ctx()
        await create(ctx, "m", 2)
        topics = None if version >= 1 else []
        response = await call(ctx, MetadataRequest(topics=topics, allow_auto_topic_creation=False), version)
        assert [(b.node_id, b.host, b.port) for b in response.brokers] == [(1, "127.0.0.1", 9092)]
        [topic] = response.topics
        assert topic.name == "m" and topic.error_code == 0
        assert [(p.partition_index, p.leader_id) for p in topic.partitions] == [(0, 1), (1, 1)]
        if version >= 7:
            assert all(p.leader_epoch == 0 for p in topic.partitions)
    run(scenario())


def test_metadata_auto_create_is_on_by_default_obeys_the_client_and_can_be_turned_off():
    T = MetadataRequest.MetadataRequestTopic
    async def scenario():
        off = new_ctx(auto_create_topics=False)
        response = await call(off, MetadataRequest(topics=[T(name="x")], allow_auto_topic_creation=True), 8)
        assert response.topics[0].error_code == errors.UNKNOWN_TOPIC_OR_PARTITION
        assert "x" not in off.engine.list_topics()
        on = new_ctx()  # Kafka's default: auto.create.topics.enable=true
        refused = await call(on, MetadataRequest(topics=[T(name="x")], allow_auto_topic_creation=False), 8)
        assert refused.topics[0].error_code == errors.UNKNOWN_TOPIC_OR_PARTITION
        created = await call(on, MetadataRequest(topics=[T(name="x")], allow_auto_topic_creation=True), 8)
        assert created.topics[0].error_code == 0 and len(created.topics[0].partitions) == 1
        invalid = await call(on, MetadataRequest(topics=[T(name="a b")], allow_auto_topic_creation=True), 8)
        assert invalid.topics[0].error_code == errors.INVALID_TOPIC_EXCEPTION
    run(scenario())


# --- produce --------------------------------------------------------------------

@pytest.mark.parametrize("version", [3, 5, 8])
def test_produce_assigns_offsets_and_overwrites_leader_epoch(version):
    async def scenario():
        ctx = new_ctx()
        await create(ctx, "p")
        first = await call(ctx, produce_request("p", 0, records([b"a", b"b", b"c"])), version)
        second = await call(ctx, produce_request("p", 0, records([b"d"]), acks=1), version)
        assert partition_of(first).error_code == 0 and partition_of(first).base_offset == 0
        assert partition_of(second).base_offset == 3
        stored = await ctx.engine.read("p", 0, 0, 1 << 20)
        assert [(h.base_offset, h.leader_epoch) for h, _ in iter_batches(stored)] == [(0, 0), (3, 0)]
    run(scenario())


def test_produce_acks_zero_appends_and_answers_nothing():
    async def scenario():
        ctx = new_ctx()
        await create(ctx, "p")
        assert await call(ctx, produce_request("p", 0, records([b"a"]), acks=0), 8) is None
        assert ctx.engine.offsets("p", 0) == (0, 1)
    run(scenario())


def test_produce_errors_are_per_partition():
    async def scenario():
        ctx = new_ctx()
        await create(ctx, "p")
        bad_acks = await call(ctx, produce_request("p", 0, records([b"a"]), acks=2), 8)
        assert partition_of(bad_acks).error_code == errors.INVALID_REQUIRED_ACKS
        corrupt = bytearray(records([b"a"]))
        corrupt[-1] ^= 0xFF
        crc = await call(ctx, produce_request("p", 0, bytes(corrupt)), 8)
        assert partition_of(crc).error_code == errors.CORRUPT_MESSAGE
        garbage = await call(ctx, produce_request("p", 0, b"\x00" * 70), 8)
        assert partition_of(garbage).error_code == errors.CORRUPT_MESSAGE
        unknown = await call(ctx, produce_request("nope", 0, records([b"a"])), 8)
        assert partition_of(unknown).error_code == errors.UNKNOWN_TOPIC_OR_PARTITION
        beyond = await call(ctx, produce_request("p", 5, records([b"a"])), 8)
        assert partition_of(beyond).error_code == errors.UNKNOWN_TOPIC_OR_PARTITION
        assert ctx.engine.offsets("p", 0) == (0, 0)
    run(scenario())


@pytest.mark.parametrize("version", [3, 8])
@pytest.mark.timeout(180)
def test_produce_of_two_batches_for_one_partition_is_refused(version):
    """Produce v3+ carries exactly one batch per partition (Kafka answers
    INVALID_RECORD otherwise); none of them is appended."""
    async def scenario():
        ctx = new_ctx()
        await create(ctx, "p")
        two = await call(ctx, produce_request("p", 0, records([b"a"]) + records([b"b"])), version)
        assert partition_of(two).error_code == errors.INVALID_RECORD
        assert ctx.engine.offsets("p", 0) == (0, 0)
        one = await call(ctx, produce_request("p", 0, records([b"a", b"b"])), version)
        assert partition_of(one).error_code == 0 and ctx.engine.offsets("p", 0) == (0, 2)
    run(scenario())


def test_idempotent_produce_deduplicates_and_fences():
    async def scenario():
        ctx = new_ctx()
        await create(ctx, "p")
        pid = (await call(ctx, InitProducerIdRequest(transactional_id=None, transaction_timeout_ms=-1), 1)).producer_id
        other = (await call(ctx, InitProducerIdRequest(transactional_id=None, transaction_timeout_ms=-1), 0)).producer_id
        assert pid != other
        await call(ctx, produce_request("p", 0, records([b"x"])), 8)  # a non-idempotent record first
        batch0 = records([b"a", b"b"], pid, 0, 0)
        first = await call(ctx, produce_request("p", 0, batch0), 8)
        retry = await call(ctx, produce_request("p", 0, batch0), 8)
        assert partition_of(first).base_offset == partition_of(retry).base_offset == 1
        assert partition_of(retry).error_code == 0
        assert ctx.engine.offsets("p", 0) == (0, 3)
        gap = await call(ctx, produce_request("p", 0, records([b"c"], pid, 0, 5)), 8)
        assert partition_of(gap).error_code == errors.OUT_OF_ORDER_SEQUENCE_NUMBER
        bumped = await call(ctx, produce_request("p", 0, records([b"c"], pid, 1, 0)), 8)
        assert partition_of(bumped).error_code == 0
        stale = await call(ctx, produce_request("p", 0, records([b"d"], pid, 0, 2)), 8)
        assert partition_of(stale).error_code == errors.INVALID_PRODUCER_EPOCH
        unknown = await call(ctx, produce_request("p", 0, records([b"e"], 99999, 0, 7)), 8)
        assert partition_of(unknown).error_code == errors.UNKNOWN_PRODUCER_ID
    run(scenario())


def test_init_producer_id_refuses_transactions():
    response = run(call(new_ctx(), InitProducerIdRequest(transactional_id="tx", transaction_timeout_ms=1000), 1))
    assert response.error_code != 0


# --- fetch and list offsets ------------------------------------------------------

def test_fetch_returns_whole_batches_and_empty_bytes_at_the_end():
    async def scenario():
        ctx = new_ctx()
        await create(ctx, "f")
        for chunk in ([b"0", b"1", b"2"], [b"3", b"4"]):
            await call(ctx, produce_request("f", 0, records(chunk)), 8)
        inside = await call(ctx, fetch_request("f", 0, 1), 11)
        part = inside.responses[0].partitions[0]
        assert part.error_code == 0 and part.high_watermark == 5 and part.log_start_offset == 0
        assert [h.base_offset for h, _ in iter_batches(part.records)] == [0, 3]
        at_end = (await call(ctx, fetch_request("f", 0, 5), 4)).responses[0].partitions[0]
        assert at_end.error_code == 0 and at_end.records == b""
        beyond = (await call(ctx, fetch_request("f", 0, 6), 11)).responses[0].partitions[0]
        assert beyond.error_code == errors.OFFSET_OUT_OF_RANGE and beyond.records == b""
        unknown = (await call(ctx, fetch_request("nope", 0, 0), 11)).responses[0].partitions[0]
        assert unknown.error_code == errors.UNKNOWN_TOPIC_OR_PARTITION
        fenced = (await call(ctx, fetch_request("f", 0, 0, current_leader_epoch=3), 11)).responses[0].partitions[0]
        assert fenced.error_code == 75  # UNKNOWN_LEADER_EPOCH: the client is ahead of us
    run(scenario())


def test_fetch_long_poll_wakes_on_append_and_times_out_otherwise():
    async def scenario():
        ctx = new_ctx()
        await create(ctx, "f")
        started = time.monotonic()
        empty = await call(ctx, fetch_request("f", 0, 0, max_wait_ms=300), 11)
        waited = time.monotonic() - started
        assert empty.responses[0].partitions[0].records == b"" and 0.28 <= waited < 1.5

        async def produce_later():
            await asyncio.sleep(0.1)
            await call(ctx, produce_request("f", 0, records([b"late"])), 8, correlation_id=9)
        started = time.monotonic()
        fetched, _ = await asyncio.gather(call(ctx, fetch_request("f", 0, 0, max_wait_ms=5000), 11), produce_later())
        assert time.monotonic() - started < 2
        assert fetched.responses[0].partitions[0].high_watermark == 1
        assert len(fetched.responses[0].partitions[0].records) > 0
    run(scenario())


def test_list_offsets_earliest_latest_and_by_time():
    L = ListOffsetsRequest.ListOffsetsTopic
    def request(ts):
        return ListOffsetsRequest(replica_id=-1, isolation_level=0, topics=[
            L(name="o", partitions=[L.ListOffsetsPartition(partition_index=0, current_leader_epoch=-1,
                                                           timestamp=ts)])])
    async def scenario():
        ctx = new_ctx()
        await create(ctx, "o")
        await call(ctx, produce_request("o", 0, records([b"a", b"b"], timestamp=1000)), 8)
        await call(ctx, produce_request("o", 0, records([b"c"], timestamp=2000)), 8)
        answers = {}
        for ts in (-2, -1, 1500, 500, 9999):
            response = await call(ctx, request(ts), 5)
            p = response.topics[0].partitions[0]
            assert p.error_code == 0
            answers[ts] = p.offset
        assert answers == {-2: 0, -1: 3, 1500: 2, 500: 0, 9999: -1}
        v1 = (await call(ctx, request(-1), 1)).topics[0].partitions[0]
        assert v1.offset == 3
    run(scenario())


@pytest.mark.parametrize("compression", [0, 1])  # none, gzip: the lookup decompresses
def test_list_offsets_by_time_is_exact_to_the_record(compression):
    """Kafka answers with the first *record* at or after the time, not the
    start of the batch that holds it."""
    L = ListOffsetsRequest.ListOffsetsTopic
    builder = MemoryRecordsBuilder(magic=2, compression_type=compression, batch_size=1 << 20,
                                   producer_id=-1, producer_epoch=-1, base_sequence=-1)
    for i, ts in enumerate((1000, 1100, 1200, 1300)):
        builder.append(ts, None, b"v%d" % i)
    builder.close()

    async def scenario():
        ctx = new_ctx()
        await create(ctx, "t")
        await call(ctx, produce_request("t", 0, bytes(builder.buffer())), 8)
        answers = {}
        for ts in (1000, 1150, 1300, 1301):
            p = (await call(ctx, ListOffsetsRequest(replica_id=-1, isolation_level=0, topics=[
                L(name="t", partitions=[L.ListOffsetsPartition(partition_index=0, current_leader_epoch=-1,
                                                               timestamp=ts)])]), 5)).topics[0].partitions[0]
            answers[ts] = (p.offset, p.timestamp)
        assert answers == {1000: (0, 1000), 1150: (2, 1200), 1300: (3, 1300), 1301: (-1, -1)}
    run(scenario())


def test_a_null_where_the_schema_forbids_it_closes_the_connection():
    # A Fetch v11 whose topics array has length -1: decodable, but not a valid request.
    body = struct.pack(">iiiibii", -1, 500, 1, 1 << 20, 0, 0, -1) + struct.pack(">iih", -1, 0, 0)
    frame = struct.pack(">hhi", 1, 11, 5) + struct.pack(">h", 1) + b"t" + body
    with pytest.raises(dispatch.CloseConnection, match="null topics"):
        run(dispatch.handle_frame(new_ctx(), frame))
