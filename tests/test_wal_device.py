"""The WAL on a raw block device (`--wal-device`): O_DIRECT | O_DSYNC with
aligned buffers, on a real loop device made for each test (and detached
after it). Skipped, with the reason, where loop devices cannot be made."""
from __future__ import annotations

import asyncio
import os
import shutil
import subprocess
import time

import pytest

from reference.storage import wal as W
from reference.storage.engine import EngineConfig, S3Engine
from reference.storage.testing import batch_values, make_batch

MiB = 1 << 20


def _make_loop_device(backing, size: int) -> str:
    if shutil.which("losetup") is None:
        pytest.skip("losetup is not installed: cannot make a loop device for the block-device WAL")
    with open(backing, "wb") as f:
        f.truncate(size)  # sparse: reads as zeros, a blank device
    r = subprocess.run(["losetup", "-f", "--show", str(backing)], capture_output=True, text=True)
    if r.returncode != 0:
        pytest.skip(f"losetup could not attach a loop device (needs root and /dev/loop*): {r.stderr.strip()}")
    return r.stdout.strip()


@pytest.fixture
def loop_device(tmp_path):
    """A blank 8 MiB loop device, detached at the end of the test."""
    dev = _make_loop_device(tmp_path / "wal.img", 8 * MiB)
    try:
        yield dev
    finally:
        subprocess.run(["losetup", "-d", dev], check=False, capture_output=True)


def test_device_ring_roundtrip_capacity_and_reopen(loop_device):
    dev = W.WalDevice(loop_device, 4 * MiB, node_id=1)  # configured smaller than the device: 4 MiB
    assert dev.created and dev.capacity == 4 * MiB
    bodies = [os.urandom(n) for n in (1, 100, 5000, 20, 70000)]
    pos = 0
    for i in range(0, len(bodies), 2):
        buf, _ = W.frame_records(pos, bodies[i:i + 2])
        dev.write_and_sync(pos, buf)
        pos += len(buf)
    scan = dev.scan()
    assert [b for _, b in scan.records] == bodies and scan.end == pos and not scan.corrupt
    dev.write_header(trim_offset=pos)
    dev.close()
    # the header is on the device (read with ordinary buffered I/O, as an operator would)
    assert W.read_header(loop_device)["trim_offset"] == pos
    again = W.WalDevice(loop_device, 2 << 30, node_id=1)  # an existing WAL keeps its capacity
    assert not again.created and again.capacity == 4 * MiB and again.header.trim_offset == pos
    again.close()


def test_device_capacity_defaults_to_device_size(loop_device):
    dev = W.WalDevice(loop_device, 2 << 30, node_id=1)  # default 2 GiB > device: the device's size
    assert dev.capacity == 8 * MiB
    dev.close()


def test_device_refuses_to_format_foreign_data(loop_device):
    with open(loop_device, "r+b") as f:
        f.write(b"someone else's file system")
    with pytest.raises(W.WalError, match="not blank"):
        W.WalDevice(loop_device, 0, node_id=1)


@pytest.fixture
def no_direct_io_file(tmp_path):
    """A file on ramfs, which has no O_DIRECT (tmpfs gained it in Linux 6.6)."""
    mnt = tmp_path / "ramfs"
    mnt.mkdir()
    r = subprocess.run(["mount", "-t", "ramfs", "none", str(mnt)], capture_output=True, text=True)
    if r.returncode != 0:
        pytest.skip(f"cannot mount a ramfs to test a file system without O_DIRECT: {r.stderr.strip()}")
    try:
        path = mnt / "wal"
        with open(path, "wb") as f:
            f.truncate(4 * MiB)
        yield path
    finally:
        subprocess.run(["umount", str(mnt)], check=False, capture_output=True)


def test_device_without_o_direct_is_a_clear_error(no_direct_io_file, tmp_path, s3_bucket):
    with pytest.raises(W.WalError, match="O_DIRECT is not supported"):
        W.WalDevice(no_direct_io_file, 4 * MiB, node_id=1)

    async def main():  # the engine refuses to start with the same message, it does not crash
        e = S3Engine(1, tmp_path / "vol", *s3_bucket, EngineConfig(wal_device=str(no_direct_io_file)))
        with pytest.raises(W.WalError, match="O_DIRECT is not supported"):
            await e.start()
        await e.close()
    asyncio.run(main())


def test_engine_on_device_crash_recovery_exactly_once(loop_device, s3_bucket, tmp_path):
    endpoint, bucket = s3_bucket
    config = EngineConfig(wal_device=loop_device, cache_size=4 * MiB, upload_bytes=64 << 10, upload_interval=0.3,
                          block_cache_size=MiB, data_block_bytes=8 << 10, stream_object_bytes=256 << 10,
                          object_ttl=30, object_retention=0.5, cleanup_interval=0.2, close_upload_timeout=10)
    vol = tmp_path / "vol"
    expected: dict[int, list] = {0: [], 1: [], 2: []}
    n = 0

    async def produce(e, p, k):
        nonlocal n
        vals = [f"p{p}-{n + i}".encode() for i in range(k)]
        n += k
        r = await e.append("t", p, make_batch(vals))
        expected[p].extend((r.base_offset + i, v) for i, v in enumerate(vals))

    async def phase1():
        e = S3Engine(1, vol, endpoint, bucket, config)
        await e.start()
        assert e.wal_file.capacity == 8 * MiB and not (vol / "wal").exists()
        await e.create_topic("t", 3)
        before = e.uploader.uploads
        await asyncio.gather(*[produce(e, i % 3, 1 + i % 4) for i in range(200)])
        deadline = time.monotonic() + 10
        while e.uploader.uploads == before and time.monotonic() < deadline:
            await asyncio.sleep(0.02)
        await e.upload_now()
        e.uploader._last = time.monotonic() + 3600  # from here on: only in the WAL
        await asyncio.gather(*[produce(e, i % 3, 2) for i in range(60)])
        assert e.stats()["wal_used"] > 0 and e.wal.writes > 1
        await e.abort()  # SIGKILL-like

    asyncio.run(phase1())
    assert W.read_header(loop_device)["shutdown"] == "crash"

    async def phase2():
        e = S3Engine(1, vol, endpoint, bucket, config)
        await e.start()
        rec = e.recovery_summary
        assert rec["replayed"] == 60 and not rec["corrupt"] and not rec["errors"]
        for p in range(3):
            start, hw = e.offsets("t", p)
            got = batch_values(await e.read("t", p, start, 1 << 30))
            assert got == expected[p], f"partition {p}: every acked record once, in order, at its offset"
            assert hw == len(expected[p])
        await produce(e, 0, 3)  # and it keeps going on the device
        await e.close()

    asyncio.run(phase2())
    assert W.read_header(loop_device)["shutdown"] == "clean"


@pytest.fixture(params=["loop device", "file with O_DIRECT"])
def formattable(request, tmp_path):
    """A blank loop device (cleared with BLKZEROOUT), or a plain file on a
    file system with direct I/O (no BLKZEROOUT there: cleared by writing zeros)."""
    if request.param == "loop device":
        yield request.getfixturevalue("loop_device")
        return
    path = tmp_path / "wal.img"
    with open(path, "wb") as f:
        f.truncate(8 * MiB)
    try:
        os.close(os.open(path, os.O_RDWR | os.O_DIRECT))
    except OSError as e:
        pytest.skip(f"{tmp_path} has no O_DIRECT: {e}")
    yield str(path)


@pytest.mark.timeout(180)
def test_formatting_clears_the_records_of_an_earlier_wal(formattable):
    """An operator zeroes the header area of a device that held a WAL (as the
    refusal to format says to): its old records must not come back as
    records of the new WAL, which starts again at logical offset 0."""
    loop_device = formattable
    dev = W.WalDevice(loop_device, 4 * MiB, node_id=1)
    buf, _ = W.frame_records(0, [b"old record %d" % i for i in range(5)])
    dev.write_and_sync(0, buf)
    assert len(dev.scan().records) == 5
    dev.close()
    with open(loop_device, "r+b") as f:
        f.write(bytes(W.HEADER_AREA))
        f.flush()
        os.fsync(f.fileno())
    fresh = W.WalDevice(loop_device, 4 * MiB, node_id=2)
    try:
        assert fresh.created
        scan = fresh.scan()
        assert scan.records == [] and not scan.corrupt, "records of the earlier WAL replayed as this one's"
    finally:
        fresh.close()
