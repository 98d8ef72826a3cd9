"""The controller's decisions against a model, on virtual time (hypothesis
stateful testing): brokers heartbeat, die, come back; the controller ticks.
Every record the decisions produce must pass the metadata checks, and the
safety property of failover holds: a stream leaves a node only once that
node can acknowledge nothing more (its last acknowledged heartbeat plus the
session timeout has passed), unless the volumes fence I/O."""
from __future__ import annotations

import uuid

import pytest
from hypothesis import settings, strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, precondition, rule

from reference.cluster.core import ClusterConfig, ControllerCore
from reference.storage import metadata as M

NODES = (1, 2, 3)
TIMEOUT = 3.0

pytestmark = pytest.mark.timeout(120)


class ControllerModel(RuleBasedStateMachine):
    def __init__(self):
        super().__init__()
        self.state = M.MetadataState()
        self.now = 0.0
        self.fences_io = False
        self.core = None
        self.alive: set[int] = set()
        self.acked_until: dict[int, float] = {}   # the latest a node's broker could still ack
        self.moves = 0

    def write(self, rec):
        M.check(self.state, rec)                  # every decision must fit the metadata
        M.apply(self.state, rec, self.state.seq + 1)

    @rule(fences_io=st.booleans())
    @precondition(lambda self: self.core is None)
    def boot(self, fences_io):
        self.fences_io = fences_io
        self.core = ControllerCore(ClusterConfig(session_timeout=TIMEOUT, heartbeat_interval=0.5,
                                                 fences_io=fences_io))
        self.write({"type": "controller", "node": 1, "epoch": 1})
        for n in NODES:
            self.write({"type": "register_node", "node": n, "rpc": f"r{n}", "listen": f"l{n}", "volume": f"v{n}"})
        self.write({"type": "create_topic", "name": "t", "partitions": 6, "topic_id": "x", "node": 1,
                    "node_epoch": self.state.nodes[1]})
        self.core.take_over(self.state, self.now)
        self.alive = set(NODES)
        self.acked_until = {n: self.now + TIMEOUT for n in NODES}

    @rule(dt=st.floats(0.05, 2.0))
    @precondition(lambda self: self.core is not None)
    def time_passes(self, dt):
        self.now += dt

    @rule(node=st.sampled_from(NODES))
    @precondition(lambda self: self.core is not None)
    def heartbeat(self, node):
        if node not in self.alive:
            return
        if self.core.heartbeat(self.state, node, self.state.nodes[node], self.now) == "ok":
            # the broker sent it a moment ago: it may ack until then + the timeout
            self.acked_until[node] = max(self.acked_until[node], self.now + TIMEOUT)

    @rule(node=st.sampled_from(NODES))
    @precondition(lambda self: self.core is not None)
    def kill(self, node):
        self.alive.discard(node)

    @rule(node=st.sampled_from(NODES), refused=st.booleans())
    @precondition(lambda self: self.core is not None)
    def probe(self, node, refused):
        if refused and node not in self.alive:   # a refused probe only ever comes from a dead process
            self.core.probed_dead(node, self.now)

    @rule(node=st.sampled_from(NODES))
    @precondition(lambda self: self.core is not None)
    def restart(self, node):
        if node in self.alive:
            return
        info = self.state.node_info[node]
        if self.state.owned_by(node):            # its old incarnation's WAL: recovered by the new process
            if not info["fenced"]:
                self.write({"type": "fence_node", "node": node, "epoch": self.state.nodes[node],
                            "token": uuid.uuid4().hex})
            self.close_all(node)
        self.write({"type": "register_node", "node": node, "rpc": f"r{node}", "listen": f"l{node}",
                    "volume": f"v{node}"})
        self.core.registered(node, self.state.nodes[node], self.now)
        self.alive.add(node)
        self.acked_until[node] = self.now + TIMEOUT

    def close_all(self, node):
        closes = [[sid, self.state.streams[sid].epoch] for sid in self.state.owned_by(node)]
        if closes:
            self.write({"type": "close_streams", "closes": closes})

    @rule()
    @precondition(lambda self: self.core is not None)
    def new_controller(self):
        """Another node takes over (after the old lease expired): its sessions
        start now, it knows nothing of the heartbeats the old one saw."""
        epoch = self.state.controller["epoch"] + 1
        self.write({"type": "controller", "node": 1 + epoch % len(NODES), "epoch": epoch})
        self.core = ControllerCore(self.core.config)
        self.core.take_over(self.state, self.now)

    @rule()
    @precondition(lambda self: self.core is not None)
    def tick(self):
        for node, epoch, _why in self.core.to_fence(self.state, self.now):
            self.write({"type": "fence_node", "node": node, "epoch": epoch, "token": uuid.uuid4().hex})
        for node in self.core.needs_recovery(self.state):
            if not self.fences_io:   # the decision's own promise, whatever fenced the node
                assert self.core.recovery_not_before(node) >= self.acked_until[node] - 1e-9
            helper = self.core.pick_recoverer(self.state, node, self.now)
            if helper is None or self.now < self.core.recovery_not_before(node):
                continue
            # the failover: another node reads the volume, then the streams close
            assert self.fences_io or self.now >= self.acked_until[node], \
                f"node {node}'s volume read at {self.now} while it could ack until {self.acked_until[node]}"
            self.close_all(node)
        opens = self.core.placements(self.state, self.now)
        for _sid, n, _e in opens:
            assert not self.state.node_info[n]["fenced"]
        if opens:
            self.write({"type": "open_streams", "opens": opens})
            self.moves += len(opens)

    @invariant()
    def one_owner_and_only_live_or_recovering(self):
        for s in self.state.streams.values():
            if s.owner is not None:
                assert s.owner in self.state.node_info
                assert s.epoch == s.epoch_starts[-1][0]


TestControllerModel = ControllerModel.TestCase
TestControllerModel.settings = settings(max_examples=150, stateful_step_count=60, deadline=None)
