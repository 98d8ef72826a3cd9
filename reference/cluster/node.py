"""A cluster node: the broker side of the cluster, and the candidate that
becomes the controller when it wins the lease.

    start: RPC listener -> lock the WAL (a second process on the volume is
    refused) -> find the controller (lease in S3) -> register -> if told,
    recover the previous incarnation's WAL as it and report `recovered` ->
    storage engine serves the streams the metadata says we hold open ->
    heartbeat every --heartbeat-interval.

The session check (acks and reads): `session_ok()` is true only until
`sent + session_timeout - margin`, where `sent` is when the newest
acknowledged heartbeat was *sent* (monotonic clock). The controller fences a
broker only `session_timeout` after it last *received* one, so a broker stops
acknowledging before the controller may give its partitions away. A broker
told it is fenced (it was paused, or cut off) drops its engine and registers
again as a new incarnation, in the same process.
"""
from __future__ import annotations

import asyncio
import logging
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

from reference import buggify, bugs, clock as clocks, ids
from reference.cluster import rpc as R
from reference.cluster.controller import Controller
from reference.cluster.core import ClusterConfig
from reference.cluster.lease import Lease, LeaseStore, may_take_over
from reference.cluster.replica import MetadataReplica
from reference.storage import disk, metadata as M
from reference.storage.metadata import MetadataLog
from reference.storage.wal import WalError, WalFile

log = logging.getLogger("highwater.node")


@dataclass
class NodeConfig:
    node_id: int
    name: str
    rpc_host: str = "127.0.0.1"
    rpc_port: int = 0
    advertise: str = ""                    # Kafka host:port clients are told
    volume_path: Path = Path(".")
    volume_id: str | None = None
    cluster: ClusterConfig = field(default_factory=ClusterConfig)
    lease_duration: float | None = None    # default: the session timeout
    wal_capacity: int = 64 << 20
    metadata_prefix: str = "metadata"
    volume_wait: float = 60.0              # how long to wait for our volume to be attached


class NodeAgent:
    def __init__(self, cfg: NodeConfig, store, engine_factory: Callable, volumes=None,
                 clock: Callable[[], float] = clocks.monotonic, wall: Callable[[], float] = clocks.wall):
        self.cfg = cfg
        self.store = store
        self.engine_factory = engine_factory   # (node_id, volume_dir) -> S3Engine (not started)
        self.volumes = volumes
        self.clock, self.wall = clock, wall
        self.executor = ThreadPoolExecutor(4, thread_name_prefix=f"cluster-n{cfg.node_id}")
        self.incarnation = ids.uuid4().hex[:12]
        self.pool = R.RpcPool()
        self.rpc_server: R.RpcServer | None = None
        self.reader = MetadataLog(store, cfg.metadata_prefix, executor=self.executor)
        self.replica: MetadataReplica | None = None
        self.lease_store = LeaseStore(store)
        self.lease: Lease | None = None
        self.lease_valid_until = 0.0
        self.controller: Controller | None = None
        self.controller_addr: str | None = None
        self.controller_dead = False
        self.engine = None
        self.wal_file: WalFile | None = None
        self.epoch = 0
        self.valid_until = 0.0
        self.on_engine = None                  # called with each new engine (the Kafka context follows)
        self.stopping = False
        self.failed: str | None = None
        self.registrations = 0
        self._tasks: list[asyncio.Task] = []
        self._lease_wake = asyncio.Event()
        self._refencing = False
        cc = cfg.cluster
        self.margin = max(0.1, 0.1 * cc.session_timeout)
        self.lease_duration = cfg.lease_duration or cc.session_timeout

    # ------------------------------------------------------------------ sessions
    def session_ok(self) -> bool:
        if bugs.enabled("no-fencing"):  # planted bug: acknowledge whatever the session
            return True
        return self.clock() < self.valid_until

    def _session_from(self, sent: float, own_controller: bool) -> None:
        """A heartbeat or registration sent at `sent` was answered ok.
        `own_controller`: it went to this node's own controller (decided when
        it was sent: an answer may arrive after this node gave the role up)."""
        until = sent + self.cfg.cluster.session_timeout - self.margin
        if own_controller:
            # the controller's own broker acks only within the controller's lease: once the
            # lease has lapsed, the next controller may give this node's partitions away at
            # once (and after abdicating, the bound is 0: its own old answer extends nothing)
            until = min(until, self.lease_valid_until)
        self.valid_until = max(self.valid_until, until)

    def lease_valid(self) -> bool:
        return self.clock() < self.lease_valid_until

    # ------------------------------------------------------------------ lifecycle
    async def start(self) -> None:
        loop = asyncio.get_running_loop()
        handlers = {"recover_wal": self.rpc_recover_wal, "move_out": self.rpc_move_out,
                    "catch_up": self.rpc_catch_up, "stats": self.rpc_stats, "upload": self.rpc_upload,
                    "move_cancel": self.rpc_move_cancel}
        for name in ("register", "recovered", "heartbeat", "append", "reassign", "reassignments", "cluster", "leave"):
            handlers[name] = self._controller_method(name)
        self.rpc_server = R.RpcServer(self.cfg.rpc_host, self.cfg.rpc_port, handlers, on_closed=self._conn_closed)
        await self.rpc_server.start()
        await loop.run_in_executor(self.executor, self.reader.load_sync)
        self.replica = MetadataReplica(self.reader, self.cfg.node_id, 0, self.controller_call, self.executor)
        await self._open_wal()   # first: a second process on this volume must not even try to lead
        try:
            await self._lease_step()
        except Exception as e:
            log.warning("lease: %r", e)
        self._tasks.append(asyncio.ensure_future(self._lease_loop()))
        await self._join()
        self._tasks.append(asyncio.ensure_future(self._heartbeat_loop()))

    @property
    def rpc_address(self) -> str:
        return self.rpc_server.address

    async def close(self, clean: bool = True) -> None:
        """Stop. A clean close uploads everything, then leaves the cluster (its
        streams open elsewhere at once) and, on the controller, gives up the
        lease so another node takes over at its next look."""
        self.stopping = True
        for t in self._tasks:
            t.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        left_clean = False
        if self.engine is not None:
            try:
                await (self.engine.close() if clean else self.engine.abort())
                left_clean = clean and not self.engine.failed and self.engine.cache.pending_bytes == 0
            except Exception:
                log.exception("engine close")
        elif self.wal_file is not None:
            self.wal_file.close()
        self.valid_until = 0.0
        if left_clean:
            try:
                await self.controller_call("leave", {"node": self.cfg.node_id, "epoch": self.epoch}, 5.0)
                log.info("node %d left the cluster cleanly", self.cfg.node_id)
            except Exception as e:
                log.warning("leaving the cluster: %r (the controller will fence this node)", e)
        if self.controller is not None:
            await self.controller.stop()
            if clean and self.lease is not None:
                self.lease_valid_until = 0.0
                try:
                    await self._write_lease(Lease(self.cfg.node_id, self.lease.epoch, self.rpc_address,
                                                  self.incarnation, 0), self.lease.etag)
                except Exception as e:
                    log.warning("releasing the controller lease: %r", e)
        if self.rpc_server is not None:
            await self.rpc_server.close()
        await self.pool.close()
        self.executor.shutdown(wait=False)

    async def _open_wal(self) -> None:
        """Wait for our volume to be attached here, then open and lock the WAL."""
        loop = asyncio.get_running_loop()
        path = Path(self.cfg.volume_path)
        if self.cfg.volume_id is None:
            disk.io.mkdir(path)   # a plain directory, not a provider's volume

        def attached() -> bool:
            if self.cfg.volume_id is None:
                return disk.io.is_dir(path)
            try:
                if disk.io.is_block_device(path):   # a raw device (ec2): attached when it exists
                    return True
            except OSError:
                return False
            # Our volume, labelled as such: not a dead attachment (EIO) nor the
            # bare mount point that shows between a detach and the next attach
            # (a WAL made there would vanish under the volume when it comes home).
            return disk.io.volume_label(path) == self.cfg.volume_id
        deadline = self.clock() + self.cfg.volume_wait
        while not attached():
            if self.clock() > deadline:
                raise WalError(f"volume {path} is not attached here after {self.cfg.volume_wait:.0f}s")
            await asyncio.sleep(0.1)
        self.wal_file = await loop.run_in_executor(
            self.executor, WalFile, path / "wal", self.cfg.wal_capacity, self.cfg.node_id, 0)

    async def _reopen_wal(self) -> None:
        if self.wal_file is not None:
            await asyncio.get_running_loop().run_in_executor(self.executor, self.wal_file.close)
            self.wal_file = None
        while not self.stopping:
            try:
                await self._open_wal()
                return
            except (WalError, OSError) as e:
                log.warning("opening the WAL: %s; retrying", e)
                await asyncio.sleep(0.5)

    # ------------------------------------------------------------------ the controller
    def _controller_method(self, name: str):
        async def call(params, conn):
            c = self.controller
            if c is None or not c.active:
                raise R.RpcError(R.NOT_CONTROLLER, self.controller_addr or "")
            return await getattr(c, f"rpc_{name}")(params, conn)
        return call

    def _conn_closed(self, conn) -> None:
        if self.controller is not None and self.controller.active:
            self.controller.connection_closed(conn)

    async def _read_lease(self) -> Lease | None:
        return await asyncio.get_running_loop().run_in_executor(self.executor, self.lease_store.read)

    async def _write_lease(self, lease: Lease, etag) -> Lease | None:
        return await asyncio.get_running_loop().run_in_executor(self.executor, self.lease_store.write, lease, etag)

    async def _lease_loop(self) -> None:
        period = self.cfg.cluster.heartbeat_interval
        while not self.stopping:
            try:
                await self._lease_step()
            except asyncio.CancelledError:
                raise
            except Exception as e:
                log.warning("lease: %r", e)
            try:
                await asyncio.wait_for(self._lease_wake.wait(), period)
            except asyncio.TimeoutError:
                pass
            self._lease_wake.clear()

    async def _lease_step(self) -> None:
        me, duration_ms = self.cfg.node_id, int(self.lease_duration * 1000)
        if self.controller is not None:
            if self.controller.deposed or not self.controller.active:
                await self._abdicate(self.controller.deposed or "stopped")
                return
            sent = self.clock()
            renewed = await self._write_lease(
                Lease(me, self.lease.epoch, self.rpc_address, self.incarnation,
                      int(self.wall() * 1000) + duration_ms), self.lease.etag)
            if renewed is None:
                await self._abdicate("lease taken by another node")
                return
            self.lease = renewed
            self.lease_valid_until = sent + self.lease_duration - self.margin
            return
        lease = await self._read_lease()
        if lease is not None and lease.rpc:
            if lease.rpc != self.controller_addr:
                self.controller_dead = False
            self.controller_addr = lease.rpc
        dead = self.controller_dead and self.cfg.cluster.fences_io
        now_ms = int(self.wall() * 1000)
        if not may_take_over(lease, me, self.incarnation, now_ms, int(self.margin * 1000), dead):
            return
        lapsed = lease.node if lease is not None and now_ms > lease.expires_ms + int(self.margin * 1000) else None
        epoch = (lease.epoch if lease else 0) + 1
        sent = self.clock()
        won = await self._write_lease(Lease(me, epoch, self.rpc_address, self.incarnation,
                                            int(self.wall() * 1000) + duration_ms), lease.etag if lease else None)
        if won is None:
            return
        self.lease = won
        self.lease_valid_until = sent + self.lease_duration - self.margin
        log.warning("node %d won the controller lease (epoch %d)%s", me, epoch,
                    f", taking over from node {lease.node}" if lease else "")
        meta = MetadataLog(self.store, self.cfg.metadata_prefix, executor=self.executor)
        meta.state = M.MetadataState.from_json(self.reader.state.to_json())   # then it catches up
        c = Controller(me, epoch, meta, self.pool.call, self.volumes, self.cfg.cluster, self.executor,
                       clock=self.clock, wall=self.wall, lease_valid=self.lease_valid, lapsed_holder=lapsed)
        try:
            await c.start()
        except Exception as e:
            log.error("node %d could not start as controller: %r; giving the lease up", me, e)
            await c.stop()
            # we hold the lease but lead nothing: give it up now (as a clean close
            # does), or every other candidate waits for it to expire, and this
            # process never takes it again (the lease names its own incarnation)
            self.lease_valid_until = 0.0
            try:
                await self._write_lease(Lease(me, epoch, self.rpc_address, self.incarnation, 0), won.etag)
            except Exception as e2:
                log.warning("giving up the controller lease: %r", e2)
            return
        self.controller = c
        self.controller_addr = self.rpc_address
        self.controller_dead = False
        if self.engine is not None:
            await self._start_cleaner(c)

    async def _start_cleaner(self, c: Controller) -> None:
        """Garbage objects are deleted by the controller alone, against the
        authoritative metadata (a replica's lag could make a just-prepared
        object look like an orphan)."""
        from reference.cluster.cleanup import ControllerCleaner
        cleaner = ControllerCleaner(c, self.store, self.engine.config, self.engine.s3_executor)
        c._spawn(cleaner.run())

    async def _abdicate(self, why: str) -> None:
        c, self.controller = self.controller, None
        self.lease_valid_until = 0.0
        log.error("node %d is no longer the controller: %s", self.cfg.node_id, why)
        if c is not None:
            await c.stop()
        self.controller_addr = None

    async def controller_call(self, method: str, params: dict, timeout: float = 5.0):
        addr = self.controller_addr
        if addr is None:
            lease = await self._read_lease()
            addr = self.controller_addr = lease.rpc if lease else None
            if addr is None:
                raise R.RpcError(R.NOT_CONTROLLER, "no controller yet")
        try:
            client = self.pool.client(addr)
            if client.on_closed is None:
                client.on_closed = lambda a=addr: self._controller_conn_lost(a)
            return await client.call(method, params, timeout)
        except R.RpcError as e:
            if e.code == R.NOT_CONTROLLER:
                self.controller_addr = None
                self._lease_wake.set()
            raise
        except (ConnectionError, OSError, asyncio.TimeoutError):
            self.controller_addr = None
            self._lease_wake.set()
            raise

    def _controller_conn_lost(self, addr: str) -> None:
        """Our connection to the controller closed: if nothing listens there
        any more, its process is gone and (with I/O-fencing volumes) we may
        take over at once instead of waiting for the lease to expire."""
        if self.stopping:
            return

        async def check():
            if await R.probe(addr) == "refused" and not self.stopping:
                log.warning("controller at %s refuses connections: its process is gone", addr)
                self.controller_dead = True
                self._lease_wake.set()
        asyncio.ensure_future(check())

    # ------------------------------------------------------------------ joining
    async def _join(self) -> None:
        """Register (recovering our previous incarnation's WAL first if the
        controller says so) and start an engine at the new node epoch."""
        params = {"node": self.cfg.node_id, "rpc": self.rpc_address, "listen": self.cfg.advertise,
                  "volume": self.cfg.volume_id, "name": self.cfg.name}
        delay = 0.1
        recovered = False
        while True:
            sent = self.clock()
            own_controller = self.controller is not None   # then it answers itself
            try:
                r = await self.controller_call("register", params, 30.0)
            except (R.RpcError, ConnectionError, OSError, asyncio.TimeoutError) as e:
                log.info("register: no controller yet (%r); retrying", e)
                await asyncio.sleep(delay)
                delay = min(delay * 2, 1.0)
                continue
            if "retry" in r:
                log.info("register: %s; retrying", r["retry"])
                await asyncio.sleep(delay)
                delay = min(delay * 2, 1.0)
                # our volume may be moving (a failover of our previous incarnation): open it afresh
                await self._reopen_wal()
                continue
            if "recover" in r:
                rec = r["recover"]
                summary = await self._recover(self.cfg.node_id, rec["epoch"], rec["token"], self.wal_file)
                recovered = True
                try:
                    r = await self.controller_call("recovered", dict(params, token=rec["token"],
                                                                     ends=summary["ends"]), 30.0)
                except (R.RpcError, ConnectionError, OSError, asyncio.TimeoutError) as e:
                    log.warning("recovered: %r; registering again", e)
                    continue
            self.epoch = r["epoch"]
            self._session_from(sent, own_controller)
            break
        self.registrations += 1
        await self.replica.catch_up()
        self.replica.epoch = self.epoch
        self.replica.fenced = None
        engine = self.engine_factory(self.cfg.node_id, self.cfg.volume_path)
        engine.join_cluster(self.replica, self.epoch, self.session_ok)
        engine.meta.on_fenced = lambda exc: self._fenced(str(exc))
        await engine.start_cluster(self.wal_file, just_recovered=recovered)
        self.engine = engine
        self._tasks.append(asyncio.ensure_future(self._watch(engine)))
        if self.controller is not None:
            await self._start_cleaner(self.controller)
        log.info("node %d registered at epoch %d (registration #%d), %d streams open here",
                 self.cfg.node_id, self.epoch, self.registrations, len(engine.streams))
        if self.on_engine is not None:
            self.on_engine(engine)

    async def _recover(self, node: int, epoch: int, token: str, wal_file: WalFile, path=None) -> dict:
        """Recover `node`'s WAL as that node at its fenced epoch."""
        await self.replica.catch_up()
        engine = self.engine_factory(node, path or self.cfg.volume_path)
        replica = MetadataReplica(self.reader, node, epoch, self.controller_call, self.executor, recovery=token)
        engine.join_cluster(replica, epoch, None)
        started = self.clock()
        try:
            summary = await engine.recover_as(wal_file)
        finally:
            engine.wal_file = None          # the caller owns the file
            await engine.close()
        summary["seconds"] = round(self.clock() - started, 4)
        log.info("recovered node %d's WAL at epoch %d: %d records replayed (%d bytes), %d stale-epoch dropped, "
                 "in %.3fs", node, epoch, summary["replayed"], summary["replayed_bytes"], summary.get("stale", 0),
                 summary["seconds"])
        return summary

    # ------------------------------------------------------------------ heartbeats
    async def _heartbeat_loop(self) -> None:
        interval = self.cfg.cluster.heartbeat_interval
        while not self.stopping:
            sent = self.clock()
            own_controller = self.controller is not None   # then it answers itself
            try:
                await buggify.delay("heartbeat.slow")   # after `sent`: as a slow network would
                r = await self.controller_call("heartbeat", {"node": self.cfg.node_id, "epoch": self.epoch,
                                                             "seq": self.replica.state.seq},
                                               max(interval * 2, 0.5))
                if self._refencing:
                    pass  # registering again: this answer is about the old incarnation
                elif r["status"] == "ok":
                    self._session_from(sent, own_controller)
                    await self.replica.sync(r.get("records"), r["seq"])
                elif bugs.enabled("no-fencing"):  # planted bug: told it is fenced, it carries on
                    await self.replica.sync(r.get("records"), r.get("seq", self.replica.state.seq))
                else:
                    await self._refence(f"controller says node {self.cfg.node_id} epoch {self.epoch} is fenced")
                    continue
            except asyncio.CancelledError:
                raise
            except (R.RpcError, ConnectionError, OSError, asyncio.TimeoutError) as e:
                log.debug("heartbeat: %r", e)
            except Exception:
                log.exception("heartbeat")
            await asyncio.sleep(max(0.0, interval - (self.clock() - sent)))

    async def _watch(self, engine) -> None:
        """An engine that halts (its WAL failed: e.g. the volume was detached
        under it) is dropped, and the node registers again."""
        await engine.halted.wait()
        if self.engine is engine and not self.stopping:
            self._fenced(f"storage engine halted: {engine.failed}")

    def _fenced(self, why: str) -> None:
        if not self._refencing:
            asyncio.ensure_future(self._refence(why))

    async def _refence(self, why: str) -> None:
        """We were fenced: drop everything and register as a new incarnation."""
        if self._refencing or self.stopping:
            return
        self._refencing = True
        try:
            log.warning("node %d: fenced (%s); dropping the engine and registering again", self.cfg.node_id, why)
            self.valid_until = 0.0
            delay = 0.5
            while not self.stopping:
                old, self.engine = self.engine, None
                if old is not None:
                    if old._sync_streams in self.replica.listeners:
                        self.replica.listeners.remove(old._sync_streams)
                    try:
                        await old.abort()
                    except Exception:
                        log.exception("node %d: dropping the old engine", self.cfg.node_id)
                try:
                    # _reopen_wal closes our WAL first (a no-op if the engine
                    # closed it): a leaked descriptor would keep its lock and
                    # refuse every later attempt as "a second process"
                    await self._reopen_wal()
                    await self._join()
                    return
                except asyncio.CancelledError:
                    raise
                except Exception as e:  # e.g. the disk still fails: try again, never give up silently
                    log.warning("node %d: registering again failed (%r); retrying in %.1fs",
                                self.cfg.node_id, e, delay)
                    await asyncio.sleep(delay)
                    delay = min(delay * 2, 5.0)
        finally:
            self._refencing = False

    # ------------------------------------------------------------------ broker RPC methods
    async def rpc_recover_wal(self, p: dict, conn=None):
        node, epoch, token, path = int(p["node"]), int(p["epoch"]), p["token"], Path(p["path"])
        loop = asyncio.get_running_loop()
        wal = await loop.run_in_executor(self.executor, lambda: WalFile(path / "wal", self.cfg.wal_capacity,
                                                                         node, epoch, lock="try"))
        try:
            summary = await self._recover(node, epoch, token, wal, path)
        finally:
            await loop.run_in_executor(self.executor, wal.close)
        return {"ends": summary["ends"], "replayed": summary["replayed"],
                "replayed_bytes": summary["replayed_bytes"], "stale": summary.get("stale", 0),
                "seconds": summary["seconds"]}

    async def rpc_move_out(self, p: dict, conn=None):
        if self.engine is None:
            raise R.RpcError(R.UNAVAILABLE, "no engine")
        from reference.errors import KafkaError
        try:
            return await self.engine.move_out(int(p["stream"]), int(p["epoch"]))
        except KafkaError as e:
            raise R.RpcError(R.REJECTED, str(e)) from None

    async def rpc_move_cancel(self, p: dict, conn=None):
        """A reassignment that failed: append to the stream again (if it is still ours at that epoch)."""
        engine = self.engine
        sid = int(p["stream"])
        if engine is not None and sid in engine.streams and engine.streams[sid].epoch == int(p["epoch"]):
            engine.moving_out.discard(sid)
        return {}

    async def rpc_catch_up(self, p: dict, conn=None):
        await self.replica.sync(p.get("records"), p.get("seq"))
        return {"seq": self.replica.state.seq}

    async def rpc_upload(self, p: dict, conn=None):
        """Upload and commit everything durable now (tests and benchmarks)."""
        if self.engine is None:
            raise R.RpcError(R.UNAVAILABLE, "no engine")
        summary = await self.engine.upload_now()
        return {"bytes": summary.bytes if summary else 0}

    async def rpc_stats(self, p: dict, conn=None):
        out = {"node": self.cfg.node_id, "epoch": self.epoch, "controller": self.controller is not None,
               "session_ok": self.session_ok(), "registrations": self.registrations}
        if self.engine is not None:
            out["engine"] = self.engine.stats()
        return out
