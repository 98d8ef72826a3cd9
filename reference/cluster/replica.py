"""A broker's view of the metadata log: a replica it reads, never writes.

`MetadataReplica` has the `state` and `append` that the storage engine,
uploader and cleaner expect of a `MetadataLog`, but `append` asks the
controller (RPC `append`) to check and write the record, stamped with this
node's id and epoch; the reply carries the new records, applied here in
order. Records arriving any other way (heartbeat replies, the controller's
`catch_up` pushes) go through `receive`; a gap is filled from S3.
"""
from __future__ import annotations

import asyncio
import logging
from concurrent.futures import Executor
from typing import Callable

from reference import buggify, clock
from reference.cluster import rpc as R
from reference.storage.metadata import (COMMITTED, CommitRejected, ControllerUnavailable, MetadataLog,
                                        MetadataState, NodeFenced, apply)

log = logging.getLogger("highwater.replica")


class MetadataReplica:
    def __init__(self, log_reader: MetadataLog, node: int, epoch: int,
                 controller_call: Callable, executor: Executor | None = None, recovery: str | None = None,
                 append_timeout: float = 15.0):
        self.reader = log_reader                 # reads S3 only (load_sync / catch_up_sync)
        self.state: MetadataState = log_reader.state
        self.node, self.epoch = node, epoch
        self.controller_call = controller_call   # async (method, params, timeout) -> result
        self.executor = executor
        self.recovery = recovery
        self.append_timeout = append_timeout
        self.listeners: list[Callable[[], None]] = []
        self.fenced = None
        self.on_fenced = None
        self.on_written = None
        self.records_written = 0
        self._catching_up: asyncio.Lock | None = None

    # ------------------------------------------------------------------ reading
    def receive(self, records: list | None, upto: int | None = None) -> bool:
        """Apply records in order; False if there is a gap (call catch_up)."""
        changed = False
        for rec in records or ():
            seq = rec["seq"]
            if seq <= self.state.seq:
                continue
            if seq != self.state.seq + 1:
                return False
            apply(self.state, rec, seq)
            changed = True
        if changed:
            self._notify()
        return upto is None or self.state.seq >= upto

    async def catch_up(self, upto: int | None = None) -> None:
        """Read the log from S3 until our position reaches `upto` (or the end)."""
        if self._catching_up is None:
            self._catching_up = asyncio.Lock()
        async with self._catching_up:
            if upto is not None and self.state.seq >= upto:
                return
            # Read in a worker thread, apply here: records pushed by the
            # controller are applied on this loop meanwhile, and two appliers
            # of one state would apply a record twice (an object id handed
            # out twice, a state that no longer matches the log).
            records = await asyncio.get_running_loop().run_in_executor(
                self.executor, self.reader.read_after, self.state.seq)
            self.receive([dict(rec, seq=seq) for seq, rec in records])

    async def sync(self, records, upto) -> None:
        if not self.receive(records, upto):
            await self.catch_up(upto)

    def _notify(self) -> None:
        for fn in list(self.listeners):
            try:
                fn()
            except Exception:
                log.exception("metadata listener")

    # ------------------------------------------------------------------ writing (through the controller)
    async def append(self, rec: dict):
        if self.fenced:
            raise self.fenced
        params = {"node": self.node, "epoch": self.epoch, "record": rec, "seq": self.state.seq}
        if self.recovery:
            params["recovery"] = self.recovery
        await buggify.delay("replica.append.slow")
        deadline = clock.monotonic() + self.append_timeout
        delay = 0.05
        ambiguous = False
        while True:
            try:
                reply = await self.controller_call("append", params, max(0.5, deadline - clock.monotonic()))
                break
            except R.RpcError as e:
                if e.code == R.FENCED:
                    self.fenced = NodeFenced(e.message)
                    if self.on_fenced:
                        self.on_fenced(self.fenced)
                    raise self.fenced from None
                if e.code == R.REJECTED:
                    if ambiguous and await self._applied_already(rec):
                        return None
                    raise CommitRejected(e.message) from None
                if e.code not in (R.NOT_CONTROLLER, R.UNAVAILABLE):
                    raise
                failure = e
            except (ConnectionError, OSError, asyncio.TimeoutError) as e:
                failure = e
                ambiguous = True   # it may have been written before the connection broke
            if clock.monotonic() >= deadline:
                if ambiguous and await self._applied_already(rec):
                    return None
                raise ControllerUnavailable(f"metadata append {rec['type']}: no controller ({failure!r})")
            await asyncio.sleep(delay)
            delay = min(delay * 2, 0.5)
            if ambiguous and await self._applied_already(rec):
                return None
        await self.sync(reply.get("records"), reply["seq"])
        self.records_written += 1
        return reply.get("result")

    async def _applied_already(self, rec: dict) -> bool:
        """After a lost reply: did our commit make it? (Its objects are committed.)"""
        if rec["type"] != "commit_objects":
            return False
        try:
            await self.catch_up()
        except Exception:
            return False
        ids = [ob["id"] for ob in rec["objects"]]
        return bool(ids) and all(self.state.objects.get(i) is not None
                                 and self.state.objects[i].state == COMMITTED for i in ids)

    # ------------------------------------------------------------------ MetadataLog's other calls
    def abort(self) -> None:
        pass

    async def flush(self) -> None:
        pass
