"""Upload: move the log cache's delta from the WAL to S3.

When enough is pending (`upload_bytes`), when `upload_interval` has passed
with anything pending, or when the cache or the WAL is filling up, the
uploader takes a snapshot of every durable, not yet uploaded batch (all
those whose WAL record ends before the WAL's current durable end, the
*cutoff*) and runs the object lifecycle:

1. prepare: a metadata record reserves object ids, each with a deadline;
2. PUT each object (one stream-set object for the small streams, one stream
   object per stream with >= `stream_object_bytes` in this upload);
3. commit: one metadata record with every object's ranges and, per stream,
   the producer-state snapshot as of the new end offset. The metadata checks
   that each range starts exactly at its stream's end offset;
4. only then: the batches become evictable in the cache and the WAL is
   trimmed to the cutoff.

Uploads run one at a time, so commits apply in WAL order. A commit the
metadata rejects, or a fenced metadata writer, halts the node: carrying on
could lose acknowledged data.
"""
from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass

from reference import buggify, bugs, clock
from reference.batch import parse_header
from reference.storage.log_cache import CachedBatch
from reference.storage.metadata import CommitRejected, ControllerUnavailable, MetadataFenced, object_key
from reference.storage.object_format import StreamRecord, encode_object
from reference.storage.producer_state import ProducerStateTable

log = logging.getLogger(__name__)


def plan_objects(pending: dict[int, list[CachedBatch]], stream_object_bytes: int) -> list[tuple[str, list[int]]]:
    """Which streams go in which object: [(kind, [stream ids])]."""
    sizes = {sid: sum(len(b.data) for b in bs) for sid, bs in pending.items()}
    big = sorted(sid for sid, n in sizes.items() if n >= stream_object_bytes)
    small = sorted(sid for sid in sizes if sid not in big)
    return ([("set", small)] if small else []) + [("stream", [sid]) for sid in big]


def advance_producers(committed: ProducerStateTable, batches: list[CachedBatch]) -> ProducerStateTable:
    """The producer table at the end of `batches`, from the one at their start."""
    table = ProducerStateTable.from_snapshot(committed.snapshot())
    for b in batches:
        table.record(parse_header(b.data), b.base_offset)
    return table


@dataclass
class UploadSummary:
    object_ids: list[int]
    streams: int
    batches: int
    bytes: int
    cutoff: int
    seconds: float


class Uploader:
    """Runs uploads for an S3Engine (uses its meta, store, cache, streams, wal)."""

    def __init__(self, engine):
        self.engine = engine
        self._lock = asyncio.Lock()
        self._wanted = asyncio.Event()
        self._last = clock.monotonic()
        self.uploads = 0
        self.uploaded_bytes = 0
        self.last_summary: UploadSummary | None = None

    def request(self, reason: str = "") -> None:
        self._wanted.set()

    def should_upload(self) -> bool:
        e = self.engine
        cfg = e.config
        return (e.cache.pending_bytes >= cfg.effective_upload_bytes
                or e.cache.pressure >= 0.8
                or (e.wal is not None and e.wal.used >= e.wal.ring // 2))

    async def run(self) -> None:
        e = self.engine
        interval = e.config.upload_interval
        backoff = 0.1
        while not e.closing:
            timeout = max(0.0, self._last + interval - clock.monotonic())
            try:
                await asyncio.wait_for(self._wanted.wait(), timeout)
            except asyncio.TimeoutError:
                pass
            self._wanted.clear()
            if e.closing or e.failed:
                return
            try:
                await self.upload_once()
                backoff = 0.1
            except (CommitRejected, MetadataFenced):
                return  # the engine is halted
            except ControllerUnavailable as ex:
                log.warning("upload: %s; retrying", ex)
                await asyncio.sleep(backoff)
                self._wanted.set()
                continue
            except asyncio.CancelledError:
                raise
            except Exception as ex:
                log.warning("upload failed (%r); retrying in %.1fs", ex, backoff)
                await asyncio.sleep(backoff)
                backoff = min(backoff * 2, 5.0)
                self._wanted.set()
                continue
            self._last = clock.monotonic()
            if self.should_upload():
                self._wanted.set()

    async def upload_once(self, cutoff: int | None = None, trim: bool = True,
                          only: int | None = None) -> UploadSummary | None:
        """Upload everything durable up to the WAL offset `cutoff` (default:
        the WAL's durable end), commit it, then trim the WAL to the cutoff.
        `only`: just that stream's delta (reassignment; no trim)."""
        async with self._lock:
            while True:
                summary = await self._upload(cutoff, trim and only is None, only)
                if summary is not False:
                    return summary

    async def _upload(self, cutoff, trim, only=None):
        e = self.engine
        cfg = e.config
        if e.failed:
            raise RuntimeError(f"engine halted: {e.failed}")
        started = clock.monotonic()
        if cutoff is None:
            cutoff = e.wal.next_offset
        pending = {sid: bs for sid, bs in e.cache.pending(cutoff).items()
                   if sid in e.streams and (only is None or sid == only)}
        if not pending:
            if trim and e.wal is not None and cutoff > e.wal.trim_offset:
                await e.wal.trim(cutoff)
            return None
        plan = plan_objects(pending, cfg.stream_object_bytes)
        deadline = clock.wall() + cfg.object_ttl
        ids = await e.meta.append({"type": "prepare_objects", "node": e.node_id, "count": len(plan),
                                   "deadline": deadline, "ts": clock.wall()})
        objects, total = [], 0
        for (kind, sids), oid in zip(plan, ids):
            records = [StreamRecord(sid, b.base_offset, b.end_offset, b.data) for sid in sids for b in pending[sid]]
            # encoding (copies + CRCs) runs off the event loop, like the PUT
            body, _index = await asyncio.get_running_loop().run_in_executor(
                e.s3_executor, encode_object, records, cfg.data_block_bytes)
            await self._put(object_key(oid), body, deadline)
            objects.append({"id": oid, "size": len(body), "kind": kind,
                            "ranges": [[sid, pending[sid][0].base_offset, pending[sid][-1].end_offset] for sid in sids]})
            total += len(body)
        if clock.wall() >= deadline:
            log.warning("upload of objects %s outlived its prepare deadline; preparing again", ids)
            return False
        if trim and bugs.enabled("trim-before-commit"):  # planted bug: the PUT returned, so trim now
            await e.wal.trim(cutoff)
        tables = {sid: advance_producers(e.streams[sid].committed_producers, bs)
                  for sid, bs in pending.items() if sid in e.streams}
        producers = {str(sid): t.snapshot() for sid, t in tables.items() if t.producers}
        await buggify.delay("upload.before-commit.slow")
        try:
            await e.meta.append({"type": "commit_objects", "node": e.node_id, "objects": objects,
                                 "producers": producers, "ts": clock.wall(),
                                 "epochs": {str(sid): e.streams[sid].epoch for sid in pending if sid in e.streams}})
        except (CommitRejected, MetadataFenced) as ex:
            e.halt(f"upload commit of objects {ids} failed: {ex}")
            raise
        for sid, bs in pending.items():
            e.cache.mark_uploaded(sid, bs[-1].end_offset)
            if sid in tables and sid in e.streams:
                e.streams[sid].committed_producers = tables[sid]
        e.notify_space()
        summary = UploadSummary(ids, len(pending), sum(len(bs) for bs in pending.values()), total, cutoff,
                                clock.monotonic() - started)
        self.uploads += 1
        self.uploaded_bytes += total
        self.last_summary = summary
        log.info("uploaded and committed objects %s: %d streams, %d batches, %d bytes, WAL cutoff %d, in %.3fs",
                 ids, summary.streams, summary.batches, total, cutoff, summary.seconds)
        if trim:
            await e.wal.trim(cutoff)
        return summary

    async def _put(self, key: str, body: bytes, deadline: float) -> None:
        loop = asyncio.get_running_loop()
        delay = 0.05
        while True:
            try:
                if buggify.fire("upload.put.fail"):
                    raise OSError("BUGGIFY: the object PUT failed")
                await loop.run_in_executor(self.engine.s3_executor, self.engine.store.put, key, body)
                return
            except Exception as ex:
                if clock.wall() >= deadline:
                    raise
                log.warning("PUT %s (%d bytes) failed (%r); retrying in %.2fs", key, len(body), ex, delay)
                await asyncio.sleep(delay)
                delay = min(delay * 2, 2.0)
