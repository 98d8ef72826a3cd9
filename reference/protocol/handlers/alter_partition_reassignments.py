"""AlterPartitionReassignments (45): move partitions between live brokers.

Each partition names one replica, the broker that should lead it (there is
one copy of the data, in S3; a broker only holds the stream open). The
controller moves it: the old leader uploads only the partition's
not-yet-uploaded delta and lets go of it, the new one opens it at the
committed end (CLUSTER.md, "Reassignment"). The answer comes once every move
is done; it takes as long as the delta takes to upload. `null` replicas
(cancel) find nothing in progress: moves do not linger. A lone broker (no
cluster) has nowhere to move anything."""
from kafka.protocol.admin import AlterPartitionReassignmentsResponse

from reference import errors

API_KEY = 45
INVALID_REPLICA_ASSIGNMENT = 39
NO_REASSIGNMENT_IN_PROGRESS = 85
TopicResponse = AlterPartitionReassignmentsResponse.ReassignableTopicResponse
PartitionResponse = TopicResponse.ReassignablePartitionResponse


async def handle(request, ctx):
    results: dict[tuple[str, int], tuple[int, str | None]] = {}
    moves = []
    for t in request.topics:
        for p in t.partitions:
            key = (t.name, p.partition_index)
            if ctx.cluster is None:
                results[key] = (errors.INVALID_REQUEST, "not a cluster: nowhere to move a partition")
            elif p.replicas is None:
                results[key] = (NO_REASSIGNMENT_IN_PROGRESS, "reassignments complete before the answer")
            elif len(p.replicas) != 1:
                results[key] = (INVALID_REPLICA_ASSIGNMENT, "give exactly one broker: the data has one copy, in S3")
            elif ctx.partition_count(t.name) is None or not 0 <= p.partition_index < ctx.partition_count(t.name):
                results[key] = (errors.UNKNOWN_TOPIC_OR_PARTITION, None)
            else:
                moves.append([t.name, p.partition_index, p.replicas[0]])
    top_code, top_message = errors.NONE, None
    if moves:
        try:
            reply = await ctx.cluster.controller_call("reassign", {"moves": moves},
                                                      max(1.0, request.timeout_ms / 1000))
        except Exception as exc:
            top_code, top_message = errors.REQUEST_TIMED_OUT, f"reassignment: {exc}"
            reply = None
        if reply is not None:
            for m in moves:
                results[(m[0], m[1])] = (errors.NONE, None)
            for topic, partition, why in reply.get("errors", []):
                code = INVALID_REPLICA_ASSIGNMENT if "not a live broker" in why else errors.REQUEST_TIMED_OUT
                results[(topic, int(partition))] = (code, why)
        else:
            for m in moves:
                results[(m[0], m[1])] = (top_code, top_message)
    by_topic: dict[str, list] = {}
    for (topic, partition), (code, message) in results.items():
        by_topic.setdefault(topic, []).append(PartitionResponse(partition_index=partition, error_code=code,
                                                                error_message=message))
    return AlterPartitionReassignmentsResponse(
        version=request.version, throttle_time_ms=0, error_code=errors.NONE, error_message=None,
        responses=[TopicResponse(name=name, partitions=parts) for name, parts in by_topic.items()])
