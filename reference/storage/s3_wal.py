"""`--wal s3`: the write-ahead log as objects in S3, no volume at all.

AutoMQ's main branch (and WarpStream) drop the block-device WAL: appends
are batched in memory and written straight to object storage, every
`s3_wal_interval` (250 ms) or `s3_wal_bytes` (8 MiB), whichever comes first.
A produce is acknowledged only once the WAL object holding it is in S3, so
the ack costs up to one interval plus one PUT (hundreds of milliseconds)
instead of one local fsync, and it grows with S3's latency. In exchange a
broker has no disk to lose and any node can recover any other's WAL.

This module is the S3 twin of `wal.py`, behind the same interface, so the
engine's decisions (cache, upload, commit, trim, recovery) stay shared:

    S3WalObjects   ~ WalFile        blocking: list, GET, PUT, DELETE of WAL objects
    S3BatchingWal  ~ GroupCommitWal asyncio: append() resolves once durable

Layout: the WAL is a byte log with logical offsets, as on the volume. Each
WAL object holds the records of one batch, framed exactly as in the file WAL
(24-byte header with length, logical offset and CRCs, then the body; no
padding: a PUT is atomic, there is no torn block to guard against), at key

    wal/<node id>/<logical start offset, 20 digits>

so an object's end is its start plus its size, and a listing in key order is
the log in order. PUTs are sequential and conditional (If-None-Match: a
second writer at the same offset is refused, the node halts), so the
objects of a node always form one contiguous run; the WAL is "trimmed" by
deleting, oldest first, the objects whose records an upload has committed,
which keeps the rest contiguous. No other metadata is needed to recover:
recovery lists `wal/<node>/`, reads the run from its first object, stops at
a gap or a bad CRC, and lets `recovery.plan_replay` drop what the metadata
already has. After recovery uploaded the rest, every listed object is
deleted and new objects start past the highest one seen.

Not modelled: a zombie incarnation of the same node (e.g. paused, then
resumed after a restart) could still PUT at offsets the new one has not
reached; fencing that needs the node epoch in the key and a metadata check
before acking, as AutoMQ's node-epoch fencing does.
"""
from __future__ import annotations

import asyncio
import logging
from collections import deque
from concurrent.futures import Executor
from typing import Callable

from crc32c import crc32c

from reference import clock
from reference.storage.s3io import NoSuchKey, ObjectExists, ObjectStore
from reference.storage.wal import (RECORD_HEADER_SIZE, QueuedWal, ScanResult, WalError, check_record_header,
                                   frame_record)

log = logging.getLogger(__name__)


# --------------------------------------------------------------------------
# sans-I/O: keys and framing
# --------------------------------------------------------------------------

def wal_prefix(node_id: int) -> str:
    return f"wal/{node_id}/"


def wal_key(node_id: int, start: int) -> str:
    return f"{wal_prefix(node_id)}{start:020d}"


def key_start(key: str) -> int:
    return int(key.rsplit("/", 1)[1])


def frame_object(start: int, bodies: list[bytes]) -> tuple[bytes, list[tuple[int, int]]]:
    """One WAL object: the records back to back from logical offset `start`."""
    parts, spans, pos = [], [], start
    for body in bodies:
        rec = frame_record(pos, body)
        parts.append(rec)
        spans.append((pos, pos + len(rec)))
        pos += len(rec)
    return b"".join(parts), spans


def parse_object(start: int, buf: bytes) -> tuple[list[tuple[int, bytes]], int, str, bool]:
    """(records, end of the last good one, stop reason, damaged) of one object."""
    records, pos, end = [], start, start + len(buf)
    while pos < end:
        at = pos - start
        check = check_record_header(buf[at:at + RECORD_HEADER_SIZE], pos)
        if not check.ok:
            return records, pos, f"object at {start}: {check.reason}", True
        body = buf[at + RECORD_HEADER_SIZE:at + RECORD_HEADER_SIZE + check.body_length]
        if len(body) != check.body_length or crc32c(body) != check.body_crc:
            return records, pos, f"record at {pos}: body CRC mismatch ({check.body_length} bytes)", True
        if not check.padding:
            records.append((pos, body))
        pos += RECORD_HEADER_SIZE + check.body_length
    return records, pos, "", False


# --------------------------------------------------------------------------
# I/O: the WAL objects (blocking; run in an executor)
# --------------------------------------------------------------------------

class S3WalObjects:
    """A node's WAL objects: what WalFile is for the volume."""

    def __init__(self, store: ObjectStore, node_id: int, capacity: int):
        self.store = store
        self.node_id = node_id
        self.capacity = self.ring = capacity  # most un-uploaded WAL bytes before appends wait
        self.path = f"s3://{store.bucket}/{store.prefix}{wal_prefix(node_id)}"
        self._listed: list[tuple[int, int]] = []   # (start, end) seen by the last scan
        self._start = 0

    def close(self) -> None:
        pass

    def list(self) -> list[tuple[int, int]]:
        return [(key_start(k), key_start(k) + size) for k, size in self.store.list(wal_prefix(self.node_id))]

    def put(self, start: int, body: bytes) -> None:
        self.store.put_if_absent(wal_key(self.node_id, start), body)

    def delete(self, start: int) -> None:
        try:
            self.store.delete(wal_key(self.node_id, start))
        except NoSuchKey:
            pass

    # -- what recovery needs (as WalFile) ---------------------------------------
    def describe(self) -> str:
        return f"S3 WAL {self.path}"

    def scan(self, start: int | None = None, max_bytes: int | None = None) -> ScanResult:
        """Read the contiguous run of WAL objects from the first one (or, to
        go on with a chunked scan, from the object at `start`), at most about
        `max_bytes` of records (whole objects, at least one); stop at a gap or
        a damaged record (never served)."""
        if start is None:
            self._listed = self.list()
            if not self._listed:
                return ScanResult([], 0, 0, "no WAL objects")
            start = self._listed[0][0]
        objects = self._listed
        first = next((i for i, (o_start, _) in enumerate(objects) if o_start >= start), len(objects))
        pos = start
        records: list[tuple[int, bytes]] = []
        size = 0
        reason, corrupt, lost_after, stopped, done = "end of the WAL objects", False, 0, None, True
        for i in range(first, len(objects)):
            o_start, o_end = objects[i]
            if o_start != pos:
                reason, stopped = f"gap: next WAL object starts at {o_start}, expected {pos}", i
                break
            if max_bytes is not None and records and size >= max_bytes:
                reason, done = "chunk full", False
                break
            try:
                body = self.store.get(wal_key(self.node_id, o_start))
            except NoSuchKey:  # deleted meanwhile (trimmed by a still-running old incarnation?)
                reason, stopped = f"WAL object at {o_start} vanished", i
                break
            recs, end, why, damaged = parse_object(o_start, body)
            records.extend(recs)
            size += len(body)
            pos = end
            if damaged or end != o_end:
                reason, corrupt, stopped = why or f"object at {o_start} ends early", True, i + 1
                break
        lost_span = None
        if corrupt and stopped is not None:
            for o_start, o_end in objects[stopped:]:  # acknowledged records beyond the damage
                try:
                    found = len(parse_object(o_start, self.store.get(wal_key(self.node_id, o_start)))[0])
                except NoSuchKey:
                    continue
                if found:
                    lost_after += found
                    lost_span = (lost_span[0] if lost_span else o_start, o_end)
        return ScanResult(records, start, pos, reason, corrupt, lost_after, done, lost_span=lost_span)

    def reset(self, scan_end: int, node_id: int, node_epoch: int) -> int:
        """After recovery uploaded and committed what it scanned: delete every
        WAL object (oldest first, so a crash here leaves a contiguous run),
        and start new objects past the highest one seen."""
        new_start = max([scan_end] + [end for _, end in self._listed])
        for o_start, _ in self._listed:
            self.delete(o_start)
        if self._listed:
            log.info("S3 WAL: deleted %d recovered WAL objects; new objects start at %d", len(self._listed), new_start)
        self._listed = []
        self._start = new_start
        return new_start

    def start_offset(self) -> int:
        return self._start


# --------------------------------------------------------------------------
# batching (the asyncio face)
# --------------------------------------------------------------------------

class S3BatchingWal(QueuedWal):
    """`append` returns once the record's WAL object is in S3. A single
    writer task waits until the oldest queued record is `interval` old or
    `batch_bytes` are queued, then PUTs them as one object (retrying a failed
    PUT until `put_deadline`; then the WAL fails and the engine halts). A
    deleter task removes WAL objects once an upload has committed them."""

    def __init__(self, objects: S3WalObjects, start_offset: int, interval: float, batch_bytes: int,
                 executor: Executor | None = None, delete_executor: Executor | None = None,
                 on_space_needed: Callable[[], None] | None = None, put_deadline: float = 60.0):
        super().__init__(objects, start_offset, start_offset, executor, "s3-wal", on_space_needed)
        self.interval = interval
        self.batch_bytes = batch_bytes
        self.delete_executor = delete_executor or self.executor
        self.put_deadline = put_deadline
        self._queued_at: deque[float] = deque()
        self._queued_bytes = 0
        self._objects: deque[tuple[int, int]] = deque()   # written, not yet deleted: (start, end)
        self._full = asyncio.Event()
        self._trimmed = asyncio.Event()
        self._deleted = asyncio.Event()
        self._deleter: asyncio.Task | None = None
        self.objects_deleted = 0

    # -- lifecycle -------------------------------------------------------------
    def start(self) -> None:
        loop = asyncio.get_running_loop()
        self._task = loop.create_task(self._writer("S3 WAL"), name="s3-wal-writer")
        self._deleter = loop.create_task(self._delete_trimmed(), name="s3-wal-deleter")

    def tasks(self) -> list[asyncio.Task]:
        return [t for t in (self._task, self._deleter) if t is not None]

    async def close(self, clean: bool = True) -> None:
        if self._task:
            self._task.cancel()
        if clean and self.failed is None and self._deleter and self._objects \
                and self._objects[0][1] <= self.trim_offset:
            try:  # let the deleter finish what is trimmed (recovery would skip it anyway)
                await asyncio.wait_for(self._wait_deleted(), 10)
            except asyncio.TimeoutError:
                pass
        for t in self.tasks():
            t.cancel()
        await asyncio.gather(*self.tasks(), return_exceptions=True)
        if self._own_executor:
            self.executor.shutdown(wait=False)

    async def _wait_deleted(self) -> None:
        while self._objects and self._objects[0][1] <= self.trim_offset:
            self._deleted.clear()
            self._trimmed.set()
            await self._deleted.wait()

    # -- appends ---------------------------------------------------------------
    def append(self, body: bytes, on_durable=None) -> asyncio.Future:
        fut = self._enqueue(body, on_durable)
        self._queued_at.append(asyncio.get_running_loop().time())
        self._queued_bytes += len(body) + RECORD_HEADER_SIZE
        if self._queued_bytes >= self.batch_bytes:
            self._full.set()
        return fut

    async def trim(self, offset: int) -> None:
        """Everything before `offset` is committed in S3: its WAL objects go."""
        if offset <= self.trim_offset:
            return
        assert offset <= self.next_offset, (offset, self.next_offset)
        self.trim_offset = offset
        self._space.set()
        self._trimmed.set()

    async def _write_next_group(self, loop) -> None:
        # the batch window: until the oldest queued record is `interval` old, or enough bytes
        while self._queued_bytes < self.batch_bytes:
            remaining = self._queued_at[0] + self.interval - loop.time()
            if remaining <= 0:
                break
            self._full.clear()
            try:
                await asyncio.wait_for(self._full.wait(), remaining)
            except asyncio.TimeoutError:
                break
        take, size = 0, 0
        limit = min(self.batch_bytes, self.max_group())
        for p in self._queue:
            n = len(p.body) + RECORD_HEADER_SIZE
            if take and size + n > limit:
                break
            take, size = take + 1, size + n
        await self._wait_for_space(size)
        group, self._queue = self._queue[:take], self._queue[take:]
        for _ in range(take):
            self._queued_at.popleft()
        self._queued_bytes -= size
        self._writing = group
        start = self.next_offset
        buf, spans = frame_object(start, [p.body for p in group])
        await self._put(loop, start, buf)
        self._objects.append((start, start + len(buf)))
        self._made_durable(group, spans, len(buf))

    async def _put(self, loop, start: int, buf: bytes) -> None:
        deadline = clock.monotonic() + self.put_deadline
        delay = 0.05
        while True:
            try:
                await loop.run_in_executor(self.executor, self.file.put, start, buf)
                return
            except ObjectExists:
                raise WalError(f"WAL object at {start} already written by another writer: fenced") from None
            except Exception as e:
                if clock.monotonic() >= deadline:
                    raise
                log.warning("PUT of WAL object at %d (%d bytes) failed (%r); retrying in %.2fs",
                            start, len(buf), e, delay)
                await asyncio.sleep(delay)
                delay = min(delay * 2, 2.0)

    async def _delete_trimmed(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            await self._trimmed.wait()
            self._trimmed.clear()
            while self._objects and self._objects[0][1] <= self.trim_offset:
                start = self._objects[0][0]
                try:
                    await loop.run_in_executor(self.delete_executor, self.file.delete, start)
                except asyncio.CancelledError:
                    raise
                except Exception as e:  # oldest first, so stop here and try again later
                    log.warning("delete of WAL object at %d failed (%r); retrying", start, e)
                    await asyncio.sleep(1.0)
                    continue
                self._objects.popleft()
                self.objects_deleted += 1
            self._deleted.set()

    def _fail_pending(self, exc: BaseException) -> None:
        super()._fail_pending(exc)
        self._queued_at.clear()
        self._queued_bytes = 0
