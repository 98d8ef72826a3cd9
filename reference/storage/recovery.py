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

In a cluster every record carries the stream epoch it was written under;
a record of an older epoch than the stream's current one (written by a node
that has since lost the stream, or by a zombie after it was fenced) is
dropped, never replayed.

A stream whose first recovered batch lies beyond its committed end offset
has a hole: acknowledged data is gone. That is logged as an error (AutoMQ
treats it as a bug signal) and that stream's records are not replayed.
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

log = logging.getLogger(__name__)


@dataclass
class ReplayPlan:
    replay: list[tuple[int, WalEntry]] = field(default_factory=list)  # (WAL offset, entry)
    committed: int = 0       # already in S3: dropped
    unknown: int = 0         # for streams that no longer exist: dropped
    stale: int = 0           # written under an older stream epoch: dropped
    errors: list[str] = field(default_factory=list)


def plan_replay(records: list[tuple[int, bytes]], end_offsets: dict[int, int],
                epochs: dict[int, int] | None = None) -> ReplayPlan:
    """Decide, from the scanned WAL records and each stream's committed end
    offset (and, in a cluster, its current epoch), which records to replay. Pure."""
    plan = ReplayPlan()
    expect = dict(end_offsets)
    broken: set[int] = set()
    for wal_offset, body in records:
        try:
            entry = decode_body(body)
        except Exception as e:
            plan.errors.append(f"WAL record at {wal_offset}: undecodable body ({e})")
            continue
        sid = entry.stream_id
        if sid not in expect:
            plan.unknown += 1
            continue
        if sid in broken:
            continue
        if epochs is not None and entry.epoch != epochs[sid]:
            if entry.epoch < epochs[sid]:
                plan.stale += 1
                continue
            plan.errors.append(f"stream {sid}: WAL record at {wal_offset} has epoch {entry.epoch}, newer than "
                               f"the stream's {epochs[sid]}; not replaying this stream")
            broken.add(sid)
            continue
        if entry.end_offset <= end_offsets[sid]:
            plan.committed += 1
            continue
        if entry.base_offset != expect[sid]:
            plan.errors.append(f"stream {sid}: WAL record at {wal_offset} has offset {entry.base_offset}, "
                               f"expected {expect[sid]}: acknowledged data may be lost; not replaying this stream")
            broken.add(sid)
            continue
        plan.replay.append((wal_offset, entry))
        expect[sid] = entry.end_offset
    return plan


async def recover(engine) -> dict:
    """Scan the WAL, replay, upload, commit and reset. Returns a summary."""
    e = engine
    loop = asyncio.get_running_loop()
    log.info("%s", e.wal_file.describe())
    scan: ScanResult = await loop.run_in_executor(e.wal_executor, e.wal_file.scan)
    if bugs.enabled("skip-wal-replay"):  # planted bug: the WAL is ignored, its records forgotten
        scan.records = []
    if scan.corrupt and scan.lost_after:
        log.error("WAL scan stopped at offset %d: %s; the damaged record is not served, and %d valid-looking "
                  "records beyond it are LOST", scan.end, scan.stop_reason, scan.lost_after)
    elif scan.corrupt:
        # nothing valid after it: most likely a write torn by the crash, never acknowledged
        log.warning("WAL scan stopped at offset %d: %s (a torn last write?); the damaged record is not served",
                    scan.end, scan.stop_reason)
    epochs = {sid: s.epoch for sid, s in e.streams.items()} if getattr(e, "cluster", False) else None
    plan = plan_replay(scan.records, {sid: s.meta.end_offset for sid, s in e.streams.items()}, epochs)
    for err in plan.errors:
        log.error("recovery: %s", err)
    replayed_bytes = 0
    for wal_offset, entry in plan.replay:
        s = e.streams[entry.stream_id]
        header = parse_header(entry.payload)
        s.producers.record(header, entry.base_offset)
        s.next_offset = s.high_watermark = entry.end_offset
        e.cache.insert(entry.stream_id, CachedBatch(entry.base_offset, entry.end_offset, entry.payload,
                                                    header.max_timestamp, scan.end))
        replayed_bytes += len(entry.payload)
    summary = None
    if plan.replay:
        summary = await e.uploader.upload_once(cutoff=scan.end, trim=False)
    new_start = await loop.run_in_executor(e.wal_executor, e.wal_file.reset, scan.end, e.node_id, e.node_epoch)
    result = {"scanned": len(scan.records), "replayed": len(plan.replay), "replayed_bytes": replayed_bytes,
              "committed": plan.committed, "unknown": plan.unknown, "stale": plan.stale, "errors": plan.errors,
              "corrupt": scan.corrupt, "stop_reason": scan.stop_reason, "lost_after": scan.lost_after,
              "wal_start": scan.start, "wal_end": scan.end, "new_start": new_start,
              "objects": summary.object_ids if summary else []}
    log.info("recovered %d records from WAL [%d, %d): %d replayed (%d bytes) and uploaded to %s, "
             "%d already committed, %d of deleted or not-owned streams, %d of stale epochs; WAL reset to %d "
             "(stop: %s)", len(scan.records), scan.start, scan.end, len(plan.replay), replayed_bytes,
             result["objects"], plan.committed, plan.unknown, plan.stale, new_start, scan.stop_reason)
    return result
