"""The metadata log in S3: conditional-PUT fencing, ambiguous success,
snapshots, and the commit checks, against a real SeaweedFS."""
from __future__ import annotations

import asyncio
import json

import pytest

from reference.storage import metadata as M
from reference.storage.s3io import ObjectStore


def _log(s3_bucket, **kw) -> M.MetadataLog:
    endpoint, bucket = s3_bucket
    return M.MetadataLog(ObjectStore(endpoint, bucket), **kw)


def test_append_and_reload(s3_bucket):
    async def main():
        a = _log(s3_bucket)
        a.load_sync()
        await a.append({"type": "create_topic", "name": "t", "partitions": 2, "topic_id": "x", "ts": 1})
        start = await a.append({"type": "allocate_producer_ids", "count": 10, "ts": 1})
        ids = await a.append({"type": "prepare_objects", "node": 1, "count": 2, "deadline": 100, "ts": 1})
        assert ids == [1, 2]
        await a.append({"type": "commit_objects", "node": 1, "ts": 2, "producers": {"1": {"7": {"epoch": 0, "batches": [[0, 0, 0, 0]]}}},
                        "objects": [{"id": 1, "size": 10, "ranges": [[1, 0, 5], [2, 0, 3]]}]})
        await a.append({"type": "commit_group_offsets", "group": "g", "ts": 3, "offsets": [["t", 0, 4, None, -1]]})
        return a.state, start
    state, start = asyncio.run(main())
    assert start == 1000
    b = _log(s3_bucket)
    s2 = b.load_sync()
    assert s2.to_json() == state.to_json()
    assert s2.streams[1].end_offset == 5 and s2.streams[2].end_offset == 3
    assert s2.streams[1].producers == {"7": {"epoch": 0, "batches": [[0, 0, 0, 0]]}}
    assert s2.find_object(1, 4) == (0, 5, 1) and s2.find_object(1, 5) is None
    assert s2.objects[2].state == M.PREPARED
    assert s2.groups == {"g": {"t:0": [4, None, -1]}}
    assert s2.next_producer_id == 1010


def test_two_writers_the_loser_is_fenced(s3_bucket):
    async def main():
        a, b = _log(s3_bucket), _log(s3_bucket)
        a.load_sync()
        b.load_sync()
        await a.append({"type": "node_open", "node": 1, "ts": 0})
        with pytest.raises(M.MetadataFenced):
            await b.append({"type": "node_open", "node": 2, "ts": 0})
        # fenced for good: no later write either, even one that would not collide
        with pytest.raises(M.MetadataFenced):
            await b.append({"type": "node_open", "node": 2, "ts": 0})
        await a.append({"type": "node_open", "node": 1, "ts": 0})
    asyncio.run(main())
    c = _log(s3_bucket)
    state = c.load_sync()
    assert state.nodes == {1: 2} and state.seq == 1
    # b's attempted record never overwrote a's
    body = json.loads(c.store.get(c.log_key(0)))
    assert body["node"] == 1


def test_ambiguous_success_is_recognised(s3_bucket):
    """A PUT that landed but whose response was lost: the retry meets 412,
    reads the key back, finds its own bytes and carries on."""
    store = ObjectStore(*s3_bucket)
    store.put_if_absent("k", b"mine")
    store.put_if_absent("k", b"mine")  # the 'retry': no error
    with pytest.raises(Exception):
        store.put_if_absent("k", b"theirs")


def test_commit_must_start_at_stream_end(s3_bucket):
    async def main():
        a = _log(s3_bucket)
        a.load_sync()
        await a.append({"type": "create_topic", "name": "t", "partitions": 1, "topic_id": "x", "ts": 0})
        await a.append({"type": "prepare_objects", "node": 1, "count": 3, "deadline": 100, "ts": 0})
        await a.append({"type": "commit_objects", "node": 1, "ts": 1, "objects": [{"id": 1, "size": 1, "ranges": [[1, 0, 10]]}]})
        with pytest.raises(M.CommitRejected, match="OFFSET_NOT_MATCHED"):
            await a.append({"type": "commit_objects", "node": 1, "ts": 1, "objects": [{"id": 2, "size": 1, "ranges": [[1, 11, 12]]}]})
        with pytest.raises(M.CommitRejected, match="not prepared"):
            await a.append({"type": "commit_objects", "node": 1, "ts": 1, "objects": [{"id": 1, "size": 1, "ranges": [[1, 10, 12]]}]})
        with pytest.raises(M.CommitRejected, match="deadline"):
            await a.append({"type": "commit_objects", "node": 1, "ts": 101, "objects": [{"id": 2, "size": 1, "ranges": [[1, 10, 12]]}]})
        await a.append({"type": "commit_objects", "node": 1, "ts": 2, "objects": [{"id": 2, "size": 1, "ranges": [[1, 10, 12]]}]})
        # compaction: object 3 replaces 1 and 2 with the same coverage
        await a.append({"type": "prepare_objects", "node": 1, "count": 1, "deadline": 100, "ts": 0})
        with pytest.raises(M.CommitRejected, match="coverage"):
            await a.append({"type": "commit_objects", "node": 1, "ts": 3, "compacted": [1, 2],
                            "objects": [{"id": 4, "size": 1, "ranges": [[1, 0, 11]]}]})
        await a.append({"type": "commit_objects", "node": 1, "ts": 3, "compacted": [1, 2],
                        "objects": [{"id": 4, "size": 1, "kind": "stream", "ranges": [[1, 0, 12]]}]})
        return a.state
    s = asyncio.run(main())
    assert s.streams[1].end_offset == 12
    assert s.stream_ranges[1] == [(0, 12, 4)]
    assert s.objects[1].state == s.objects[2].state == M.DESTROY
    assert s.objects[3].state == M.PREPARED


def test_snapshots_speed_up_loading(s3_bucket):
    async def main():
        a = _log(s3_bucket, snapshot_every=5)
        a.load_sync()
        for i in range(12):
            await a.append({"type": "commit_group_offsets", "group": "g", "ts": i, "offsets": [["t", 0, i, None, -1]]})
        await a.flush()
        return a.state
    state = asyncio.run(main())
    b = _log(s3_bucket)
    keys = [k for k, _ in b.store.list("metadata/snapshot/")]
    assert keys == [b.snapshot_key(4), b.snapshot_key(9)]
    s2 = b.load_sync()
    assert s2.to_json() == state.to_json() and s2.seq == 11
    # a torn (unreadable) newest snapshot falls back to the older one
    b.store.put(b.snapshot_key(9), b"{not json")
    assert _log(s3_bucket).load_sync().to_json() == state.to_json()
