"""Pure parts of the storage engine: object format, log cache, replay
planning, upload planning, config flags."""
from __future__ import annotations

import argparse

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from reference.batch import parse_header
from reference.storage import object_format as F
from reference.storage.config import EngineConfig, add_arguments, config_from_args, parse_duration, parse_size
from reference.storage.log_cache import CachedBatch, LogCache
from reference.storage.recovery import plan_replay
from reference.storage.stream_record import decode_body, encode_body
from reference.storage.testing import make_batch
from reference.storage.upload import plan_objects
from reference.batch import assign_offset


def stamped(values, base):
    return assign_offset(make_batch(values), base, 0)


@st.composite
def streams_of_batches(draw):
    out = []
    for sid in draw(st.lists(st.integers(1, 50), min_size=1, max_size=5, unique=True)):
        base = draw(st.integers(0, 10_000))
        for sizes in draw(st.lists(st.lists(st.integers(0, 300), min_size=1, max_size=4), min_size=1, max_size=8)):
            vals = [b"x" * n for n in sizes]
            data = stamped(vals, base)
            out.append(F.StreamRecord(sid, base, base + len(vals), data))
            base += len(vals)
    return out


@given(streams_of_batches(), st.sampled_from([64, 1000, 512 * 1024]))
@settings(max_examples=60, deadline=None)
def test_object_roundtrip(records, block_bytes):
    body, index = F.encode_object(records, block_bytes)
    assert F.decode_object(body) == sorted(records, key=lambda r: (r.stream_id, r.base_offset))
    pos, length = F.decode_footer(body[-48:])
    assert F.decode_index(body[pos:pos + length]) == index
    for e in index:
        blk = F.decode_block(body[e.position:e.position + e.size])
        assert len(blk) == e.record_count
        assert parse_header(blk[0]).base_offset == e.start_offset


def test_object_corruption_detected():
    body, index = F.encode_object([F.StreamRecord(1, 0, 1, stamped([b"a"], 0))])
    bad = bytearray(body)
    bad[F.BLOCK_HEADER.size + 30] ^= 1
    with pytest.raises(F.CorruptObject):
        F.decode_block(bytes(bad[:index[0].size]))
    with pytest.raises(F.CorruptObject):
        F.decode_footer(body[:-1] + b"\0")
    with pytest.raises(ValueError):
        F.encode_object([F.StreamRecord(1, 2, 3, stamped([b"b"], 2)), F.StreamRecord(1, 0, 1, stamped([b"a"], 0))])
    # a gap (left by compaction) starts a new block
    _, index = F.encode_object([F.StreamRecord(1, 0, 1, stamped([b"a"], 0)), F.StreamRecord(1, 2, 3, stamped([b"b"], 2))])
    assert [(e.start_offset, e.end_offset) for e in index] == [(0, 1), (2, 3)]


def test_log_cache_pending_upload_evict_and_reserve():
    c = LogCache(capacity=1000)
    assert c.reserve(300) and c.reserve(300) and c.reserve(300)
    assert not c.reserve(300), "pending + in-flight may not pass the capacity"
    for i in range(3):
        c.insert(7, CachedBatch(i * 10, i * 10 + 10, b"x" * 300, 0, wal_end=100 * (i + 1)), reserved=300)
    assert c.pending_bytes == 900 and c.inflight_bytes == 0
    assert [b.base_offset for b in c.pending(200)[7]] == [0, 10]
    c.mark_uploaded(7, 20)
    assert c.pending_bytes == 300 and c.total_bytes == 900
    assert [b.base_offset for b in c.pending(10**9)[7]] == [20]
    assert c.reserve(300)
    c.insert(7, CachedBatch(30, 40, b"y" * 300, 0, 400), reserved=300)
    assert c.total_bytes == 900, "uploaded batches were evicted to make room"
    assert c.first_offset(7) == 10
    assert c.read(7, 5, 10) is None, "below the cached tail: read S3"
    assert [b.base_offset for b in c.read(7, 25, 1)] == [20], "at least one batch, the one holding the offset"
    assert [b.base_offset for b in c.read(7, 10, 10**6)] == [10, 20, 30]
    with pytest.raises(AssertionError):
        c.insert(7, CachedBatch(99, 100, b"z", 0, 500))


def test_plan_replay_drops_committed_and_detects_gaps():
    def rec(sid, base, n=1):
        return encode_body(sid, 0, base, n - 1, stamped([b"v%d" % i for i in range(n)], base))
    records = [(0, rec(1, 0, 2)), (10, rec(1, 2)), (20, rec(2, 5)), (30, rec(1, 3)), (40, rec(9, 0)),
               (50, rec(2, 7)), (60, rec(2, 8))]
    plan = plan_replay(records, {1: 2, 2: 5})
    assert [(w, e.stream_id, e.base_offset) for w, e in plan.replay] == [(10, 1, 2), (20, 2, 5), (30, 1, 3)]
    assert plan.committed == 1 and plan.unknown == 1
    assert len(plan.errors) == 1 and "stream 2" in plan.errors[0]
    assert [(g.stream_id, g.expected, g.found) for g in plan.gaps] == [(2, 6, 7)]
    assert decode_body(rec(3, 4, 2)).end_offset == 6


@pytest.mark.timeout(180)
def test_plan_replay_stops_a_stream_at_a_batch_that_fails_validation():
    """A WAL record whose CRCs are right but whose batch no client could read
    (written by a broker that did not validate) is never replayed: the
    stream has a hole there, as if the record were missing."""
    good = stamped([b"a", b"b"], 0)
    broken = bytearray(stamped([b"c"], 2))
    broken[-1:] = b""  # one byte short of its last record ...
    broken[8:12] = (len(broken) - 12).to_bytes(4, "big")  # ... with a length and a CRC that agree
    from crc32c import crc32c
    broken[17:21] = crc32c(bytes(broken[21:])).to_bytes(4, "big")
    records = [(0, encode_body(1, 0, 0, 1, good)), (10, encode_body(1, 0, 2, 0, bytes(broken))),
               (20, encode_body(1, 0, 3, 0, stamped([b"d"], 3)))]
    plan = plan_replay(records, {1: 0})
    assert [e.base_offset for _, e in plan.replay] == [0]
    assert [(g.stream_id, g.found) for g in plan.gaps] == [(1, 2)] and "cannot be served" in plan.errors[0]


def test_plan_objects_splits_big_streams():
    b = lambda n: CachedBatch(0, 1, b"x" * n, 0, 0)
    assert plan_objects({1: [b(10)], 2: [b(100), b(100)], 3: [b(5)]}, 150) == [("set", [1, 3]), ("stream", [2])]
    assert plan_objects({2: [b(200)]}, 150) == [("stream", [2])]


def test_sizes_durations_and_flags():
    assert parse_size("64MiB") == 64 << 20 and parse_size("4MB") == 4_000_000 and parse_size("512KiB") == 512 << 10
    assert parse_size("1048576") == 1 << 20 and parse_size("2GiB") == 2 << 30
    assert parse_duration("2s") == 2 and parse_duration("500ms") == 0.5 and parse_duration("2m") == 120
    with pytest.raises(argparse.ArgumentTypeError):
        parse_size("lots")
    p = argparse.ArgumentParser()
    add_arguments(p)
    cfg = config_from_args(p.parse_args(["--wal-capacity", "64MiB", "--upload-bytes", "4MiB",
                                         "--upload-interval", "2s", "--cache-size", "256MiB"]))
    assert (cfg.wal_capacity, cfg.upload_bytes, cfg.upload_interval, cfg.cache_size) == (64 << 20, 4 << 20, 2.0, 256 << 20)
    assert cfg.object_ttl == EngineConfig().object_ttl
    assert EngineConfig().effective_upload_bytes == (512 << 20) // 3


def test_wal_mode_flags():
    p = argparse.ArgumentParser()
    add_arguments(p)
    cfg = config_from_args(p.parse_args(["--wal", "s3", "--s3-wal-interval", "100ms", "--s3-wal-bytes", "1MiB"]))
    assert (cfg.wal, cfg.s3_wal_interval, cfg.s3_wal_bytes) == ("s3", 0.1, 1 << 20)
    d = EngineConfig()
    assert (d.wal, d.s3_wal_interval, d.s3_wal_bytes) == ("file", 0.25, 8 << 20)
    with pytest.raises(SystemExit):
        p.parse_args(["--wal", "tape"])


def test_pick_stream_object_runs():
    from reference.storage.compaction import pick_stream_object_runs
    from reference.storage.metadata import COMMITTED, DESTROY, MetadataState, ObjectMeta, StreamMeta
    state = MetadataState()
    state.streams = {1: StreamMeta(1, "t", 0), 2: StreamMeta(2, "t", 1)}
    objs = [  # id, state, kind, ranges, size
        (1, COMMITTED, "stream", [[1, 0, 10]], 100), (2, COMMITTED, "stream", [[1, 10, 20]], 100),
        (3, COMMITTED, "stream", [[1, 20, 30]], 100),
        (4, COMMITTED, "stream", [[1, 40, 50]], 100),   # a gap before it (the rest is in a set object)
        (5, COMMITTED, "stream", [[1, 50, 60]], 100),
        (6, COMMITTED, "set", [[2, 0, 5]], 10), (7, COMMITTED, "stream", [[2, 5, 9]], 100),  # set: not merged
        (8, DESTROY, "stream", [[2, 9, 12]], 100), (9, COMMITTED, "stream", [[2, 12, 15]], 100),
        (10, COMMITTED, "stream", [[3, 0, 5]], 100), (11, COMMITTED, "stream", [[3, 5, 9]], 100),  # deleted stream
    ]
    for oid, st_, kind, ranges, size in objs:
        state.objects[oid] = ObjectMeta(oid, st_, 1, size=size, kind=kind, ranges=ranges)
    assert pick_stream_object_runs(state, 1 << 20, 16) == [[1, 2, 3], [4, 5]]
    assert pick_stream_object_runs(state, 250, 16) == [[1, 2], [4, 5]]   # size cap: 3 starts a run alone
    assert pick_stream_object_runs(state, 1 << 20, 2) == [[1, 2], [4, 5]]
    assert pick_stream_object_runs(state, 1 << 20, 16, streams={2}) == []   # a cluster node: only its streams


def test_pick_sources_in_a_cluster_takes_only_the_nodes_own_objects():
    from reference.storage.compaction import pick_sources
    from reference.storage.metadata import COMMITTED, MetadataState, ObjectMeta
    state = MetadataState()
    for oid, node in [(1, 1), (2, 2), (3, 1), (4, 2), (5, 2)]:
        state.objects[oid] = ObjectMeta(oid, COMMITTED, node, size=10, kind="set", ranges=[[1, oid, oid + 1]],
                                        order=oid)
    assert pick_sources(state, 100, 16) == [1, 2, 3, 4, 5]
    assert pick_sources(state, 100, 16, node=1) == [1, 3]
    assert pick_sources(state, 100, 16, node=2) == [2, 4, 5]
    assert pick_sources(state, 100, 16, node=3) == []
