"""What a request handler may know about the broker it runs in."""
from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Callable

from reference import clock as clocks, ids
from reference.storage.api import StorageEngine

# Error codes reference/errors.py does not list yet (numbers are Kafka's).
TRANSACTIONAL_ID_AUTHORIZATION_FAILED = 53
FENCED_LEADER_EPOCH = 74
UNKNOWN_LEADER_EPOCH = 75
INVALID_RECORD = 87

# Kafka's fetch.max.bytes default (55 MiB): the most one Fetch response holds
# (past it only the first partition's first batch, so that a consumer always
# progresses), whatever larger max_bytes a client asks for.
DEFAULT_FETCH_MAX_BYTES = 55 * 1024 * 1024

_LEGAL_TOPIC = re.compile(r"^[a-zA-Z0-9._-]{1,249}$")


def is_legal_topic_name(name: str | None) -> bool:
    return bool(name) and name not in (".", "..") and _LEGAL_TOPIC.match(name) is not None


@dataclass
class BrokerContext:
    engine: StorageEngine
    node_id: int
    host: str
    port: int
    auto_create_topics: bool = True   # Kafka's auto.create.topics.enable default
    default_partitions: int = 1
    fetch_max_bytes: int = DEFAULT_FETCH_MAX_BYTES
    cluster_id: str = field(default_factory=lambda: "highwater-" + ids.uuid4().hex[:12])
    clock: Callable[[], float] = clocks.monotonic
    groups: object = None  # the GroupCoordinator; make_context sets it
    cluster: object = None  # a reference.cluster.view.ClusterView on a cluster node, else None

    def leader_epoch(self, topic: str, partition: int) -> int:
        """The partition's leader epoch. In a cluster: its stream epoch, bumped
        each time the stream opens on a node. A lone node (no cluster) never
        hands leadership away and keeps epoch 0 for ever, also across its own
        restarts: the same leader with the same epoch is consistent for
        clients (KIP-320), and every stored batch carries that same epoch."""
        if self.cluster is not None:
            return self.cluster.leader_epoch(topic, partition)
        return 0

    def not_coordinator(self, group: str) -> bool:
        """In a cluster, one live broker coordinates each group (by a hash of
        its id); the others answer NOT_COORDINATOR and the client looks again."""
        if self.cluster is None:
            return False
        found = self.cluster.coordinator(group)
        return found is None or found[0] != self.node_id

    def partition_count(self, topic: str) -> int | None:
        info = self.engine.list_topics().get(topic)
        return None if info is None else info.partitions


def make_context(engine: StorageEngine, node_id: int, host: str, port: int, **options) -> BrokerContext:
    from reference.protocol.groups import GroupCoordinator
    ctx = BrokerContext(engine=engine, node_id=node_id, host=host, port=port, **options)
    ctx.groups = GroupCoordinator(engine, clock=ctx.clock)
    return ctx
