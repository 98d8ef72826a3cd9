"""Produce (0).

Each partition's records are split into whole batches (CRC32C checked:
CORRUPT_MESSAGE otherwise) and appended one by one; `engine.append` returns
once the batch is durable, so acks=1 and acks=all both answer after the
durable local append (one node: the leader is the only in-sync replica).
acks=0 appends the same way and answers nothing. An idempotent retry the
engine recognises comes back with its original base offset and no error.

Partitions of one request are appended concurrently, so the engine can
commit them together; the server runs one connection's Produce requests one
after another, so a pipelining idempotent producer's batches for a partition
reach the engine in sequence order (as in Kafka, which handles a
connection's requests one at a time)."""
import asyncio
import logging

from kafka.protocol.producer import ProduceResponse

from reference import errors
from reference.batch import CorruptBatch, parse_header, split_batches
from reference.errors import KafkaError
from reference.protocol.context import INVALID_RECORD

API_KEY = 0
log = logging.getLogger("highwater.produce")
TopicResponse = ProduceResponse.TopicProduceResponse
PartitionResponse = TopicResponse.PartitionProduceResponse


def _partition_error(index, code, message=None):
    return PartitionResponse(index=index, error_code=code, base_offset=-1, log_append_time_ms=-1,
                             log_start_offset=-1, record_errors=[], error_message=message)


async def _append_partition(ctx, topic: str, index: int, records) -> PartitionResponse:
    count = ctx.partition_count(topic)
    if count is None or not 0 <= index < count:
        return _partition_error(index, errors.UNKNOWN_TOPIC_OR_PARTITION, f"no partition {topic}-{index}")
    try:
        batches = split_batches(records or b"")
    except CorruptBatch as exc:
        log.warning("produce to %s-%d: corrupt records: %s", topic, index, exc)
        return _partition_error(index, errors.CORRUPT_MESSAGE, str(exc))
    for batch in batches:
        header = parse_header(batch)
        if header.is_control or header.is_transactional:
            return _partition_error(index, INVALID_RECORD, "transactional and control batches are not supported")
    first = None
    try:
        for batch in batches:
            result = await ctx.engine.append(topic, index, batch, ctx.leader_epoch(topic, index))
            if first is None:
                first = result
    except KafkaError as exc:
        return _partition_error(index, exc.code, str(exc))
    return PartitionResponse(index=index, error_code=errors.NONE, base_offset=first.base_offset,
                             log_append_time_ms=-1, log_start_offset=first.log_start_offset,
                             record_errors=[], error_message=None)


async def handle(request, ctx):
    if request.acks not in (0, 1, -1):
        responses = [TopicResponse(name=t.name, partition_responses=[
            _partition_error(p.index, errors.INVALID_REQUIRED_ACKS) for p in t.partition_data])
            for t in request.topic_data]
        return ProduceResponse(version=request.version, responses=responses, throttle_time_ms=0)
    if request.transactional_id is not None:
        responses = [TopicResponse(name=t.name, partition_responses=[
            _partition_error(p.index, INVALID_RECORD, "transactions are not supported") for p in t.partition_data])
            for t in request.topic_data]
        return None if request.acks == 0 else ProduceResponse(version=request.version, responses=responses,
                                                               throttle_time_ms=0)
    work = [(t.name, p.index, p.records) for t in request.topic_data for p in t.partition_data]
    results = await asyncio.gather(*(_append_partition(ctx, *w) for w in work))
    if request.acks == 0:
        return None
    by_topic: dict[str, list] = {}
    for (topic, _, _), result in zip(work, results):
        by_topic.setdefault(topic, []).append(result)
    return ProduceResponse(version=request.version, throttle_time_ms=0,
                           responses=[TopicResponse(name=name, partition_responses=parts)
                                      for name, parts in by_topic.items()])
