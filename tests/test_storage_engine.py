"""The S3 engine end to end against a real SeaweedFS: appends, uploads,
crashes (abort: no upload, no trim, no clean header), recovery, reads from
S3, idempotence across restarts, corruption, garbage collection."""
from __future__ import annotations

import asyncio
import logging
import os
import time

import pytest

from reference import errors
from reference.errors import KafkaError
from reference.storage import wal as W
from reference.storage.api import CommittedOffset
from reference.storage.engine import EngineConfig, S3Engine
from reference.storage.metadata import object_key
from reference.storage.recovery import RecoveryRefused
from reference.batch import parse_header
from reference.validation import ValidBatch
from reference.storage.s3io import ObjectStore
from reference.storage.testing import batch_offsets, batch_values, make_batch, pread_failing_at


def small_config(**kw) -> EngineConfig:
    base = dict(wal_capacity=1 << 20, cache_size=4 << 20, upload_bytes=64 << 10, upload_interval=0.3,
                block_cache_size=1 << 20, data_block_bytes=8 << 10, stream_object_bytes=256 << 10,
                object_ttl=30, object_retention=0.5, cleanup_interval=0.2, close_upload_timeout=10)
    base.update(kw)
    return EngineConfig(**base)


def engine(s3_bucket, volume, node_id=1, **kw) -> S3Engine:
    endpoint, bucket = s3_bucket
    return S3Engine(node_id, volume, endpoint, bucket, small_config(**kw))


async def read_all(e: S3Engine, topic: str, partition: int, max_bytes: int = 3000) -> list[tuple[int, bytes]]:
    """Every (offset, value), fetching from 0 in small steps (many fetches land
    inside batches, which must come back whole)."""
    start, hw = e.offsets(topic, partition)
    out, pos = [], start
    while pos < hw:
        data = await e.read(topic, partition, pos, max_bytes)
        assert data, f"empty read at {pos} < hw {hw}"
        recs = batch_values(data)
        assert recs[0][0] <= pos, "a fetch starts with the batch that holds the offset"
        out.extend(r for r in recs if r[0] >= pos)
        pos = out[-1][0] + 1
    return out


def test_crash_recovery_exactly_once_with_uploads_and_wal(s3_bucket, tmp_path, caplog):
    caplog.set_level(logging.INFO, logger="reference.storage")
    vol = tmp_path / "vol"
    expected: dict[int, list[tuple[int, bytes]]] = {0: [], 1: [], 2: []}
    sent = {}

    async def phase1():
        e = engine(s3_bucket, vol)
        await e.start()
        await e.create_topic("t", 3)
        pids = [await e.allocate_producer_id() for _ in range(3)]
        seqs = {p: 0 for p in range(3)}
        n = 0

        async def produce(p, k):
            nonlocal n
            vals = [f"p{p}-{n + i}".encode() for i in range(k)]
            n += k
            b = make_batch(vals, pids[p], 0, seqs[p])
            seqs[p] += k
            r = await e.append("t", p, b)
            assert not r.duplicate
            expected[p].extend((r.base_offset + i, v) for i, v in enumerate(vals))
            sent[(p, seqs[p] - k)] = (b, r.base_offset)

        # wave 1: many concurrent batches, uploaded by size or interval
        for wave in range(4):
            before = e.uploader.uploads
            await asyncio.gather(*[produce(i % 3, 1 + i % 4) for i in range(150)])
            deadline = time.monotonic() + 10
            while e.uploader.uploads == before and time.monotonic() < deadline:
                await asyncio.sleep(0.02)
        await e.upload_now()
        trim_after_upload = W.read_header(vol)["trim_offset"]
        assert e.uploader.uploads >= 4
        # wave 2: only in the WAL when we crash (no upload: interval far away)
        e.uploader._last = time.monotonic() + 3600
        await asyncio.gather(*[produce(i % 3, 2) for i in range(90)])
        stats = e.stats()
        await e.abort()  # SIGKILL-like: nothing more reaches S3 or the WAL header
        return pids, trim_after_upload, stats

    pids, trim_before, stats = asyncio.run(phase1())
    assert stats["cache_pending_bytes"] > 0 and stats["wal_used"] > 0
    header = W.read_header(vol)
    assert header["shutdown"] == "crash" and header["trim_offset"] == trim_before > 0
    store = ObjectStore(*s3_bucket)
    assert len(store.list("objects/")) >= 2, "objects reached S3 before the crash"

    caplog.clear()

    async def phase2():
        e = engine(s3_bucket, vol)
        await e.start()
        rec = e.recovery_summary
        assert rec["replayed"] == 90 and not rec["corrupt"] and not rec["errors"]
        for p in range(3):
            got = await read_all(e, "t", p)
            assert got == expected[p], f"partition {p}: every acked record once, in order, at its offset"
            assert e.offsets("t", p) == (0, len(expected[p]))
        # idempotent retries after the restart: of an uploaded batch (producer state
        # from the committed snapshot) and of one that was only in the WAL (replayed)
        for p in range(3):
            first_key = min(k for k in sent if k[0] == p)
            last_key = max(k for k in sent if k[0] == p)
            for key in (last_key, ):
                b, base = sent[key]
                r = await e.append("t", p, b)
                assert r.duplicate and r.base_offset == base
            b, base = sent[first_key]
            # the first batch is too old to be remembered (5 batches kept): out of order
            with pytest.raises(KafkaError) as ei:
                await e.append("t", p, b)
            assert ei.value.code == errors.OUT_OF_ORDER_SEQUENCE_NUMBER
        # new producer ids never repeat one handed out before the crash
        assert await e.allocate_producer_id() > max(pids)
        assert e.offsets("t", 0) == (0, len(expected[0]))
        await e.close()

    asyncio.run(phase2())
    text = caplog.text
    assert "recovered 90 records from WAL" in text or "90 replayed" in text
    assert "uploaded and committed objects" in text
    header = W.read_header(vol)
    assert header["shutdown"] == "clean" and header["trim_offset"] > trim_before


def test_reads_below_the_cache_come_from_s3(s3_bucket, tmp_path):
    async def main():
        e = engine(s3_bucket, tmp_path, cache_size=256 << 10, upload_bytes=32 << 10)
        await e.start()
        await e.create_topic("big", 2)
        expected = {0: [], 1: []}
        for i in range(400):
            vals = [os.urandom(200) for _ in range(5)]
            r = await e.append("big", i % 2, make_batch(vals))
            expected[i % 2].extend((r.base_offset + k, v) for k, v in enumerate(vals))
        await e.upload_now()
        assert e.cache.first_offset(e._stream("big", 0).stream_id) > 0, "the cache evicted the head"
        for p in (0, 1):
            assert await read_all(e, "big", p, max_bytes=5000) == expected[p]
        assert e.reader.gets > 0
        # a fetch at an offset inside a batch returns that whole batch
        data = await e.read("big", 0, 7, 1)
        assert batch_offsets(data) == [(5, 5)]
        with pytest.raises(KafkaError) as ei:
            await e.read("big", 0, 10_000, 100)
        assert ei.value.code == errors.OFFSET_OUT_OF_RANGE
        assert await e.read("big", 0, e.offsets("big", 0)[1], 100) == b""
        assert (await e.offset_for_timestamp("big", 1, 0))[0] == 0
        await e.close()
    asyncio.run(main())


def _write_six_records(s3_bucket, vol) -> list[int]:
    """Six acknowledged records of c-0, each its own group commit (so each
    starts a 4 KiB block), never uploaded; then the broker dies. Returns
    their WAL offsets."""
    async def write():
        e = engine(s3_bucket, vol, upload_interval=3600, upload_bytes=1 << 30)
        await e.start()
        await e.create_topic("c", 1)
        for i in range(6):
            assert (await e.append("c", 0, make_batch([f"v{i}"]))).base_offset == i
        await e.abort()
    asyncio.run(write())
    f = W.WalFile(vol / "wal", 1 << 20, 1)
    scan = f.scan()
    f.close()
    assert len(scan.records) == 6
    return [pos for pos, _ in scan.records]


def _flip_a_bit_in_the_fourth_body(vol, wal_offsets) -> None:
    f = W.WalFile(vol / "wal", 1 << 20, 1)
    phys = W.HEADER_AREA + wal_offsets[3] % f.ring + 24 + 40
    b = bytearray(os.pread(f.fd, 1, phys))
    b[0] ^= 0x04
    os.pwrite(f.fd, bytes(b), phys)
    f.close()


async def _refused(s3_bucket, vol) -> str:
    e = engine(s3_bucket, vol)
    try:
        with pytest.raises(RecoveryRefused) as refused:
            await e.start()
    finally:
        await e.close()
    return str(refused.value)


def test_a_damaged_wal_record_with_acknowledged_records_after_it_refuses_recovery(s3_bucket, tmp_path):
    """A flipped bit in the 4th of 6 records: the two after it were
    acknowledged, so the damage is no torn last write. Serving would hand
    offsets 3..5 out again: recovery refuses, and leaves the WAL as it is."""
    vol = tmp_path / "v"
    _flip_a_bit_in_the_fourth_body(vol, offsets := _write_six_records(s3_bucket, vol))
    header = W.read_header(vol)
    for _ in range(2):  # a second start refuses again: the evidence stays
        message = asyncio.run(_refused(s3_bucket, vol))
        assert f"stopped at offset {offsets[3]}" in message and "body CRC mismatch" in message, message
        assert f"2 acknowledged records lie beyond it, WAL offsets [{offsets[4]}, " in message, message
        assert W.read_header(vol) == header, "the WAL is not reset"


def test_an_unreadable_wal_record_refuses_recovery_naming_the_lost_range(s3_bucket, tmp_path, monkeypatch):
    """EIO on the 4th record's block (a bad sector) stops the scan there;
    the probe beyond it skips the bad block and finds the two records after
    it: recovery refuses, naming where the scan stopped and what lies
    beyond. Once the block reads again, everything is recovered."""
    from reference.storage import disk
    vol = tmp_path / "v"
    offsets = _write_six_records(s3_bucket, vol)
    bad = W.HEADER_AREA + offsets[3] % (W.read_header(vol)["capacity"] - W.HEADER_AREA)  # the 4th record's block
    real_pread = disk.io.pread
    monkeypatch.setattr(disk.io, "pread", pread_failing_at(real_pread, bad, W.BLOCK))
    message = asyncio.run(_refused(s3_bucket, vol))
    assert f"stopped at offset {offsets[3]}" in message and "unreadable" in message, message
    assert f"2 acknowledged records lie beyond it, WAL offsets [{offsets[4]}, " in message, message
    monkeypatch.setattr(disk.io, "pread", real_pread)   # the sector heals

    async def reopen():
        e = engine(s3_bucket, vol)
        await e.start()
        assert [v for _, v in await read_all(e, "c", 0)] == [f"v{i}".encode() for i in range(6)]
        await e.close()
    asyncio.run(reopen())


def test_an_unreadable_last_wal_record_refuses_recovery_too(s3_bucket, tmp_path, monkeypatch):
    """Nothing lies beyond the unreadable record, but a read error is no torn
    write: the record may well have been acknowledged. Refused."""
    from reference.storage import disk
    vol = tmp_path / "v"
    offsets = _write_six_records(s3_bucket, vol)
    bad = W.HEADER_AREA + offsets[5] % (W.read_header(vol)["capacity"] - W.HEADER_AREA)
    real_pread = disk.io.pread
    monkeypatch.setattr(disk.io, "pread", pread_failing_at(real_pread, bad, W.BLOCK))
    message = asyncio.run(_refused(s3_bucket, vol))
    assert f"stopped at offset {offsets[5]}" in message and "nothing readable lies beyond it" in message, message


def test_a_torn_last_wal_record_is_not_served_and_recovery_goes_on(s3_bucket, tmp_path, caplog):
    """A damaged last record with nothing after it: a write the crash tore,
    never acknowledged. The scan stops there and the node serves."""
    caplog.set_level(logging.INFO, logger="reference.storage")
    vol = tmp_path / "v"
    offsets = _write_six_records(s3_bucket, vol)
    f = W.WalFile(vol / "wal", 1 << 20, 1)
    phys = W.HEADER_AREA + offsets[5] % f.ring + 24 + 40
    b = bytearray(os.pread(f.fd, 1, phys))
    b[0] ^= 0x04
    os.pwrite(f.fd, bytes(b), phys)
    f.close()

    async def reopen():
        e = engine(s3_bucket, vol)
        await e.start()
        assert [v for _, v in await read_all(e, "c", 0)] == [f"v{i}".encode() for i in range(5)]
        assert e.recovery_summary["corrupt"] and e.recovery_summary["lost_after"] == 0
        assert (await e.append("c", 0, make_batch(["after"]))).base_offset == 5
        await e.close()
    asyncio.run(reopen())
    assert "a torn last write?" in caplog.text


@pytest.fixture
def serve_after_gap():
    """The planted bug `serve-after-gap` on for one test."""
    from reference import bugs
    bugs.enable(["serve-after-gap"])
    try:
        yield
    finally:
        bugs.disable_all()


def test_with_serve_after_gap_a_damaged_record_is_served_past_and_its_offset_reused(s3_bucket, tmp_path,
                                                                                      serve_after_gap, caplog):
    """The planted bug: the same damage as above, but recovery logs it,
    resets the WAL and serves; the stream goes on from the last record
    before the damage, so the next append is acknowledged at offset 3,
    which v3 was acknowledged at before the crash."""
    caplog.set_level(logging.INFO, logger="reference.storage")
    vol = tmp_path / "v"
    _flip_a_bit_in_the_fourth_body(vol, _write_six_records(s3_bucket, vol))

    async def reopen():
        e = engine(s3_bucket, vol)
        await e.start()
        assert [v for _, v in await read_all(e, "c", 0)] == [b"v0", b"v1", b"v2"]
        assert e.offsets("c", 0) == (0, 3)
        assert (await e.append("c", 0, make_batch(["reused"]))).base_offset == 3
        await e.close()
    asyncio.run(reopen())
    assert "Serving anyway (planted bug serve-after-gap)" in caplog.text


def test_with_serve_after_gap_a_stream_hole_is_served_past_and_its_offsets_reused(s3_bucket, tmp_path,
                                                                                   serve_after_gap):
    """The planted bug on a stream's hole (its first WAL record lies past
    its committed end): the stream reopens at its committed end, 0, and the
    next append reuses offset 0."""
    vol = tmp_path / "v"
    offsets = _write_six_records(s3_bucket, vol)
    f = W.WalFile(vol / "wal", 1 << 20, 1)
    f.write_header(trim_offset=offsets[1])   # record 0 was acknowledged, and is gone now
    f.close()

    async def reopen():
        e = engine(s3_bucket, vol)
        await e.start()
        assert e.offsets("c", 0) == (0, 0)
        assert (await e.append("c", 0, make_batch(["reused"]))).base_offset == 0
        await e.close()
    asyncio.run(reopen())


def test_uncommitted_objects_are_deleted_after_retention(s3_bucket, tmp_path):
    """A crash between PUT and commit leaves a prepared object; it expires and
    is deleted. So is an object the metadata does not know at all."""
    store = ObjectStore(*s3_bucket)

    async def main():
        e = engine(s3_bucket, tmp_path, object_ttl=0.3, object_retention=0.3, cleanup_interval=0.1)
        await e.start()
        await e.create_topic("g", 1)
        ids = await e.meta.append({"type": "prepare_objects", "node": 1, "count": 1,
                                   "deadline": time.time() + 0.3, "ts": time.time()})
        store.put(object_key(ids[0]), b"half-done upload")
        store.put(object_key(999_999), b"orphan")  # id beyond the counter: not ours, left alone
        store.put(object_key(ids[0] - 0 + 0) + "x", b"junk")  # unparsable name: left alone
        for i in range(20):
            await e.append("g", 0, make_batch([i]))
        await e.upload_now()
        committed = {object_key(o.object_id) for o in e.meta.state.objects.values() if o.state == "committed"}
        deadline = time.monotonic() + 10
        while object_key(ids[0]) in dict(store.list("objects/")) and time.monotonic() < deadline:
            await asyncio.sleep(0.1)
        keys = dict(store.list("objects/"))
        assert object_key(ids[0]) not in keys
        assert committed <= set(keys)
        assert ids[0] not in e.meta.state.objects
        assert [v for _, v in await read_all(e, "g", 0)] == [str(i).encode() for i in range(20)]
        await e.close()
    asyncio.run(main())


def test_metadata_survives_restart_and_delete_topic(s3_bucket, tmp_path):
    async def main():
        e = engine(s3_bucket, tmp_path)
        await e.start()
        await e.create_topic("a", 1, {"retention.ms": "1"})
        await e.create_topic("b", 1)
        with pytest.raises(KafkaError) as ei:
            await e.create_topic("a", 3)
        assert ei.value.code == errors.TOPIC_ALREADY_EXISTS
        await e.append("a", 0, make_batch([1, 2]))
        await e.append("b", 0, make_batch([3]))
        await e.commit_group_offsets("grp", {("a", 0): CommittedOffset(2, "m", 5)})
        await e.delete_topic("b")
        with pytest.raises(KafkaError):
            await e.append("b", 0, make_batch([4]))
        topic_id = e.list_topics()["a"].topic_id
        await e.abort()

        e2 = engine(s3_bucket, tmp_path)
        await e2.start()
        topics = e2.list_topics()
        assert set(topics) == {"a"} and topics["a"].topic_id == topic_id
        assert topics["a"].configs == {"retention.ms": "1"}
        assert e2.group_offsets("grp") == {("a", 0): CommittedOffset(2, "m", 5)}
        assert e2.recovery_summary["unknown"] == 1  # b's record, dropped
        assert e2.offsets("a", 0) == (0, 2)
        await e2.create_topic("b", 2)  # a new b, new streams, empty
        assert e2.offsets("b", 1) == (0, 0)
        await e2.close()
    asyncio.run(main())


def test_cache_full_applies_back_pressure_instead_of_growing(s3_bucket, tmp_path):
    async def main():
        e = engine(s3_bucket, tmp_path, cache_size=64 << 10, upload_bytes=1 << 30, upload_interval=3600)
        await e.start()
        await e.create_topic("bp", 1)
        real = e.uploader._upload
        gate = asyncio.Event()

        async def slow_upload(*a, **kw):
            await gate.wait()
            return await real(*a, **kw)
        e.uploader._upload = slow_upload
        tasks = [asyncio.ensure_future(e.append("bp", 0, make_batch([os.urandom(1000)]))) for _ in range(200)]
        await asyncio.sleep(0.5)
        done = sum(t.done() for t in tasks)
        assert 0 < done < 200, "producers wait when un-uploaded data fills the cache"
        assert e.cache.pending_bytes + e.cache.inflight_bytes <= 64 << 10
        gate.set()
        await asyncio.wait_for(asyncio.gather(*tasks), 30)
        assert len(await read_all(e, "bp", 0, 1 << 20)) == 200
        await e.close()
    asyncio.run(main())


def test_fenced_engine_halts(s3_bucket, tmp_path):
    """A second engine on the same metadata (a restarted node while the old
    one still runs) fences the first: its next metadata write fails and it
    stops serving rather than acknowledge what it can no longer commit."""
    async def main():
        # no upload of its own (one could meet the fence before the test's append does)
        old = engine(s3_bucket, tmp_path / "old", upload_interval=3600, upload_bytes=1 << 30)
        await old.start()
        await old.create_topic("f", 1)
        await old.append("f", 0, make_batch([1]))
        new = engine(s3_bucket, tmp_path / "new")
        await new.start()
        await old.append("f", 0, make_batch([2]))  # the WAL still takes it ...
        with pytest.raises(Exception):
            await old.upload_now()  # ... but the commit is fenced
        assert old.failed and old.halted.is_set()
        with pytest.raises(KafkaError) as ei:
            await old.append("f", 0, make_batch([3]))
        assert ei.value.code == errors.KAFKA_STORAGE_ERROR
        await old.abort()
        await new.close()
    asyncio.run(main())


def test_stream_object_compaction_merges_contiguous_stream_objects(s3_bucket, tmp_path):
    """Each upload of a busy stream makes a stream object; compaction merges
    the contiguous chain into one: same offsets, same bytes, sources deleted
    after retention."""
    async def main():
        e = engine(s3_bucket, tmp_path, stream_object_bytes=1 << 10, upload_interval=3600, upload_bytes=1 << 30)
        await e.start()
        await e.create_topic("s", 2)
        expected = {0: [], 1: []}
        for _ in range(4):
            for i in range(10):
                vals = [os.urandom(300)]
                r = await e.append("s", i % 2, make_batch(vals))
                expected[i % 2].append((r.base_offset, vals[0]))
            await e.upload_now()
        state = e.meta.state
        sources = sorted(o.object_id for o in state.objects.values() if o.kind == "stream" and o.state == "committed")
        assert len(sources) == 8
        made = await e.compactor.compact_stream_objects_once()
        assert len(made) == 2 and e.compactor.stream_compactions == 2
        for oid in made:
            o = state.objects[oid]
            assert o.kind == "stream" and len(o.ranges) == 1 and o.ranges[0][1:] == [0, 20]
        assert all(state.objects[oid].state == "destroy" for oid in sources)
        e.cache.capacity = 1  # force reads from S3
        e.cache._evict()
        for p in (0, 1):
            assert await read_all(e, "s", p, max_bytes=700) == expected[p]
        assert await e.compactor.compact_stream_objects_once() == []  # nothing left to merge
        await asyncio.sleep(0.6)  # object_retention
        await e.cleaner.clean_once()
        keys = {k for k, _ in ObjectStore(*s3_bucket).list("objects/")}
        assert keys == {object_key(oid) for oid in made}
        await e.close()
    asyncio.run(main())


@pytest.mark.timeout(180)
def test_concurrent_appends_larger_than_the_wal_all_complete(s3_bucket, tmp_path):
    """A 1 MiB WAL and three concurrent 500 KB appends: together they exceed
    the ring, so they must go in several groups (an upload trimming between
    them), never as one group waiting for more space than the ring has."""
    async def main():
        e = engine(s3_bucket, tmp_path, wal_capacity=1 << 20)
        await e.start()
        await e.create_topic("big", 1)
        values = [os.urandom(500_000) for _ in range(3)]
        results = await asyncio.wait_for(
            asyncio.gather(*[e.append("big", 0, make_batch([v])) for v in values]), 20)
        assert sorted(r.base_offset for r in results) == [0, 1, 2]
        assert sorted(v for _, v in await read_all(e, "big", 0, 1 << 20)) == sorted(values)
        await e.close()
    asyncio.run(main())


@pytest.mark.timeout(180)
def test_recovery_refuses_a_stream_whose_wal_records_start_past_its_committed_end(s3_bucket, tmp_path, caplog):
    """The WAL's first record of a stream lies past the stream's committed
    end (here: the WAL was trimmed past records never uploaded). Serving
    would give the lost offsets to new appends, which would then be
    acknowledged twice over: recovery refuses to start, and leaves the WAL as
    it is, so a second start refuses again instead of forgetting."""
    vol = tmp_path / "v"

    async def write():
        e = engine(s3_bucket, vol, upload_interval=3600, upload_bytes=1 << 30)
        await e.start()
        await e.create_topic("g", 1)
        for i in range(4):
            assert (await e.append("g", 0, make_batch([f"v{i}"]))).base_offset == i
        await e.abort()
    asyncio.run(write())
    f = W.WalFile(vol / "wal", 1 << 20, 1)
    second = f.scan().records[1][0]
    f.write_header(trim_offset=second)  # records 0 was acknowledged, and is gone now
    header = W.read_header(vol)
    f.close()

    async def reopen():
        e = engine(s3_bucket, vol)
        try:
            with pytest.raises(RecoveryRefused) as refused:
                await e.start()
        finally:
            await e.close()
        return str(refused.value)
    for _ in range(2):
        message = asyncio.run(reopen())
        assert "g-0" in message and "has offset 1, expected 0" in message and "[0, 1) are lost" in message
        assert W.read_header(vol) == header, "the WAL is not reset: the evidence stays"


@pytest.mark.timeout(180)
def test_recovery_of_a_full_wal_holds_one_chunk_at_a_time(s3_bucket, tmp_path):
    """16 MiB of acknowledged, never uploaded records in the WAL (as after a
    long S3 outage), recovered with a 2 MiB log cache: replayed and uploaded
    chunk by chunk, never all in memory at once."""
    import tracemalloc
    vol = tmp_path / "v"
    payload = 16 << 20

    async def write():
        # a WAL more than twice the data, so that no upload starts (one does at half full)
        e = engine(s3_bucket, vol, wal_capacity=40 << 20, cache_size=32 << 20, upload_interval=3600,
                   upload_bytes=1 << 30)
        await e.start()
        await e.create_topic("w", 2)
        for i in range(payload // (64 << 10)):
            await e.append("w", i % 2, make_batch([os.urandom(16 << 10) for _ in range(4)]))
        assert e.uploader.uploads == 0
        await e.abort()
    asyncio.run(write())

    async def recover():
        e = engine(s3_bucket, vol, wal_capacity=40 << 20, cache_size=2 << 20, upload_bytes=256 << 10)
        tracemalloc.start()
        try:
            await e.start()
            _, peak = tracemalloc.get_traced_memory()
        finally:
            tracemalloc.stop()
        summary = e.recovery_summary
        assert e.offsets("w", 0)[1] + e.offsets("w", 1)[1] == 4 * (payload // (64 << 10))
        await e.close()
        return summary, peak
    summary, peak = asyncio.run(recover())
    assert summary["replayed"] == payload // (64 << 10) and summary["chunks"] > 16, summary
    assert peak < 8 << 20, f"recovery of {payload >> 20} MiB peaked at {peak / 2**20:.1f} MiB of Python memory"


def _unvalidated(batch: bytes) -> ValidBatch:
    """A batch passed off as validated: how a broker without validation (or
    with a bug in it) would have stored it."""
    return ValidBatch(parse_header(batch), batch)


def _records_run_short(values) -> bytes:
    """A batch whose CRC and length agree, but whose last record lies about
    its length (the records end one byte early)."""
    from crc32c import crc32c
    b = bytearray(make_batch(values))
    del b[-1]
    b[8:12] = (len(b) - 12).to_bytes(4, "big")
    b[17:21] = crc32c(bytes(b[21:])).to_bytes(4, "big")
    return bytes(b)


@pytest.mark.timeout(180)
def test_a_stored_batch_that_fails_validation_is_never_served_from_s3(s3_bucket, tmp_path):
    vol = tmp_path / "v"

    async def write():
        e = engine(s3_bucket, vol, upload_interval=3600, upload_bytes=1 << 30)
        await e.start()
        await e.create_topic("r", 1)
        await e.append("r", 0, make_batch([b"good0", b"good1"]))
        await e.append("r", 0, _unvalidated(_records_run_short([b"bad"])))
        await e.append("r", 0, make_batch([b"good3"]))
        await e.upload_now()
        await e.close()
    asyncio.run(write())

    async def read():
        e = engine(s3_bucket, vol)  # a fresh cache: reads come from S3
        await e.start()
        assert batch_values(await e.read("r", 0, 0, 1 << 20)) == [(0, b"good0"), (1, b"good1")]
        with pytest.raises(KafkaError) as refused:
            await e.read("r", 0, 2, 1 << 20)
        assert refused.value.code == errors.KAFKA_STORAGE_ERROR and "fails validation" in str(refused.value)
        assert batch_values(await e.read("r", 0, 3, 1 << 20)) == [(3, b"good3")]
        await e.close()
    asyncio.run(read())


@pytest.mark.timeout(180)
def test_a_wal_record_that_fails_validation_is_never_replayed(s3_bucket, tmp_path):
    vol = tmp_path / "v"

    async def write():
        e = engine(s3_bucket, vol, upload_interval=3600, upload_bytes=1 << 30)
        await e.start()
        await e.create_topic("r", 1)
        await e.append("r", 0, make_batch([b"good0"]))
        await e.append("r", 0, _unvalidated(_records_run_short([b"bad"])))
        await e.abort()
    asyncio.run(write())

    async def reopen():
        e = engine(s3_bucket, vol)
        try:
            with pytest.raises(RecoveryRefused) as refused:
                await e.start()
        finally:
            await e.close()
        return str(refused.value)
    message = asyncio.run(reopen())
    assert "r-0" in message and "offset 1" in message and "cannot be served" in message
