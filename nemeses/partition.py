"""The `partition` fault: cut links between nodes (and clients, and a node's
path to S3) through `target.network()` (`nemeses.network.LoopbackNetwork` or
`HostNetwork`: `cut(links) -> handle`, `heal(handle)`)."""
from __future__ import annotations

import random

from nemeses import network
from nemeses.base import Fault

# "targets": cut the scheduler's targets (one, a minority, a majority) from
# the other nodes; "client": cut them from the clients; "s3": cut them from
# S3; "mixed": one of the node shapes the cluster's size allows, drawn at each start.
SHAPES = ("targets", "client", "s3", "mixed", *network.SHAPES)


class PartitionFault(Fault):
    name = "partition"
    requires = "network"

    def __init__(self, db, *, shape: str = "targets", rng: random.Random | None = None):
        super().__init__(db)
        if shape not in SHAPES:
            raise ValueError(f"unknown partition shape {shape!r}; known: {', '.join(SHAPES)}")
        self.shape = shape
        self.rng = rng or random.Random()
        self._cuts: list[object] = []

    def plan(self, targets: list[str]) -> network.Partition:
        nodes = sorted(self.db.node_names)
        shape = self.shape
        if shape == "mixed":
            shape = self.rng.choice([s for s in network.SHAPES if self._fits(s, len(nodes))] or ["targets"])
        if shape == "client":
            return network.Partition("client", network.links_of((network.CLIENT, t) for t in targets),
                                     {"targets": sorted(targets)})
        if shape == "s3":
            return network.Partition("s3", network.links_of((t, network.S3) for t in targets),
                                     {"targets": sorted(targets)})
        if shape == "targets":
            if not set(targets) < set(nodes):     # all nodes (or none): no side to cut them from
                p = network.halves(nodes, self.rng)
                return network.Partition("random-halves", p.cut, {**p.detail, "instead_of": "targets"})
            return network.isolate(nodes, targets)
        return network.build(shape, nodes, self.rng)

    @staticmethod
    def _fits(shape: str, n: int) -> bool:
        return {"bridge": n >= 3, "majorities-ring": n >= 4}.get(shape, n >= 2)

    def start(self, targets):
        partition = self.plan(targets)
        self._cuts.append(self.db.network().cut(partition.cut))
        return partition.describe()

    def stop(self, targets):
        net = self.db.network()
        while self._cuts:
            net.heal(self._cuts.pop())
