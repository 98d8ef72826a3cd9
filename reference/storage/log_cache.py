"""The log cache: each stream's recent tail in memory, durable batches only.

A batch enters the cache right after its WAL write is durable, marked
*pending* (not yet in S3). An upload takes the pending delta, and once the
upload is committed those batches become *uploaded*: still served from
memory, but evictable, oldest first, when the cache is over its capacity.
Pending batches are never evicted: if pending (and in-flight) bytes would pass
the capacity, `reserve` says no and the engine makes the producer wait for an
upload (back-pressure, not an out-of-memory crash).

Reads hit the cache when the offset is at or after the stream's first cached
batch; the cache holds a contiguous tail of each stream, so anything below
that is in S3.
"""
from __future__ import annotations

import bisect
from collections import deque
from dataclasses import dataclass


@dataclass(slots=True)
class CachedBatch:
    base_offset: int
    end_offset: int        # exclusive
    data: bytes
    max_timestamp: int
    wal_end: int           # the WAL may be trimmed to here once this batch is in S3


class StreamTail:
    """One stream's cached batches: lists with a moving head (eviction pops
    from the front in O(1) amortised; bisect works on the live part)."""
    __slots__ = ("_batches", "_bases", "head", "uploaded_upto")

    def __init__(self):
        self._batches: list[CachedBatch] = []
        self._bases: list[int] = []
        self.head = 0
        self.uploaded_upto = 0      # batches ending at or before this are in S3

    def __len__(self) -> int:
        return len(self._batches) - self.head

    def first(self) -> CachedBatch | None:
        return self._batches[self.head] if self.head < len(self._batches) else None

    def last(self) -> CachedBatch | None:
        return self._batches[-1] if self.head < len(self._batches) else None

    def first_offset(self) -> int | None:
        b = self.first()
        return b.base_offset if b else None

    def append(self, b: CachedBatch) -> None:
        self._batches.append(b)
        self._bases.append(b.base_offset)

    def popleft(self) -> CachedBatch:
        b = self._batches[self.head]
        self._batches[self.head] = None
        self.head += 1
        if self.head > 1024 and self.head * 2 > len(self._batches):
            del self._batches[:self.head]
            del self._bases[:self.head]
            self.head = 0
        return b

    def index_at(self, offset: int) -> int:
        """List index of the batch containing offset (offset >= first)."""
        return bisect.bisect_right(self._bases, offset, self.head) - 1

    def index_from(self, offset: int) -> int:
        """List index of the first batch starting at or after offset."""
        return bisect.bisect_left(self._bases, offset, self.head)

    def iter_from(self, i: int):
        for k in range(max(i, self.head), len(self._batches)):
            yield self._batches[k]

    def all(self) -> list[CachedBatch]:
        return self._batches[self.head:]


class LogCache:
    def __init__(self, capacity: int):
        self.capacity = capacity
        self.streams: dict[int, StreamTail] = {}
        self.total_bytes = 0       # pending + uploaded, in memory
        self.pending_bytes = 0     # not yet in S3
        self.inflight_bytes = 0    # reserved for batches being written to the WAL
        self._evictable: deque[tuple[int, int]] = deque()  # (stream id, uploaded up to), oldest first
        self.evicted_bytes = 0

    # -- admission ----------------------------------------------------------------
    def reserve(self, n: int) -> bool:
        """Reserve room for a batch about to be written to the WAL; False if
        pending data would exceed the capacity (the caller waits for an upload)."""
        if self.pending_bytes + self.inflight_bytes + n > self.capacity and (self.pending_bytes or self.inflight_bytes):
            return False
        self.inflight_bytes += n
        return True

    def unreserve(self, n: int) -> None:
        self.inflight_bytes -= n

    @property
    def pressure(self) -> float:
        return (self.pending_bytes + self.inflight_bytes) / self.capacity

    # -- writes ------------------------------------------------------------
    def insert(self, stream_id: int, batch: CachedBatch, reserved: int = 0) -> None:
        """Add a durable batch at its stream's tail (offsets must follow on)."""
        tail = self.streams.setdefault(stream_id, StreamTail())
        last = tail.last()
        if last is not None and last.end_offset != batch.base_offset:
            raise AssertionError(f"stream {stream_id}: cache tail ends at {last.end_offset}, "
                                 f"got batch at {batch.base_offset}")
        tail.append(batch)
        self.inflight_bytes -= reserved
        self.total_bytes += len(batch.data)
        self.pending_bytes += len(batch.data)
        self._evict()

    def pending(self, wal_cutoff: int) -> dict[int, list[CachedBatch]]:
        """Each stream's batches not yet uploaded whose WAL record ends at or
        before wal_cutoff (the upload's snapshot)."""
        out = {}
        for sid, tail in self.streams.items():
            take = []
            # upload boundaries fall on batch boundaries: the first batch not
            # uploaded is the one starting at uploaded_upto
            for b in tail.iter_from(tail.index_from(tail.uploaded_upto)):
                if b.wal_end > wal_cutoff:
                    break  # batches are in WAL order within a stream: take a prefix
                take.append(b)
            if take:
                out[sid] = take
        return out

    def mark_uploaded(self, stream_id: int, upto: int) -> None:
        tail = self.streams.get(stream_id)
        if tail is None or upto <= tail.uploaded_upto:
            return
        for b in tail.iter_from(tail.index_from(tail.uploaded_upto)):
            if b.end_offset > upto:
                break
            self.pending_bytes -= len(b.data)
        tail.uploaded_upto = upto
        self._evictable.append((stream_id, upto))
        self._evict()

    def drop_stream(self, stream_id: int) -> None:
        tail = self.streams.pop(stream_id, None)
        if tail is None:
            return
        for b in tail.all():
            self.total_bytes -= len(b.data)
            if b.end_offset > tail.uploaded_upto:
                self.pending_bytes -= len(b.data)

    def _evict(self) -> None:
        """Drop uploaded batches, oldest upload first, one batch at a time,
        until the cache fits its capacity."""
        while self.total_bytes > self.capacity and self._evictable:
            sid, upto = self._evictable[0]
            tail = self.streams.get(sid)
            first = tail.first() if tail is not None else None
            if first is None or first.end_offset > upto:
                self._evictable.popleft()
                continue
            b = tail.popleft()
            self.total_bytes -= len(b.data)
            self.evicted_bytes += len(b.data)

    # -- reads -------------------------------------------------------------
    def first_offset(self, stream_id: int) -> int | None:
        tail = self.streams.get(stream_id)
        return tail.first_offset() if tail else None

    def read(self, stream_id: int, offset: int, max_bytes: int, end: int | None = None) -> list[CachedBatch] | None:
        """Batches from the one containing offset, up to max_bytes (at least
        one); None if offset is below the cached tail (read S3 instead)."""
        tail = self.streams.get(stream_id)
        first = tail.first() if tail is not None else None
        if first is None or offset < first.base_offset:
            return None
        out, size = [], 0
        for b in tail.iter_from(tail.index_at(offset)):
            if end is not None and b.base_offset >= end:
                break
            if out and size + len(b.data) > max_bytes:
                break
            out.append(b)
            size += len(b.data)
        return out

    def batches(self, stream_id: int) -> list[CachedBatch]:
        tail = self.streams.get(stream_id)
        return tail.all() if tail else []
