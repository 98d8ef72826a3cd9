"""ListPartitionReassignments (46): moves in progress, from the controller
(replicas: the current leader; adding: the target; removing: the source)."""
from kafka.protocol.admin import ListPartitionReassignmentsResponse

from reference import errors

API_KEY = 46
Topic = ListPartitionReassignmentsResponse.OngoingTopicReassignment
Partition = Topic.OngoingPartitionReassignment


async def handle(request, ctx):
    def answer(code=errors.NONE, message=None, topics=()):
        return ListPartitionReassignmentsResponse(version=request.version, throttle_time_ms=0, error_code=code,
                                                  error_message=message, topics=list(topics))
    if ctx.cluster is None:
        return answer()
    try:
        active = (await ctx.cluster.controller_call("reassignments", {}, 5.0))["active"]
    except Exception as exc:
        return answer(errors.REQUEST_TIMED_OUT, f"no controller answered: {exc}")
    wanted = None
    if request.topics is not None:
        wanted = {(t.name, p) for t in request.topics for p in t.partition_indexes}
    by_topic: dict[str, list] = {}
    for topic, partition, source, target in active:
        if wanted is not None and (topic, partition) not in wanted:
            continue
        src = [] if source is None else [source]
        by_topic.setdefault(topic, []).append(Partition(partition_index=partition, replicas=src,
                                                        adding_replicas=[target], removing_replicas=src))
    return answer(topics=[Topic(name=n, partitions=ps) for n, ps in by_topic.items()])
