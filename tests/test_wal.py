"""The WAL on its own: framing, headers, ring wrap, torn and corrupt records,
group commit and back-pressure. No S3 needed."""
from __future__ import annotations

import asyncio
import os

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from reference.storage import wal as W


def test_header_roundtrip_and_newest_wins():
    h1 = W.WalHeader(1 << 20, 4096, 10, 5, 3, 7, W.SHUTDOWN_CRASH)
    h2 = W.WalHeader(1 << 20, 8192, 20, 6, 3, 7, W.SHUTDOWN_CLEAN)
    a, b = W.encode_header(h1), W.encode_header(h2)
    assert len(a) == W.BLOCK
    assert W.decode_header(a) == h1
    assert W.newest_header(a, b) == h2
    assert W.newest_header(b, a) == h2
    torn = bytearray(b)
    torn[20] ^= 0x01
    assert W.decode_header(bytes(torn)) is None
    assert W.newest_header(a, bytes(torn)) == h1  # the torn newer copy loses
    assert W.newest_header(bytes(4096), bytes(4096)) is None


@given(st.lists(st.binary(max_size=9000), min_size=1, max_size=20), st.integers(0, 1000))
@settings(max_examples=100, deadline=None)
def test_framing_is_block_aligned_and_parses_back(bodies, start_block):
    start = start_block * W.BLOCK
    buf, spans = W.frame_records(start, bodies)
    assert len(buf) % W.BLOCK == 0
    assert len(buf) == W.framed_size([len(b) for b in bodies])
    pos = start
    got = []
    while pos - start < len(buf):
        off = pos - start
        c = W.check_record_header(buf[off:off + W.RECORD_HEADER_SIZE], pos)
        assert c.ok
        if not c.padding:
            body = buf[off + 24:off + 24 + c.body_length]
            got.append(body)
        pos += 24 + c.body_length
    assert got == bodies
    assert [s[0] for s in spans] == [start + sum(24 + len(b) for b in bodies[:i]) for i in range(len(bodies))]


def _open(tmp_path, capacity=W.MIN_CAPACITY * 2):
    return W.WalFile(tmp_path / "wal", capacity, node_id=1)


def _write(f: W.WalFile, start: int, bodies):
    buf, spans = W.frame_records(start, bodies)
    f.write_and_sync(start, buf)
    return start + len(buf), spans


def test_scan_reads_back_and_reopen(tmp_path):
    f = _open(tmp_path)
    bodies = [os.urandom(n) for n in (1, 100, 5000, 20)]
    end, _ = _write(f, 0, bodies[:2])
    end, _ = _write(f, end, bodies[2:])
    r = f.scan()
    assert [b for _, b in r.records] == bodies
    assert r.end == end and not r.corrupt
    f.close()
    f2 = W.WalFile(tmp_path / "wal", 999999, node_id=1)  # capacity comes from the file
    assert f2.capacity == W.MIN_CAPACITY * 2
    assert [b for _, b in f2.scan().records] == bodies


def test_ring_wraps_and_stale_lap_is_not_replayed(tmp_path):
    f = _open(tmp_path)
    ring = f.ring
    pos, written = 0, []
    # fill more than two laps, trimming as we go
    for i in range(40):
        body = bytes([i]) * 3000
        new, _ = _write(f, pos, [body])
        written.append((pos, body))
        pos = new
        if pos - f.header.trim_offset > ring // 2:
            f.write_header(trim_offset=pos - W.BLOCK * 2)
    r = f.scan()
    assert r.records, "something after the trim offset"
    assert r.records == [(o, b) for o, b in written if o >= f.header.trim_offset]
    assert r.end == pos
    # the physical bytes after `pos` hold records of an older lap: rejected
    assert "stale" in r.stop_reason or "no valid" in r.stop_reason
    assert pos > ring  # really wrapped


def test_torn_tail_is_detected_and_not_served(tmp_path, caplog):
    f = _open(tmp_path)
    end1, _ = _write(f, 0, [b"a" * 100, b"b" * 100])
    end2, spans = _write(f, end1, [b"c" * 6000])
    # tear the last write: only its first 4 KiB block reached the disk
    phys = W.HEADER_AREA + end1 + 4096
    os.pwrite(f.fd, bytes(4096), phys)
    r = f.scan()
    assert [b for _, b in r.records] == [b"a" * 100, b"b" * 100]
    assert r.end == end1 and r.corrupt and "CRC" in r.stop_reason


def test_flipped_bit_in_body_stops_scan_and_reports_loss(tmp_path):
    f = _open(tmp_path)
    pos, offs = 0, []
    for i in range(5):
        pos2, spans = _write(f, pos, [bytes([65 + i]) * 200])
        offs.append(spans[0][0])
        pos = pos2
    # flip one bit in the body of the third record
    phys = W.HEADER_AREA + offs[2] + 24 + 50
    b = bytearray(os.pread(f.fd, 1, phys))
    b[0] ^= 0x10
    os.pwrite(f.fd, bytes(b), phys)
    r = f.scan()
    assert [x for _, x in r.records] == [b"A" * 200, b"B" * 200]
    assert r.corrupt and "body CRC" in r.stop_reason
    assert r.lost_after == 2  # the two valid records after it are reported lost
    assert r.lost_span == (offs[3], offs[4] + 24 + 200) and not r.unreadable


@pytest.mark.parametrize("bad_block", [0, 1], ids=["its-header-block", "its-second-block"])
def test_an_unreadable_block_stops_the_scan_and_the_probe_reads_around_it(tmp_path, monkeypatch, bad_block):
    """EIO on a block of the third record (a bad sector; the record spans
    two blocks): the scan stops at that record as at a damaged one, and the
    probe beyond it reads around the bad block and finds the two records
    after it."""
    from reference.storage import disk
    f = _open(tmp_path)
    pos, offs = 0, []
    for i in range(5):
        pos, spans = _write(f, pos, [bytes([65 + i]) * (6000 if i == 2 else 200)])
        offs.append(spans[0][0])
    bad = W.HEADER_AREA + offs[2] % f.ring + bad_block * W.BLOCK
    from reference.storage.testing import pread_failing_at
    monkeypatch.setattr(disk.io, "pread", pread_failing_at(disk.io.pread, bad, W.BLOCK))
    r = f.scan()
    assert [x for _, x in r.records] == [b"A" * 200, b"B" * 200]
    assert r.end == offs[2] and r.corrupt and r.unreadable and "unreadable" in r.stop_reason
    assert r.lost_after == 2 and r.lost_span == (offs[3], offs[4] + 24 + 200)


def test_flipped_bit_in_record_header(tmp_path):
    f = _open(tmp_path)
    end, spans = _write(f, 0, [b"x" * 10])
    _write(f, end, [b"y" * 10])
    phys = W.HEADER_AREA + end + 6  # inside the second record's length field
    b = bytearray(os.pread(f.fd, 1, phys))
    b[0] ^= 0x01
    os.pwrite(f.fd, bytes(b), phys)
    r = f.scan()
    assert [x for _, x in r.records] == [b"x" * 10]
    assert r.end == end


def test_read_header_reports_trim(tmp_path):
    f = _open(tmp_path)
    f.write_header(trim_offset=12288)
    f.write_header(trim_offset=16384, shutdown=W.SHUTDOWN_CLEAN)
    h = W.read_header(tmp_path)
    assert h["trim_offset"] == 16384 and h["shutdown"] == "clean" and h["node_id"] == 1
    # tear the newest copy: the previous one wins
    os.pwrite(f.fd, bytes(64), h["slot"] * W.BLOCK)
    assert W.read_header(tmp_path / "wal")["trim_offset"] == 12288


def test_group_commit_batches_concurrent_appends(tmp_path):
    async def main():
        f = _open(tmp_path, 1 << 20)
        g = W.GroupCommitWal(f, 0)
        g.start()
        order = []
        futs = [g.append(f"r{i}".encode(), lambda s, e, i=i: order.append(i)) for i in range(500)]
        res = await asyncio.gather(*futs)
        assert order == list(range(500))
        assert g.writes <= 3  # 500 appends, a handful of fsyncs
        assert res == sorted(res)
        await g.close()
        return res
    asyncio.run(main())
    f = W.WalFile(tmp_path / "wal", 1 << 20, 1)
    assert [b for _, b in f.scan().records] == [f"r{i}".encode() for i in range(500)]
    assert W.read_header(tmp_path)["shutdown"] == "clean"


def test_full_wal_applies_back_pressure_until_trim(tmp_path):
    async def main():
        f = _open(tmp_path, W.MIN_CAPACITY)
        asked = []
        g = W.GroupCommitWal(f, 0, on_space_needed=lambda: asked.append(1))
        g.start()
        body = b"z" * 5000
        done = []
        for _ in range(8):  # 8 x 8 KiB framed = the 64 KiB ring
            done.append(await g.append(body))
        blocked = g.append(body)
        await asyncio.sleep(0.2)
        assert not blocked.done() and asked, "the WAL is full: the append waits and asks for an upload"
        await g.trim(done[-1][1])
        await asyncio.wait_for(blocked, 2)
        with pytest.raises(W.WalFull):
            g.append(b"q" * g.ring)
        await g.close()
    asyncio.run(main())


def test_write_error_fails_pending_appends(tmp_path):
    async def main():
        f = _open(tmp_path)
        g = W.GroupCommitWal(f, 0)

        def broken(*a):
            raise OSError(5, "Input/output error")
        f.write_and_sync = broken
        g.start()
        with pytest.raises(W.WalError):
            await g.append(b"x")
        with pytest.raises(W.WalError):
            g.append(b"y")
        await g.close(clean=False)
    asyncio.run(main())


@pytest.mark.timeout(180)
def test_group_larger_than_the_ring_is_split_not_stuck(tmp_path):
    """Three concurrent 500 KB appends on a 1 MiB WAL: one group of all three
    would need more than the whole ring, and wait for space for ever."""
    async def main():
        f = _open(tmp_path, 1 << 20)
        want_space = asyncio.Event()
        g = W.GroupCommitWal(f, 0, on_space_needed=want_space.set)
        g.start()

        async def uploader():  # as the engine's: upload what is durable, then trim it
            while True:
                await want_space.wait()
                want_space.clear()
                await g.trim(g.next_offset)
        trimmer = asyncio.create_task(uploader())
        bodies = [os.urandom(500_000) for _ in range(3)]
        spans = await asyncio.wait_for(asyncio.gather(*[g.append(b) for b in bodies]), 10)
        assert len(spans) == 3 and g.writes >= 2
        assert all(end - start <= g.ring for start, end in spans)
        trimmer.cancel()
        await asyncio.gather(trimmer, return_exceptions=True)
        await g.close()
    asyncio.run(main())


@pytest.mark.timeout(180)
def test_new_wal_file_is_renamed_into_place_and_its_directory_fsynced(tmp_path):
    """Watched with strace: the WAL is made whole under a temporary name and
    fsynced, renamed into place, and then its directory is fsynced, without
    which the new file's name could vanish in a crash along with every
    record acknowledged in it."""
    import re
    import shutil
    import subprocess
    import sys
    if shutil.which("strace") is None:
        pytest.skip("strace is not installed (setup.sh --test installs it)")
    trace = tmp_path / "trace"
    vol = tmp_path / "vol"
    vol.mkdir()
    code = ("import sys; from reference.storage.wal import WalFile; "
            f"WalFile({str(vol / 'wal')!r}, {W.MIN_CAPACITY}, 1).close()")
    r = subprocess.run(["strace", "-f", "-qq", "-e", "trace=openat,fsync,fdatasync,rename,renameat,renameat2",
                        "-o", str(trace), sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stderr
    lines = [line.split(None, 1)[1] for line in trace.read_text().splitlines() if line.split(None, 1)[1:]]
    rename = next(i for i, line in enumerate(lines) if re.match(r'rename(at2?)?\(.*"[^"]*wal\.new".*"[^"]*wal"', line))
    opened_dirs = {m.group(2) for line in lines[rename:]
                   if (m := re.match(r'openat\(AT_FDCWD, "([^"]*)", [^)]*O_DIRECTORY[^)]*\) = (\d+)$', line))
                   and m.group(1) == str(vol)}
    assert any(re.match(rf"fsync\({fd}\)\s+= 0", line) for line in lines[rename:] for fd in opened_dirs), \
        "the WAL's directory is fsynced after the file is renamed into place"
    file_fsyncs = [i for i, line in enumerate(lines[:rename]) if line.startswith("fsync(")]
    assert file_fsyncs, "the file itself is fsynced before it gets its name"
    assert W.WalFile(vol / "wal", W.MIN_CAPACITY, 1).scan().records == []
    assert not (vol / "wal.new").exists()
