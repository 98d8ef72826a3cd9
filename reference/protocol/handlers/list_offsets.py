"""ListOffsets (2): earliest (-2), latest (-1), or the first record whose
timestamp is at or after a given time (the engine finds the batch by its max
timestamp; the record inside it is found here)."""
from kafka.protocol.consumer import ListOffsetsResponse

from reference import errors
from reference.batch import first_record_at_or_after, iter_batches
from reference.errors import KafkaError
from reference.protocol.handlers.fetch import leader_epoch_error

API_KEY = 2
LATEST, EARLIEST = -1, -2
TopicResponse = ListOffsetsResponse.ListOffsetsTopicResponse
PartitionResponse = TopicResponse.ListOffsetsPartitionResponse


async def _offset(ctx, topic, part) -> PartitionResponse:
    index = part.partition_index
    count = ctx.partition_count(topic)
    if count is None or not 0 <= index < count:
        return PartitionResponse(partition_index=index, error_code=errors.UNKNOWN_TOPIC_OR_PARTITION,
                                 timestamp=-1, offset=-1, leader_epoch=-1)
    code = leader_epoch_error(ctx, topic, index, part.current_leader_epoch)
    if code:
        return PartitionResponse(partition_index=index, error_code=code, timestamp=-1, offset=-1, leader_epoch=-1)
    epoch = ctx.leader_epoch(topic, index)
    try:
        start, hwm = ctx.engine.offsets(topic, index)
        if part.timestamp == EARLIEST:
            offset, timestamp = start, -1
        elif part.timestamp == LATEST:
            offset, timestamp = hwm, -1
        else:
            offset, timestamp = await _offset_for_timestamp(ctx.engine, topic, index, part.timestamp)
            if offset < 0:
                epoch = -1
    except KafkaError as exc:
        return PartitionResponse(partition_index=index, error_code=exc.code, timestamp=-1, offset=-1, leader_epoch=-1)
    return PartitionResponse(partition_index=index, error_code=errors.NONE, timestamp=timestamp, offset=offset,
                             leader_epoch=epoch)


async def _offset_for_timestamp(engine, topic, index, timestamp) -> tuple[int, int]:
    base, _ = await engine.offset_for_timestamp(topic, index, timestamp)
    if base < 0:
        return -1, -1
    data = await engine.read(topic, index, base, 1)  # at least the whole batch holding `base`
    for _, batch in iter_batches(data):
        found = first_record_at_or_after(batch, timestamp)
        if found is not None:
            return found
    return -1, -1  # the batch's max timestamp promised a record; be honest if none is there


async def handle(request, ctx):
    topics = [TopicResponse(name=t.name, partitions=[await _offset(ctx, t.name, p) for p in t.partitions])
              for t in request.topics]
    return ListOffsetsResponse(version=request.version, throttle_time_ms=0, topics=topics)
