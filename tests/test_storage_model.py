"""Hypothesis stateful test: the S3 engine against the in-memory model.

Random appends to several partitions (plain and idempotent, retries, epoch
bumps, out-of-order sequences), uploads, compactions, crashes (also with a
torn write at the WAL's tail and between an object's PUT and its commit) and
restarts. After every step the engine must agree with MemoryEngine: same
offsets, same answers, same bytes on every read. At the end no object in S3
is unaccounted for once retention has passed.
"""
from __future__ import annotations

import asyncio
import os
import shutil
import tempfile
import time
import uuid

from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, precondition, rule, run_state_machine_as_test

from reference.errors import KafkaError
from reference.storage import wal as W
from reference.storage.engine import EngineConfig, S3Engine
from reference.storage.memory import MemoryEngine
from reference.storage.metadata import COMMITTED, object_key
from reference.storage.s3_wal import wal_key as s3_wal_key
from reference.storage.s3io import ObjectStore
from reference.storage.testing import make_batch

PARTITIONS = 3


class CrashBeforeCommit(Exception):
    pass


def make_machine(endpoint: str, bucket: str, wal: str = "file"):
    class EngineVsModel(RuleBasedStateMachine):
        def __init__(self):
            super().__init__()
            self.loop = asyncio.new_event_loop()
            # one bucket for the whole run, a key prefix per example (SeaweedFS
            # allocates volumes per bucket: hundreds of buckets slow it down)
            self.bucket = bucket
            self.prefix = f"m-{uuid.uuid4().hex[:12]}"
            self.store = ObjectStore(endpoint, bucket, prefix=self.prefix)
            self.volume = tempfile.mkdtemp(prefix="hw-model-")
            self.config = EngineConfig(wal_capacity=160 << 10, cache_size=96 << 10, upload_bytes=24 << 10,
                                       upload_interval=3600, block_cache_size=32 << 10, data_block_bytes=2 << 10,
                                       stream_object_bytes=4 << 10, object_ttl=20, object_retention=0,
                                       cleanup_interval=3600, compaction_small_bytes=1 << 20,
                                       s3_prefix=self.prefix, wal=wal, s3_wal_interval=0.0)
            self.engine: S3Engine | None = None
            self.model = MemoryEngine()
            self.value = 0
            self.producers: list[dict] = []
            self.crashes = 0

        def run(self, coro, timeout: float = 60):
            async def guarded():
                try:
                    return await asyncio.wait_for(coro, timeout)
                except asyncio.TimeoutError:
                    for t in asyncio.all_tasks():
                        t.print_stack()
                    raise AssertionError(f"a step took over {timeout}s (stacks printed)")
            return self.loop.run_until_complete(guarded())

        async def _open(self):
            self.engine = S3Engine(1, self.volume, endpoint, self.bucket, self.config)
            await self.engine.start()

        @initialize()
        def setup(self):
            async def go():
                await self._open()
                await self.engine.create_topic("m", PARTITIONS)
                await self.model.create_topic("m", PARTITIONS)
                for _ in range(2):
                    pid = await self.engine.allocate_producer_id()
                    self.producers.append({"pid": pid, "epoch": 0, "seq": {p: 0 for p in range(PARTITIONS)},
                                           "last": {}})
            self.run(go())

        def teardown(self):
            try:
                if self.engine is not None and self.engine.started and not self.engine.failed:
                    self.run(self._final_checks())
            finally:
                if self.engine is not None:
                    self.run(self.engine.abort())
                self.loop.close()
                shutil.rmtree(self.volume, ignore_errors=True)

        async def _final_checks(self):
            e = self.engine
            await e.upload_now()
            await e.cleaner.clean_once(sweep=True, now=time.time() + 3600)
            committed = {object_key(o.object_id) for o in e.meta.state.objects.values() if o.state == COMMITTED}
            in_s3 = {k for k, _ in self.store.list("objects/")}
            assert in_s3 == committed, f"leaked {in_s3 - committed}, missing {committed - in_s3}"
            await e.close()
            if wal == "s3":
                assert self.store.list("wal/") == [], "WAL objects outlived the upload that covered them"


        # ---------------------------------------------------------- appends
        async def _both(self, partition, batch):
            try:
                want = await self.model.append("m", partition, batch)
            except KafkaError as err:
                want = ("error", err.code)
            try:
                got = await self.engine.append("m", partition, batch)
            except KafkaError as err:
                got = ("error", err.code)
            assert got == want, (got, want)
            return got

        @rule(partition=st.integers(0, PARTITIONS - 1), n=st.integers(1, 5), size=st.integers(1, 600))
        def append_plain(self, partition, n, size):
            vals = []
            for _ in range(n):
                self.value += 1
                vals.append(f"{self.value}:".encode() + b"x" * size)
            self.run(self._both(partition, make_batch(vals)))

        @rule(who=st.integers(0, 1), partition=st.integers(0, PARTITIONS - 1), n=st.integers(1, 4))
        def append_idempotent(self, who, partition, n):
            p = self.producers[who]
            vals = []
            for _ in range(n):
                self.value += 1
                vals.append(str(self.value).encode())
            batch = make_batch(vals, p["pid"], p["epoch"], p["seq"][partition])
            got = self.run(self._both(partition, batch))
            if not isinstance(got, tuple):
                p["seq"][partition] += n
                p["last"][partition] = batch

        @rule(who=st.integers(0, 1), partition=st.integers(0, PARTITIONS - 1))
        def retry_last(self, who, partition):
            batch = self.producers[who]["last"].get(partition)
            if batch is not None:
                got = self.run(self._both(partition, batch))
                assert got.duplicate

        @rule(who=st.integers(0, 1), partition=st.integers(0, PARTITIONS - 1), skip=st.integers(1, 3))
        def append_out_of_order(self, who, partition, skip):
            p = self.producers[who]
            batch = make_batch([b"gap"], p["pid"], p["epoch"], p["seq"][partition] + skip)
            got = self.run(self._both(partition, batch))
            assert isinstance(got, tuple)

        @rule(who=st.integers(0, 1))
        def bump_epoch(self, who):
            p = self.producers[who]
            p["epoch"] += 1
            p["seq"] = {q: 0 for q in range(PARTITIONS)}
            p["last"] = {}

        # ---------------------------------------------------------- background work
        @rule()
        def upload(self):
            self.run(self.engine.upload_now())

        @precondition(lambda self: self.engine.config.compaction_small_bytes > 0)
        @rule()
        def compact(self):
            self.run(self.engine.compactor.compact_once())

        @rule()
        def compact_stream_objects(self):
            self.run(self.engine.compactor.compact_stream_objects_once())

        # ---------------------------------------------------------- crashes
        @rule(torn=st.booleans())
        def crash_and_restart(self, torn):
            async def go():
                e = self.engine
                next_offset = e.wal.next_offset
                await e.abort()
                if torn and wal == "s3":  # a damaged WAL object at the tail (PUTs are atomic: bit rot)
                    self.store.put(s3_wal_key(1, next_offset), W.frame_record(next_offset, b"y" * 50)[:40])
                elif torn:  # a write in flight when the node died: garbage at the tail
                    f = W.WalFile(os.path.join(self.volume, "wal"), 0, 1)
                    junk = bytearray(os.urandom(3000))
                    junk[:24] = W.frame_record(next_offset, b"y" * 5000)[:24]  # a plausible header
                    f.pwrite(next_offset, bytes(junk))
                    f.close()
                self.crashes += 1
                await self._open()
            self.run(go())

        @rule()
        def crash_between_put_and_commit(self):
            async def go():
                e = self.engine
                real = e.meta.append

                async def append(rec):
                    if rec["type"] == "commit_objects":
                        raise CrashBeforeCommit()
                    return await real(rec)
                e.meta.append = append
                try:
                    await e.uploader.upload_once()
                except CrashBeforeCommit:
                    pass
                await e.abort()
                await self._open()
            self.run(go())

        # ---------------------------------------------------------- agreement
        @invariant()
        def same_offsets(self):
            if self.engine is None or not self.engine.started:
                return
            for p in range(PARTITIONS):
                assert self.engine.offsets("m", p) == self.model.offsets("m", p)

        @rule(partition=st.integers(0, PARTITIONS - 1), at=st.floats(0, 1), max_bytes=st.integers(1, 5000))
        def read_somewhere(self, partition, at, max_bytes):
            async def go():
                _, hw = self.model.offsets("m", partition)
                offset = int(at * hw)
                want = await self.model.read("m", partition, offset, max_bytes)
                got = await self.engine.read("m", partition, offset, max_bytes)
                assert got == want, (partition, offset, max_bytes, len(got), len(want))
            self.run(go())

        @rule()
        def read_everything(self):
            async def go():
                for p in range(PARTITIONS):
                    want = await self.model.read("m", p, 0, 1 << 30)
                    got = await self.engine.read("m", p, 0, 1 << 30)
                    assert got == want
            self.run(go())

    return EngineVsModel


def test_engine_matches_model(s3_bucket):
    machine = make_machine(*s3_bucket)
    run_state_machine_as_test(machine, settings=settings(
        max_examples=int(os.environ.get("HW_MODEL_EXAMPLES", 30)), stateful_step_count=40, deadline=None,
        suppress_health_check=list(HealthCheck)))


def test_engine_matches_model_with_s3_wal(s3_bucket):
    """The same machine with `--wal s3`: WAL objects instead of the volume's
    ring (a torn write becomes a damaged WAL object at the tail)."""
    machine = make_machine(*s3_bucket, wal="s3")
    run_state_machine_as_test(machine, settings=settings(
        max_examples=int(os.environ.get("HW_MODEL_EXAMPLES_S3_WAL", 12)), stateful_step_count=40, deadline=None,
        suppress_health_check=list(HealthCheck)))
