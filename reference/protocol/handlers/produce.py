"""Produce (0).

Each partition's records are split into whole batches (CRC32C checked:
CORRUPT_MESSAGE otherwise) and appended one by one; `engine.append` returns
once the batch is durable, so acks=1 and acks=all both answer after the
durable local append (one node: the leader is the only in-sync replica).
acks=0 appends the same way and answers nothing. An idempotent retry the
engine recognises comes back with its original base offset and no error.

Partitions of one request are appended concurrently, so the engine can
commit them together. A pipelining idempotent producer's batches must reach
each partition in sequence order, so the server starts a connection's next
Produce only once every batch of this one has its place in its partition
(`REQUEST_QUEUED`, resolved when the engine has queued them all): the order
is Kafka's, one request after another, but the next request's batches can
join the same group commit instead of waiting a whole fsync (or, with the
WAL in S3, a whole PUT window) behind this one."""
import asyncio
import contextvars
import logging

from kafka.protocol.producer import ProduceResponse

from reference import errors
from reference.batch import CorruptBatch, parse_header, split_batches
from reference.errors import KafkaError
from reference.protocol.context import INVALID_RECORD

API_KEY = 0
log = logging.getLogger("highwater.produce")
TopicResponse = ProduceResponse.TopicProduceResponse
# Set by the server for each Produce request it runs; None when called directly.
REQUEST_QUEUED: contextvars.ContextVar[asyncio.Future | None] = contextvars.ContextVar(
    "produce_request_queued", default=None)
PartitionResponse = TopicResponse.PartitionProduceResponse


def _partition_error(index, code, message=None):
    return PartitionResponse(index=index, error_code=code, base_offset=-1, log_append_time_ms=-1,
                             log_start_offset=-1, record_errors=[], error_message=message)


def _resolve(future: asyncio.Future) -> None:
    if not future.done():
        future.set_result(None)


async def _append_partition(ctx, topic: str, index: int, records, queued: asyncio.Future) -> PartitionResponse:
    try:
        return await _append_partition_batches(ctx, topic, index, records, queued)
    finally:
        _resolve(queued)


async def _append_partition_batches(ctx, topic, index, records, queued) -> PartitionResponse:
    count = ctx.partition_count(topic)
    if count is None or not 0 <= index < count:
        return _partition_error(index, errors.UNKNOWN_TOPIC_OR_PARTITION, f"no partition {topic}-{index}")
    try:
        batches = split_batches(records or b"")
    except CorruptBatch as exc:
        log.warning("produce to %s-%d: corrupt records: %s", topic, index, exc)
        return _partition_error(index, errors.CORRUPT_MESSAGE, str(exc))
    if len(batches) > 1:  # every version we speak is v3+
        return _partition_error(index, errors.INVALID_RECORD, "Produce requests with version 3 or later are only "
                                "allowed to contain exactly one record batch per partition")
    for batch in batches:
        header = parse_header(batch)
        if header.is_control or header.is_transactional:
            return _partition_error(index, INVALID_RECORD, "transactional and control batches are not supported")
    loop = asyncio.get_running_loop()
    appends = []
    for batch in batches:  # each batch queued behind the one before, none waiting for durability
        batch_queued = loop.create_future()
        append = asyncio.ensure_future(ctx.engine.append(topic, index, batch, ctx.leader_epoch(topic, index),
                                                         on_queued=lambda f=batch_queued: _resolve(f)))
        appends.append(append)
        await asyncio.wait([batch_queued, append], return_when=asyncio.FIRST_COMPLETED)
    _resolve(queued)
    results = await asyncio.gather(*appends, return_exceptions=True)
    for result in results:
        if isinstance(result, KafkaError):
            return _partition_error(index, result.code, str(result))
        if isinstance(result, BaseException):
            raise result
    first = results[0]
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
    loop = asyncio.get_running_loop()
    queued = [loop.create_future() for _ in work]
    request_queued = REQUEST_QUEUED.get()
    if request_queued is not None:
        all_queued = asyncio.gather(*queued)
        all_queued.add_done_callback(lambda _: _resolve(request_queued))
    results = await asyncio.gather(*(_append_partition(ctx, *w, q) for w, q in zip(work, queued)))
    if request.acks == 0:
        return None
    by_topic: dict[str, list] = {}
    for (topic, _, _), result in zip(work, results):
        by_topic.setdefault(topic, []).append(result)
    return ProduceResponse(version=request.version, throttle_time_ms=0,
                           responses=[TopicResponse(name=name, partition_responses=parts)
                                      for name, parts in by_topic.items()])
