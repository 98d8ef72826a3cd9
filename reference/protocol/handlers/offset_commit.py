"""OffsetCommit (8): fenced by the group's generation, stored durably by the
engine before the answer. A consumer using assign() commits with generation
-1 and no member id while the group has no members."""
from kafka.protocol.consumer import OffsetCommitResponse

from reference import errors
from reference.storage.api import CommittedOffset

API_KEY = 8
OFFSET_METADATA_TOO_LARGE = 12
MAX_METADATA = 4096
TopicResponse = OffsetCommitResponse.OffsetCommitResponseTopic
PartitionResponse = TopicResponse.OffsetCommitResponsePartition


def _answer(request, code_for):
    return OffsetCommitResponse(version=request.version, throttle_time_ms=0, topics=[
        TopicResponse(name=t.name, partitions=[PartitionResponse(partition_index=p.partition_index,
                                                                 error_code=code_for(t.name, p))
                                               for p in t.partitions])
        for t in request.topics])


async def handle(request, ctx):
    if not request.group_id:
        return _answer(request, lambda t, p: errors.INVALID_GROUP_ID)
    if ctx.not_coordinator(request.group_id):
        return _answer(request, lambda t, p: errors.NOT_COORDINATOR)
    code = ctx.groups.commit_error(request.group_id, request.member_id, request.generation_id_or_member_epoch)
    if code:
        return _answer(request, lambda t, p: code)
    topics = ctx.engine.list_topics()
    def partition_error(topic, p) -> int:
        info = topics.get(topic)
        if info is None or not 0 <= p.partition_index < info.partitions:
            return errors.UNKNOWN_TOPIC_OR_PARTITION
        if p.committed_metadata is not None and len(p.committed_metadata) > MAX_METADATA:
            return OFFSET_METADATA_TOO_LARGE
        return errors.NONE
    offsets = {(t.name, p.partition_index): CommittedOffset(p.committed_offset, p.committed_metadata,
                                                            p.committed_leader_epoch if request.version >= 6 else -1)
               for t in request.topics for p in t.partitions if partition_error(t.name, p) == errors.NONE}
    if offsets:
        await ctx.engine.commit_group_offsets(request.group_id, offsets)
    return _answer(request, partition_error)
