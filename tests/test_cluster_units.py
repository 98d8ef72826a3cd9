"""The cluster's pieces one by one: the metadata fencing checks, the
controller's decisions on a virtual clock, the lease rule, the RPC framing,
stale-epoch records in recovery, and, against a real S3, the lease's
compare-and-swap and a deposed controller refused by S3 itself."""
from __future__ import annotations

import asyncio
import json

import pytest

from reference.cluster import rpc as R
from reference.cluster.core import ClusterConfig, ControllerCore
from reference.cluster.lease import Lease, LeaseStore, may_take_over
from reference.storage import metadata as M
from reference.storage.recovery import plan_replay
from reference.storage.s3io import ObjectStore
from reference.storage.stream_record import encode_body
from reference.storage.testing import make_batch

pytestmark = pytest.mark.timeout(60)


def _apply(state, rec):
    M.check(state, rec)
    M.apply(state, rec, state.seq + 1)


def _cluster_state(nodes=(1, 2, 3), partitions=2) -> M.MetadataState:
    st = M.MetadataState()
    _apply(st, {"type": "controller", "node": 1, "epoch": 1})
    for n in nodes:
        _apply(st, {"type": "register_node", "node": n, "rpc": f"h:{n}", "listen": f"h:{n}0", "volume": f"v{n}"})
    _apply(st, {"type": "create_topic", "name": "t", "partitions": partitions, "topic_id": "x",
                "node": 1, "node_epoch": 1})
    return st


def _commit(node, epoch, sid, start, end, oid, **extra):
    return dict({"type": "commit_objects", "node": node, "node_epoch": epoch, "ts": 0,
                 "objects": [{"id": oid, "size": 1, "ranges": [[sid, start, end]]}]}, **extra)


def _prepare(st, node):
    rec = {"type": "prepare_objects", "node": node, "node_epoch": st.nodes[node], "count": 1, "deadline": 1e12,
           "ts": 0}
    M.check(st, rec)
    return M.apply(st, rec, st.seq + 1)[0]


# ---------------------------------------------------------------- metadata checks

def test_open_bumps_the_stream_epoch_and_is_refused_while_open_elsewhere():
    st = _cluster_state()
    _apply(st, {"type": "open_streams", "opens": [[1, 2, 1]]})
    assert st.streams[1].owner == 2 and st.streams[1].epoch == 1 and st.streams[1].epoch_starts == [[1, 0]]
    with pytest.raises(M.StreamNotClosed):
        M.check(st, {"type": "open_streams", "opens": [[1, 3, 2]]})
    with pytest.raises(M.StreamFenced):   # a close naming an old epoch
        M.check(st, {"type": "close_streams", "closes": [[1, 0]]})
    _apply(st, {"type": "close_streams", "closes": [[1, 1]]})
    with pytest.raises(M.StreamFenced):   # the epoch must move on
        M.check(st, {"type": "open_streams", "opens": [[1, 3, 1]]})
    _apply(st, {"type": "open_streams", "opens": [[1, 3, 2]]})
    assert st.streams[1].owner == 3 and st.streams[1].epoch_starts == [[1, 0], [2, 0]]


def test_node_epoch_check_refuses_an_older_incarnation_and_a_fenced_node():
    st = _cluster_state()
    _apply(st, {"type": "open_streams", "opens": [[1, 2, 1]]})
    oid = _prepare(st, 2)
    M.check(st, _commit(2, 1, 1, 0, 5, oid))           # the owner at its epoch: fine
    _apply(st, {"type": "register_node", "node": 2, "rpc": "h:2", "listen": "h:20", "volume": "v2"})
    with pytest.raises(M.NodeEpochExpired):              # the old process of node 2
        M.check(st, _commit(2, 1, 1, 0, 5, oid))
    _apply(st, {"type": "fence_node", "node": 2, "epoch": 2, "token": "tok"})
    with pytest.raises(M.NodeFenced):                    # fenced: even at its current epoch
        M.check(st, _commit(2, 3, 1, 0, 5, oid))
    M.check(st, _commit(2, 3, 1, 0, 5, oid, recovery="tok"))   # its recovery may commit for it
    with pytest.raises(M.NodeFenced):
        M.check(st, _commit(2, 3, 1, 0, 5, oid, recovery="forged"))
    with pytest.raises(M.CommitRejected):                # in a cluster, broker records carry a node epoch
        M.check(st, {"type": "allocate_producer_ids", "count": 1})


def test_stream_advance_check_refuses_a_commit_for_a_stream_the_node_does_not_hold():
    st = _cluster_state()
    _apply(st, {"type": "open_streams", "opens": [[1, 2, 1], [2, 3, 1]]})
    oid = _prepare(st, 3)
    with pytest.raises(M.StreamFenced):                  # stream 1 is node 2's
        M.check(st, _commit(3, 1, 1, 0, 5, oid))
    with pytest.raises(M.StreamFenced):                  # right node, stale stream epoch
        M.check(st, _commit(3, 1, 2, 0, 5, oid, epochs={"2": 0}))
    with pytest.raises(M.CommitRejected, match="OFFSET_NOT_MATCHED"):
        M.check(st, _commit(3, 1, 2, 3, 5, oid, epochs={"2": 1}))
    _apply(st, _commit(3, 1, 2, 0, 5, oid, epochs={"2": 1}))
    assert st.streams[2].end_offset == 5


def test_a_fence_names_the_incarnation_it_fences():
    st = _cluster_state()
    _apply(st, {"type": "fence_node", "node": 2, "epoch": 1, "token": "a"})
    assert st.nodes[2] == 2 and st.node_info[2]["fenced"] and st.live_nodes() == [1, 3]
    with pytest.raises(M.NodeEpochExpired):              # a second fence of the same incarnation
        M.check(st, {"type": "fence_node", "node": 2, "epoch": 1, "token": "b"})


def test_cluster_state_survives_a_snapshot():
    st = _cluster_state()
    _apply(st, {"type": "open_streams", "opens": [[1, 2, 1]]})
    _apply(st, {"type": "fence_node", "node": 3, "epoch": 1, "token": "a"})
    _apply(st, {"type": "failover", "node": 3, "steps": {"total_ms": 5}})
    again = M.MetadataState.from_json(json.loads(json.dumps(st.to_json())))
    assert again.to_json() == st.to_json()
    assert again.streams[1].owner == 2 and again.controller == {"node": 1, "epoch": 1}


# ---------------------------------------------------------------- recovery drops stale epochs

def test_recovery_drops_records_of_a_stale_stream_epoch():
    from reference.batch import assign_offset

    def rec(epoch, base, n=1):  # as the WAL holds them: the batch stamped with its offset
        return encode_body(7, epoch, base, n - 1, assign_offset(make_batch([base] * n), base, epoch))
    records = [(0, rec(1, 0)), (1, rec(1, 1)),      # epoch 1: the stream's previous owner (stale)
               (2, rec(2, 0)), (3, rec(2, 1))]      # epoch 2: the current one
    plan = plan_replay(records, {7: 0}, {7: 2})
    assert [e.epoch for _, e in plan.replay] == [2, 2] and plan.stale == 2 and not plan.errors
    # without epochs (a lone engine) every record counts, and offsets then clash
    assert plan_replay(records, {7: 0}).errors
    # a record from a newer epoch than the metadata knows: an error, never replayed
    plan = plan_replay([(0, rec(3, 0))], {7: 0}, {7: 2})
    assert plan.errors and not plan.replay


# ---------------------------------------------------------------- controller decisions (virtual clock)

def test_sessions_expire_and_recovery_waits_when_volumes_do_not_fence_io():
    st = _cluster_state()
    core = ControllerCore(ClusterConfig(session_timeout=3.0, heartbeat_interval=0.5, fences_io=False))
    core.take_over(st, now=100.0)
    assert core.heartbeat(st, 2, 1, now=101.0) == "ok"
    assert core.heartbeat(st, 2, 0, now=101.0) == "fenced"          # an older incarnation
    assert core.to_fence(st, now=103.5) == [(1, 1, "session-timeout"), (3, 1, "session-timeout")]
    core.heartbeat(st, 1, 1, now=103.5)
    core.heartbeat(st, 3, 1, now=103.5)
    core.probed_dead(2, now=103.6)
    assert core.to_fence(st, now=103.6) == []                       # a probe is not enough without I/O fencing
    assert core.to_fence(st, now=104.1) == [(2, 1, "session-timeout")]
    assert core.recovery_not_before(2) == 104.0                    # last heartbeat + session timeout
    fast = ControllerCore(ClusterConfig(session_timeout=3.0, fences_io=True))
    fast.take_over(st, now=100.0)
    fast.probed_dead(2, now=100.2)
    assert fast.to_fence(st, now=100.2) == [(2, 1, "probe-refused")]
    assert fast.recovery_not_before(2) == 0.0


def test_a_lapsed_controller_lease_ends_that_nodes_session_at_once():
    st = _cluster_state()
    core = ControllerCore(ClusterConfig(session_timeout=3.0, fences_io=False))
    core.take_over(st, now=50.0)
    core.lease_lapsed(1, now=50.0)           # node 1 held the lease; it expired before we took over
    assert core.to_fence(st, now=50.0) == [(1, 1, "session-timeout")]
    assert core.recovery_not_before(1) <= 50.0
    assert core.recovery_not_before(2) == 53.0


def test_placement_spreads_closed_streams_and_skips_fenced_and_stale_nodes():
    st = _cluster_state(partitions=6)
    core = ControllerCore(ClusterConfig(session_timeout=3.0))
    core.take_over(st, now=0.0)
    opens = core.placements(st, now=1.0)
    assert sorted(n for _, n, _ in opens) == [1, 1, 2, 2, 3, 3] and all(e == 1 for _, _, e in opens)
    _apply(st, {"type": "fence_node", "node": 3, "epoch": 1, "token": "t"})
    opens = core.placements(st, now=1.0)
    assert {n for _, n, _ in opens} == {1, 2}
    assert core.pick_recoverer(st, failed=3, now=1.0) in (1, 2)
    assert core.placements(st, now=10.0) == []                    # nobody heartbeated: nobody is fit
    _apply(st, {"type": "open_streams", "opens": [[1, 2, 1]]})
    _apply(st, {"type": "fence_node", "node": 2, "epoch": 1, "token": "u"})
    assert core.needs_recovery(st) == [2]


def test_lease_rule():
    now = 10_000
    held = Lease(2, 5, "h:2", "inc-a", expires_ms=now + 3000)
    assert may_take_over(None, 1, "x", now, 200, False)
    assert not may_take_over(held, 1, "x", now, 200, False)
    assert may_take_over(held, 1, "x", now + 3201, 200, False)       # expired, past the margin
    assert not may_take_over(held, 1, "x", now + 3100, 200, False)
    assert may_take_over(held, 1, "x", now, 200, True)               # the holder is known gone (I/O fenced)
    assert may_take_over(held, 2, "inc-b", now, 200, False)          # our own node's previous process
    assert not may_take_over(held, 2, "inc-a", now, 200, False)      # ours: renew, do not take


# ---------------------------------------------------------------- RPC framing

def test_rpc_frames_decode_across_arbitrary_splits_and_refuse_garbage():
    frames = R.encode_frame({"id": 1, "method": "a"}) + R.encode_frame({"id": 2, "result": [1, 2]})
    d = R.FrameDecoder()
    got = []
    for i in range(len(frames)):
        got += d.feed(frames[i:i + 1])
    assert got == [{"id": 1, "method": "a"}, {"id": 2, "result": [1, 2]}]
    with pytest.raises(R.FrameError):
        R.FrameDecoder().feed(R.LENGTH.pack(3) + b"[1]")
    with pytest.raises(R.FrameError):
        R.FrameDecoder(max_frame=10).feed(R.LENGTH.pack(11))


def test_rpc_round_trip_errors_and_a_closed_connection():
    async def main():
        async def echo(p, conn):
            return p

        async def boom(p, conn):
            raise R.RpcError(R.REJECTED, "no")
        server = R.RpcServer("127.0.0.1", 0, {"echo": echo, "boom": boom})
        await server.start()
        client = R.RpcClient(server.address)
        assert await client.call("echo", {"x": 1}) == {"x": 1}
        with pytest.raises(R.RpcError) as e:
            await client.call("boom")
        assert e.value.code == R.REJECTED
        with pytest.raises(R.RpcError) as e:
            await client.call("nope")
        assert e.value.code == R.UNKNOWN_METHOD
        await server.close()
        with pytest.raises((ConnectionError, OSError)):
            await client.call("echo", {}, timeout=2)
        assert await R.probe(server.address) == "refused"
        await client.close()
    asyncio.run(main())


# ---------------------------------------------------------------- against S3

def test_lease_compare_and_swap(s3_bucket):
    endpoint, bucket = s3_bucket
    store = LeaseStore(ObjectStore(endpoint, bucket))
    assert store.read() is None
    a = store.write(Lease(1, 1, "h:1", "i1", 1000), None)
    assert a is not None and store.write(Lease(2, 1, "h:2", "i2", 1000), None) is None   # exists
    b = store.write(Lease(2, 2, "h:2", "i2", 2000), a.etag)                               # takeover by CAS
    assert b is not None and store.read().node == 2
    assert store.write(Lease(1, 1, "h:1", "i1", 3000), a.etag) is None                    # a stale renewal


def test_a_deposed_controllers_next_metadata_write_is_refused_by_s3(s3_bucket):
    endpoint, bucket = s3_bucket

    async def main():
        old = M.MetadataLog(ObjectStore(endpoint, bucket))
        old.load_sync()
        await old.append({"type": "controller", "node": 1, "epoch": 1, "ts": 0})
        await old.append({"type": "register_node", "node": 1, "rpc": "a", "listen": "b", "volume": "v"})
        new = M.MetadataLog(ObjectStore(endpoint, bucket))
        new.load_sync()
        await new.append({"type": "controller", "node": 2, "epoch": 2, "ts": 0})
        # the old controller does not know: its next write takes a number already taken
        with pytest.raises(M.MetadataFenced):
            await old.append({"type": "fence_node", "node": 1, "epoch": 1, "token": "x"})
        check = M.MetadataLog(ObjectStore(endpoint, bucket))
        st = check.load_sync()
        assert st.controller == {"node": 2, "epoch": 2} and not st.node_info[1]["fenced"]
        # and an old controller that catches up cannot go back in epochs either
        with pytest.raises(M.CommitRejected):
            M.check(st, {"type": "controller", "node": 1, "epoch": 2})
    asyncio.run(main())


def test_offset_for_leader_epoch_answers_from_the_epochs_each_opening_started():
    from reference.cluster.view import ClusterView
    st = _cluster_state()
    s = st.streams[1]
    s.epoch, s.owner, s.epoch_starts = 4, 2, [[1, 0], [2, 100], [4, 150]]

    class Replica:
        state = st
    view = ClusterView(Replica(), 1)
    assert view.epoch_end("t", 0, 1, 170) == (1, 100)     # epoch 1 ended where epoch 2 began
    assert view.epoch_end("t", 0, 3, 170) == (2, 150)     # no epoch 3: the largest below, and its end
    assert view.epoch_end("t", 0, 4, 170) == (4, 170)     # the current epoch ends at the high watermark
    assert view.epoch_end("t", 0, 0, 170) == (-1, -1)     # older than anything remembered
    assert view.leader("t", 0) == (2, 4) and view.leader("t", 1) == (-1, 0)
    assert [b[0] for b in view.brokers()] == [1, 2, 3] and view.controller_id() == 1


def test_directory_volumes_attach_to_one_node_at_a_time(tmp_path):
    from reference.volumes.base import VolumeError
    from reference.volumes.directory import DirectoryVolumeProvider
    v = DirectoryVolumeProvider(tmp_path)
    v.create("vol-a")
    a = v.attach("vol-a", "n1")
    (tmp_path / "mnt" / "n1" / "vol-a" / "f").write_text("x")
    assert v.attach("vol-a", "n1") == a and v.attachment("vol-a") == a          # idempotent
    with pytest.raises(VolumeError):
        v.attach("vol-a", "n2")                                                 # detach first
    v.detach("vol-a", "n2")                                                     # not there: a no-op
    v.detach("vol-a", "n1")
    assert v.attachment("vol-a") is None and not (tmp_path / "mnt" / "n1" / "vol-a").exists()
    b = DirectoryVolumeProvider(tmp_path).attach("vol-a", "n2")                 # another process's view
    assert (tmp_path / "mnt" / "n2" / "vol-a" / "f").read_text() == "x" and b.node == "n2"
    with pytest.raises(VolumeError):
        v.attach("nope", "n1")
    assert DirectoryVolumeProvider.fences_io is False


def test_a_replica_catching_up_applies_records_on_its_loop_only(s3_bucket, monkeypatch):
    """The replica's state is also fed by the controller's pushes on the
    event loop: a catch-up that applied records from its worker thread could
    apply one twice (an object id handed out twice, a state that no longer
    matches the log; found by a chaos run with compaction on)."""
    import threading
    import uuid

    from reference.cluster import replica as RP
    endpoint, bucket = s3_bucket
    prefix = f"replica-{uuid.uuid4().hex[:8]}"
    appliers: set[str] = set()
    real_apply = M.apply

    def watched(state, rec, seq):
        appliers.add(threading.current_thread().name)
        return real_apply(state, rec, seq)

    async def main():
        writer = M.MetadataLog(ObjectStore(endpoint, bucket), prefix)
        writer.load_sync()
        for _ in range(3):
            await writer.append({"type": "prepare_objects", "node": 1, "count": 1, "deadline": 9e9, "ts": 0})
        monkeypatch.setattr(M, "apply", watched)
        monkeypatch.setattr(RP, "apply", watched)
        reader = M.MetadataLog(ObjectStore(endpoint, bucket), prefix)
        replica = RP.MetadataReplica(reader, node=2, epoch=1, controller_call=None)
        await replica.catch_up()
        allocated = writer.state.next_object_id
        assert replica.state.seq == 2 and replica.state.next_object_id == allocated
        # a push of what it already has changes nothing
        assert replica.receive([dict(rec, seq=seq) for seq, rec in reader.read_after(-1)])
        assert replica.state.next_object_id == allocated
    asyncio.run(main())
    assert appliers == {threading.main_thread().name}


def test_an_answer_from_its_own_former_controller_extends_no_session():
    """A heartbeat a node sent to its own controller, answered after it gave
    the role up (lease taken by another node), must not extend its session:
    it served a read from its old view during a controller hand-over (a
    clean run with --reads-to-end and the controller's S3 slowed)."""
    from types import SimpleNamespace

    from reference.cluster.node import NodeAgent
    node = object.__new__(NodeAgent)
    node.cfg = SimpleNamespace(cluster=SimpleNamespace(session_timeout=3.0))
    node.margin, node.valid_until = 0.3, 0.0
    node.controller, node.lease_valid_until = None, 0.0      # abdicated meanwhile
    node._session_from(100.0, own_controller=True)           # sent while it was the controller
    assert node.valid_until == 0.0
    node._session_from(100.0, own_controller=False)          # another controller's answer
    assert node.valid_until == 100.0 + 3.0 - 0.3
    node.controller, node.lease_valid_until = object(), 101.0   # the controller: bounded by its lease
    node.valid_until = 0.0
    node._session_from(100.0, own_controller=True)
    assert node.valid_until == 101.0
