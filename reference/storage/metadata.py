"""Durable metadata kept in S3 itself: an append-only log of JSON records.

No other database: record number n is the object `<prefix>/log/<n, 20 digits>`,
created with a conditional PUT (`If-None-Match: *`). Two writers that both
think n is next cannot both succeed; the loser is *fenced* by the object store
and must stop (it raises `MetadataFenced`, it never overwrites). Every
`snapshot_every` records a snapshot of the whole state is written to
`<prefix>/snapshot/<n, 20 digits>` (state after record n); loading starts
from the newest snapshot and replays the log after it. Log records are never
deleted: a deleted key would let a stale writer's conditional PUT succeed.

What the metadata holds (`MetadataState`, pure data, applied by `apply`):
topics and their partitions' stream ids; streams with epoch, start and end
offsets (the end offset is where the next committed object must start) and
the producer-state snapshot at that end offset; objects with their lifecycle
(prepared -> committed -> destroy -> gone) and ranges; the producer-id and
object-id counters; node epochs; consumer groups' committed offsets.

Record types: node_open, create_topic, delete_topic, allocate_producer_ids,
prepare_objects, commit_objects (also used by compaction, with `compacted`
sources), mark_destroy, destroyed, commit_group_offsets.

Cluster records (written only by the controller, `reference/cluster/`):
controller (a new controller's epoch: from then on an older controller's
next record collides with this key and is fenced by S3), register_node (a
broker process: node epoch + 1), fence_node (node epoch + 1, fenced, with a
recovery token for the node that recovers its WAL), open_streams /
close_streams (a stream is open on at most one node; opening bumps the stream
epoch), failover and reassignment (what happened, with step timings).

Fencing checks (`check`), as AutoMQ's controller does them:
- nodeEpochCheck: a record a broker asked for carries `node` and
  `node_epoch`; it is refused (NODE_EPOCH_EXPIRED) unless that is the node's
  current epoch, and (NODE_FENCED) if the node is fenced, unless it carries
  the fenced epoch's recovery token (the node recovering its WAL acts for it).
  Once a cluster has a controller, every broker record must carry them.
- streamAdvanceCheck: a commit's every range must belong to a stream the
  committing node holds open (at the stream epoch it names, `epochs`), and
  start at the stream's committed end (OFFSET_NOT_MATCHED otherwise).
"""
from __future__ import annotations

import asyncio
import bisect
import json
import logging
from concurrent.futures import Executor
from dataclasses import dataclass, field

from reference import buggify, bugs, ids
from reference.storage.s3io import ObjectExists, ObjectStore

log = logging.getLogger(__name__)

PREPARED, COMMITTED, DESTROY = "prepared", "committed", "destroy"


class MetadataError(Exception):
    pass


class MetadataFenced(MetadataError):
    """Another writer appended at our sequence number: we lost our position."""


class ControllerUnavailable(MetadataError):
    """A cluster broker's metadata write found no controller in time (transient)."""


class CommitRejected(MetadataError):
    """A record that does not fit the current state (e.g. OFFSET_NOT_MATCHED)."""


@dataclass
class StreamMeta:
    stream_id: int
    topic: str
    partition: int
    epoch: int = 0
    start_offset: int = 0
    end_offset: int = 0          # committed to S3 up to here (exclusive)
    producers: dict = field(default_factory=dict)  # ProducerStateTable snapshot at end_offset
    owner: int | None = None     # the node holding it open (cluster), None while closed
    epoch_starts: list = field(default_factory=list)  # [[epoch, first offset], ...] (Kafka's leader epochs)

    def to_json(self):
        return [self.stream_id, self.topic, self.partition, self.epoch, self.start_offset,
                self.end_offset, self.producers, self.owner, self.epoch_starts]

    @classmethod
    def from_json(cls, j):
        return cls(*j)


@dataclass
class ObjectMeta:
    object_id: int
    state: str
    node: int
    deadline: float = 0.0         # a prepared object not committed by then is garbage
    size: int = 0
    kind: str = "set"             # "set" (stream-set object) or "stream" (stream object)
    ranges: list = field(default_factory=list)   # [[stream id, start, end), ...]
    marked_at: float = 0.0
    order: int = 0                # commit order (the seq of its commit record)

    def to_json(self):
        return [self.object_id, self.state, self.node, self.deadline, self.size, self.kind,
                self.ranges, self.marked_at, self.order]

    @classmethod
    def from_json(cls, j):
        return cls(*j)


def object_key(object_id: int) -> str:
    # a hashed-looking prefix spreads keys over S3 partitions, as AutoMQ does
    return f"objects/{object_id % 997:03d}/{object_id:016d}"


class MetadataState:
    def __init__(self):
        self.seq = -1
        self.topics: dict[str, dict] = {}
        self.streams: dict[int, StreamMeta] = {}
        self.objects: dict[int, ObjectMeta] = {}
        self.next_stream_id = 1
        self.next_object_id = 1
        self.next_producer_id = 1000
        self.nodes: dict[int, int] = {}      # node id -> epoch
        # cluster: node id -> {"fenced", "token", "rpc", "listen", "volume"}
        self.node_info: dict[int, dict] = {}
        self.controller: dict | None = None  # {"node", "epoch"} of the newest controller
        self.history: list[dict] = []         # the newest failover / reassignment records
        self.groups: dict[str, dict[str, list]] = {}  # group -> "topic:partition" -> [offset, metadata, leader epoch]
        # derived, not serialized: per stream, committed ranges sorted by start
        self.stream_ranges: dict[int, list[tuple[int, int, int]]] = {}

    # -- serialization ------------------------------------------------------------
    def to_json(self) -> dict:
        return {"seq": self.seq, "topics": self.topics,
                "streams": [s.to_json() for s in self.streams.values()],
                "objects": [o.to_json() for o in self.objects.values()],
                "next_stream_id": self.next_stream_id, "next_object_id": self.next_object_id,
                "next_producer_id": self.next_producer_id,
                "nodes": {str(k): v for k, v in self.nodes.items()}, "groups": self.groups,
                "node_info": {str(k): v for k, v in self.node_info.items()}, "controller": self.controller,
                "history": self.history}

    @classmethod
    def from_json(cls, j: dict) -> "MetadataState":
        s = cls()
        s.seq = j["seq"]
        s.topics = j["topics"]
        s.streams = {x[0]: StreamMeta.from_json(x) for x in j["streams"]}
        s.objects = {x[0]: ObjectMeta.from_json(x) for x in j["objects"]}
        s.next_stream_id = j["next_stream_id"]
        s.next_object_id = j["next_object_id"]
        s.next_producer_id = j["next_producer_id"]
        s.nodes = {int(k): v for k, v in j["nodes"].items()}
        s.groups = j["groups"]
        s.node_info = {int(k): v for k, v in j.get("node_info", {}).items()}
        s.controller = j.get("controller")
        s.history = j.get("history", [])
        s.rebuild_ranges()
        return s

    def rebuild_ranges(self) -> None:
        self.stream_ranges = {}
        for o in sorted(self.objects.values(), key=lambda o: o.order):
            if o.state == COMMITTED:
                self._add_ranges(o)

    def _add_ranges(self, o: ObjectMeta) -> None:
        for sid, start, end in o.ranges:
            if sid in self.streams:
                bisect.insort(self.stream_ranges.setdefault(sid, []), (start, end, o.object_id))

    def _remove_ranges(self, o: ObjectMeta) -> None:
        for sid, start, end in o.ranges:
            lst = self.stream_ranges.get(sid)
            if lst and (start, end, o.object_id) in lst:
                lst.remove((start, end, o.object_id))

    # -- queries -------------------------------------------------------------
    def find_object(self, stream_id: int, offset: int) -> tuple[int, int, int] | None:
        """(start, end, object id) of the committed range holding offset."""
        lst = self.stream_ranges.get(stream_id, [])
        i = bisect.bisect_right(lst, (offset, float("inf"), 0)) - 1
        if i >= 0 and lst[i][0] <= offset < lst[i][1]:
            return lst[i]
        return None

    def live_nodes(self) -> list[int]:
        """Registered, unfenced nodes (cluster)."""
        return sorted(n for n, info in self.node_info.items() if not info.get("fenced"))

    def owned_by(self, node: int) -> list[int]:
        return sorted(sid for sid, s in self.streams.items() if s.owner == node)

    def stream_for(self, topic: str, partition: int) -> StreamMeta | None:
        t = self.topics.get(topic)
        if t is None or not 0 <= partition < len(t["streams"]):
            return None
        return self.streams.get(t["streams"][partition])


# ----------------------------------------------------------------------------
# sans-I/O: validation and application of records
# ----------------------------------------------------------------------------

# records a broker asks the controller for: stamped with node and node_epoch in a cluster
# (object garbage records, mark_destroy and destroyed, are the controller's own)
BROKER_RECORDS = frozenset({"create_topic", "delete_topic", "allocate_producer_ids", "prepare_objects",
                            "commit_objects", "commit_group_offsets"})
HISTORY_KEPT = 200
EPOCHS_KEPT = 64


class NodeEpochExpired(CommitRejected):
    """nodeEpochCheck: the record names an older incarnation of its node."""


class NodeFenced(CommitRejected):
    """The node is fenced (in failover): only its recovery may commit for it."""


class StreamFenced(CommitRejected):
    """streamAdvanceCheck: the node does not hold the stream open at that epoch."""


class StreamNotClosed(CommitRejected):
    """open_streams on a stream another node holds open."""


def check_node_epoch(state: MetadataState, rec: dict) -> None:
    """AutoMQ's nodeEpochCheck."""
    if bugs.enabled("no-fencing"):  # planted bug: any epoch, fenced or not, may write
        return
    if "node_epoch" not in rec:
        if state.controller is not None and rec["type"] in BROKER_RECORDS:
            raise CommitRejected(f"{rec['type']} without node epoch in a cluster")
        return
    node, epoch = rec["node"], rec["node_epoch"]
    current = state.nodes.get(node)
    if current != epoch:
        raise NodeEpochExpired(f"NODE_EPOCH_EXPIRED: node {node} epoch {epoch}, current {current}")
    info = state.node_info.get(node, {})
    if info.get("fenced") and (rec.get("recovery") is None or rec.get("recovery") != info.get("token")):
        raise NodeFenced(f"NODE_FENCED: node {node} epoch {epoch} is fenced")


def check_stream_advance(state: MetadataState, rec: dict) -> None:
    """AutoMQ's streamAdvanceCheck for a commit in a cluster (stamped with a
    node epoch): every range's stream is held open by the committing node,
    at the epoch the commit names."""
    if bugs.enabled("no-fencing"):  # planted bug: any node may commit to any stream
        return
    epochs = rec.get("epochs", {})
    for ob in rec["objects"]:
        for sid, _start, _end in ob["ranges"]:
            s = state.streams.get(sid)
            if s is None:
                continue
            if s.owner != rec["node"]:
                raise StreamFenced(f"STREAM_FENCED: stream {sid} is open on node {s.owner}, "
                                   f"not the committing node {rec['node']}")
            named = epochs.get(str(sid))
            if named is not None and named != s.epoch:
                raise StreamFenced(f"STREAM_FENCED: commit for stream {sid} at epoch {named}, "
                                   f"the stream is at epoch {s.epoch}")


def check(state: MetadataState, rec: dict) -> None:
    """Raise CommitRejected if rec cannot apply to state."""
    t = rec["type"]
    check_node_epoch(state, rec)
    if t == "controller":
        have = state.controller["epoch"] if state.controller else 0
        if rec["epoch"] <= have:
            raise CommitRejected(f"controller epoch {rec['epoch']} is not above {have}")
    if t == "fence_node":
        if state.nodes.get(rec["node"]) != rec["epoch"]:
            raise NodeEpochExpired(f"fence of node {rec['node']} epoch {rec['epoch']}: "
                                   f"its epoch is {state.nodes.get(rec['node'])}")
    if t == "open_streams":
        for sid, node, epoch in rec["opens"]:
            s = state.streams.get(sid)
            if s is None:
                raise CommitRejected(f"open of unknown stream {sid}")
            if s.owner is not None:
                raise StreamNotClosed(f"STREAM_NOT_CLOSED: stream {sid} is open on node {s.owner}")
            info = state.node_info.get(node)
            if info is None or info.get("fenced"):
                raise NodeFenced(f"open of stream {sid} on node {node}, which is not a live broker")
            if epoch != s.epoch + 1:
                raise StreamFenced(f"open of stream {sid} at epoch {epoch}, expected {s.epoch + 1}")
    if t == "close_streams":
        for sid, epoch in rec["closes"]:
            s = state.streams.get(sid)
            if s is None:
                continue  # deleted meanwhile
            if s.epoch != epoch or s.owner is None:
                raise StreamFenced(f"close of stream {sid} at epoch {epoch}: it is at epoch {s.epoch}, "
                                   f"owner {s.owner}")
    if t == "create_topic" and rec["name"] in state.topics:
        raise CommitRejected(f"topic {rec['name']} exists")
    if t == "delete_topic" and rec["name"] not in state.topics:
        raise CommitRejected(f"no topic {rec['name']}")
    if t == "commit_objects":
        compacted = rec.get("compacted", [])
        for oid in compacted:
            o = state.objects.get(oid)
            if o is None or o.state != COMMITTED:
                raise CommitRejected(f"compaction source {oid} is not committed")
        for ob in rec["objects"]:
            o = state.objects.get(ob["id"])
            if o is None or o.state != PREPARED:
                raise CommitRejected(f"object {ob['id']} is not prepared (state {o and o.state})")
            if o.deadline < rec["ts"]:
                raise CommitRejected(f"object {ob['id']} prepare deadline passed")
        if compacted:
            _check_compaction(state, rec)
        else:
            if "node_epoch" in rec:
                check_stream_advance(state, rec)
            expect = {}
            for ob in rec["objects"]:
                for sid, start, end in ob["ranges"]:
                    if sid not in state.streams:
                        continue  # deleted meanwhile: its data is dropped
                    at = expect.get(sid, state.streams[sid].end_offset)
                    if start != at:
                        raise CommitRejected(f"OFFSET_NOT_MATCHED: stream {sid} range starts at {start}, "
                                             f"stream end offset is {at}")
                    if end <= start:
                        raise CommitRejected(f"stream {sid}: empty range [{start}, {end})")
                    expect[sid] = end


def _coverage(ranges) -> dict[int, list[tuple[int, int]]]:
    out: dict[int, list] = {}
    for sid, start, end in sorted(ranges):
        lst = out.setdefault(sid, [])
        if lst and lst[-1][1] == start:
            lst[-1] = (lst[-1][0], end)
        else:
            lst.append((start, end))
    return out


def _check_compaction(state, rec) -> None:
    old = _coverage([r for oid in rec["compacted"] for r in state.objects[oid].ranges if r[0] in state.streams])
    new = _coverage([r for ob in rec["objects"] for r in ob["ranges"] if r[0] in state.streams])
    if old != new:
        raise CommitRejected(f"compaction changes coverage: {old} -> {new}")


def apply(state: MetadataState, rec: dict, seq: int):
    """Apply a (checked) record. Returns what it allocated, if anything:
    the object ids of prepare_objects, the first id of allocate_producer_ids."""
    t = rec["type"]
    ts = rec.get("ts", 0.0)
    result = None
    if t == "node_open":
        state.nodes[rec["node"]] = state.nodes.get(rec["node"], 0) + 1
    elif t == "controller":
        state.controller = {"node": rec["node"], "epoch": rec["epoch"]}
    elif t == "register_node":
        state.nodes[rec["node"]] = state.nodes.get(rec["node"], 0) + 1
        state.node_info[rec["node"]] = {"fenced": False, "token": None, "rpc": rec.get("rpc"),
                                        "listen": rec.get("listen"), "volume": rec.get("volume"),
                                        "name": rec.get("name")}
    elif t == "fence_node":
        state.nodes[rec["node"]] = rec["epoch"] + 1
        info = state.node_info.setdefault(rec["node"], {})
        info.update(fenced=True, token=rec.get("token"))
    elif t == "open_streams":
        for sid, node, epoch in rec["opens"]:
            s = state.streams[sid]
            s.owner, s.epoch = node, epoch
            s.epoch_starts.append([epoch, s.end_offset])
            del s.epoch_starts[:-EPOCHS_KEPT]
    elif t == "close_streams":
        for sid, _epoch in rec["closes"]:
            if sid in state.streams:
                state.streams[sid].owner = None
    elif t in ("failover", "reassignment"):
        state.history.append({k: v for k, v in rec.items() if k not in ("writer",)})
        del state.history[:-HISTORY_KEPT]
    elif t == "create_topic":
        ids = list(range(state.next_stream_id, state.next_stream_id + rec["partitions"]))
        state.next_stream_id += rec["partitions"]
        state.topics[rec["name"]] = {"topic_id": rec["topic_id"], "partitions": rec["partitions"],
                                     "configs": rec.get("configs", {}), "streams": ids}
        for p, sid in enumerate(ids):
            state.streams[sid] = StreamMeta(sid, rec["name"], p)
    elif t == "delete_topic":
        topic = state.topics.pop(rec["name"])
        dead = set(topic["streams"])
        for sid in dead:
            state.streams.pop(sid, None)
            state.stream_ranges.pop(sid, None)
        for o in state.objects.values():
            if o.state == COMMITTED and o.ranges and all(r[0] not in state.streams for r in o.ranges):
                o.state, o.marked_at = DESTROY, ts
    elif t == "allocate_producer_ids":
        result = state.next_producer_id
        state.next_producer_id += rec["count"]
    elif t == "prepare_objects":
        for i in range(rec["count"]):
            oid = state.next_object_id + i
            state.objects[oid] = ObjectMeta(oid, PREPARED, rec["node"], deadline=rec["deadline"])
        result = list(range(state.next_object_id, state.next_object_id + rec["count"]))
        state.next_object_id += rec["count"]
    elif t == "commit_objects":
        for oid in rec.get("compacted", []):
            o = state.objects[oid]
            state._remove_ranges(o)
            o.state, o.marked_at = DESTROY, ts
        for ob in rec["objects"]:
            o = state.objects[ob["id"]]
            o.state, o.size, o.kind, o.order = COMMITTED, ob["size"], ob.get("kind", "set"), seq
            o.ranges = [list(r) for r in ob["ranges"] if r[0] in state.streams]
            if not o.ranges:
                o.state, o.marked_at = DESTROY, ts
                continue
            state._add_ranges(o)
            if not rec.get("compacted"):
                for sid, _start, end in o.ranges:
                    state.streams[sid].end_offset = max(state.streams[sid].end_offset, end)
        for sid, snap in rec.get("producers", {}).items():
            if int(sid) in state.streams:
                state.streams[int(sid)].producers = snap
    elif t == "mark_destroy":
        for oid in rec["ids"]:
            o = state.objects.get(oid)
            if o is not None and o.state != DESTROY:
                if o.state == COMMITTED:
                    state._remove_ranges(o)
                o.state, o.marked_at = DESTROY, ts
    elif t == "destroyed":
        for oid in rec["ids"]:
            state.objects.pop(oid, None)
    elif t == "commit_group_offsets":
        g = state.groups.setdefault(rec["group"], {})
        for topic, partition, offset, meta, epoch in rec["offsets"]:
            g[f"{topic}:{partition}"] = [offset, meta, epoch]
    else:
        raise MetadataError(f"unknown metadata record type {t!r}")
    state.seq = seq
    return result


# ----------------------------------------------------------------------------
# I/O: the log in S3
# ----------------------------------------------------------------------------

class MetadataLog:
    def __init__(self, store: ObjectStore, prefix: str = "metadata", snapshot_every: int = 200,
                 executor: Executor | None = None):
        self.store = store
        self.prefix = prefix.strip("/")
        self.snapshot_every = snapshot_every
        self.executor = executor
        self.state = MetadataState()
        self.writer_id = ids.uuid4().hex
        self.fenced: MetadataFenced | None = None
        self._lock = asyncio.Lock()
        self._snapshot_task: asyncio.Task | None = None
        self._inflight: set[asyncio.Task] = set()
        self.on_fenced = None  # called with the MetadataFenced error, once
        self.on_written = None  # called with (seq, record as stored) after each append
        self.records_written = 0

    def log_key(self, seq: int) -> str:
        return f"{self.prefix}/log/{seq:020d}"

    def snapshot_key(self, seq: int) -> str:
        return f"{self.prefix}/snapshot/{seq:020d}"

    # -- loading (blocking) ---------------------------------------------------
    def load_sync(self) -> MetadataState:
        snaps = self.store.list(f"{self.prefix}/snapshot/")
        state = MetadataState()
        for key, _ in reversed(snaps):
            try:
                state = MetadataState.from_json(json.loads(self.store.get(key)))
                break
            except Exception as e:  # a torn or unreadable snapshot: fall back to an older one
                log.warning("metadata snapshot %s unreadable (%r); trying an older one", key, e)
        self.state = state
        n = self.catch_up_sync()
        log.info("metadata loaded: seq %d (%d records after snapshot), %d topics, %d streams, %d objects",
                 state.seq, n, len(state.topics), len(state.streams), len(state.objects))
        return state

    def catch_up_sync(self) -> int:
        """Apply records written after our position (by anyone). Only where
        nothing else touches the state meanwhile (loading, before serving):
        elsewhere read with `read_after` off the event loop and apply on it."""
        n = 0
        for seq, rec in self.read_after(self.state.seq):
            apply(self.state, rec, seq)
            n += 1
        return n

    def read_after(self, seq: int) -> list[tuple[int, dict]]:
        """The records written after `seq`, in order, up to the first gap.
        Reads S3 only: safe in a worker thread while the state is in use."""
        start_after = self.log_key(seq) if seq >= 0 else None
        out = []
        for key, _ in self.store.list(f"{self.prefix}/log/", start_after):
            found = int(key.rsplit("/", 1)[1])
            if found != seq + 1:
                log.warning("metadata log gap: expected %d, found %s; stopping there", seq + 1, key)
                break
            out.append((found, json.loads(self.store.get(key))))
            seq = found
        return out

    # -- appending ---------------------------------------------------------------
    async def append(self, rec: dict):
        """Validate, write durably with a conditional PUT, then apply. Returns
        what `apply` returns. Raises CommitRejected or MetadataFenced.
        Transient S3 errors are retried with the same body at the same key,
        so an ambiguous success is recognised, never duplicated. A caller that
        is cancelled does not interrupt the write: the state stays in step
        with the log."""
        task = asyncio.ensure_future(self._append(rec))
        self._inflight.add(task)
        task.add_done_callback(self._inflight.discard)
        return await asyncio.shield(task)

    async def _append(self, rec: dict):
        async with self._lock:
            if self.fenced:
                raise self.fenced
            check(self.state, rec)
            seq = self.state.seq + 1
            rec = dict(rec, writer=self.writer_id, seq=seq)
            body = json.dumps(rec, separators=(",", ":"), sort_keys=True).encode()
            loop = asyncio.get_running_loop()
            delay = 0.05
            await buggify.delay("metadata.append.slow")
            while True:
                try:
                    # The conditional PUT is what makes a second writer (a deposed
                    # controller) fail instead of overwriting a record others applied.
                    put = self.store.put if bugs.enabled("blind-metadata-write") else self.store.put_if_absent
                    await loop.run_in_executor(self.executor, put, self.log_key(seq), body)
                    break
                except ObjectExists:
                    self.fenced = MetadataFenced(f"metadata record {seq} was written by another writer: fenced")
                    log.error("%s", self.fenced)
                    if self.on_fenced:
                        self.on_fenced(self.fenced)
                    raise self.fenced from None
                except Exception as e:
                    log.warning("metadata append %s failed (%r); retrying in %.2fs", self.log_key(seq), e, delay)
                    await asyncio.sleep(delay)
                    delay = min(delay * 2, 2.0)
            result = apply(self.state, rec, seq)
            self.records_written += 1
            if self.on_written is not None:
                self.on_written(seq, rec)
            if self.snapshot_every and seq % self.snapshot_every == self.snapshot_every - 1:
                self._start_snapshot()
            return result

    def abort(self) -> None:
        """Stop at once, as if the process died (tests' crash simulation)."""
        for t in list(self._inflight):
            t.cancel()
        if self._snapshot_task:
            self._snapshot_task.cancel()
        self.fenced = MetadataFenced("metadata writer aborted")

    def _start_snapshot(self) -> None:
        body = json.dumps(self.state.to_json(), separators=(",", ":")).encode()
        key = self.snapshot_key(self.state.seq)
        loop = asyncio.get_running_loop()

        async def write():
            try:
                await loop.run_in_executor(self.executor, self.store.put, key, body)
                log.info("metadata snapshot %s (%d bytes)", key, len(body))
            except Exception as e:
                log.warning("metadata snapshot %s failed: %r", key, e)
        self._snapshot_task = loop.create_task(write())

    async def flush(self) -> None:
        if self._snapshot_task:
            await asyncio.gather(self._snapshot_task, return_exceptions=True)
