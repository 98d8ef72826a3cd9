"""Classic consumer groups: the coordinator's state machine, sans I/O.

`Group` is plain data and decisions: every method takes the current time,
and returns the answers it can give now as `deliveries`, a list of
(waiter token, result) pairs. A JoinGroup or SyncGroup request that must wait
for the rest of the group is identified by a token; its answer appears in
the deliveries of a later call (another member's join, a leave, or `tick`
when a timeout passes). `GroupCoordinator` is the thin async adapter that
turns tokens into futures and calls `tick` periodically.

States, as in Kafka's classic protocol:

    Empty --join--> PreparingRebalance --all joined / rebalance timeout-->
    CompletingRebalance --leader's SyncGroup--> Stable --join, leave, expiry-->
    PreparingRebalance ...   (last member gone: Empty)

Membership is not durable: after a broker restart members get
UNKNOWN_MEMBER_ID and rejoin. Committed offsets are durable (engine).
"""
from __future__ import annotations

import asyncio
import enum
import itertools
import logging
from dataclasses import dataclass, field

from reference import clock, errors, ids

log = logging.getLogger("highwater.groups")

MIN_SESSION_TIMEOUT_MS = 6_000      # Kafka's group.min.session.timeout.ms
MAX_SESSION_TIMEOUT_MS = 1_800_000  # Kafka's group.max.session.timeout.ms


class GroupState(enum.Enum):
    EMPTY = "Empty"
    PREPARING_REBALANCE = "PreparingRebalance"
    COMPLETING_REBALANCE = "CompletingRebalance"
    STABLE = "Stable"


@dataclass(frozen=True)
class JoinResult:
    error_code: int
    generation_id: int = -1
    protocol_name: str | None = None
    leader: str = ""
    member_id: str = ""
    members: tuple = ()  # (member_id, group_instance_id, metadata), for the leader only


@dataclass(frozen=True)
class SyncResult:
    error_code: int
    assignment: bytes = b""


@dataclass
class Member:
    member_id: str
    client_id: str
    client_host: str
    group_instance_id: str | None
    session_timeout_ms: int
    rebalance_timeout_ms: int
    protocol_type: str
    protocols: list  # [(name, metadata bytes)]
    last_seen: float
    join_waiter: object = None  # token of a JoinGroup waiting for the rebalance
    sync_waiter: object = None
    assignment: bytes = b""

    def metadata_for(self, protocol: str) -> bytes:
        return next(m for n, m in self.protocols if n == protocol)

    def alive_at(self, now: float) -> bool:
        # A member parked in JoinGroup or SyncGroup cannot heartbeat: it counts as alive.
        if self.join_waiter is not None or self.sync_waiter is not None:
            return True
        return now - self.last_seen <= self.session_timeout_ms / 1000


@dataclass
class Group:
    group_id: str
    state: GroupState = GroupState.EMPTY
    generation_id: int = 0
    protocol_type: str | None = None
    protocol_name: str | None = None
    leader_id: str | None = None
    members: dict = field(default_factory=dict)          # member id -> Member
    pending_members: dict = field(default_factory=dict)  # member id -> deadline (MEMBER_ID_REQUIRED)
    rebalance_deadline: float = 0.0

    # --- JoinGroup ---------------------------------------------------------
    def join(self, now: float, token, member_id: str, client_id: str, client_host: str,
             group_instance_id: str | None, session_timeout_ms: int, rebalance_timeout_ms: int,
             protocol_type: str, protocols: list, require_known_member_id: bool) -> list:
        def fail(code, member=member_id):
            return [(token, JoinResult(code, member_id=member))]
        if not MIN_SESSION_TIMEOUT_MS <= session_timeout_ms <= MAX_SESSION_TIMEOUT_MS:
            return fail(errors.INVALID_SESSION_TIMEOUT)
        if not protocols or not protocol_type:
            return fail(errors.INCONSISTENT_GROUP_PROTOCOL)
        if self.members and (protocol_type != self.protocol_type
                             or not self._common_protocols({n for n, _ in protocols})):
            return fail(errors.INCONSISTENT_GROUP_PROTOCOL)

        if not member_id:
            new_id = f"{client_id or 'member'}-{ids.uuid4()}"
            if require_known_member_id:
                # KIP-394: hand out the id first; the member joins with it next.
                self.pending_members[new_id] = now + session_timeout_ms / 1000
                return fail(errors.MEMBER_ID_REQUIRED, new_id)
            member_id = new_id
        elif member_id in self.pending_members:
            del self.pending_members[member_id]
        elif member_id not in self.members:
            return fail(errors.UNKNOWN_MEMBER_ID)

        member = self.members.get(member_id)
        if member is None:
            member = Member(member_id, client_id, client_host, group_instance_id, session_timeout_ms,
                            rebalance_timeout_ms, protocol_type, list(protocols), now)
            self.members[member_id] = member
            if self.protocol_type is None:
                self.protocol_type = protocol_type
            if self.leader_id is None:
                self.leader_id = member_id
            deliveries = self._prepare_rebalance(now, f"{member_id} joined")
            member.join_waiter = token
            return deliveries + self._maybe_complete_join(now)

        # A known member joining again.
        member.last_seen = now
        changed = list(protocols) != member.protocols
        member.protocols = list(protocols)
        member.session_timeout_ms, member.rebalance_timeout_ms = session_timeout_ms, rebalance_timeout_ms
        deliveries = []
        if member.join_waiter is not None:
            # A retry of a join still parked: the older request gets its answer now.
            deliveries.append((member.join_waiter, JoinResult(errors.REBALANCE_IN_PROGRESS, member_id=member_id)))
            member.join_waiter = None
        if self.state == GroupState.PREPARING_REBALANCE:
            member.join_waiter = token
            return deliveries + self._maybe_complete_join(now)
        if not changed and member_id != self.leader_id and self.state in (
                GroupState.COMPLETING_REBALANCE, GroupState.STABLE):
            # Nothing new: tell it the current generation, no rebalance.
            return deliveries + [(token, self._join_result(member_id))]
        deliveries += self._prepare_rebalance(now, f"{member_id} rejoined")
        member.join_waiter = token
        return deliveries + self._maybe_complete_join(now)

    # --- SyncGroup ---------------------------------------------------------
    def sync(self, now: float, token, member_id: str, generation_id: int, assignments: dict) -> list:
        member = self.members.get(member_id)
        if member is None:
            return [(token, SyncResult(errors.UNKNOWN_MEMBER_ID))]
        if generation_id != self.generation_id:
            return [(token, SyncResult(errors.ILLEGAL_GENERATION))]
        member.last_seen = now
        if self.state == GroupState.PREPARING_REBALANCE:
            return [(token, SyncResult(errors.REBALANCE_IN_PROGRESS))]
        if self.state == GroupState.STABLE:
            return [(token, SyncResult(errors.NONE, member.assignment))]
        # CompletingRebalance: wait for the leader's assignment.
        if member.sync_waiter is not None:
            previous, member.sync_waiter = member.sync_waiter, None
            deliveries = [(previous, SyncResult(errors.REBALANCE_IN_PROGRESS))]
        else:
            deliveries = []
        member.sync_waiter = token
        if member_id == self.leader_id:
            for mid, m in self.members.items():
                m.assignment = bytes(assignments.get(mid) or b"")  # never a truncated or null one
            self.state = GroupState.STABLE
            log.info("group %s generation %d stable with %d members", self.group_id, self.generation_id,
                     len(self.members))
            for m in self.members.values():
                if m.sync_waiter is not None:
                    deliveries.append((m.sync_waiter, SyncResult(errors.NONE, m.assignment)))
                    m.sync_waiter = None
                    m.last_seen = now
        return deliveries

    # --- Heartbeat ---------------------------------------------------------
    def heartbeat(self, now: float, member_id: str, generation_id: int) -> int:
        member = self.members.get(member_id)
        if member is None:
            return errors.UNKNOWN_MEMBER_ID
        member.last_seen = now
        if self.state == GroupState.PREPARING_REBALANCE:
            return errors.REBALANCE_IN_PROGRESS
        if generation_id != self.generation_id:
            return errors.ILLEGAL_GENERATION
        return errors.NONE

    # --- LeaveGroup --------------------------------------------------------
    def leave(self, now: float, member_id: str) -> tuple[int, list]:
        if member_id in self.pending_members:
            del self.pending_members[member_id]
            return errors.NONE, []
        member = self.members.get(member_id)
        if member is None:
            return errors.UNKNOWN_MEMBER_ID, []
        return errors.NONE, self._remove(now, member, "left")

    # --- OffsetCommit fencing ----------------------------------------------
    def commit_error(self, member_id: str, generation_id: int) -> int:
        """May this (member, generation) commit offsets now?"""
        if generation_id < 0 and not member_id and not self.members:
            return errors.NONE  # a consumer using assign(): commits outside any generation
        if member_id not in self.members:
            return errors.UNKNOWN_MEMBER_ID
        if generation_id != self.generation_id:
            return errors.ILLEGAL_GENERATION
        if self.state == GroupState.COMPLETING_REBALANCE:
            return errors.REBALANCE_IN_PROGRESS
        return errors.NONE

    # --- time --------------------------------------------------------------
    def tick(self, now: float) -> list:
        deliveries = []
        for pending_id, deadline in list(self.pending_members.items()):
            if now > deadline:
                del self.pending_members[pending_id]
        for member in list(self.members.values()):
            if member.member_id in self.members and not member.alive_at(now):
                deliveries += self._remove(now, member, "session expired")
        if self.state == GroupState.PREPARING_REBALANCE and now >= self.rebalance_deadline:
            for member in list(self.members.values()):
                if member.join_waiter is None:
                    # Did not rejoin within the rebalance timeout: out.
                    del self.members[member.member_id]
                    log.info("group %s: %s removed, no rejoin within the rebalance timeout",
                             self.group_id, member.member_id)
            deliveries += self._complete_join(now)
        return deliveries

    @property
    def is_idle(self) -> bool:
        return self.state == GroupState.EMPTY and not self.pending_members

    # --- internals ---------------------------------------------------------
    def _common_protocols(self, names: set | None = None) -> list:
        members = list(self.members.values())
        if not members:
            return []
        common = [n for n, _ in members[0].protocols]
        for m in members[1:]:
            common = [n for n in common if n in {p for p, _ in m.protocols}]
        if names is not None:
            common = [n for n in common if n in names]
        return common

    def _prepare_rebalance(self, now: float, reason: str) -> list:
        deliveries = []
        if self.state == GroupState.COMPLETING_REBALANCE:
            # Members waiting for the old generation's assignment must rejoin.
            for m in self.members.values():
                if m.sync_waiter is not None:
                    deliveries.append((m.sync_waiter, SyncResult(errors.REBALANCE_IN_PROGRESS)))
                    m.sync_waiter = None
        if self.state != GroupState.PREPARING_REBALANCE:
            timeout = max((m.rebalance_timeout_ms for m in self.members.values()), default=0)
            self.rebalance_deadline = now + timeout / 1000
            self.state = GroupState.PREPARING_REBALANCE
            log.info("group %s preparing rebalance (generation %d): %s", self.group_id, self.generation_id, reason)
        return deliveries

    def _maybe_complete_join(self, now: float) -> list:
        if self.state == GroupState.PREPARING_REBALANCE and all(
                m.join_waiter is not None for m in self.members.values()):
            return self._complete_join(now)
        return []

    def _complete_join(self, now: float) -> list:
        self.generation_id += 1
        if not self.members:
            self.state, self.protocol_name, self.leader_id, self.protocol_type = GroupState.EMPTY, None, None, None
            return []
        if self.leader_id not in self.members:
            self.leader_id = next(iter(self.members))
        leader = self.members[self.leader_id]
        common = self._common_protocols()
        self.protocol_name = next((n for n, _ in leader.protocols if n in common), None)
        self.state = GroupState.COMPLETING_REBALANCE
        deliveries = []
        for m in self.members.values():
            m.last_seen = now
            if m.join_waiter is not None:
                deliveries.append((m.join_waiter, self._join_result(m.member_id)))
                m.join_waiter = None
        return deliveries

    def _join_result(self, member_id: str) -> JoinResult:
        members = ()
        if member_id == self.leader_id:
            members = tuple((m.member_id, m.group_instance_id, m.metadata_for(self.protocol_name))
                            for m in self.members.values())
        return JoinResult(errors.NONE, self.generation_id, self.protocol_name, self.leader_id, member_id, members)

    def _remove(self, now: float, member: Member, reason: str) -> list:
        deliveries = []
        if member.join_waiter is not None:
            deliveries.append((member.join_waiter, JoinResult(errors.UNKNOWN_MEMBER_ID, member_id=member.member_id)))
        if member.sync_waiter is not None:
            deliveries.append((member.sync_waiter, SyncResult(errors.UNKNOWN_MEMBER_ID)))
        del self.members[member.member_id]
        log.info("group %s: %s %s", self.group_id, member.member_id, reason)
        if self.leader_id == member.member_id:
            self.leader_id = next(iter(self.members), None)
        if not self.members:
            deliveries += self._prepare_rebalance(now, f"{member.member_id} {reason}")
            return deliveries + self._complete_join(now)  # -> Empty, new generation
        deliveries += self._prepare_rebalance(now, f"{member.member_id} {reason}")
        return deliveries + self._maybe_complete_join(now)


class GroupCoordinator:
    """The async face of the groups: futures for waiting requests, a clock,
    and the periodic tick. One per broker; every group lives here."""

    TICK_SECONDS = 0.25

    def __init__(self, engine, clock=clock.monotonic):
        self.engine = engine
        self.clock = clock
        self.groups: dict[str, Group] = {}
        self._waiters: dict[int, asyncio.Future] = {}
        self._tokens = itertools.count(1)

    def group(self, group_id: str) -> Group:
        group = self.groups.get(group_id)
        if group is None:
            group = self.groups[group_id] = Group(group_id)
        return group

    def _deliver(self, deliveries) -> None:
        for token, result in deliveries:
            future = self._waiters.pop(token, None)
            if future is not None and not future.done():
                future.set_result(result)

    async def _wait(self, make_deliveries):
        token = next(self._tokens)
        future = asyncio.get_running_loop().create_future()
        self._waiters[token] = future
        try:
            self.tick()
            self._deliver(make_deliveries(token))
            return await future
        finally:
            self._waiters.pop(token, None)

    async def join(self, group_id: str, **kwargs) -> JoinResult:
        return await self._wait(lambda token: self.group(group_id).join(self.clock(), token, **kwargs))

    async def sync(self, group_id: str, member_id: str, generation_id: int, assignments: dict) -> SyncResult:
        if group_id not in self.groups:
            return SyncResult(errors.UNKNOWN_MEMBER_ID)
        return await self._wait(lambda token: self.groups[group_id].sync(
            self.clock(), token, member_id, generation_id, assignments))

    def heartbeat(self, group_id: str, member_id: str, generation_id: int) -> int:
        self.tick()
        group = self.groups.get(group_id)
        return errors.UNKNOWN_MEMBER_ID if group is None else group.heartbeat(self.clock(), member_id, generation_id)

    def leave(self, group_id: str, member_id: str) -> int:
        self.tick()
        group = self.groups.get(group_id)
        if group is None:
            return errors.UNKNOWN_MEMBER_ID
        code, deliveries = group.leave(self.clock(), member_id)
        self._deliver(deliveries)
        return code

    def commit_error(self, group_id: str, member_id: str, generation_id: int) -> int:
        self.tick()
        group = self.groups.get(group_id)
        if group is None:
            if generation_id < 0:
                return errors.NONE
            return errors.ILLEGAL_GENERATION  # as Kafka: an older generation, or no group management
        return group.commit_error(member_id, generation_id)

    def tick(self) -> None:
        now = self.clock()
        for group_id, group in list(self.groups.items()):
            self._deliver(group.tick(now))
            if group.is_idle:
                # no member, none pending: nothing to keep (committed offsets live in
                # the storage engine), and a client inventing group ids must not grow
                # this table (and every tick) without bound
                del self.groups[group_id]

    async def run(self) -> None:
        """Expire sessions and rebalance timeouts while the broker runs."""
        while True:
            await asyncio.sleep(self.TICK_SECONDS)
            try:
                self.tick()
            except Exception:
                log.exception("group tick failed")
