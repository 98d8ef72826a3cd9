"""Reads from S3: find the object by the metadata's ranges, then range GETs
through a block cache.

For a (stream, offset) below the log cache's tail, the metadata's committed
ranges name the object holding it. The reader fetches that object's footer
(its last 48 bytes) and index once (cached per object), then only the data
blocks of that stream that it needs; decoded blocks live in an LRU block
cache bounded in bytes. A read that lands inside a batch returns the whole
batch, as Kafka does. Every batch read back is validated as on produce
(reference.validation); one that fails is never served (the read fails).
"""
from __future__ import annotations

import asyncio
import logging
from collections import OrderedDict
from concurrent.futures import Executor

from reference.batch import parse_header
from reference.storage.metadata import MetadataState, object_key
from reference.storage.object_format import FOOTER, IndexEntry, decode_block, decode_footer, decode_index
from reference.storage.s3io import NoSuchKey, ObjectStore
from reference.validation import MAX_DECOMPRESSED, InvalidBatch, validate_batch

log = logging.getLogger(__name__)


class LRUBytes:
    """An LRU map whose capacity is a byte budget."""

    def __init__(self, capacity: int):
        self.capacity = capacity
        self.size = 0
        self.items: OrderedDict = OrderedDict()
        self.hits = self.misses = 0

    def get(self, key):
        v = self.items.get(key)
        if v is None:
            self.misses += 1
            return None
        self.hits += 1
        self.items.move_to_end(key)
        return v[0]

    def put(self, key, value, size: int) -> None:
        old = self.items.pop(key, None)
        if old is not None:
            self.size -= old[1]
        self.items[key] = (value, size)
        self.size += size
        while self.size > self.capacity and len(self.items) > 1:
            _, (_, s) = self.items.popitem(last=False)
            self.size -= s

    def drop_object(self, object_id: int) -> None:
        for k in [k for k in self.items if k[0] == object_id]:
            self.size -= self.items.pop(k)[1]


class UnservableBatch(Exception):
    """A batch read back from S3 fails validation: it is not served."""


class ObjectReader:
    def __init__(self, store: ObjectStore, block_cache_bytes: int, executor: Executor | None = None,
                 max_decompressed: int = MAX_DECOMPRESSED):
        self.store = store
        self.max_decompressed = max_decompressed
        self.executor = executor
        self.blocks = LRUBytes(block_cache_bytes)
        self.indexes = LRUBytes(max(block_cache_bytes // 16, 1 << 20))
        self._inflight: dict = {}
        self.gets = 0

    async def _get(self, key: str, start: int, end: int) -> bytes:
        self.gets += 1
        return await asyncio.get_running_loop().run_in_executor(self.executor, self.store.get, key, start, end)

    async def _once(self, cache_key, load, cache: LRUBytes):
        """Load through the cache, one load per key at a time."""
        v = cache.get(cache_key)
        if v is not None:
            return v
        fut = self._inflight.get(cache_key)
        if fut is not None:
            return await asyncio.shield(fut)
        fut = asyncio.get_running_loop().create_future()
        self._inflight[cache_key] = fut
        try:
            value, size = await load()
            cache.put(cache_key, value, size)
            fut.set_result(value)
            return value
        except BaseException as e:
            fut.set_exception(e)
            fut.exception()  # mark retrieved
            raise
        finally:
            del self._inflight[cache_key]

    async def index(self, object_id: int, size: int) -> list[IndexEntry]:
        key = object_key(object_id)

        async def load():
            tail = await self._get(key, max(size - FOOTER.size, 0), size)
            pos, length = decode_footer(tail)
            entries = decode_index(await self._get(key, pos, pos + length))
            return entries, 36 * len(entries) + 64
        return await self._once((object_id, "index"), load, self.indexes)

    async def block(self, object_id: int, entry: IndexEntry) -> list[tuple[int, int, bytes]]:
        key = object_key(object_id)

        def get_and_decode():
            raw = self.store.get(key, entry.position, entry.position + entry.size)
            out = []
            for batch in decode_block(raw):
                h = parse_header(batch)
                try:  # as on produce: a record no client could read is never served
                    validate_batch(batch, self.max_decompressed)
                except InvalidBatch as e:
                    log.error("object %d, block at %d: the stored batch of stream %d at offset %d fails "
                              "validation; it is not served: %s", object_id, entry.position, entry.stream_id,
                              h.base_offset, e)
                    batch = UnservableBatch(f"stream {entry.stream_id}: the stored batch at offset "
                                            f"{h.base_offset} (object {object_id}) fails validation: {e}")
                out.append((h.base_offset, h.base_offset + h.last_offset_delta + 1, batch))
            return out, len(raw)

        async def load():
            self.gets += 1
            return await asyncio.get_running_loop().run_in_executor(self.executor, get_and_decode)
        return await self._once((object_id, entry.position), load, self.blocks)

    async def read(self, state: MetadataState, stream_id: int, offset: int, max_bytes: int,
                   end_limit: int) -> list[tuple[int, int, bytes]]:
        """(base, end, batch) from the batch containing offset, within one
        object, up to max_bytes (at least one batch). [] if no committed range
        holds offset."""
        for attempt in range(3):
            found = state.find_object(stream_id, offset)
            if found is None:
                return []
            _start, _end, object_id = found
            obj = state.objects.get(object_id)
            if obj is None:
                continue
            try:
                return await self._read_object(object_id, obj.size, stream_id, offset, max_bytes, end_limit)
            except NoSuchKey:
                # compacted and destroyed under us: look the range up again
                log.info("object %d vanished during a read of stream %d at %d; retrying", object_id, stream_id, offset)
                self.blocks.drop_object(object_id)
                await asyncio.sleep(0.05 * (attempt + 1))
        raise NoSuchKey(f"stream {stream_id} offset {offset}")

    async def _read_object(self, object_id, size, stream_id, offset, max_bytes, end_limit):
        entries = [e for e in await self.index(object_id, size)
                   if e.stream_id == stream_id and e.end_offset > offset and e.start_offset < end_limit]
        out, total = [], 0
        for e in entries:
            for base, end, batch in await self.block(object_id, e):
                if end <= offset or base >= end_limit:
                    continue
                if isinstance(batch, UnservableBatch):
                    if out:
                        return out  # what precedes it; the next read from here fails
                    raise batch
                if out and (total + len(batch) > max_bytes or base != out[-1][1]):
                    return out  # budget spent, or a gap (the rest is in another object)
                out.append((base, end, batch))
                total += len(batch)
        return out
