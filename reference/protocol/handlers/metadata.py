"""Metadata (3): brokers, and topics with their partitions' leaders.

On a cluster node: every live broker, each partition's leader (the node
holding its stream open; -1 with LEADER_NOT_AVAILABLE while it is closed,
e.g. in failover) and its leader epoch (the stream epoch), and the
controller. A lone node leads every partition it stores. A topic not found
is created when the broker's auto-creation is on (the default, as Kafka's
auto.create.topics.enable) *and* the client allows it (v4+; earlier
versions always allow it, as in Kafka)."""
from kafka.protocol.metadata import MetadataResponse

from reference import errors
from reference.errors import KafkaError
from reference.protocol.context import is_legal_topic_name

API_KEY = 3
Topic = MetadataResponse.MetadataResponseTopic
Partition = Topic.MetadataResponsePartition


async def handle(request, ctx):
    version = request.version
    known = ctx.engine.list_topics()
    if request.topics is None or (version == 0 and not request.topics):
        names = sorted(known)
    else:
        names = [t.name for t in request.topics]
    allow_create = ctx.auto_create_topics and (version < 4 or request.allow_auto_topic_creation)
    topics = []
    for name in names:
        info = known.get(name)
        if info is None and allow_create and is_legal_topic_name(name):
            try:
                info = await ctx.engine.create_topic(name, ctx.default_partitions)
            except KafkaError as exc:
                if exc.code != errors.TOPIC_ALREADY_EXISTS:
                    raise
                info = ctx.engine.list_topics().get(name)
        if info is None:
            code = errors.UNKNOWN_TOPIC_OR_PARTITION if is_legal_topic_name(name) else errors.INVALID_TOPIC_EXCEPTION
            topics.append(Topic(error_code=code, name=name, is_internal=False, partitions=[]))
            continue
        partitions = [_partition(ctx, name, p) for p in range(info.partitions)]
        topics.append(Topic(error_code=0, name=name, is_internal=False, partitions=partitions))
    if ctx.cluster is not None:
        brokers = [MetadataResponse.MetadataResponseBroker(node_id=n, host=h, port=port, rack=None)
                   for n, h, port in ctx.cluster.brokers()]
        controller = ctx.cluster.controller_id()
    else:
        brokers = [MetadataResponse.MetadataResponseBroker(node_id=ctx.node_id, host=ctx.host, port=ctx.port,
                                                           rack=None)]
        controller = ctx.node_id
    return MetadataResponse(version=version, throttle_time_ms=0, brokers=brokers, cluster_id=ctx.cluster_id,
                            controller_id=controller, topics=topics)


def _partition(ctx, topic: str, p: int):
    if ctx.cluster is None:
        leader, epoch = ctx.node_id, ctx.leader_epoch(topic, p)
    else:
        leader, epoch = ctx.cluster.leader(topic, p)
    replicas = [leader] if leader >= 0 else []
    return Partition(error_code=errors.NONE if leader >= 0 else errors.LEADER_NOT_AVAILABLE, partition_index=p,
                     leader_id=leader, leader_epoch=epoch, replica_nodes=replicas, isr_nodes=replicas,
                     offline_replicas=[])
