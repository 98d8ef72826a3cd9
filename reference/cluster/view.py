"""What the Kafka handlers of a cluster node ask about the cluster,
answered from the node's metadata replica."""
from __future__ import annotations

import zlib

from reference.cluster.rpc import parse_address


class ClusterView:
    def __init__(self, replica, node_id: int, controller_call=None):
        self.replica = replica
        self.node_id = node_id
        self.controller_call = controller_call   # async (method, params, timeout): the node's way to the controller

    @property
    def state(self):
        return self.replica.state

    def brokers(self) -> list[tuple[int, str, int]]:
        out = []
        for n in self.state.live_nodes():
            listen = self.state.node_info[n].get("listen")
            if listen:
                host, port = parse_address(listen)
                out.append((n, host, port))
        return out

    def controller_id(self) -> int:
        c = self.state.controller
        return c["node"] if c else -1

    def leader(self, topic: str, partition: int) -> tuple[int, int]:
        """(leader node or -1, leader epoch) of a partition."""
        s = self.state.stream_for(topic, partition)
        if s is None:
            return -1, -1
        info = self.state.node_info.get(s.owner) if s.owner is not None else None
        if info is None or info.get("fenced"):
            return -1, s.epoch
        return s.owner, s.epoch

    def leader_epoch(self, topic: str, partition: int) -> int:
        s = self.state.stream_for(topic, partition)
        return s.epoch if s is not None else 0

    def epoch_end(self, topic: str, partition: int, epoch: int, high_watermark: int) -> tuple[int, int]:
        """OffsetForLeaderEpoch: the largest leader epoch <= `epoch` and where
        it ends (the next epoch's first offset; the high watermark for the
        current one); (-1, -1) if it is older than every epoch we remember."""
        s = self.state.stream_for(topic, partition)
        if s is None:
            return -1, -1
        starts = s.epoch_starts or [[s.epoch, s.start_offset]]
        best = None
        for i, (e, _start) in enumerate(starts):
            if e <= epoch:
                best = i
        if best is None:
            return -1, -1
        if best == len(starts) - 1:
            return starts[best][0], high_watermark
        return starts[best][0], starts[best + 1][1]

    def coordinator(self, group: str) -> tuple[int, str, int] | None:
        """The group's coordinator: one live broker, by a hash of the group."""
        brokers = self.brokers()
        if not brokers:
            return None
        return brokers[zlib.crc32(group.encode()) % len(brokers)]
