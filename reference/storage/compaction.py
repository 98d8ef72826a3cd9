"""Compaction: merge small stream-set objects, splitting big streams out;
and merge contiguous stream objects of one stream.

Every upload makes one stream-set object, so a busy node makes many small
ones, and a reader of one partition would touch all of them. The compactor
picks the oldest committed stream-set objects smaller than
`compaction_small_bytes` (at least two, at most `compaction_max_objects`),
reads them whole, regroups their batches by stream, and writes one new
stream-set object for the small streams plus one stream object per stream
with at least `stream_object_bytes`. The new objects are committed and the
sources marked for destruction in *one* metadata record, which the metadata
checks covers exactly the same (stream, offset) ranges: offsets and bytes
never change. The sources are deleted after `object_retention` (readers that
looked them up just before may still be reading).

Stream-object compaction (AutoMQ's second kind): a busy stream gets its own
stream object at every upload, so over time it has a long chain of them.
Runs of at least two committed stream objects of one stream whose ranges
follow on exactly (one's end is the next's start), up to
`stream_compaction_max_bytes` (AutoMQ: 10 GiB, streamed; here read into
memory, so smaller), are rewritten as one stream object holding the same
batches, byte for byte, at the same offsets: committed with the sources
marked for destruction in one record, checked for the same coverage, and
the sources deleted after retention like any other garbage.
"""
from __future__ import annotations

import asyncio
import logging

from reference import clock
from reference.storage.metadata import COMMITTED, CommitRejected, MetadataState, object_key
from reference.storage.object_format import StreamRecord, decode_object, encode_object

log = logging.getLogger(__name__)


def pick_sources(state: MetadataState, small_bytes: int, max_objects: int, node: int | None = None) -> list[int]:
    """The oldest small committed stream-set objects (in a cluster: those
    `node` uploaded, so that two nodes never race to merge one object), or
    [] if fewer than two."""
    small = sorted((o for o in state.objects.values()
                    if o.state == COMMITTED and o.kind == "set" and o.size < small_bytes
                    and (node is None or o.node == node)),
                   key=lambda o: o.order)
    picked = [o.object_id for o in small[:max_objects]]
    return picked if len(picked) >= 2 else []


def regroup(state: MetadataState, sources: dict[int, list[StreamRecord]], stream_object_bytes: int):
    """[(kind, records, ranges)] for the new objects: live streams' records
    (only those the metadata still lists for that object), by stream."""
    by_stream: dict[int, list[StreamRecord]] = {}
    for oid, records in sources.items():
        live = {(sid, start, end) for sid, start, end in state.objects[oid].ranges}
        for r in records:
            if any(sid == r.stream_id and start <= r.base_offset < end for sid, start, end in live):
                by_stream.setdefault(r.stream_id, []).append(r)
    out, small = [], []
    for sid in sorted(by_stream):
        rs = sorted(by_stream[sid], key=lambda r: r.base_offset)
        size = sum(len(r.data) for r in rs)
        if size >= stream_object_bytes:
            out.append(("stream", rs, ranges_of(rs)))
        else:
            small.extend(rs)
    if small:
        out.insert(0, ("set", small, ranges_of(small)))
    return out


def ranges_of(records: list[StreamRecord]) -> list[list[int]]:
    """Contiguous [stream, start, end) runs of records sorted by (stream, offset)."""
    out: list[list[int]] = []
    for r in sorted(records, key=lambda r: (r.stream_id, r.base_offset)):
        if out and out[-1][0] == r.stream_id and out[-1][2] == r.base_offset:
            out[-1][2] = r.end_offset
        else:
            out.append([r.stream_id, r.base_offset, r.end_offset])
    return out


def pick_stream_object_runs(state: MetadataState, max_bytes: int, max_objects: int,
                            streams=None) -> list[list[int]]:
    """Runs of >= 2 committed single-range stream objects of one stream (in
    a cluster: of the `streams` this node holds), contiguous in offsets, in
    offset order, each at most max_bytes in all."""
    by_stream: dict[int, list[tuple[int, int, int, int]]] = {}
    for o in state.objects.values():
        if o.state == COMMITTED and o.kind == "stream" and len(o.ranges) == 1 and o.ranges[0][0] in state.streams \
                and (streams is None or o.ranges[0][0] in streams):
            sid, start, end = o.ranges[0]
            by_stream.setdefault(sid, []).append((start, end, o.size, o.object_id))
    runs: list[list[int]] = []
    for sid in sorted(by_stream):
        run: list[int] = []
        run_end = run_size = 0
        for start, end, size, oid in sorted(by_stream[sid]):
            if run and start == run_end and run_size + size <= max_bytes and len(run) < max_objects:
                run.append(oid)
                run_end, run_size = end, run_size + size
                continue
            if len(run) >= 2:
                runs.append(run)
            run, run_end, run_size = [oid], end, size
        if len(run) >= 2:
            runs.append(run)
    return runs


class Compactor:
    def __init__(self, engine):
        self.engine = engine
        self.compactions = 0
        self.stream_compactions = 0

    async def run(self) -> None:
        e = self.engine
        while not e.closing and not e.failed:
            try:
                await asyncio.wait_for(e.stopping.wait(), e.config.compaction_interval)
                return
            except asyncio.TimeoutError:
                pass
            try:
                await self.compact_once()
                await self.compact_stream_objects_once()
            except asyncio.CancelledError:
                raise
            except Exception as ex:
                log.warning("compaction failed: %r", ex)

    async def compact_once(self) -> list[int] | None:
        """Merge one set of small objects. Returns the new object ids."""
        e = self.engine
        cfg = e.config
        loop = asyncio.get_running_loop()
        async with e.uploader._lock:  # one writer of objects at a time
            state = e.meta.state
            picked = pick_sources(state, cfg.compaction_small_bytes, cfg.compaction_max_objects,
                                  e.node_id if e.cluster else None)
            if not picked:
                return None
            bodies = await asyncio.gather(*[loop.run_in_executor(e.s3_executor, e.store.get, object_key(oid))
                                            for oid in picked])
            sources = {oid: decode_object(b) for oid, b in zip(picked, bodies)}
            plan = regroup(state, sources, cfg.stream_object_bytes)
            deadline = clock.wall() + cfg.object_ttl
            ids = await e.meta.append({"type": "prepare_objects", "node": e.node_id, "count": len(plan),
                                       "deadline": deadline, "ts": clock.wall()}) if plan else []
            objects = []
            for (kind, records, ranges), oid in zip(plan, ids):
                body, _ = await loop.run_in_executor(e.s3_executor, encode_object, records, cfg.data_block_bytes)
                await loop.run_in_executor(e.s3_executor, e.store.put, object_key(oid), body)
                objects.append({"id": oid, "size": len(body), "kind": kind, "ranges": ranges})
            try:
                await e.meta.append({"type": "commit_objects", "node": e.node_id, "objects": objects,
                                     "compacted": picked, "ts": clock.wall()})
            except CommitRejected as ex:
                # e.g. a topic was deleted meanwhile; the new objects expire as garbage
                log.warning("compaction of %s into %s rejected: %s", picked, ids, ex)
                return None
            self.compactions += 1
            log.info("compacted objects %s (%d bytes) into %s (%s)", picked, sum(len(b) for b in bodies), ids,
                     ", ".join(f"{o['kind']} {o['size']}B" for o in objects))
            return ids

    async def compact_stream_objects_once(self) -> list[int]:
        """Merge every run of contiguous stream objects. Returns the new ids."""
        e = self.engine
        cfg = e.config
        loop = asyncio.get_running_loop()
        made: list[int] = []
        async with e.uploader._lock:
            for run in pick_stream_object_runs(e.meta.state, cfg.stream_compaction_max_bytes,
                                               cfg.compaction_max_objects, set(e.streams) if e.cluster else None):
                state = e.meta.state
                if any(state.objects.get(oid) is None or state.objects[oid].state != COMMITTED for oid in run):
                    continue
                sid = state.objects[run[0]].ranges[0][0]
                start, end = state.objects[run[0]].ranges[0][1], state.objects[run[-1]].ranges[0][2]
                bodies = await asyncio.gather(*[loop.run_in_executor(e.s3_executor, e.store.get, object_key(oid))
                                                for oid in run])
                records = sorted((r for b in bodies for r in decode_object(b)
                                  if r.stream_id == sid and start <= r.base_offset < end),
                                 key=lambda r: r.base_offset)
                deadline = clock.wall() + cfg.object_ttl
                (oid,) = await e.meta.append({"type": "prepare_objects", "node": e.node_id, "count": 1,
                                              "deadline": deadline, "ts": clock.wall()})
                body, _ = await loop.run_in_executor(e.s3_executor, encode_object, records, cfg.data_block_bytes)
                await loop.run_in_executor(e.s3_executor, e.store.put, object_key(oid), body)
                try:
                    await e.meta.append({"type": "commit_objects", "node": e.node_id, "compacted": run,
                                         "objects": [{"id": oid, "size": len(body), "kind": "stream",
                                                      "ranges": ranges_of(records)}], "ts": clock.wall()})
                except CommitRejected as ex:  # e.g. the topic was deleted meanwhile: the new object expires
                    log.warning("stream object compaction of %s into %d rejected: %s", run, oid, ex)
                    continue
                self.stream_compactions += 1
                made.append(oid)
                log.info("merged stream objects %s of stream %d, offsets [%d, %d), into stream object %d "
                         "(%d bytes)", run, sid, start, end, oid, len(body))
        return made
