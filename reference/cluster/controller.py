"""The controller: the I/O driver around `core.ControllerCore`.

One node at a time runs it (the holder of the lease, see `lease.py` and
`node.py`). It is the only writer of the metadata log; it keeps broker
sessions, fences, places streams, drives failover and reassignment. Its edges
are small: `MetadataLog` (S3), `RpcPool.call` (brokers), a `VolumeProvider`
(blocking calls, run in an executor), and two clocks (`clock`: monotonic,
for sessions; `wall`: for record timestamps).

Failover of node N (CLUSTER.md, "Failover"), each step timed:
  fence (metadata: N's epoch + 1, fenced, recovery token) -> wait until N
  can ack nothing (at once with I/O-fencing volumes) -> detach N's volume ->
  attach it to a healthy node H -> H recovers the WAL as N (scan, drop
  stale-epoch and committed records, upload, commit with the token) ->
  detach from H, attach back to N's home -> close N's streams and open
  them on live brokers (stream epoch + 1) -> a `failover` record and one
  `highwater-failover {json}` log line.
"""
from __future__ import annotations

import asyncio
import json
import logging
from collections import deque
from concurrent.futures import Executor
from typing import Callable

from reference import buggify, bugs, clock as clocks, ids
from reference.cluster import rpc as R
from reference.cluster.core import ClusterConfig, ControllerCore
from reference.storage.metadata import (BROKER_RECORDS, CommitRejected, MetadataFenced, MetadataLog,
                                        NodeEpochExpired, NodeFenced)

log = logging.getLogger("highwater.controller")
FAILOVER_LOG = "highwater-failover"
REASSIGN_LOG = "highwater-reassignment"
RECENT_RECORDS = 4096


def _ms(seconds: float) -> int:
    return int(round(seconds * 1000))


class Controller:
    def __init__(self, node_id: int, epoch: int, meta: MetadataLog, call, volumes=None,
                 config: ClusterConfig | None = None, executor: Executor | None = None,
                 clock: Callable[[], float] = clocks.monotonic, wall: Callable[[], float] = clocks.wall,
                 lease_valid: Callable[[], bool] = lambda: True, probe=R.probe,
                 lapsed_holder: int | None = None):
        self.node_id = node_id
        self.epoch = epoch                      # the controller epoch (the lease's)
        self.meta = meta
        self.call = call                        # async (address, method, params, timeout) -> result
        self.volumes = volumes
        self.config = config or ClusterConfig()
        self.core = ControllerCore(self.config)
        self.executor = executor
        self.clock, self.wall = clock, wall
        self.lease_valid = lease_valid
        self.probe = probe
        self.lapsed_holder = lapsed_holder          # the previous controller, if its lease expired
        self.recent: deque = deque(maxlen=RECENT_RECORDS)   # (seq, record) this controller wrote
        self.known_seq: dict[int, int] = {}                 # broker -> metadata seq it has
        self.failing: dict[int, asyncio.Task] = {}
        self.moving: dict[int, tuple[int, int]] = {}        # stream -> (from, to) while reassigning
        self.failovers: list[dict] = []
        self.self_recovering: dict[int, float] = {}         # node -> when it was told to recover its own WAL
        self.active = False
        self.deposed: str | None = None
        self._tasks: set[asyncio.Task] = set()
        self._wake = asyncio.Event()
        self._push_wanted = asyncio.Event()
        self._write_lock = asyncio.Lock()

    # ------------------------------------------------------------------ lifecycle
    async def start(self) -> None:
        """Catch up with the metadata log and write our `controller` record:
        from here on an older controller's next write is refused by S3."""
        loop = asyncio.get_running_loop()
        if self.meta.state.seq < 0:
            await loop.run_in_executor(self.executor, self.meta.load_sync)
        else:  # started from a copy of a replica: only what was written since
            await loop.run_in_executor(self.executor, self.meta.catch_up_sync)
        have = (self.meta.state.controller or {}).get("epoch", 0)
        self.epoch = max(self.epoch, have + 1)
        self.meta.on_written = lambda seq, rec: self.recent.append((seq, rec))
        self.meta.on_fenced = lambda exc: self._depose(str(exc))
        await self.meta.append({"type": "controller", "node": self.node_id, "epoch": self.epoch, "ts": self.wall()})
        self.core.take_over(self.meta.state, self.clock())
        if self.lapsed_holder is not None and self.lapsed_holder != self.node_id:
            self.core.lease_lapsed(self.lapsed_holder, self.clock())
        self.active = True
        log.info("controller: node %d took over at epoch %d (metadata seq %d, %d live brokers)",
                 self.node_id, self.epoch, self.meta.state.seq, len(self.meta.state.live_nodes()))
        self._spawn(self._ticker())
        self._spawn(self._pusher())
        # A new controller has had no heartbeat connection to anyone yet, so a
        # broker that died with the old controller (or was it) would only be
        # found out when its session runs out: ask each one now instead.
        for node in self.meta.state.live_nodes():
            rpc = self.meta.state.node_info.get(node, {}).get("rpc")
            if node != self.node_id and rpc:
                self._spawn(self._probe(node, rpc))

    async def stop(self) -> None:
        self.active = False
        for t in list(self._tasks) + list(self.failing.values()):
            t.cancel()
        await asyncio.gather(*self._tasks, *self.failing.values(), return_exceptions=True)

    def _depose(self, why: str) -> None:
        if self.deposed is None:
            self.deposed = why
            log.error("controller node %d epoch %d deposed: %s", self.node_id, self.epoch, why)
        self.active = False
        self._wake.set()

    def _spawn(self, coro) -> asyncio.Task:
        t = asyncio.ensure_future(coro)
        self._tasks.add(t)
        t.add_done_callback(self._tasks.discard)
        return t

    def _check_active(self) -> None:
        if not self.active or not self.lease_valid():
            raise R.RpcError(R.NOT_CONTROLLER, f"node {self.node_id} is no longer the controller")

    # ------------------------------------------------------------------ writing
    async def write(self, rec: dict):
        """Check and append one record (the metadata log serialises)."""
        if self.deposed:
            raise R.RpcError(R.NOT_CONTROLLER, self.deposed)
        try:
            result = await self.meta.append(dict(rec, ts=rec.get("ts", self.wall())))
        except MetadataFenced as e:
            self._depose(str(e))
            raise R.RpcError(R.NOT_CONTROLLER, str(e)) from None
        self._push_wanted.set()
        return result

    def records_since(self, seq: int | None) -> list | None:
        """Records after `seq` from memory, or None if we do not have them all
        (the broker then reads the log from S3)."""
        if seq is None:
            return None
        if seq >= self.meta.state.seq:
            return []
        if not self.recent or self.recent[0][0] > seq + 1:
            return None
        return [rec for s, rec in self.recent if s > seq]

    # ------------------------------------------------------------------ RPC methods
    def handlers(self) -> dict:
        return {"register": self.rpc_register, "recovered": self.rpc_recovered,
                "heartbeat": self.rpc_heartbeat, "append": self.rpc_append,
                "reassign": self.rpc_reassign, "reassignments": self.rpc_reassignments,
                "cluster": self.rpc_cluster, "leave": self.rpc_leave}

    async def rpc_heartbeat(self, p: dict, conn=None):
        self._check_active()
        node, epoch = int(p["node"]), int(p["epoch"])
        status = self.core.heartbeat(self.meta.state, node, epoch, self.clock())
        if conn is not None:
            conn.tags["node"] = node
        if p.get("seq") is not None:
            self.known_seq[node] = int(p["seq"])
        return {"status": status, "seq": self.meta.state.seq, "controller_epoch": self.epoch,
                "records": self.records_since(p.get("seq"))}

    def _volume_home(self, node: int) -> str | None:
        """None if the node's volume is at home (or there are no volumes), else why not."""
        info = self.meta.state.node_info.get(node, {})
        vid = info.get("volume")
        if self.volumes is None or not vid:
            return None
        att = self.volumes.attachment(vid)
        name = info.get("name") or f"n{node}"
        if att is None:
            self.volumes.attach(vid, name)
            return None
        return None if att.node == name else f"volume {vid} is attached to {att.node}"

    async def rpc_register(self, p: dict, conn=None):
        self._check_active()
        node = int(p["node"])
        if node in self.failing:
            return {"retry": f"failover of node {node} in progress"}
        state = self.meta.state
        info = state.node_info.get(node)
        if info is not None and info.get("volume") and self.volumes is not None:
            why = await asyncio.get_running_loop().run_in_executor(self.executor, self._volume_home, node)
            if why:
                return {"retry": why}
        if info is not None and state.owned_by(node):
            # its previous incarnation holds streams: that process is gone (the new
            # one holds the volume lock); fence it, and the new one recovers its WAL
            if not info.get("fenced"):
                token = ids.uuid4().hex
                await self.write({"type": "fence_node", "node": node, "epoch": state.nodes[node], "token": token,
                                  "reason": "re-registered"})
            self.self_recovering[node] = self.clock()
            return {"recover": {"epoch": state.nodes[node], "token": state.node_info[node]["token"]}}
        return {"epoch": await self._register(node, p)}

    async def _register(self, node: int, p: dict) -> int:
        await self.write({"type": "register_node", "node": node, "rpc": p.get("rpc"), "listen": p.get("listen"),
                          "volume": p.get("volume"), "name": p.get("name")})
        epoch = self.meta.state.nodes[node]
        self.meta.state.node_info[node]["name"] = p.get("name") or f"n{node}"
        self.core.registered(node, epoch, self.clock())
        log.info("controller: node %d registered at epoch %d (%s)", node, epoch, p.get("listen"))
        await self.place()
        return epoch

    async def rpc_recovered(self, p: dict, conn=None):
        """A node recovered its own previous incarnation's WAL."""
        self._check_active()
        node = int(p["node"])
        state = self.meta.state
        if state.node_info.get(node, {}).get("token") != p.get("token"):
            raise R.RpcError(R.REJECTED, f"node {node}: stale recovery token")
        await self._close_streams(node)
        self.self_recovering.pop(node, None)
        return {"epoch": await self._register(node, p)}

    async def rpc_leave(self, p: dict, conn=None):
        """A clean shutdown: the broker uploaded everything and stopped; its
        streams close and open elsewhere now, instead of after a session
        timeout and a failover that would find an empty WAL."""
        self._check_active()
        node, epoch = int(p["node"]), int(p["epoch"])
        state = self.meta.state
        if state.nodes.get(node) != epoch or state.node_info.get(node, {}).get("fenced"):
            raise R.RpcError(R.FENCED, f"node {node} epoch {epoch} is not current")
        closed = await self._close_streams(node)
        await self.write({"type": "fence_node", "node": node, "epoch": epoch, "token": None, "reason": "left"})
        await self.place()
        log.info("controller: node %d left cleanly; %d streams reopened elsewhere", node, len(closed))
        return {"closed": len(closed)}

    async def rpc_append(self, p: dict, conn=None):
        self._check_active()
        rec = dict(p["record"])
        if rec.get("type") not in BROKER_RECORDS:
            raise R.RpcError(R.BAD_REQUEST, f"a broker may not write {rec.get('type')!r} records")
        rec["node"], rec["node_epoch"] = int(p["node"]), int(p["epoch"])
        if p.get("recovery"):
            rec["recovery"] = p["recovery"]
        try:
            result = await self.write(rec)
        except (NodeEpochExpired, NodeFenced) as e:
            raise R.RpcError(R.FENCED, str(e)) from None
        except CommitRejected as e:
            raise R.RpcError(R.REJECTED, str(e)) from None
        if rec["type"] == "create_topic":
            await self.place()
        return {"seq": self.meta.state.seq, "result": result, "records": self.records_since(p.get("seq"))}

    async def rpc_cluster(self, p: dict, conn=None):
        state = self.meta.state
        led: dict[int, int] = {}
        for s in state.streams.values():
            if s.owner is not None:
                led[s.owner] = led.get(s.owner, 0) + 1
        now = self.clock()
        nodes = {}
        for n, info in state.node_info.items():
            sess = self.core.sessions.get(n)
            nodes[str(n)] = {"epoch": state.nodes.get(n), "fenced": bool(info.get("fenced")),
                             "listen": info.get("listen"), "rpc": info.get("rpc"), "name": info.get("name"),
                             "led": led.get(n, 0),
                             "since_heartbeat": None if sess is None else round(now - sess.last_heartbeat, 3)}
        return {"controller": self.node_id, "controller_epoch": self.epoch, "active": self.active,
                "seq": state.seq, "nodes": nodes, "failovers": self.failovers,
                "streams": [[st.topic, st.partition, st.owner, st.epoch] for st in state.streams.values()],
                "history": state.history[-50:], "failing": sorted(self.failing)}

    # ------------------------------------------------------------------ ticking
    async def _ticker(self) -> None:
        period = max(0.05, self.config.heartbeat_interval / 2)
        while self.active:
            try:
                await asyncio.wait_for(self._wake.wait(), period)
            except asyncio.TimeoutError:
                pass
            self._wake.clear()
            if not self.active:
                return
            try:
                await self.tick()
            except R.RpcError as e:
                log.warning("controller tick: %s", e)
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception("controller tick failed")

    async def tick(self) -> None:
        await buggify.delay("controller.tick.slow")
        state = self.meta.state
        now = self.clock()
        for node, epoch, why in self.core.to_fence(state, now):
            if node in self.failing:
                continue
            await self.write({"type": "fence_node", "node": node, "epoch": epoch, "token": ids.uuid4().hex,
                              "reason": why})
            log.warning("controller: fenced node %d (epoch %d -> %d): %s", node, epoch, epoch + 1, why)
            self._spawn_failover(node, why, now)
        for node in self.core.needs_recovery(state):
            started = self.self_recovering.get(node)
            if started is not None and now - started < 120:
                continue  # its new process is recovering its own WAL
            if node not in self.failing and self.core.pick_recoverer(state, node, now) is not None:
                self._spawn_failover(node, "needs-recovery", now)
        await self.place()

    def connection_closed(self, conn) -> None:
        """A broker's heartbeat connection closed: is its process gone?"""
        node = conn.tags.get("node")
        if node is None or not self.active:
            return
        info = self.meta.state.node_info.get(node)
        if not info or info.get("fenced") or not info.get("rpc"):
            return
        self._spawn(self._probe(node, info["rpc"]))

    async def _probe(self, node: int, address: str) -> None:
        for _ in range(3):
            result = await self.probe(address)
            if result != "refused":
                return
            # nothing listening: gone (a restarted process re-registers anyway)
            self.core.probed_dead(node, self.clock())
            self._wake.set()
            return

    async def place(self) -> None:
        """Open every closed stream on a live broker."""
        busy = set(self.failing)
        opens = self.core.placements(self.meta.state, self.clock(), busy)
        opens = [o for o in opens if o[0] not in self.moving]
        if opens:
            async with self._write_lock:
                opens = [o for o in self.core.placements(self.meta.state, self.clock(), busy)
                         if o[0] not in self.moving]
                if opens:
                    await self.write({"type": "open_streams", "opens": opens})
                    log.info("controller: opened %d streams: %s", len(opens),
                             ", ".join(f"{s}@n{n}/e{e}" for s, n, e in opens[:20]))

    async def _close_streams(self, node: int) -> list:
        state = self.meta.state
        closes = [[sid, state.streams[sid].epoch] for sid in state.owned_by(node)]
        if closes:
            await self.write({"type": "close_streams", "closes": closes})
        return closes

    # ------------------------------------------------------------------ pushing
    async def _pusher(self) -> None:
        while self.active:
            await self._push_wanted.wait()
            self._push_wanted.clear()
            state = self.meta.state
            calls = []
            for node in state.live_nodes():
                info = state.node_info[node]
                seq = self.known_seq.get(node)
                if not info.get("rpc") or seq is None or seq >= state.seq:
                    continue
                records = self.records_since(seq)
                calls.append(self._push(node, info["rpc"], records))
            if calls:
                await asyncio.gather(*calls, return_exceptions=True)

    async def _push(self, node: int, address: str, records) -> None:
        try:
            r = await self.call(address, "catch_up", {"seq": self.meta.state.seq, "records": records}, 2.0)
            self.known_seq[node] = max(self.known_seq.get(node, -1), int(r.get("seq", -1)))
        except Exception as e:
            log.debug("push to node %d failed: %r", node, e)

    # ------------------------------------------------------------------ failover
    def _spawn_failover(self, node: int, why: str, detected: float) -> None:
        task = asyncio.ensure_future(self._failover(node, why, detected))
        self.failing[node] = task
        task.add_done_callback(lambda _t, n=node: self.failing.pop(n, None) if self.failing.get(n) is _t else None)

    async def _failover(self, node: int, why: str, detected: float) -> None:
        state = self.meta.state
        info = state.node_info.get(node, {})
        vid, name = info.get("volume"), info.get("name") or f"n{node}"
        streams = state.owned_by(node)
        if not streams:
            log.info("controller: fenced node %d held no streams: nothing to fail over", node)
            return
        if self.volumes is None or not vid:
            log.warning("controller: node %d is fenced with %d streams but its volume cannot move (no volume "
                        "provider): they stay closed until it comes back and recovers its own WAL", node, len(streams))
            return
        loop = asyncio.get_running_loop()
        steps: dict[str, int] = {}
        t_start = self.clock()
        wait = self.core.recovery_not_before(node) - self.clock()
        if wait > 0:
            log.info("controller: node %d: waiting %.2fs until it can ack nothing (volumes do not fence I/O)",
                     node, wait)
            await asyncio.sleep(wait)
        steps["wait_ms"] = _ms(self.clock() - t_start)
        tried: set[int] = set()
        while self.active:
            helper = self.core.pick_recoverer(self.meta.state, node, self.clock(), exclude=tried)
            if helper is None:
                log.warning("controller: no healthy node left to recover node %d's WAL; its streams stay "
                            "closed until a node can (or it comes back)", node)
                return
            hinfo = self.meta.state.node_info[helper]
            hname = hinfo.get("name") or f"n{helper}"
            try:
                t = self.clock()
                await loop.run_in_executor(self.executor, self.volumes.detach, vid, name)
                steps["detach_ms"] = _ms(self.clock() - t)
                t = self.clock()
                att = await loop.run_in_executor(self.executor, self.volumes.attach, vid, hname)
                steps["attach_ms"] = _ms(self.clock() - t)
                t = self.clock()
                fenced_epoch = self.meta.state.nodes[node]
                await buggify.delay("failover.step.slow")
                if bugs.enabled("offset-reuse"):  # planted bug: reopen at the last uploaded offset
                    result = {"replayed": 0, "replayed_bytes": 0, "ends": {}}
                else:
                    result = await self.call(hinfo["rpc"], "recover_wal",
                                             {"node": node, "epoch": fenced_epoch,
                                              "token": self.meta.state.node_info[node]["token"],
                                              "path": att.path}, 120.0)
                steps["recover_ms"] = _ms(self.clock() - t)
                t = self.clock()
                await loop.run_in_executor(self.executor, self.volumes.detach, vid, hname)
                await loop.run_in_executor(self.executor, self.volumes.attach, vid, name)
                steps["return_ms"] = _ms(self.clock() - t)
                break
            except asyncio.CancelledError:
                raise
            except Exception as e:
                log.warning("controller: recovery of node %d on node %d failed (%r); trying another", node, helper, e)
                tried.add(helper)
                try:
                    await loop.run_in_executor(self.executor, self.volumes.detach, vid, hname)
                except Exception:
                    pass
                await asyncio.sleep(0.2)
        else:
            return
        t = self.clock()
        closed = await self._close_streams(node)
        del self.failing[node]  # its streams may open on any live broker now (not on it: it is fenced)
        await self.place()
        steps["reopen_ms"] = _ms(self.clock() - t)
        steps["total_ms"] = _ms(self.clock() - detected)
        sess = self.core.sessions.get(node)
        if sess is not None:
            # how long the node had been silent when it was found out (the detection's share)
            steps["silent_ms"] = max(0, _ms(detected - sess.last_heartbeat))
        rec = {"type": "failover", "node": node, "reason": why, "recovered_by": helper, "streams": len(closed),
               "replayed": result.get("replayed"), "replayed_bytes": result.get("replayed_bytes"),
               "ends": result.get("ends"), "steps": steps}
        self.failovers.append(rec)
        try:
            await self.write(rec)
        except Exception as e:
            log.warning("failover record not written: %r", e)
        log.warning("%s %s", FAILOVER_LOG, json.dumps({k: v for k, v in rec.items() if k != "type"}, sort_keys=True))

    # ------------------------------------------------------------------ reassignment
    async def rpc_reassign(self, p: dict, conn=None):
        self._check_active()
        state = self.meta.state
        moves, errors = [], []
        for topic, partition, target in p["moves"]:
            s = state.stream_for(topic, int(partition))
            if s is None:
                errors.append([topic, partition, "unknown partition"])
            elif int(target) not in state.live_nodes():
                errors.append([topic, partition, f"node {target} is not a live broker"])
            elif s.stream_id in self.moving:
                errors.append([topic, partition, "already being reassigned"])
            elif s.owner is not None and state.node_info.get(s.owner, {}).get("fenced"):
                errors.append([topic, partition, f"its node {s.owner} is in failover"])
            else:
                moves.append((topic, int(partition), s.stream_id, int(target)))
        results = await asyncio.gather(*(self._move(*m) for m in moves), return_exceptions=True)
        done = []
        for m, r in zip(moves, results):
            if isinstance(r, BaseException):
                errors.append([m[0], m[1], repr(r)])
            else:
                done.append(r)
        return {"moved": done, "errors": errors}

    async def _move(self, topic: str, partition: int, sid: int, target: int) -> dict:
        state = self.meta.state
        s = state.streams[sid]
        source = s.owner
        if source == target:
            return {"topic": topic, "partition": partition, "from": source, "to": target, "skipped": True}
        self.moving[sid] = (source, target)
        steps: dict[str, int] = {}
        t0 = self.clock()
        closed = False
        try:
            moved = {}
            if source is not None:
                t = self.clock()
                try:
                    moved = await self.call(state.node_info[source]["rpc"], "move_out",
                                            {"stream": sid, "epoch": s.epoch}, 120.0)
                except BaseException:
                    # the source stopped appending to it: let it take appends again
                    asyncio.ensure_future(self._cancel_move(state.node_info[source]["rpc"], sid, s.epoch))
                    raise
                steps["upload_ms"] = _ms(self.clock() - t)
                t = self.clock()
                await self.write({"type": "close_streams", "closes": [[sid, s.epoch]]})
                closed = True
                steps["close_ms"] = _ms(self.clock() - t)
            t = self.clock()
            await self.write({"type": "open_streams", "opens": [[sid, target, s.epoch + 1]]})
            steps["open_ms"] = _ms(self.clock() - t)
        finally:
            self.moving.pop(sid, None)
            if closed and self.meta.state.streams.get(sid) is not None and self.meta.state.streams[sid].owner is None:
                self._wake.set()   # the open failed: placement opens it somewhere
        steps["total_ms"] = _ms(self.clock() - t0)
        rec = {"type": "reassignment", "topic": topic, "partition": partition, "stream": sid, "from": source,
               "to": target, "delta_bytes": moved.get("delta_bytes", 0), "end": moved.get("end"), "steps": steps}
        await self.write(rec)
        log.info("%s %s", REASSIGN_LOG, json.dumps({k: v for k, v in rec.items() if k != "type"}, sort_keys=True))
        return {k: v for k, v in rec.items() if k != "type"}

    async def _cancel_move(self, address: str, sid: int, epoch: int) -> None:
        try:
            await self.call(address, "move_cancel", {"stream": sid, "epoch": epoch}, 5.0)
        except Exception as e:
            log.warning("cancelling the move of stream %d: %r", sid, e)

    async def rpc_reassignments(self, p: dict, conn=None):
        self._check_active()
        state = self.meta.state
        active = []
        for sid, (src, dst) in self.moving.items():
            s = state.streams.get(sid)
            if s is not None:
                active.append([s.topic, s.partition, src, dst])
        return {"active": active}
