"""The write-ahead log: one shared ring buffer per node, on its volume.

Every partition's appends on a node go through this one WAL. A produce is
acknowledged only after its record is durable here (written and fsynced);
the WAL is trimmed only after the data it holds has been uploaded to S3 and
committed in the metadata. So the WAL stays small (bounded by its capacity)
and a crashed node's acknowledged writes are always either in S3 or in its
WAL, from which recovery uploads them.

File layout (`<volume>/wal`, fixed size = capacity):

    [0, 4096)       header copy A  } written alternately (sequence parity);
    [4096, 8192)    header copy B  } the valid copy with the newest sequence wins
    [8192, capacity) the ring: logical offset o lives at 8192 + o mod (capacity - 8192)

Header (big-endian): magic u32, version u16, shutdown u8, pad u8,
capacity u64, trim offset u64, last write time ns u64, sequence u64,
node id i32, node epoch u64, CRC32C u32 of the preceding bytes.

Record: a 24-byte header -- magic u32, body length u32, logical offset u64
(of the record itself), body CRC32C u32, header CRC32C u32 (of the first 20
bytes) -- then the body. A padding record (its own magic) fills each write up
to the next 4 KiB boundary, so every group-commit write covers whole blocks
and never rewrites a block that holds already-acknowledged records (a torn
rewrite could otherwise destroy them). The logical offset inside each header
tells a record of the current lap from a stale one of an earlier lap.

Group commit: `append()` queues a record; a single writer task takes
everything queued, frames it into one buffer, and does one pwrite + fdatasync
(in the WAL's own I/O thread), then reports every record in it durable in
order. Throughput comes from batching, latency is one fsync.
"""
from __future__ import annotations

import asyncio
import errno
import fcntl
import logging
import mmap
import os
import struct
from concurrent.futures import Executor, ThreadPoolExecutor
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Callable

from crc32c import crc32c

from reference import buggify, bugs, clock
from reference.storage import disk

log = logging.getLogger(__name__)

BLOCK = 4096
HEADER_AREA = 2 * BLOCK
HEADER_MAGIC = 0x48574C31  # "HWL1"
HEADER_VERSION = 1
HEADER = struct.Struct(">IHBxQQQQiQ")
HEADER_CRC = struct.Struct(">I")
RECORD_MAGIC = 0x87654321
PADDING_MAGIC = 0x76543210
RECORD_HEADER = struct.Struct(">IIQI")  # + header CRC u32 = 24 bytes
RECORD_HEADER_SIZE = RECORD_HEADER.size + 4
SHUTDOWN_CRASH = 0   # written at open: if still there at the next open, the node crashed
SHUTDOWN_CLEAN = 1
MIN_CAPACITY = HEADER_AREA + 16 * BLOCK
BLKZEROOUT = 0x127F  # _IO(0x12, 127): zero a byte range of a block device

assert RECORD_HEADER_SIZE == 24


class WalError(Exception):
    pass


class WalFull(WalError):
    pass


# --------------------------------------------------------------------------
# sans-I/O: header and record framing
# --------------------------------------------------------------------------

@dataclass(frozen=True)
class WalHeader:
    capacity: int
    trim_offset: int
    write_time_ns: int
    sequence: int
    node_id: int
    node_epoch: int = 0
    shutdown: int = SHUTDOWN_CRASH

    @property
    def ring_size(self) -> int:
        return self.capacity - HEADER_AREA

    @property
    def slot(self) -> int:
        return self.sequence % 2


def encode_header(h: WalHeader) -> bytes:
    body = HEADER.pack(HEADER_MAGIC, HEADER_VERSION, h.shutdown, h.capacity, h.trim_offset,
                       h.write_time_ns, h.sequence, h.node_id, h.node_epoch)
    raw = body + HEADER_CRC.pack(crc32c(body))
    return raw + bytes(BLOCK - len(raw))


def decode_header(buf: bytes) -> WalHeader | None:
    """The header in one 4 KiB block, or None if it is not a valid one."""
    n = HEADER.size
    if len(buf) < n + 4:
        return None
    (crc,) = HEADER_CRC.unpack_from(buf, n)
    if crc32c(buf[:n]) != crc:
        return None
    magic, version, shutdown, capacity, trim, wtime, seq, node_id, epoch = HEADER.unpack_from(buf, 0)
    if magic != HEADER_MAGIC or version != HEADER_VERSION:
        return None
    return WalHeader(capacity, trim, wtime, seq, node_id, epoch, shutdown)


def newest_header(block_a: bytes, block_b: bytes) -> WalHeader | None:
    valid = [h for h in (decode_header(block_a), decode_header(block_b)) if h is not None]
    return max(valid, key=lambda h: h.sequence) if valid else None


def fsync_directory(path: str | Path) -> None:
    """Make a directory's entries (a file just created or renamed) durable."""
    disk.io.fsync_directory(path)


def align_up(n: int, to: int = BLOCK) -> int:
    return (n + to - 1) // to * to


def frame_record(offset: int, body: bytes, magic: int = RECORD_MAGIC) -> bytes:
    head = RECORD_HEADER.pack(magic, len(body), offset, crc32c(body))
    return head + HEADER_CRC.pack(crc32c(head)) + body


def frame_records(start: int, bodies: list[bytes]) -> tuple[bytes, list[tuple[int, int]]]:
    """Frame bodies at logical offset `start` (block aligned), padded to a
    whole number of blocks. Returns the buffer and each record's [start, end)."""
    assert start % BLOCK == 0, start
    parts, spans, pos = [], [], start
    for body in bodies:
        rec = frame_record(pos, body)
        parts.append(rec)
        spans.append((pos, pos + len(rec)))
        pos += len(rec)
    used = pos - start
    pad = align_up(used) - used
    if 0 < pad < RECORD_HEADER_SIZE:
        pad += BLOCK
    if pad:
        parts.append(frame_record(pos, bytes(pad - RECORD_HEADER_SIZE), PADDING_MAGIC))
    buf = b"".join(parts)
    assert len(buf) % BLOCK == 0
    return buf, spans


def framed_size(body_sizes: list[int]) -> int:
    used = sum(RECORD_HEADER_SIZE + n for n in body_sizes)
    pad = align_up(used) - used
    if 0 < pad < RECORD_HEADER_SIZE:
        pad += BLOCK
    return used + pad


@dataclass(frozen=True)
class RecordCheck:
    ok: bool
    padding: bool = False
    body_length: int = 0
    body_crc: int = 0
    reason: str = ""
    looks_current: bool = False  # header valid and of this lap: a failure after it is corruption


def check_record_header(buf: bytes, expected_offset: int) -> RecordCheck:
    if len(buf) < RECORD_HEADER_SIZE:
        return RecordCheck(False, reason="truncated record header")
    magic, length, offset, body_crc = RECORD_HEADER.unpack_from(buf, 0)
    (hcrc,) = HEADER_CRC.unpack_from(buf, RECORD_HEADER.size)
    if crc32c(buf[:RECORD_HEADER.size]) != hcrc:
        if magic in (RECORD_MAGIC, PADDING_MAGIC) and offset == expected_offset:
            return RecordCheck(False, reason="record header CRC mismatch", looks_current=True)
        return RecordCheck(False, reason="no valid record header (end of log)")
    if offset != expected_offset:
        return RecordCheck(False, reason=f"stale record (its offset {offset} != {expected_offset}): end of log")
    if magic not in (RECORD_MAGIC, PADDING_MAGIC):
        return RecordCheck(False, reason=f"bad record magic {magic:#x}", looks_current=True)
    return RecordCheck(True, magic == PADDING_MAGIC, length, body_crc, looks_current=True)


@dataclass
class ScanResult:
    records: list[tuple[int, bytes]]   # (logical offset, body)
    start: int
    end: int                           # logical offset just past the last good record
    stop_reason: str
    corrupt: bool = False              # stopped at a damaged record (not a clean end)
    lost_after: int = 0                # valid-looking records found beyond the stop point
    done: bool = True                  # False: stopped at the chunk budget; scan on from `end`
    unreadable: bool = False           # the damage is a read error (EIO), not bad bytes: never a torn write
    lost_span: tuple[int, int] | None = None  # WAL offsets from the first to past the last record beyond



# --------------------------------------------------------------------------
# I/O: the WAL file
# --------------------------------------------------------------------------

def _lock_wal(fd: int, path: Path, mode: str) -> None:
    """One process per WAL: an exclusive flock, held while the file is open.
    mode "must": refuse (WalError) when another process holds it; "try":
    only warn (a node recovering a failed node's WAL on a volume that does
    not fence I/O, where the old process may still hold it); "none"."""
    if mode == "none":
        return
    try:
        disk.io.lock_exclusive(fd)
    except BlockingIOError:
        if mode == "try":
            log.warning("WAL %s is still locked by another process (a paused or dying broker on a volume "
                        "that does not fence I/O); going on", path)
            return
        disk.io.close(fd)
        raise WalError(f"WAL {path} is in use by another process (its lock is held): refusing to run a "
                       f"second process on this volume") from None


class WalFile:
    """Blocking positional I/O on the ring; called from the WAL's I/O thread."""

    def __init__(self, path: str | Path, capacity: int, node_id: int, node_epoch: int = 0, lock: str = "must"):
        self.path = Path(path)
        capacity = align_up(capacity)
        size = disk.io.size(self.path)
        existed = size is not None and size >= HEADER_AREA
        if capacity < MIN_CAPACITY and not existed:
            raise WalError(f"WAL capacity {capacity} is below the minimum {MIN_CAPACITY}")
        self.header: WalHeader
        self.created = False
        if existed:
            self.fd = disk.io.open(self.path, os.O_RDWR)
            h = newest_header(disk.io.pread(self.fd, BLOCK, 0), disk.io.pread(self.fd, BLOCK, BLOCK))
            if h is None:
                disk.io.close(self.fd)
                raise WalError(f"{self.path}: no valid WAL header in either copy; refusing to guess")
            if h.capacity != capacity and capacity:
                log.warning("WAL %s has capacity %d, configured %d: keeping the file's", self.path, h.capacity, capacity)
            if disk.io.fsize(self.fd) < h.capacity:
                disk.io.ftruncate(self.fd, h.capacity)
            self.header = h
        else:
            self.header = WalHeader(capacity, 0, clock.wall_ns(), 0, node_id, node_epoch, SHUTDOWN_CLEAN)
            self.fd = self._create(capacity)
            self.created = True
            log.info("created WAL %s, capacity %d", self.path, capacity)
        _lock_wal(self.fd, self.path, lock)
        self.capacity = self.header.capacity
        self.ring = self.capacity - HEADER_AREA

    def _create(self, capacity: int) -> int:
        """Make the file whole under a temporary name (size, both header
        copies, fsync), then rename it into place and fsync the directory:
        the name is durable only with its directory, and a crash at any point
        leaves either no WAL or a complete one, never a headerless file that
        every later start would refuse."""
        tmp = self.path.with_name(self.path.name + ".new")
        fd = disk.io.open(tmp, os.O_RDWR | os.O_CREAT | os.O_TRUNC, 0o644)
        try:
            disk.io.ftruncate(fd, capacity)
            # both copies, so a torn first header write still leaves one valid
            disk.io.pwrite(fd, encode_header(replace(self.header, sequence=1)), BLOCK)
            disk.io.pwrite(fd, encode_header(self.header), 0)
            disk.io.fsync(fd)
            disk.io.rename(tmp, self.path)
            fsync_directory(self.path.parent)
        except BaseException:
            disk.io.close(fd)
            raise
        return fd

    def close(self) -> None:
        # The descriptor is gone after close() even when close reports an
        # error (EIO from a detached volume): forget it first, so it is never
        # closed twice (its number may belong to another file by then), and
        # its lock goes with it.
        fd, self.fd = self.fd, -1
        if fd >= 0:
            try:
                disk.io.close(fd)
            except OSError as e:
                log.warning("closing WAL %s: %s (the descriptor is released all the same)", self.path, e)

    def _physical(self, logical: int) -> int:
        return HEADER_AREA + logical % self.ring

    # the two raw primitives; WalDevice replaces them with aligned O_DIRECT I/O
    def _read_at(self, phys: int, n: int) -> bytes:
        return disk.io.pread(self.fd, n, phys)

    def _write_at(self, phys: int, data) -> int:
        return disk.io.pwrite(self.fd, data, phys)

    def pread(self, logical: int, n: int) -> bytes:
        out = bytearray()
        while n > 0:
            phys = self._physical(logical)
            chunk = min(n, self.capacity - phys)
            data = self._read_at(phys, chunk)
            out += data
            if len(data) < chunk:
                break
            logical += chunk
            n -= chunk
        return bytes(out)

    def pwrite(self, logical: int, data: bytes) -> None:
        view = memoryview(data)
        while view:
            phys = self._physical(logical)
            chunk = min(len(view), self.capacity - phys)
            written = self._write_at(phys, view[:chunk])
            view = view[written:]
            logical += written

    def sync(self) -> None:
        disk.io.fdatasync(self.fd)

    def write_and_sync(self, logical: int, data: bytes) -> None:
        self.pwrite(logical, data)
        self.sync()

    def write_header(self, **changes) -> WalHeader:
        h = replace(self.header, sequence=self.header.sequence + 1, write_time_ns=clock.wall_ns(), **changes)
        self._write_at(h.slot * BLOCK, encode_header(h))
        self.sync()
        self.header = h
        return h

    def scan(self, start: int | None = None, max_bytes: int | None = None,
             probe_window: int = 64 << 20) -> ScanResult:
        """Read valid records from `start` (default: the trim offset), at most
        about `max_bytes` of them (at least one), so recovery holds one chunk
        in memory at a time, never the whole ring; stop at the first record
        that fails its checks (a torn tail, a flipped bit, a stale lap) or
        cannot be read at all (EIO: a bad sector), and then look beyond it
        for records of this lap that the stop gives up."""
        limit = self.header.trim_offset + self.ring
        start = pos = self.header.trim_offset if start is None else start
        records: list[tuple[int, bytes]] = []
        size = 0
        reason, corrupt, unreadable, done = "ring full", False, False, True
        while pos + RECORD_HEADER_SIZE <= limit:
            try:
                check = check_record_header(self.pread(pos, RECORD_HEADER_SIZE), pos)
            except OSError as e:
                reason, corrupt, unreadable = f"record at {pos}: header unreadable ({e})", True, True
                break
            if not check.ok:
                reason, corrupt = check.reason, check.looks_current
                break
            end = pos + RECORD_HEADER_SIZE + check.body_length
            if end > limit:
                reason, corrupt = f"record at {pos} runs past the ring ({check.body_length} bytes)", True
                break
            if not check.padding:
                if max_bytes is not None and records and size + check.body_length > max_bytes:
                    reason, done = "chunk full", False
                    break
                try:
                    body = self.pread(pos + RECORD_HEADER_SIZE, check.body_length)
                except OSError as e:
                    reason, corrupt, unreadable = f"record at {pos}: body unreadable ({e})", True, True
                    break
                if len(body) != check.body_length or crc32c(body) != check.body_crc:
                    reason, corrupt = f"record at {pos}: body CRC mismatch ({check.body_length} bytes)", True
                    break
                records.append((pos, body))
                size += check.body_length
            pos = end
        result = ScanResult(records, start, pos, reason, corrupt, done=done, unreadable=unreadable)
        if corrupt:
            result.lost_after, result.lost_span = self._probe_after(pos, min(limit, pos + probe_window))
        return result

    def _probe_after(self, pos: int, limit: int) -> tuple[int, tuple[int, int] | None]:
        """Count block-aligned, valid-looking records of this lap beyond a
        damaged one: acknowledged writes that the scan had to give up (every
        group commit starts a block with a record). Returns the count and
        the WAL span from the first of them to past the last. Blocks that
        cannot be read (EIO) are skipped: the records beyond a bad sector
        are what matters."""
        found, first, last_end = 0, None, None
        block = align_up(pos + 1)
        chunk = 1 << 20
        while block < limit:
            want = min(chunk, limit - block)
            try:
                data = self.pread(block, want)
            except OSError:  # a bad sector in this chunk: read it block by block, skipping the bad ones
                data = b"".join(self._read_block_or_zeros(b) for b in range(block, block + want, BLOCK))
            whole = len(data) // BLOCK * BLOCK
            if not whole:
                break
            for i in range(0, whole, BLOCK):
                c = check_record_header(data[i:i + RECORD_HEADER_SIZE], block + i)
                if c.ok and not c.padding:
                    found += 1
                    first = block + i if first is None else first
                    last_end = block + i + RECORD_HEADER_SIZE + c.body_length
            block += whole
        return found, (None if first is None else (first, last_end))

    def _read_block_or_zeros(self, logical: int) -> bytes:
        try:
            return self.pread(logical, BLOCK).ljust(BLOCK, b"\0")
        except OSError:
            return bytes(BLOCK)  # zeros never pass a record header check


    # -- what recovery needs (the S3 WAL offers the same three) ---------------
    def describe(self) -> str:
        h = self.header
        return (f"WAL {self.path}: header sequence {h.sequence}, trim offset {h.trim_offset}, last shutdown "
                f"{'clean' if h.shutdown else 'CRASH'}, written by node {h.node_id} epoch {h.node_epoch}")

    def start_offset(self) -> int:
        """Where new appends go (after recovery: the reset trim offset)."""
        return self.header.trim_offset

    def reset(self, scan_end: int, node_id: int, node_epoch: int) -> int:
        """After recovery uploaded everything scanned: jump a whole lap past
        the old records, so no stale one can ever look current again."""
        new_start = align_up(scan_end) + self.ring
        self.write_header(trim_offset=new_start, shutdown=SHUTDOWN_CRASH, node_id=node_id, node_epoch=node_epoch)
        return new_start


class WalDevice(WalFile):
    """The same ring on a raw block device (`--wal-device /dev/nvme1n1`, or a
    loop device in tests), as AutoMQ 1.4 runs it on EBS: opened
    O_DIRECT | O_DSYNC, so every write bypasses the page cache and returns
    only once the device has it (no separate fdatasync). O_DIRECT wants
    offsets, lengths and buffer addresses aligned to the block size: writes
    are already whole 4 KiB blocks at block offsets (the framing pads them),
    buffers come from an anonymous mmap (page aligned), and reads round out
    to whole blocks through a 1 MiB read-ahead window (recovery scans
    sequentially).

    Capacity: the device's size, or the configured capacity if smaller (an
    existing WAL keeps the capacity in its header). A device whose two
    header blocks are neither a valid header nor all zeros is refused
    rather than formatted: it may hold someone else's data."""

    READ_WINDOW = 1 << 20

    def __init__(self, path: str | Path, capacity: int, node_id: int, node_epoch: int = 0):
        self.path = Path(path)
        self.fd = -1
        if not hasattr(os, "O_DIRECT"):
            raise WalError("--wal-device needs O_DIRECT, which this platform does not have")
        try:
            # O_EXCL on a block device: the open fails (EBUSY) while anyone else has it open O_EXCL
            self.fd = os.open(self.path, os.O_RDWR | os.O_DIRECT | os.O_DSYNC | os.O_EXCL)
        except FileNotFoundError:
            raise WalError(f"WAL device {self.path} does not exist") from None
        except OSError as e:
            if e.errno == errno.EBUSY:
                raise WalError(f"WAL device {self.path} is in use by another process (opened exclusively): "
                               f"refusing to run a second process on this volume") from None
            raise self._direct_error(e) from None
        self._buf = mmap.mmap(-1, self.READ_WINDOW)
        self._window: tuple[int, bytes] = (0, b"")
        try:
            self._open(capacity, node_id, node_epoch)
        except BaseException:
            self.close()
            raise

    def _direct_error(self, e: OSError) -> WalError:
        if e.errno == errno.EINVAL:
            return WalError(f"WAL device {self.path}: O_DIRECT is not supported there ({e.strerror}); give a "
                            "block device (or a file on a file system with direct I/O), or drop --wal-device "
                            "to use the WAL file in --volume")
        return WalError(f"WAL device {self.path}: {e}")

    def _open(self, capacity: int, node_id: int, node_epoch: int) -> None:
        size = os.lseek(self.fd, 0, os.SEEK_END) // BLOCK * BLOCK  # st_size is 0 for block devices
        if size < MIN_CAPACITY:
            raise WalError(f"WAL device {self.path} has {size} bytes, below the minimum {MIN_CAPACITY}")
        want = min(size, align_up(capacity)) if capacity else size
        self.capacity = size  # until the header says
        try:
            head = self._read_at(0, HEADER_AREA)  # the first O_DIRECT I/O: fails here if unsupported
        except OSError as e:
            raise self._direct_error(e) from None
        h = newest_header(head[:BLOCK], head[BLOCK:])
        self.created = False
        if h is None:
            if any(head):
                raise WalError(f"WAL device {self.path}: no valid WAL header and not blank; refusing to format "
                               f"it (zero its first {HEADER_AREA} bytes to make a new WAL)")
            if want < MIN_CAPACITY:
                raise WalError(f"WAL capacity {want} is below the minimum {MIN_CAPACITY}")
            self.capacity = want
            self._zero_ring()
            self.header = WalHeader(want, 0, clock.wall_ns(), 0, node_id, node_epoch, SHUTDOWN_CLEAN)
            self._write_at(BLOCK, encode_header(replace(self.header, sequence=1)))
            self._write_at(0, encode_header(self.header))
            self.created = True
            log.info("formatted WAL device %s: capacity %d of %d bytes (O_DIRECT|O_DSYNC)", self.path, want, size)
        else:
            if h.capacity > size:
                raise WalError(f"WAL device {self.path}: its header says capacity {h.capacity}, "
                               f"but the device has only {size} bytes")
            if h.capacity != want:
                log.warning("WAL device %s has capacity %d, configured %d: keeping the device's",
                            self.path, h.capacity, want)
            self.header = h
        self.capacity = self.header.capacity
        self.ring = self.capacity - HEADER_AREA

    def _zero_ring(self) -> None:
        """Before the headers of a new WAL are written: clear the ring. A
        device whose header area was zeroed may still hold records of an
        earlier WAL, and a new WAL starts again at logical offset 0, where
        those records would pass every check and be replayed as ours. The
        headers go last, so a crash while zeroing leaves a blank header area
        and the next start formats again."""
        start, length = HEADER_AREA, self.capacity - HEADER_AREA
        try:
            fcntl.ioctl(self.fd, BLKZEROOUT, struct.pack("=QQ", start, length))
            os.fsync(self.fd)
            how = "BLKZEROOUT"
        except OSError:  # not a block device, or one without write-zeroes: write the zeros
            zeros = bytes(self.READ_WINDOW)
            for pos in range(start, start + length, self.READ_WINDOW):
                self._write_at(pos, zeros[:min(self.READ_WINDOW, start + length - pos)])
            how = "zero writes"
        self._window = (0, b"")
        log.info("WAL device %s: cleared the ring (%d bytes, %s) before formatting", self.path, length, how)

    def _aligned(self, n: int) -> mmap.mmap:
        if len(self._buf) < n:
            self._buf.close()
            self._buf = mmap.mmap(-1, align_up(n, self.READ_WINDOW))
        return self._buf

    def _read_at(self, phys: int, n: int) -> bytes:
        w0, wdata = self._window
        if w0 <= phys and phys + n <= w0 + len(wdata):
            return wdata[phys - w0:phys - w0 + n]
        start = phys // BLOCK * BLOCK
        exact = min(align_up(phys + n) - start, self.capacity - start)
        length = min(max(exact, self.READ_WINDOW), self.capacity - start)
        buf = self._aligned(length)
        try:
            got = os.preadv(self.fd, [memoryview(buf)[:length]], start)
        except OSError:
            if length == exact:
                raise
            # a bad sector somewhere in the read-ahead window: it must not fail a
            # read of the good blocks before it, so read just what was asked
            length = exact
            got = os.preadv(self.fd, [memoryview(buf)[:length]], start)
        data = bytes(buf[:got])
        self._window = (start, data)
        return data[phys - start:phys - start + n]

    def _write_at(self, phys: int, data) -> int:
        n = len(data)
        if phys % BLOCK or n % BLOCK:
            raise WalError(f"unaligned direct write of {n} bytes at {phys}")
        buf = self._aligned(n)
        buf[:n] = data
        self._window = (0, b"")
        return os.pwritev(self.fd, [memoryview(buf)[:n]], phys)

    def sync(self) -> None:
        pass  # O_DSYNC: each write returned only once durable

    def close(self) -> None:
        super().close()
        buf = getattr(self, "_buf", None)
        if buf is not None and not buf.closed:
            buf.close()


def read_header(path: str | Path) -> dict:
    """The newest valid header of a WAL file (for tests and operators):
    {capacity, trim_offset, write_time_ns, sequence, node_id, node_epoch, shutdown, slot}.
    `path` is the WAL file or the volume directory holding it."""
    path = Path(path)
    if path.is_dir():
        path = path / "wal"
    with open(path, "rb") as f:
        a, b = f.read(BLOCK), f.read(BLOCK)
    h = newest_header(a, b)
    if h is None:
        raise WalError(f"{path}: no valid WAL header")
    return {"capacity": h.capacity, "trim_offset": h.trim_offset, "write_time_ns": h.write_time_ns,
            "sequence": h.sequence, "node_id": h.node_id, "node_epoch": h.node_epoch,
            "shutdown": "clean" if h.shutdown == SHUTDOWN_CLEAN else "crash", "slot": h.slot}


# --------------------------------------------------------------------------
# group commit
# --------------------------------------------------------------------------

OnDurable = Callable[[int, int], None]


class _Pending:
    __slots__ = ("body", "on_durable", "future")

    def __init__(self, body, on_durable, future):
        self.body, self.on_durable, self.future = body, on_durable, future


class QueuedWal:
    """What every WAL placement shares (the volume file here, S3 objects in
    `s3_wal`): records queue up, a single writer task makes them durable in
    groups, and each record's callback and future fire in WAL order once its
    group is durable. Subclasses decide how a group is written."""

    def __init__(self, file, start_offset: int, trim_offset: int, executor: Executor | None,
                 thread_name: str, on_space_needed: Callable[[], None] | None):
        self.file = file
        self.next_offset = start_offset
        self.trim_offset = trim_offset
        self.executor = executor or ThreadPoolExecutor(1, thread_name_prefix=thread_name)
        self._own_executor = executor is None
        self.on_space_needed = on_space_needed
        self._queue: list[_Pending] = []
        self._writing: list[_Pending] = []
        self._wakeup = asyncio.Event()
        self._space = asyncio.Event()
        self._task: asyncio.Task | None = None
        self.failed: BaseException | None = None
        self.closed = False
        self.writes = 0
        self.records_written = 0
        self.bytes_written = 0

    # -- sizes --------------------------------------------------------------
    @property
    def ring(self) -> int:
        return self.file.ring

    @property
    def used(self) -> int:
        return self.next_offset - self.trim_offset

    @property
    def idle(self) -> bool:
        """Nothing queued and nothing being written."""
        return not self._queue and not self._writing

    def max_body(self) -> int:
        return self.ring // 2 - 2 * BLOCK

    def max_group(self) -> int:
        """The most bytes one group may take: half the ring. A group must fit
        in the ring *with* what is not yet trimmed, or it waits for space that
        can never come (three 500 KB appends on a 1 MiB ring); half keeps room
        for the next group while an upload trims the last. Any one record fits
        (`max_body`), so every group holds at least one."""
        return self.ring // 2

    def tasks(self) -> list[asyncio.Task]:
        return [self._task] if self._task is not None else []

    # -- the shared steps of append and of the writer ------------------------------
    def _enqueue(self, body: bytes, on_durable: OnDurable | None) -> asyncio.Future:
        if self.failed is not None:
            raise WalError(f"WAL failed: {self.failed}")
        if self.closed:
            raise WalError("WAL closed")
        if len(body) > self.max_body():
            raise WalFull(f"record of {len(body)} bytes exceeds the WAL's limit of {self.max_body()}")
        fut = asyncio.get_running_loop().create_future()
        self._queue.append(_Pending(body, on_durable, fut))
        self._wakeup.set()
        return fut

    async def _wait_for_space(self, need: int) -> None:
        """Back-pressure: a full WAL waits for an upload to commit and trim."""
        if need > self.ring:  # would wait for ever: groups are capped (max_group) so this never happens
            raise WalError(f"a group of {need} bytes can never fit in a ring of {self.ring}")
        while self.used + need > self.ring:
            self._space.clear()
            if self.on_space_needed:
                self.on_space_needed()
            await self._space.wait()

    def _made_durable(self, group: list[_Pending], spans, written: int) -> None:
        self.next_offset += written
        self._writing = []
        self.writes += 1
        self.records_written += len(group)
        self.bytes_written += written
        for p, span in zip(group, spans):
            if p.on_durable:
                p.on_durable(span[0], self.next_offset)
            if not p.future.done():
                p.future.set_result((span[0], self.next_offset))

    async def _writer(self, what: str) -> None:
        """The single writer: whenever records are queued, write groups of
        them (`_write_next_group`, the placement's own way) until none is left.
        An I/O error fails every pending append: the node cannot promise
        durability any more."""
        loop = asyncio.get_running_loop()
        try:
            while True:
                await self._wakeup.wait()
                self._wakeup.clear()
                while self._queue:
                    await self._write_next_group(loop)
        except asyncio.CancelledError:
            self.closed = True
            self._fail_pending(WalError("WAL closed"))
            raise
        except BaseException as e:
            log.error("%s write failed: %r; failing every pending append", what, e)
            self._fail(e)

    async def _write_next_group(self, loop) -> None:
        """Take what fits from the queue, make it durable, `_made_durable` it."""
        raise NotImplementedError

    def _fail(self, exc: BaseException) -> None:
        if self.failed is None:
            self.failed = exc
        self._fail_pending(exc)

    def _fail_pending(self, exc: BaseException) -> None:
        for p in self._writing + self._queue:
            if not p.future.done():
                p.future.set_exception(WalError(f"WAL failed: {exc}"))
        self._queue = []
        self._writing = []


class GroupCommitWal(QueuedWal):
    """The asyncio face of the WAL on a volume: `append` returns once the
    record is durable; a single writer task batches every queued record into
    one write + fdatasync."""

    def __init__(self, wal: WalFile, start_offset: int, max_write_bytes: int = 8 << 20,
                 executor: Executor | None = None, on_space_needed: Callable[[], None] | None = None):
        assert start_offset % BLOCK == 0
        super().__init__(wal, start_offset, wal.header.trim_offset, executor, "wal-io", on_space_needed)
        self.max_write_bytes = max_write_bytes
        self.trims = 0
        self._last_sync = 0.0

    def start(self) -> None:
        self._task = asyncio.get_running_loop().create_task(self._writer("WAL"), name="wal-writer")

    async def close(self, clean: bool = True) -> None:
        if self._task:
            self._task.cancel()
            try:
                await self._task
            except (asyncio.CancelledError, Exception):
                pass
        loop = asyncio.get_running_loop()
        if clean and self.failed is None:
            await loop.run_in_executor(self.executor, lambda: self.file.write_header(shutdown=SHUTDOWN_CLEAN))
        await loop.run_in_executor(self.executor, self.file.close)
        if self._own_executor:
            self.executor.shutdown(wait=False)

    # -- appends ---------------------------------------------------------------
    def append(self, body: bytes, on_durable: OnDurable | None = None) -> asyncio.Future:
        """Queue one record; the future resolves to its (start, end) logical
        offsets once it is durable. `on_durable` runs in WAL order, right
        after the fsync, even if the caller stopped waiting."""
        return self._enqueue(body, on_durable)

    async def trim(self, offset: int) -> None:
        """Free the ring up to `offset` (everything before it is in S3)."""
        if offset <= self.trim_offset:
            return
        assert offset <= self.next_offset, (offset, self.next_offset)
        loop = asyncio.get_running_loop()
        await loop.run_in_executor(self.executor, lambda: self.file.write_header(trim_offset=offset))
        self.trim_offset = offset
        self.trims += 1
        self._space.set()
        log.info("WAL trimmed to %d (used %d of %d bytes)", offset, self.used, self.ring)

    async def _write_next_group(self, loop) -> None:
        take, sizes = 0, []
        limit = min(self.max_write_bytes, self.max_group())
        for p in self._queue:
            if take and framed_size(sizes + [len(p.body)]) > limit:
                break
            sizes.append(len(p.body))
            take += 1
        await self._wait_for_space(framed_size(sizes))
        group, self._queue = self._queue[:take], self._queue[take:]
        self._writing = group
        buf, spans = frame_records(self.next_offset, [p.body for p in group])
        await buggify.delay("wal.write.slow")
        if bugs.enabled("ack-before-fsync"):  # planted bug: acked once written, fsynced only now and then
            at = self.next_offset
            await loop.run_in_executor(self.executor, self.file.pwrite, at, buf)
            self._made_durable(group, spans, len(buf))
            if clock.monotonic() - self._last_sync >= 1.0:
                self._last_sync = clock.monotonic()
                await loop.run_in_executor(self.executor, self.file.sync)
            return
        await loop.run_in_executor(self.executor, self.file.write_and_sync, self.next_offset, buf)
        self._made_durable(group, spans, len(buf))
