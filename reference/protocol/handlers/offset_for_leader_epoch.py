"""OffsetForLeaderEpoch (23): where a leader epoch ends, for a consumer
validating its position after a leader change (KIP-320).

In a cluster each opening of the partition's stream starts a new epoch at
the committed end offset (the metadata keeps [epoch, first offset] pairs):
the answer is the largest epoch not above the one asked and where it ends
(the next epoch's first offset, or the high watermark for the current one).
A lone node has one epoch (0), which ends at the high watermark; an older
epoch never existed there and ends where the log starts; a newer one is
unknown."""
from kafka.protocol.consumer import OffsetForLeaderEpochResponse

from reference import errors
from reference.errors import KafkaError
from reference.protocol.handlers.fetch import leader_epoch_error

API_KEY = 23
TopicResult = OffsetForLeaderEpochResponse.OffsetForLeaderTopicResult
EpochEndOffset = TopicResult.EpochEndOffset


def _end_offset(ctx, topic, part) -> EpochEndOffset:
    def answer(code, epoch=-1, end=-1):
        return EpochEndOffset(error_code=code, partition=part.partition, leader_epoch=epoch, end_offset=end)
    count = ctx.partition_count(topic)
    if count is None or not 0 <= part.partition < count:
        return answer(errors.UNKNOWN_TOPIC_OR_PARTITION)
    code = leader_epoch_error(ctx, topic, part.partition, part.current_leader_epoch)
    if code:
        return answer(code)
    ours = ctx.leader_epoch(topic, part.partition)
    try:
        start, hwm = ctx.engine.offsets(topic, part.partition)
    except KafkaError as exc:
        return answer(exc.code)
    if ctx.cluster is not None:
        if part.leader_epoch > ours:
            return answer(errors.NONE)
        epoch, end = ctx.cluster.epoch_end(topic, part.partition, part.leader_epoch, hwm)
        return answer(errors.NONE, epoch, end) if epoch >= 0 else answer(errors.NONE, part.leader_epoch, start)
    if part.leader_epoch == ours:
        return answer(errors.NONE, ours, hwm)
    if part.leader_epoch < ours:
        return answer(errors.NONE, part.leader_epoch, start)
    return answer(errors.NONE)  # epoch -1, offset -1: undefined


async def handle(request, ctx):
    return OffsetForLeaderEpochResponse(version=request.version, throttle_time_ms=0, topics=[
        TopicResult(topic=t.topic, partitions=[_end_offset(ctx, t.topic, p) for p in t.partitions])
        for t in request.topics])
