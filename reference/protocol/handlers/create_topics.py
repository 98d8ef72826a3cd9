"""CreateTopics (19). One node: replication factor must be 1 (or -1, the
broker default); partitions -1 means the broker default."""
from kafka.protocol.admin import CreateTopicsResponse

from reference import errors
from reference.errors import KafkaError
from reference.protocol.context import is_legal_topic_name

API_KEY = 19
MAX_PARTITIONS = 10_000  # a bound, so one request cannot ask for billions of partitions
Result = CreateTopicsResponse.CreatableTopicResult


def _check(topic, ctx, seen) -> tuple[int, str | None, int]:
    """(error code, message, partitions) for one requested topic."""
    if topic.name in seen:
        return errors.INVALID_REQUEST, f"topic {topic.name} named twice in one request", 0
    if not is_legal_topic_name(topic.name):
        return errors.INVALID_TOPIC_EXCEPTION, f"illegal topic name {topic.name!r}", 0
    partitions = len(topic.assignments) if topic.assignments else topic.num_partitions
    if partitions == -1:
        partitions = ctx.default_partitions
    if not 0 < partitions <= MAX_PARTITIONS:
        return errors.INVALID_PARTITIONS, f"{partitions} partitions (1 to {MAX_PARTITIONS})", 0
    if topic.assignments and any(list(a.broker_ids) != [ctx.node_id] for a in topic.assignments):
        return errors.INVALID_REPLICATION_FACTOR, f"replicas must be [{ctx.node_id}] on this node", 0
    if topic.replication_factor not in (-1, 1) and not topic.assignments:
        return errors.INVALID_REPLICATION_FACTOR, f"replication factor {topic.replication_factor} on one node", 0
    if topic.name in ctx.engine.list_topics():
        return errors.TOPIC_ALREADY_EXISTS, f"topic {topic.name} already exists", 0
    return errors.NONE, None, partitions


async def handle(request, ctx):
    results, seen = [], set()
    for topic in request.topics:
        code, message, partitions = _check(topic, ctx, seen)
        seen.add(topic.name)
        if code == errors.NONE and not request.validate_only:
            configs = {c.name: c.value for c in topic.configs or []}
            try:
                await ctx.engine.create_topic(topic.name, partitions, configs)
            except KafkaError as exc:
                code, message = exc.code, str(exc)
        results.append(Result(name=topic.name, error_code=code, error_message=message))
    return CreateTopicsResponse(version=request.version, throttle_time_ms=0, topics=results)
