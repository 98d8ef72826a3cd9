"""Recovery: bring a node's WAL back into S3 before serving.

On start (after a crash, a clean stop, or on another node that took over the
volume): read the newest valid WAL header, scan records from its trim offset
and stop at the first bad CRC, stale lap or gap (a damaged record is logged,
never served); drop every record the metadata already has committed (a
stream's end offset is past it); replay the rest into the log cache and the
producer tables (rebuilt from the committed snapshot plus the replayed
batches); upload and commit them; then *reset* the WAL: the file WAL's
trim offset jumps a whole lap past the old data, so no stale record can
ever look current again, and new writes start there (the S3 WAL deletes
the objects it scanned instead).

Memory stays bounded whatever the WAL holds (a full 2 GiB WAL after a long
S3 outage): the WAL is scanned, replayed and uploaded in chunks of about
`upload_bytes` (at most half the log cache), each committed before the next is read, so recovery holds one
chunk (plus the log cache's evictable, already uploaded tail) at a time.

In a cluster every record carries the stream epoch it was written under;
a record of an older epoch than the stream's current one (written by a node
that has since lost the stream, or by a zombie after it was fenced) is
dropped, never replayed; one of a newer epoch than the metadata knows is an
error and stops that stream's replay.

Every replayed batch is validated again as on produce (reference.validation):
a record that no client could read is never served.

A stream whose records in the WAL do not continue its committed end offset
(the first one lies beyond it, or one is missing between two), or whose next
record holds a batch that fails validation, has a hole: acknowledged data is
gone. So has a WAL whose scan stopped at a damaged record with records of
the current lap beyond it (acknowledged after the damaged one was written,
so the damage is no torn last write), or at a record that cannot be read at
all (EIO from a bad sector: unreadable is not torn, the bytes may be whole).
Serving would hand the lost offsets to new appends, so that two different
records were acknowledged at one offset. As AutoMQ treats it (a bug
signal), recovery refuses: `on_gap` raises `RecoveryRefused`, the engine
does not start, and the WAL is left as it is (not reset) for an operator to
inspect, or for a later start once the sector reads again. That decision
lives in `on_gap` alone. A damaged record with nothing valid after it is a
write torn by the crash, never acknowledged: the scan stops there, and
recovery serves.
"""
from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass, field

from reference import bugs
from reference.batch import parse_header
from reference.storage.log_cache import CachedBatch
from reference.storage.stream_record import WalEntry, decode_body
from reference.storage.wal import ScanResult
from reference.validation import MAX_DECOMPRESSED, InvalidBatch, validate_batch

log = logging.getLogger(__name__)


class RecoveryRefused(Exception):
    """Recovery found acknowledged data missing: the node must not serve."""


@dataclass(frozen=True)
class Gap:
    """Where a stream's recovered records stop being servable."""
    stream_id: int
    expected: int        # the offset the stream's next record must have
    found: int           # the base offset of the record found instead
    wal_offset: int
    invalid: str = ""    # or: the record has the right offset, but its batch fails validation

    def describe(self) -> str:
        if self.invalid:
            return (f"stream {self.stream_id}: WAL record at {self.wal_offset} (offset {self.found}) holds a batch "
                    f"that cannot be served ({self.invalid}): acknowledged records from {self.found} on are lost")
        return (f"stream {self.stream_id}: WAL record at {self.wal_offset} has offset {self.found}, expected "
                f"{self.expected}: acknowledged records [{self.expected}, {self.found}) are lost")


@dataclass(frozen=True)
class WalHole:
    """The WAL scan stopped at a damaged or unreadable record: what lies
    between it and the records found beyond it is lost to every stream."""
    wal_offset: int                      # where the scan stopped
    reason: str
    lost_after: int                      # records of this lap found beyond it
    lost_span: tuple[int, int] | None    # WAL offsets from the first of them to past the last

    def describe(self) -> str:
        beyond = (f"; {self.lost_after} acknowledged records lie beyond it"
                  + (f", WAL offsets [{self.lost_span[0]}, {self.lost_span[1]})" if self.lost_span else "")
                  if self.lost_after else "; nothing readable lies beyond it")
        return (f"WAL scan stopped at offset {self.wal_offset}: {self.reason}{beyond}: acknowledged records "
                f"from WAL offset {self.wal_offset} on are lost")


def wal_hole(scan: ScanResult) -> WalHole | None:
    """The hole a scan's stop leaves, if it is one: a damaged record with
    records of this lap beyond it, or a record that could not be read. A
    damaged record with nothing after it is a torn last write: no hole."""
    if scan.corrupt and (scan.lost_after or scan.unreadable):
        return WalHole(scan.end, scan.stop_reason, scan.lost_after, scan.lost_span)
    return None


@dataclass
class ReplayPlan:
    replay: list[tuple[int, WalEntry]] = field(default_factory=list)  # (WAL offset, entry)
    committed: int = 0       # already in S3: dropped
    unknown: int = 0         # for streams that no longer exist: dropped
    stale: int = 0           # written under an older stream epoch (a node that lost the stream): dropped
    errors: list[str] = field(default_factory=list)
    gaps: list[Gap] = field(default_factory=list)


class ReplayPlanner:
    """Decides, from the scanned WAL records and each stream's committed end
    offset, which records to replay; fed one chunk of records at a time, it
    carries each stream's expected next offset from chunk to chunk. Pure."""

    def __init__(self, end_offsets: dict[int, int], max_decompressed: int = MAX_DECOMPRESSED,
                 epochs: dict[int, int] | None = None):
        self.max_decompressed = max_decompressed
        self.epochs = epochs     # in a cluster: each stream's current epoch
        self.end_offsets = dict(end_offsets)
        self.expect = dict(end_offsets)
        self.broken: set[int] = set()   # streams past a gap: nothing more of them is replayed

    def plan(self, records: list[tuple[int, bytes]]) -> ReplayPlan:
        plan = ReplayPlan()
        for wal_offset, body in records:
            try:
                entry = decode_body(body)
            except Exception as e:
                plan.errors.append(f"WAL record at {wal_offset}: undecodable body ({e})")
                continue
            sid = entry.stream_id
            if sid not in self.expect:
                plan.unknown += 1
                continue
            if sid in self.broken:
                continue
            if self.epochs is not None and entry.epoch != self.epochs[sid]:
                if entry.epoch < self.epochs[sid]:
                    plan.stale += 1
                    continue
                plan.errors.append(f"stream {sid}: WAL record at {wal_offset} has epoch {entry.epoch}, newer "
                                   f"than the stream's {self.epochs[sid]}; not replaying this stream")
                self.broken.add(sid)
                continue
            if entry.end_offset <= self.end_offsets[sid]:
                plan.committed += 1
                continue
            invalid = "" if entry.base_offset != self.expect[sid] else self._invalid(entry)
            if entry.base_offset != self.expect[sid] or invalid:
                gap = Gap(sid, self.expect[sid], entry.base_offset, wal_offset, invalid)
                plan.gaps.append(gap)
                plan.errors.append(gap.describe())
                self.broken.add(sid)
                continue
            plan.replay.append((wal_offset, entry))
            self.expect[sid] = entry.end_offset
        return plan


    def _invalid(self, entry: WalEntry) -> str:
        """Why the entry's batch could not be served (validated as on
        produce: a record no client could read never is), or ''."""
        try:
            header = validate_batch(entry.payload, self.max_decompressed).header
        except InvalidBatch as e:
            return str(e)
        if header.base_offset != entry.base_offset or header.last_offset_delta != entry.last_offset_delta:
            return (f"batch offsets {header.base_offset}+{header.last_offset_delta} differ from the record's "
                    f"{entry.base_offset}+{entry.last_offset_delta}")
        return ""


def plan_replay(records: list[tuple[int, bytes]], end_offsets: dict[int, int],
                epochs: dict[int, int] | None = None) -> ReplayPlan:
    """The plan for all `records` at once (see ReplayPlanner)."""
    return ReplayPlanner(end_offsets, epochs=epochs).plan(records)


def on_gap(gaps: list, describe_stream) -> None:
    """What recovery does about a hole (a stream's `Gap`, or a `WalHole`):
    refuse to start, so no new append can reuse an offset already
    acknowledged to another record."""
    if not gaps:
        return
    lines = "; ".join(gap.describe() + (f" ({describe_stream(gap.stream_id)})" if isinstance(gap, Gap) else "")
                      for gap in gaps)
    if bugs.enabled("serve-after-gap"):  # planted bug: log the hole, then reset the WAL and serve past it
        log.error("WAL recovery found acknowledged data missing: %s. Serving anyway (planted bug "
                  "serve-after-gap): new appends reuse those offsets", lines)
        return
    raise RecoveryRefused(
        f"WAL recovery found acknowledged data missing: {lines}. Refusing to serve: new appends would reuse "
        "those offsets. The WAL is left as it is (not reset) for inspection.")


async def recover(engine) -> dict:
    """Scan the WAL chunk by chunk, replay, upload and commit each chunk, then
    reset the WAL. Returns a summary. Raises RecoveryRefused (see `on_gap`)."""
    e = engine
    loop = asyncio.get_running_loop()
    log.info("%s", e.wal_file.describe())
    chunk_bytes = max(1, min(e.config.effective_upload_bytes, e.config.cache_size // 2))
    epochs = {sid: s.epoch for sid, s in e.streams.items()} if getattr(e, "cluster", False) else None
    planner = ReplayPlanner({sid: s.meta.end_offset for sid, s in e.streams.items()},
                            e.config.max_decompressed_batch, epochs)
    totals = {"scanned": 0, "replayed": 0, "replayed_bytes": 0, "committed": 0, "unknown": 0, "stale": 0,
              "chunks": 0}
    errors: list[str] = []
    object_ids: list[int] = []
    start = None
    while True:
        scan: ScanResult = await loop.run_in_executor(e.wal_executor, e.wal_file.scan, start, chunk_bytes)
        if start is None:
            wal_start = scan.start
        start = scan.end
        if bugs.enabled("skip-wal-replay"):  # planted bug: the WAL is ignored, its records forgotten
            scan.records = []
        plan = await loop.run_in_executor(e.wal_executor, planner.plan, scan.records)  # validation: CPU
        totals["scanned"] += len(scan.records)
        scan.records = []  # the plan holds what is replayed; let the rest go
        for err in plan.errors:
            log.error("recovery: %s", err)
        errors.extend(plan.errors)
        on_gap(plan.gaps, lambda sid: _stream_name(e, sid))
        for _wal_offset, entry in plan.replay:
            s = e.streams[entry.stream_id]
            header = parse_header(entry.payload)
            s.producers.record(header, entry.base_offset)
            s.next_offset = s.high_watermark = entry.end_offset
            e.cache.insert(entry.stream_id, CachedBatch(entry.base_offset, entry.end_offset, entry.payload,
                                                        header.max_timestamp, scan.end))
            totals["replayed_bytes"] += len(entry.payload)
        totals["chunks"] += 1
        totals["replayed"] += len(plan.replay)
        totals["committed"] += plan.committed
        totals["unknown"] += plan.unknown
        totals["stale"] += plan.stale
        if plan.replay:
            # each chunk in S3 before the next is read: recovery's memory is one chunk
            summary = await e.uploader.upload_once(cutoff=scan.end, trim=False)
            if summary is not None:
                object_ids.extend(summary.object_ids)
        if scan.done:
            break
    hole = wal_hole(scan)
    if hole is not None:
        errors.append(hole.describe())
        on_gap([hole], lambda sid: _stream_name(e, sid))
    elif scan.corrupt:
        # nothing valid after it: most likely a write torn by the crash, never acknowledged
        log.warning("WAL scan stopped at offset %d: %s (a torn last write?); the damaged record is not served",
                    scan.end, scan.stop_reason)
    new_start = await loop.run_in_executor(e.wal_executor, e.wal_file.reset, scan.end, e.node_id, e.node_epoch)
    result = {**totals, "errors": errors, "corrupt": scan.corrupt, "stop_reason": scan.stop_reason,
              "lost_after": scan.lost_after, "unreadable": scan.unreadable, "wal_start": wal_start, "wal_end": scan.end, "new_start": new_start,
              "objects": object_ids}
    log.info("recovered %d records from WAL [%d, %d) in %d chunks: %d replayed (%d bytes) and uploaded to %s, "
             "%d already committed, %d of deleted or not-owned streams, %d of stale epochs; WAL reset to %d "
             "(stop: %s)", totals["scanned"], wal_start, scan.end, totals["chunks"], totals["replayed"],
             totals["replayed_bytes"], object_ids, totals["committed"], totals["unknown"], totals["stale"],
             new_start, scan.stop_reason)
    return result


def _stream_name(engine, stream_id: int) -> str:
    for name, topic in engine.meta.state.topics.items():
        for partition in range(topic["partitions"]):
            meta = engine.meta.state.stream_for(name, partition)
            if meta is not None and meta.stream_id == stream_id:
                return f"{name}-{partition}"
    return "no topic"
