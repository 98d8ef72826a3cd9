"""The classic group coordinator as a state machine (no sockets, fake time),
and the group APIs' handlers through dispatch on a MemoryEngine."""
from __future__ import annotations

import asyncio
import itertools

import pytest
from kafka.protocol.consumer import (HeartbeatRequest, HeartbeatResponse, JoinGroupRequest, OffsetCommitRequest,
                                     OffsetFetchRequest, OffsetForLeaderEpochRequest, SyncGroupRequest)
from kafka.protocol.metadata import FindCoordinatorRequest

from reference import errors
from reference.protocol.groups import Group, GroupState, JoinResult, SyncResult

from test_protocol import call, create, new_ctx, run

SESSION_MS = 10_000
REBALANCE_MS = 30_000
tokens = itertools.count(1)


def join(group, now, member_id="", client="c", protocols=(("range", b"m"),), v4=True):
    token = next(tokens)
    deliveries = group.join(now, token, member_id=member_id, client_id=client, client_host="",
                            group_instance_id=None, session_timeout_ms=SESSION_MS,
                            rebalance_timeout_ms=REBALANCE_MS, protocol_type="consumer",
                            protocols=list(protocols), require_known_member_id=v4)
    return token, dict(deliveries)


def join_new_member(group, now, client="c"):
    """v4+ two-step join; returns (member id, token, deliveries of the second join)."""
    token, out = join(group, now, client=client)
    assert out[token].error_code == errors.MEMBER_ID_REQUIRED
    member_id = out[token].member_id
    token, out = join(group, now, member_id=member_id, client=client)
    return member_id, token, out


def sync(group, now, member_id, generation, assignments=None):
    token = next(tokens)
    return token, dict(group.sync(now, token, member_id, generation, assignments or {}))


def stable_group_of_one():
    group = Group("g")
    a, token, out = join_new_member(group, 0.0, "a")
    assert out[token] == JoinResult(errors.NONE, 1, "range", a, a, ((a, None, b"m"),))
    token, out = sync(group, 0.1, a, 1, {a: b"all"})
    assert out[token] == SyncResult(errors.NONE, b"all")
    assert group.state == GroupState.STABLE
    return group, a


def test_first_member_needs_its_id_then_leads_generation_one():
    group, a = stable_group_of_one()
    assert group.leader_id == a and group.generation_id == 1


def test_a_second_member_triggers_a_rebalance_without_unknown_member_id():
    group, a = stable_group_of_one()
    b, b_token, out = join_new_member(group, 1.0, "b")
    assert b_token not in out                     # parked until a rejoins
    assert group.state == GroupState.PREPARING_REBALANCE
    assert group.heartbeat(1.5, a, 1) == errors.REBALANCE_IN_PROGRESS
    a_token, out = join(group, 2.0, member_id=a)
    assert out[a_token].generation_id == out[b_token].generation_id == 2
    assert out[a_token].leader == a and {m[0] for m in out[a_token].members} == {a, b}
    assert out[b_token].members == ()             # only the leader sees the members
    b_sync, out = sync(group, 2.1, b, 2)
    assert out == {}                              # waits for the leader's assignment
    a_sync, out = sync(group, 2.2, a, 2, {a: b"p0", b: b"p1"})
    assert out == {a_sync: SyncResult(0, b"p0"), b_sync: SyncResult(0, b"p1")}
    assert group.heartbeat(3.0, a, 2) == group.heartbeat(3.0, b, 2) == errors.NONE


def test_generation_fencing():
    group, a = stable_group_of_one()
    assert group.heartbeat(1.0, a, 0) == errors.ILLEGAL_GENERATION
    assert group.heartbeat(1.0, "stranger", 1) == errors.UNKNOWN_MEMBER_ID
    assert sync(group, 1.0, a, 7)[1].popitem()[1].error_code == errors.ILLEGAL_GENERATION
    assert group.commit_error(a, 0) == errors.ILLEGAL_GENERATION
    assert group.commit_error("stranger", 1) == errors.UNKNOWN_MEMBER_ID
    assert group.commit_error("", -1) == errors.UNKNOWN_MEMBER_ID  # the group is in use
    assert group.commit_error(a, 1) == errors.NONE
    token, out = join(group, 1.0, member_id="never-seen")
    assert out[token].error_code == errors.UNKNOWN_MEMBER_ID


def test_sync_during_rebalance_and_stale_sync_waiters():
    group = Group("g")
    a, _, _ = join_new_member(group, 0.0, "a")
    b, b_token, _ = join_new_member(group, 0.0, "b")
    a_token, out = join(group, 0.1, member_id=a)
    # b's first (parked) join ended with this generation too
    b_sync, out = sync(group, 0.2, b, group.generation_id)
    assert out == {}
    c, c_token, out = join_new_member(group, 0.3, "c")   # new rebalance before the leader synced
    assert out[b_sync].error_code == errors.REBALANCE_IN_PROGRESS
    assert sync(group, 0.4, a, group.generation_id)[1].popitem()[1].error_code == errors.REBALANCE_IN_PROGRESS


def test_leave_rebalances_the_rest_and_the_last_leaves_an_empty_group():
    group, a = stable_group_of_one()
    b, b_token, _ = join_new_member(group, 1.0, "b")
    join(group, 1.1, member_id=a)
    sync(group, 1.2, b, 2)
    sync(group, 1.3, a, 2, {a: b"x", b: b"y"})
    code, deliveries = group.leave(2.0, a)
    assert code == errors.NONE and deliveries == []
    assert group.state == GroupState.PREPARING_REBALANCE
    assert group.heartbeat(2.1, b, 2) == errors.REBALANCE_IN_PROGRESS
    token, out = join(group, 2.2, member_id=b)
    assert out[token].leader == b and out[token].generation_id == 3
    assert group.leave(3.0, b)[0] == errors.NONE
    assert group.state == GroupState.EMPTY and group.generation_id == 4
    assert group.commit_error("", -1) == errors.NONE  # simple (assign) commits are fine again


def test_session_expiry_removes_a_silent_member():
    group, a = stable_group_of_one()
    b, b_token, _ = join_new_member(group, 1.0, "b")
    join(group, 1.1, member_id=a)
    sync(group, 1.2, b, 2)
    sync(group, 1.3, a, 2, {a: b"x", b: b"y"})
    assert group.heartbeat(8.0, a, 2) == errors.NONE   # a keeps beating, b falls silent
    assert group.tick(10.0) == []
    group.tick(11.4)                                    # b last seen at 1.3: expired after 11.3
    assert b not in group.members and group.state == GroupState.PREPARING_REBALANCE


def test_rebalance_timeout_drops_members_that_do_not_rejoin():
    group, a = stable_group_of_one()
    group.heartbeat(0.5, a, 1)
    b, b_token, out = join_new_member(group, 1.0, "b")
    for t in (5.0, 10.0):
        group.heartbeat(t, a, 1)                        # alive, but never rejoins
    out = dict(group.tick(1.0 + REBALANCE_MS / 1000 + 0.01))
    assert out[b_token].error_code == errors.NONE and out[b_token].leader == b
    assert list(group.members) == [b]


def test_pending_member_ids_expire():
    group = Group("g")
    token, out = join(group, 0.0)
    member_id = out[token].member_id
    group.tick(SESSION_MS / 1000 + 1)
    token, out = join(group, 20.0, member_id=member_id)
    assert out[token].error_code == errors.UNKNOWN_MEMBER_ID


def test_old_join_versions_get_an_id_at_once_and_protocols_must_agree():
    group = Group("g")
    token, out = join(group, 0.0, v4=False)
    assert out[token].error_code == errors.NONE and out[token].member_id
    token, out = join(group, 0.1, protocols=(("other", b""),), v4=False)
    assert out[token].error_code == errors.INCONSISTENT_GROUP_PROTOCOL


# --- the handlers, through dispatch ---------------------------------------------

def test_group_apis_end_to_end_on_one_coordinator():
    async def scenario():
        ctx = new_ctx()
        await create(ctx, "t", 2)
        found = await call(ctx, FindCoordinatorRequest(key="g", key_type=0), 2)
        assert (found.error_code, found.node_id, found.port) == (0, 1, 9092)
        P = JoinGroupRequest.JoinGroupRequestProtocol
        def join_request(member_id):
            return JoinGroupRequest(group_id="g", session_timeout_ms=10000, rebalance_timeout_ms=10000,
                                    member_id=member_id, group_instance_id=None, protocol_type="consumer",
                                    protocols=[P(name="range", metadata=b"meta")])
        first = await call(ctx, join_request(""), 5)
        assert first.error_code == errors.MEMBER_ID_REQUIRED and first.member_id
        joined = await call(ctx, join_request(first.member_id), 5)
        assert joined.error_code == 0 and joined.leader == first.member_id and joined.generation_id == 1
        assert [m.metadata for m in joined.members] == [b"meta"]
        A = SyncGroupRequest.SyncGroupRequestAssignment
        synced = await call(ctx, SyncGroupRequest(group_id="g", generation_id=1, member_id=joined.member_id,
                                                  assignments=[A(member_id=joined.member_id, assignment=b"asg")]), 3)
        assert synced.error_code == 0 and synced.assignment == b"asg"
        beat = await call(ctx, HeartbeatRequest(group_id="g", generation_id=1, member_id=joined.member_id), 3)
        assert beat.error_code == 0
        T = OffsetCommitRequest.OffsetCommitRequestTopic
        def commit(generation, member, offset):
            return OffsetCommitRequest(group_id="g", generation_id_or_member_epoch=generation, member_id=member,
                                       retention_time_ms=-1, topics=[T(name="t", partitions=[
                                           T.OffsetCommitRequestPartition(partition_index=0, committed_offset=offset,
                                                                          committed_leader_epoch=0,
                                                                          committed_metadata="m"),
                                           T.OffsetCommitRequestPartition(partition_index=9, committed_offset=1,
                                                                          committed_metadata=None)])])
        done = await call(ctx, commit(1, joined.member_id, 42), 7)
        assert [p.error_code for p in done.topics[0].partitions] == [0, errors.UNKNOWN_TOPIC_OR_PARTITION]
        stale = await call(ctx, commit(0, joined.member_id, 43), 2)
        assert stale.topics[0].partitions[0].error_code == errors.ILLEGAL_GENERATION
        F = OffsetFetchRequest.OffsetFetchRequestTopic
        fetched = await call(ctx, OffsetFetchRequest(group_id="g", topics=[F(name="t", partition_indexes=[0, 1])]), 5)
        parts = {p.partition_index: (p.committed_offset, p.metadata, p.committed_leader_epoch)
                 for p in fetched.topics[0].partitions}
        assert parts == {0: (42, "m", 0), 1: (-1, "", -1)}
        everything = await call(ctx, OffsetFetchRequest(group_id="g", topics=None), 3)
        assert [(t.name, [p.committed_offset for p in t.partitions]) for t in everything.topics] == [("t", [42])]
        v1 = await call(ctx, OffsetFetchRequest(group_id="g", topics=[F(name="t", partition_indexes=[0])]), 1)
        assert v1.topics[0].partitions[0].committed_offset == 42
    run(scenario())


def test_offset_for_leader_epoch_answers_with_the_one_epoch():
    async def scenario():
        ctx = new_ctx()
        await create(ctx, "e")
        T = OffsetForLeaderEpochRequest.OffsetForLeaderTopic
        request = OffsetForLeaderEpochRequest(replica_id=-1, topics=[T(topic="e", partitions=[
            T.OffsetForLeaderPartition(partition=0, current_leader_epoch=0, leader_epoch=0),
            T.OffsetForLeaderPartition(partition=0, current_leader_epoch=-1, leader_epoch=3),
            T.OffsetForLeaderPartition(partition=4, current_leader_epoch=-1, leader_epoch=0)])])
        response = await call(ctx, request, 3)
        answers = [(p.error_code, p.leader_epoch, p.end_offset) for p in response.topics[0].partitions]
        assert answers == [(0, 0, 0), (0, -1, -1), (errors.UNKNOWN_TOPIC_OR_PARTITION, -1, -1)]
    run(scenario())


def test_join_waits_for_the_rest_of_the_group_through_the_coordinator():
    """Two JoinGroups over the async coordinator: the second member's join
    completes only once the first has rejoined."""
    async def scenario():
        ctx = new_ctx()
        P = JoinGroupRequest.JoinGroupRequestProtocol
        def join_request(member_id):
            return JoinGroupRequest(group_id="w", session_timeout_ms=10000, rebalance_timeout_ms=10000,
                                    member_id=member_id, group_instance_id=None, protocol_type="consumer",
                                    protocols=[P(name="range", metadata=b"")])
        a = (await call(ctx, join_request(""), 4)).member_id
        assert (await call(ctx, join_request(a), 4)).generation_id == 1
        b = (await call(ctx, join_request(""), 4)).member_id
        b_join = asyncio.ensure_future(call(ctx, join_request(b), 4))
        await asyncio.sleep(0.05)
        assert not b_join.done()
        beat = await call(ctx, HeartbeatRequest(group_id="w", generation_id=1, member_id=a), 2)
        assert beat.error_code == errors.REBALANCE_IN_PROGRESS
        a_join = await call(ctx, join_request(a), 4)
        b_answer = await asyncio.wait_for(b_join, 1)
        assert a_join.generation_id == b_answer.generation_id == 2
    run(scenario())


@pytest.mark.timeout(180)
def test_groups_left_idle_are_forgotten():
    """A client inventing group ids (the fuzz benchmark found it) must not
    grow the coordinator's table, which every tick walks: a group with no
    member and none pending is dropped; one with a member stays."""
    from reference.protocol.groups import GroupCoordinator
    now = [0.0]
    coordinator = GroupCoordinator(engine=None, clock=lambda: now[0])

    async def scenario():
        for i in range(100):  # join attempts that never complete: MEMBER_ID_REQUIRED, or refused outright
            result = await coordinator.join(f"made-up-{i}", member_id="", client_id="c", client_host="",
                                            group_instance_id=None, session_timeout_ms=SESSION_MS if i % 2 else 1,
                                            rebalance_timeout_ms=REBALANCE_MS, protocol_type="consumer",
                                            protocols=[("range", b"m")], require_known_member_id=True)
            assert result.error_code in (errors.MEMBER_ID_REQUIRED, errors.INVALID_SESSION_TIMEOUT)
        kept = coordinator.group("kept")
        member_id, _token, _out = join_new_member(kept, now[0])
        now[0] += SESSION_MS / 1000 / 2
        coordinator.tick()
        assert set(coordinator.groups) == {"kept"} | {f"made-up-{i}" for i in range(1, 100, 2)}  # ids pending
        now[0] += SESSION_MS / 1000  # pending ids expire; so does the silent member of "kept"
        kept.heartbeat(now[0] - 1, member_id, kept.generation_id)
        coordinator.tick()
        assert set(coordinator.groups) == {"kept"}
    run(scenario())
