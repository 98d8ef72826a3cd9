"""Produce (0), in two steps.

1. `queue(request, ctx)`: each partition's records go to the engine's one
   call for records, `engine.queue_append`, which validates every record (as
   Kafka's LogValidator: CORRUPT_MESSAGE or INVALID_RECORD for a broken
   batch, and nothing of it is stored) and queues the batch, or refuses it
   with the partition's error. When `queue` returns, every batch of the
   request has its place in its partition.
2. `QueuedProduce.response()`: waits until each queued batch is durable,
   then answers. acks=1 and acks=all both answer after the durable local
   append (one node: the leader is the only in-sync replica); acks=0 waits
   the same way and answers nothing. An idempotent retry comes back with
   its original base offset and no error.

The split keeps Kafka's one ordering rule for a pipelining idempotent
producer, a connection's requests in order, without making each request
wait for the previous one's fsync: the server starts step 1 of a
connection's next Produce once step 1 of this one returned, so their
batches can share a group commit (reference/server.py).

No append outlives its request unobserved: if the request is cancelled (its
connection reset) after some batches were queued, they still complete or
fail, and each failure is logged once (`QueuedProduce.abandon`).
"""
from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass

from kafka.protocol.producer import ProduceResponse

from reference import buggify, errors
from reference.errors import KafkaError
from reference.validation import COMPRESSION_MASK, ZSTD, InvalidBatch

API_KEY = 0
log = logging.getLogger("highwater.produce")
TopicResponse = ProduceResponse.TopicProduceResponse
PartitionResponse = TopicResponse.PartitionProduceResponse
RecordError = PartitionResponse.BatchIndexAndErrorMessage
ZSTD_MIN_VERSION = 7  # Kafka: zstd batches need Produce v7+ (UNSUPPORTED_COMPRESSION_TYPE below)
_ATTRIBUTES_LOW_BYTE = 22


def _partition_error(index, code, message=None, record_index=None):
    record_errors = [] if record_index is None else [RecordError(batch_index=record_index,
                                                                 batch_index_error_message=message)]
    return PartitionResponse(index=index, error_code=code, base_offset=-1, log_append_time_ms=-1,
                             log_start_offset=-1, record_errors=record_errors, error_message=message)


@dataclass
class _Part:
    topic: str
    index: int
    response: PartitionResponse | None = None   # decided (an error) before anything was queued
    durable: asyncio.Future | None = None        # or queued: the engine's durability future


class QueuedProduce:
    """A Produce request whose batches all have their place (step 2)."""

    def __init__(self, acks: int, version: int, parts: list[_Part]):
        self.acks = acks
        self.version = version
        self.parts = parts

    async def response(self) -> ProduceResponse | None:
        pending = [p.durable for p in self.parts if p.durable is not None]
        if pending:
            try:
                await asyncio.wait(pending)  # (unlike gather, cancelling this leaves them be)
            except asyncio.CancelledError:
                self.abandon()
                raise
        for p in self.parts:
            if p.durable is not None:
                p.response = _outcome(p)
        if self.acks == 0:
            return None
        by_topic: dict[str, list] = {}
        for p in self.parts:
            by_topic.setdefault(p.topic, []).append(p.response)
        return ProduceResponse(version=self.version, throttle_time_ms=0,
                               responses=[TopicResponse(name=name, partition_responses=parts)
                                          for name, parts in by_topic.items()])

    def abandon(self) -> None:
        """No one will answer this request: see each queued append through,
        and log the failure of any once."""
        for p in self.parts:
            if p.durable is not None:
                p.durable.add_done_callback(
                    lambda f, topic=p.topic, index=p.index: _report_abandoned(topic, index, f))


def _outcome(p: _Part) -> PartitionResponse:
    try:
        result = p.durable.result()
    except KafkaError as e:
        log.warning("produce to %s-%d failed: %s", p.topic, p.index, e)
        return _partition_error(p.index, e.code, str(e))
    return PartitionResponse(index=p.index, error_code=errors.NONE, base_offset=result.base_offset,
                             log_append_time_ms=-1, log_start_offset=result.log_start_offset,
                             record_errors=[], error_message=None)


def _report_abandoned(topic: str, index: int, durable: asyncio.Future) -> None:
    if durable.cancelled():
        return
    error = durable.exception()  # retrieved here, so asyncio never reports it as unretrieved
    if error is not None:
        log.warning("produce to %s-%d, whose request was abandoned (connection closed), failed: %s",
                    topic, index, error)


async def queue(request, ctx) -> QueuedProduce:
    """Step 1: validate and queue every partition's batch, in request order."""
    await buggify.delay("produce.queue.slow")
    parts: list[_Part] = []
    try:
        for t in request.topic_data:
            for p in t.partition_data:
                part = _Part(t.name, p.index)
                parts.append(part)
                refusal = _refusal(request, ctx, t.name, p.index, p.records)
                if refusal is not None:
                    part.response = refusal
                    continue
                try:
                    part.durable = await ctx.engine.queue_append(t.name, p.index, p.records or b"",
                                                                 ctx.leader_epoch(t.name, p.index))
                except InvalidBatch as e:
                    log.info("produce to %s-%d refused: %s", t.name, p.index, e)
                    part.response = _partition_error(p.index, e.code, str(e), e.record_index)
                except KafkaError as e:
                    part.response = _partition_error(p.index, e.code, str(e))
    except BaseException:
        QueuedProduce(request.acks, request.version, parts).abandon()
        raise
    return QueuedProduce(request.acks, request.version, parts)


def _refusal(request, ctx, topic: str, index: int, records) -> PartitionResponse | None:
    """A partition's answer decided from the request alone, or None."""
    if request.acks not in (0, 1, -1):
        return _partition_error(index, errors.INVALID_REQUIRED_ACKS)
    if request.transactional_id is not None:
        return _partition_error(index, errors.INVALID_RECORD, "transactions are not supported")
    count = ctx.partition_count(topic)
    if count is None or not 0 <= index < count:
        return _partition_error(index, errors.UNKNOWN_TOPIC_OR_PARTITION, f"no partition {topic}-{index}")
    if (request.version < ZSTD_MIN_VERSION and records is not None and len(records) > _ATTRIBUTES_LOW_BYTE
            and records[_ATTRIBUTES_LOW_BYTE] & COMPRESSION_MASK == ZSTD):
        return _partition_error(index, errors.UNSUPPORTED_COMPRESSION_TYPE,
                                f"zstd needs Produce v{ZSTD_MIN_VERSION}+, this is v{request.version}")
    return None


async def handle(request, ctx):
    """Both steps at once (the dispatcher's entry; the server runs them apart)."""
    return await (await queue(request, ctx)).response()
