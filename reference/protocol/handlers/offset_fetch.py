"""OffsetFetch (9): committed offsets of a group; -1 where none (v2+: a null
topic list asks for every committed partition)."""
from kafka.protocol.consumer import OffsetFetchResponse

from reference import errors

API_KEY = 9
TopicResponse = OffsetFetchResponse.OffsetFetchResponseTopic
PartitionResponse = TopicResponse.OffsetFetchResponsePartition


async def handle(request, ctx):
    if not request.group_id:
        return OffsetFetchResponse(version=request.version, throttle_time_ms=0, topics=[],
                                   error_code=errors.INVALID_GROUP_ID)
    if ctx.not_coordinator(request.group_id):
        # v1 has no top-level error code: every partition asked for carries it
        topics = [TopicResponse(name=t.name, partitions=[
            PartitionResponse(partition_index=i, committed_offset=-1, committed_leader_epoch=-1, metadata="",
                              error_code=errors.NOT_COORDINATOR) for i in t.partition_indexes])
            for t in request.topics or []] if request.version < 2 else []
        return OffsetFetchResponse(version=request.version, throttle_time_ms=0, topics=topics,
                                   error_code=errors.NOT_COORDINATOR)
    committed = ctx.engine.group_offsets(request.group_id)
    if request.topics is None:
        wanted: dict[str, list[int]] = {}
        for topic, partition in sorted(committed):
            wanted.setdefault(topic, []).append(partition)
    else:
        wanted = {t.name: list(t.partition_indexes) for t in request.topics}
    topics = []
    for name, partitions in wanted.items():
        parts = []
        for index in partitions:
            entry = committed.get((name, index))
            if entry is None:
                parts.append(PartitionResponse(partition_index=index, committed_offset=-1, committed_leader_epoch=-1,
                                               metadata="", error_code=errors.NONE))
            else:
                parts.append(PartitionResponse(partition_index=index, committed_offset=entry.offset,
                                               committed_leader_epoch=entry.leader_epoch,
                                               metadata=entry.metadata or "", error_code=errors.NONE))
        topics.append(TopicResponse(name=name, partitions=parts))
    return OffsetFetchResponse(version=request.version, throttle_time_ms=0, topics=topics, error_code=errors.NONE)
