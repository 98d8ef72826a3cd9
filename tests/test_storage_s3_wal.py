"""`--wal s3`: the WAL as batched objects in S3 (no volume WAL). Acks only
after the WAL object's PUT; crash recovery from the WAL objects exactly once;
WAL objects deleted once an upload commits them; damaged objects reported,
never served."""
from __future__ import annotations

import asyncio
import logging
import time

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from reference.storage import s3_wal as SW
from reference.storage.engine import EngineConfig, S3Engine
from reference.storage.recovery import RecoveryRefused
from reference.storage.s3io import ObjectStore
from reference.storage.testing import batch_values, make_batch


def s3_config(**kw) -> EngineConfig:
    base = dict(wal="s3", s3_wal_interval=0.05, s3_wal_bytes=64 << 10, wal_capacity=4 << 20,
                cache_size=4 << 20, upload_bytes=64 << 10, upload_interval=0.3, block_cache_size=1 << 20,
                data_block_bytes=8 << 10, stream_object_bytes=256 << 10, object_ttl=30, object_retention=0.5,
                cleanup_interval=0.2, close_upload_timeout=10)
    base.update(kw)
    return EngineConfig(**base)


@given(st.integers(0, 1 << 40), st.lists(st.binary(max_size=3000), max_size=10))
@settings(max_examples=50, deadline=None)
def test_wal_object_framing_roundtrip(start, bodies):
    buf, spans = SW.frame_object(start, bodies)
    records, end, _why, damaged = SW.parse_object(start, buf)
    assert not damaged and end == start + len(buf)
    assert [b for _, b in records] == bodies and [o for o, _ in records] == [s for s, _ in spans]
    if buf:
        flipped = bytearray(buf)
        flipped[len(buf) // 2] ^= 0x10
        records2, _end, _why, damaged2 = SW.parse_object(start, bytes(flipped))
        assert damaged2 and len(records2) < len(bodies)


def test_keys_sort_as_the_log():
    keys = [SW.wal_key(3, o) for o in (0, 9, 10, 123456789)]
    assert keys == sorted(keys) and [SW.key_start(k) for k in keys] == [0, 9, 10, 123456789]


def test_ack_only_after_the_wal_object_is_in_s3(s3_bucket, tmp_path):
    endpoint, bucket = s3_bucket
    store = ObjectStore(endpoint, bucket)

    async def main():
        e = S3Engine(1, tmp_path, endpoint, bucket, s3_config(s3_wal_interval=0.2, upload_interval=3600,
                                                              upload_bytes=1 << 30))
        await e.start()
        assert not (tmp_path / "wal").exists(), "no volume WAL in this mode"
        await e.create_topic("t", 2)
        t0 = time.monotonic()
        results = await asyncio.gather(*[e.append("t", i % 2, make_batch([f"v{i}"])) for i in range(20)])
        took = time.monotonic() - t0
        assert took >= 0.18, f"acked after {took:.3f}s: before the batch window closed"
        objects = store.list("wal/1/")
        assert len(objects) == 1, "twenty concurrent appends, one WAL object"
        body = store.get(objects[0][0])
        assert all(f"v{i}".encode() in body for i in range(20))
        assert sorted(r.base_offset for r in results) == [i // 2 for i in range(20)]
        # once an upload commits them, the WAL objects are deleted
        await e.upload_now()
        deadline = time.monotonic() + 5
        while store.list("wal/1/") and time.monotonic() < deadline:
            await asyncio.sleep(0.02)
        assert store.list("wal/1/") == []
        await e.close()
    asyncio.run(main())


def test_s3_wal_batches_by_bytes(s3_bucket, tmp_path):
    endpoint, bucket = s3_bucket

    async def main():
        e = S3Engine(1, tmp_path, endpoint, bucket, s3_config(s3_wal_interval=3600, s3_wal_bytes=8 << 10,
                                                              upload_interval=3600, upload_bytes=1 << 30))
        await e.start()
        await e.create_topic("t", 1)
        # 1 KiB records, 8 KiB batches: full batches go without waiting the hour-long interval
        futs = [asyncio.ensure_future(e.append("t", 0, make_batch([b"x" * 1000]))) for _ in range(32)]
        deadline = time.monotonic() + 10
        while e.wal.writes < 4 and time.monotonic() < deadline:
            await asyncio.sleep(0.01)
        await asyncio.sleep(0.1)
        assert e.wal.writes == 4 and 24 <= sum(f.done() for f in futs) < 32, "the tail waits for a full batch"
        await e.abort()
        await asyncio.gather(*futs, return_exceptions=True)
    asyncio.run(main())


@pytest.mark.timeout(180)
def test_s3_wal_appends_larger_than_its_capacity_all_complete(s3_bucket, tmp_path):
    """At most 1 MiB un-uploaded, 8 MiB batches, three concurrent 500 KB
    appends: one WAL object of all three would wait for ever for room."""
    endpoint, bucket = s3_bucket

    async def main():
        e = S3Engine(1, tmp_path, endpoint, bucket, s3_config(wal_capacity=1 << 20, s3_wal_bytes=8 << 20))
        await e.start()
        await e.create_topic("t", 1)
        values = [bytes([65 + i]) * 500_000 for i in range(3)]
        results = await asyncio.wait_for(asyncio.gather(*[e.append("t", 0, make_batch([v])) for v in values]), 20)
        assert sorted(r.base_offset for r in results) == [0, 1, 2]
        assert e.wal.writes >= 2
        await e.close()
    asyncio.run(main())


def test_s3_wal_crash_recovery_exactly_once(s3_bucket, tmp_path, caplog):
    caplog.set_level(logging.INFO, logger="reference.storage")
    endpoint, bucket = s3_bucket
    store = ObjectStore(endpoint, bucket)
    expected: dict[int, list] = {0: [], 1: [], 2: []}
    n = 0

    async def produce(e, p, k):
        nonlocal n
        vals = [f"p{p}-{n + i}".encode() for i in range(k)]
        n += k
        r = await e.append("t", p, make_batch(vals))
        expected[p].extend((r.base_offset + i, v) for i, v in enumerate(vals))

    async def phase1():
        e = S3Engine(1, tmp_path, endpoint, bucket, s3_config())
        await e.start()
        await e.create_topic("t", 3)
        for _ in range(3):
            before = e.uploader.uploads
            await asyncio.gather(*[produce(e, i % 3, 1 + i % 4) for i in range(120)])
            deadline = time.monotonic() + 10
            while e.uploader.uploads == before and time.monotonic() < deadline:
                await asyncio.sleep(0.02)
        await e.upload_now()
        assert e.uploader.uploads >= 3
        e.uploader._last = time.monotonic() + 3600  # from here on: only in the WAL objects
        for _ in range(3):  # in three WAL objects at least
            await asyncio.gather(*[produce(e, i % 3, 2) for i in range(30)])
        # and a few appends in the batch window when the node dies: never acked
        pending = [asyncio.ensure_future(e.append("t", 0, make_batch([b"unacked"]))) for _ in range(3)]
        await asyncio.sleep(0)
        writes = e.wal.writes
        await e.abort()
        for f in pending:
            with pytest.raises(Exception):
                await f
        return writes

    writes = asyncio.run(phase1())
    assert writes > 3 and store.list("wal/1/"), "WAL objects wait for recovery"
    wal_objects = len(store.list("wal/1/"))
    assert wal_objects >= 3

    async def phase2():
        # a small upload size: recovery reads, replays and uploads the WAL objects a chunk at a time
        e = S3Engine(1, tmp_path, endpoint, bucket, s3_config(upload_bytes=1 << 10))
        await e.start()
        rec = e.recovery_summary
        assert rec["replayed"] == 90 and not rec["corrupt"] and not rec["errors"], rec
        assert rec["chunks"] == wal_objects, "one WAL object per chunk"
        assert store.list("wal/1/") == [], "recovered WAL objects are deleted after their upload commits"
        for p in range(3):
            start, hw = e.offsets("t", p)
            assert batch_values(await e.read("t", p, start, 1 << 30)) == expected[p]
            assert hw == len(expected[p])
        await produce(e, 1, 2)
        await e.close()
        return rec

    rec = asyncio.run(phase2())
    assert "recovered 90 records" in caplog.text
    assert store.list("wal/1/") == []

    async def phase3():  # after a clean close nothing is left to recover, and nothing is lost
        e = S3Engine(1, tmp_path, endpoint, bucket, s3_config())
        await e.start()
        assert e.recovery_summary["scanned"] == 0
        for p in range(3):
            start, _ = e.offsets("t", p)
            assert batch_values(await e.read("t", p, start, 1 << 30)) == expected[p]
        await e.close()
    asyncio.run(phase3())


def test_a_damaged_wal_object_with_acknowledged_objects_after_it_refuses_recovery(s3_bucket, tmp_path):
    """The 3rd of 5 WAL objects damaged: the two after it were acknowledged,
    so recovery refuses rather than hand their offsets out again, and
    leaves the WAL objects where they are."""
    endpoint, bucket = s3_bucket
    store = ObjectStore(endpoint, bucket)
    cfg = s3_config(s3_wal_interval=0.0, upload_interval=3600, upload_bytes=1 << 30)

    async def write():
        e = S3Engine(1, tmp_path, endpoint, bucket, cfg)
        await e.start()
        await e.create_topic("c", 1)
        for i in range(5):
            await e.append("c", 0, make_batch([f"v{i}"]))  # one object each
        await e.abort()
    asyncio.run(write())
    keys = [k for k, _ in store.list("wal/1/")]
    assert len(keys) == 5
    body = bytearray(store.get(keys[2]))
    body[-3] ^= 0x01
    store.put(keys[2], bytes(body))

    async def reopen():
        e = S3Engine(1, tmp_path, endpoint, bucket, cfg)
        try:
            with pytest.raises(RecoveryRefused) as refused:
                await e.start()
        finally:
            await e.close()
        return str(refused.value)
    message = asyncio.run(reopen())
    assert "2 acknowledged records lie beyond it" in message, message
    assert [k for k, _ in store.list("wal/1/")] == keys, "the WAL objects are left as they are"
