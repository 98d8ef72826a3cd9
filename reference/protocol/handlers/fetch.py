"""Fetch (1): whole stored batches from each requested offset, long-polling
until `min_bytes` have accumulated or `max_wait_ms` has passed.

Records are always bytes, b'' when there is nothing (librdkafka cannot take
a null). A fetch offset inside a batch returns that whole batch; clients skip
the records before their offset. No transactions, so the last stable offset
is the high watermark. No fetch sessions: session id 0 tells the client to
send full fetches."""
import asyncio

from kafka.protocol.consumer import FetchResponse

from reference import buggify, clock, errors
from reference.errors import KafkaError
from reference.protocol.context import FENCED_LEADER_EPOCH, UNKNOWN_LEADER_EPOCH

API_KEY = 1
TopicResponse = FetchResponse.FetchableTopicResponse
PartitionData = TopicResponse.PartitionData


def leader_epoch_error(ctx, topic, partition, client_epoch) -> int:
    """KIP-320 fencing: a client's epoch must match the leader's (-1: no check)."""
    if client_epoch is None or client_epoch < 0:
        return errors.NONE
    stale = ctx.engine.stale_read_epoch(topic, partition)
    ours = stale if stale is not None else ctx.leader_epoch(topic, partition)
    if client_epoch < ours:
        return FENCED_LEADER_EPOCH
    if client_epoch > ours:
        return UNKNOWN_LEADER_EPOCH
    return errors.NONE


async def _read_partition(ctx, topic, part, budget: int, first: bool) -> PartitionData:
    """`budget`: bytes left in the response. The first partition with data
    gets at least one whole batch even past it; later ones only what fits."""
    index = part.partition
    def answer(code, records=b"", start=-1, hwm=-1):
        return PartitionData(partition_index=index, error_code=code, high_watermark=hwm, last_stable_offset=hwm,
                             log_start_offset=start, aborted_transactions=[], preferred_read_replica=-1,
                             records=records)
    count = ctx.partition_count(topic)
    if count is None or not 0 <= index < count:
        return answer(errors.UNKNOWN_TOPIC_OR_PARTITION)
    code = leader_epoch_error(ctx, topic, index, part.current_leader_epoch)
    if code:
        return answer(code)
    try:
        start, hwm = ctx.engine.offsets(topic, index)
        if not start <= part.fetch_offset <= hwm:
            return answer(errors.OFFSET_OUT_OF_RANGE, start=start, hwm=hwm)
        records = b""
        if part.fetch_offset < hwm and (first or budget > 0):
            records = await ctx.engine.read(topic, index, part.fetch_offset,
                                            max(min(part.partition_max_bytes, budget), 1))
            if not first and len(records) > budget:
                records = b""
            start, hwm = ctx.engine.offsets(topic, index)
    except KafkaError as exc:
        return answer(exc.code)
    return answer(errors.NONE, records=records, start=start, hwm=hwm)


def response_budget(ctx, request) -> int:
    """The client's max_bytes, capped by the broker's fetch limit."""
    asked = request.max_bytes if request.max_bytes > 0 else 2**31 - 1
    return min(asked, ctx.fetch_max_bytes)


async def _read_all(ctx, request):
    """One pass over every requested partition, within the response size limit."""
    budget = response_budget(ctx, request)
    topics, total = [], 0
    for topic in request.topics:
        parts = []
        for part in topic.partitions:
            data = await _read_partition(ctx, topic.topic, part, budget - total, first=(total == 0))
            total += len(data.records)
            parts.append(data)
        topics.append(TopicResponse(topic=topic.topic, partitions=parts))
    return topics, total


async def handle(request, ctx):
    await buggify.delay("fetch.slow")
    deadline = clock.monotonic() + max(request.max_wait_ms, 0) / 1000
    while True:
        # Subscribe to the next append *before* reading: the waiter task starts
        # at our first suspension, before any append can run, so an append
        # that lands while we read still wakes us.
        remaining = deadline - clock.monotonic()
        waiter = asyncio.ensure_future(ctx.engine.wait_for_append(remaining)) if remaining > 0 else None
        try:
            topics, total = await _read_all(ctx, request)
            has_error = any(p.error_code for t in topics for p in t.partitions)
            if waiter is None or total >= max(request.min_bytes, 1) or has_error:
                break
            await waiter
        finally:
            if waiter is not None and not waiter.done():
                waiter.cancel()
        if clock.monotonic() >= deadline:
            topics, total = await _read_all(ctx, request)
            break
    return FetchResponse(version=request.version, throttle_time_ms=0, error_code=0, session_id=0, responses=topics)
