"""The controller's decisions, sans I/O: sessions, when to fence, when a
fenced node's volume may be read by another node, who recovers it, and where
closed streams open. Time is injected (`now`, monotonic seconds); the
metadata state is read, never written (the driver turns decisions into
records). A deterministic simulator drives this with virtual time.
"""
from __future__ import annotations

from dataclasses import dataclass, field

from reference.storage.metadata import MetadataState


@dataclass
class Session:
    node: int
    epoch: int
    last_heartbeat: float          # controller's monotonic clock, at receipt
    dead_since: float | None = None  # a probe found nothing listening (the process is gone)


@dataclass
class ClusterConfig:
    session_timeout: float = 3.0
    heartbeat_interval: float = 0.5
    # True when a detach makes the old attachment's I/O fail (FUSE, EBS): a
    # node can then be failed over as soon as it is known dead or fenced. False
    # (the directory provider): another node reads the volume only once the old
    # node's session has certainly expired, whatever a probe said.
    fences_io: bool = True


@dataclass
class ControllerCore:
    config: ClusterConfig
    sessions: dict[int, Session] = field(default_factory=dict)
    started_at: float = 0.0

    # ---------------------------------------------------------------- sessions
    def take_over(self, state: MetadataState, now: float) -> None:
        """A new controller: every live broker's session starts now (it may
        have heartbeated the old controller a moment ago)."""
        self.started_at = now
        self.sessions = {n: Session(n, state.nodes[n], now) for n in state.live_nodes()}

    def lease_lapsed(self, node: int, now: float) -> None:
        """The previous controller's lease expired before we took over. Its
        own broker acked only within its lease (its session is capped by it),
        so that node can ack nothing any more: its session is over now."""
        s = self.sessions.get(node)
        if s is not None:
            s.last_heartbeat = min(s.last_heartbeat, now - self.config.session_timeout - 1e-3)

    def registered(self, node: int, epoch: int, now: float) -> None:
        self.sessions[node] = Session(node, epoch, now)

    def heartbeat(self, state: MetadataState, node: int, epoch: int, now: float) -> str:
        """"ok" (session renewed) or "fenced" (that incarnation is over)."""
        info = state.node_info.get(node)
        if info is None or info.get("fenced") or state.nodes.get(node) != epoch:
            return "fenced"
        s = self.sessions.get(node)
        if s is None or s.epoch != epoch:
            s = self.sessions[node] = Session(node, epoch, now)
        s.last_heartbeat = now
        s.dead_since = None
        return "ok"

    def probed_dead(self, node: int, now: float) -> None:
        s = self.sessions.get(node)
        if s is not None and s.dead_since is None:
            s.dead_since = now

    def to_fence(self, state: MetadataState, now: float) -> list[tuple[int, int, str]]:
        """(node, epoch, why) for every live node whose session expired or
        that is known dead."""
        out = []
        for node in state.live_nodes():
            s = self.sessions.get(node)
            if s is None:
                s = self.sessions[node] = Session(node, state.nodes[node], now)
            if now - s.last_heartbeat > self.config.session_timeout:
                out.append((node, state.nodes[node], "session-timeout"))
            elif s.dead_since is not None and self.config.fences_io:
                out.append((node, state.nodes[node], "probe-refused"))
        return out

    def recovery_not_before(self, node: int) -> float:
        """When another node may read the fenced node's volume: at once if a
        detach fences its I/O; otherwise once every ack it could still make is
        over (its last heartbeat this controller saw, or the takeover, plus
        the session timeout: a broker acks only within that of a heartbeat it
        sent)."""
        if self.config.fences_io:
            return 0.0
        s = self.sessions.get(node)
        last = s.last_heartbeat if s is not None else self.started_at
        return last + self.config.session_timeout

    # ---------------------------------------------------------------- placement
    def needs_recovery(self, state: MetadataState) -> list[int]:
        """Fenced nodes still holding streams open: their WAL may hold data
        not in S3, so those streams stay closed to everyone until it is."""
        return sorted({s.owner for s in state.streams.values()
                       if s.owner is not None and state.node_info.get(s.owner, {}).get("fenced")})

    def pick_recoverer(self, state: MetadataState, failed: int, now: float, exclude=()) -> int | None:
        """A live node with a fresh session, other than the failed one: the one
        leading the fewest streams."""
        alive = [n for n in state.live_nodes()
                 if n != failed and n not in exclude and n in self.sessions
                 and now - self.sessions[n].last_heartbeat <= self.config.session_timeout
                 and self.sessions[n].dead_since is None]
        if not alive:
            return None
        load = {n: 0 for n in alive}
        for s in state.streams.values():
            if s.owner in load:
                load[s.owner] += 1
        return min(alive, key=lambda n: (load[n], n))

    def placements(self, state: MetadataState, now: float, busy=()) -> list[list[int]]:
        """open_streams entries [stream, node, epoch] for every closed stream:
        each to the live broker with the fewest open streams (ties: lowest id).
        Nodes in `busy` (being failed over) take none."""
        alive = [n for n in state.live_nodes() if n not in busy
                 and (n not in self.sessions
                      or now - self.sessions[n].last_heartbeat <= self.config.session_timeout)]
        if not alive:
            return []
        load = {n: 0 for n in alive}
        for s in state.streams.values():
            if s.owner in load:
                load[s.owner] += 1
        opens = []
        for sid in sorted(state.streams):
            s = state.streams[sid]
            if s.owner is not None:
                continue
            node = min(alive, key=lambda n: (load[n], n))
            load[node] += 1
            opens.append([sid, node, s.epoch + 1])
        return opens
