"""The TCP edge (reference/server.py) in this process, over real sockets on
127.0.0.1 with a MemoryEngine behind: the per-connection memory bound
(in-flight requests, in-flight bytes including Fetch responses, one partial
frame) and the idle timeout."""
from __future__ import annotations

import asyncio
import logging
import struct
import time

import pytest
from kafka.protocol.consumer import FetchRequest, FetchResponse
from kafka.protocol.metadata import MetadataRequest, MetadataResponse
from kafka.protocol.producer import ProduceResponse

from reference import errors
from reference.errors import KafkaError
from reference.protocol.context import make_context
from reference.server import READ_CHUNK, BrokerServer, ConnectionLimits
from reference.storage.memory import MemoryEngine

from test_protocol import create, produce_request, records


class SlowEngine(MemoryEngine):
    """Appends take `delay` seconds, so that requests pile up."""

    def __init__(self, delay: float):
        super().__init__(1)
        self.delay = delay

    async def queue_append(self, *args, **kwargs):
        await asyncio.sleep(self.delay)
        return await super().queue_append(*args, **kwargs)


async def start(limits: ConnectionLimits, engine=None, **options):
    ctx = make_context(engine or MemoryEngine(1), 1, "127.0.0.1", 0, **options)
    await create(ctx, "t")
    server = BrokerServer(ctx, "127.0.0.1", 0, limits)
    await server.start()
    return server


class Sampler:
    """Watches every live connection of a server: the largest in-flight
    request count, in-flight bytes and read buffer seen."""

    def __init__(self, server: BrokerServer):
        self.server = server
        self.requests = self.bytes = self.buffered = 0
        self.task = asyncio.ensure_future(self._run())

    async def _run(self):
        while True:
            for c in list(self.server.connections):
                self.requests = max(self.requests, c.inflight_requests)
                self.bytes = max(self.bytes, c.inflight_bytes)
                self.buffered = max(self.buffered, c.frames.buffered)
            await asyncio.sleep(0.001)

    def stop(self):
        self.task.cancel()


def frame(request, version: int, correlation_id: int) -> bytes:
    request.with_header(correlation_id=correlation_id, client_id="edge")
    body = bytes(request.encode(version=version, header=True))
    return struct.pack(">i", len(body)) + body


async def read_response(reader, response_class, version):
    size = struct.unpack(">i", await reader.readexactly(4))[0]
    raw = struct.pack(">i", size) + await reader.readexactly(size)
    return response_class.decode(raw, version=version, header=True, framed=True)


def long_poll(max_wait_ms: int, max_bytes: int = 1 << 20, offset: int = 0):
    T = FetchRequest.FetchTopic
    return FetchRequest(replica_id=-1, max_wait_ms=max_wait_ms, min_bytes=1, max_bytes=max_bytes, isolation_level=0,
                        topics=[T(topic="t", partitions=[T.FetchPartition(
                            partition=0, current_leader_epoch=-1, fetch_offset=offset, log_start_offset=-1,
                            partition_max_bytes=max_bytes)])])


# --- the in-flight bound ------------------------------------------------------------

def test_pipelined_requests_beyond_the_inflight_count_wait_for_room():
    async def scenario():
        server = await start(ConnectionLimits(max_inflight_requests=3))
        sampler = Sampler(server)
        reader, writer = await asyncio.open_connection("127.0.0.1", server.port)
        started = time.monotonic()
        writer.write(b"".join(frame(long_poll(200), 11, i) for i in range(12)))  # all at once
        ids = [(await read_response(reader, FetchResponse, 11)).header.correlation_id for _ in range(12)]
        elapsed = time.monotonic() - started
        sampler.stop()
        writer.close()
        await server.close()
        return ids, elapsed, sampler

    ids, elapsed, sampler = asyncio.run(scenario())
    assert ids == list(range(12))
    assert sampler.requests == 3  # reached, never passed
    assert elapsed >= 4 * 0.2 - 0.05  # 12 long polls, 3 at a time


def test_fetch_responses_are_capped_and_reserved_in_the_inflight_bytes():
    async def scenario():
        cap = 100_000
        server = await start(ConnectionLimits(max_inflight_bytes=250_000), fetch_max_bytes=cap)
        engine = server.ctx.engine
        for i in range(5):  # five batches of about 40 kB
            await engine.append("t", 0, records([bytes([65 + i]) * 40_000]))
        sampler = Sampler(server)
        reader, writer = await asyncio.open_connection("127.0.0.1", server.port)
        # a fetch asking for 10 MB gets at most the broker's cap
        writer.write(frame(long_poll(0, max_bytes=10 << 20), 11, 0))
        first = await read_response(reader, FetchResponse, 11)
        got = len(first.responses[0].partitions[0].records)
        # long polls at the end of the log, each reserving the cap: two fit in 250 000 bytes, not three
        writer.write(b"".join(frame(long_poll(150, max_bytes=10 << 20, offset=5), 11, i) for i in range(1, 9)))
        ids = [(await read_response(reader, FetchResponse, 11)).header.correlation_id for _ in range(8)]
        sampler.stop()
        writer.close()
        await server.close()
        return got, ids, sampler

    got, ids, sampler = asyncio.run(scenario())
    assert 0 < got <= 100_000
    assert ids == list(range(1, 9))
    assert sampler.requests == 2
    assert sampler.bytes <= 250_000


def test_a_flood_of_produce_requests_holds_bounded_memory():
    """A client writes 100 produce requests of 64 kB as fast as TCP takes
    them onto a slow engine: the broker stops reading at its in-flight byte
    limit (the client's send blocks), its read buffer stays within one read
    chunk past a frame, and every request is answered, in order."""
    limit = 256 * 1024

    async def scenario():
        server = await start(ConnectionLimits(max_inflight_bytes=limit), engine=SlowEngine(0.01))
        sampler = Sampler(server)
        reader, writer = await asyncio.open_connection("127.0.0.1", server.port)
        frames = [frame(produce_request("t", 0, records([b"%06d" % i + b"x" * 65_000]), acks=1), 8, i)
                  for i in range(100)]

        async def send():
            for f in frames:
                writer.write(f)
                await writer.drain()
        sender = asyncio.ensure_future(send())
        responses = [await read_response(reader, ProduceResponse, 8) for _ in range(100)]
        await sender
        sampler.stop()
        writer.close()
        await server.close()
        return frames, responses, sampler

    frames, responses, sampler = asyncio.run(scenario())
    assert [r.header.correlation_id for r in responses] == list(range(100))
    assert [r.responses[0].partition_responses[0].base_offset for r in responses] == list(range(100))
    assert sampler.bytes <= limit
    assert sampler.requests >= 2  # it did pile up
    assert sampler.buffered <= len(frames[0]) + READ_CHUNK


# --- the idle timeout ---------------------------------------------------------------

def test_a_connection_stalled_inside_a_frame_is_closed_when_idle(caplog):
    async def scenario():
        server = await start(ConnectionLimits(idle_timeout=0.3))
        reader, writer = await asyncio.open_connection("127.0.0.1", server.port)
        writer.write(struct.pack(">i", 1_000_000) + b"\x00\x03\x00\x08" + b"x" * 100)  # then nothing
        started = time.monotonic()
        rest = await asyncio.wait_for(reader.read(), 5)  # EOF: the broker closed it
        elapsed = time.monotonic() - started
        left = len(server.connections)
        writer.close()
        await server.close()
        return rest, elapsed, left

    with caplog.at_level(logging.INFO, logger="highwater.server"):
        rest, elapsed, left = asyncio.run(scenario())
    assert rest == b"" and left == 0
    assert 0.25 <= elapsed < 2
    assert any("idle" in r.getMessage() for r in caplog.records)


def test_a_long_poll_longer_than_the_idle_timeout_is_answered():
    async def scenario():
        server = await start(ConnectionLimits(idle_timeout=0.3))
        reader, writer = await asyncio.open_connection("127.0.0.1", server.port)
        started = time.monotonic()
        writer.write(frame(long_poll(800), 11, 1))
        fetched = await read_response(reader, FetchResponse, 11)  # in flight: not idle
        waited = time.monotonic() - started
        writer.write(frame(MetadataRequest(topics=None), 8, 2))  # the connection still serves
        meta = await read_response(reader, MetadataResponse, 8)
        rest = await asyncio.wait_for(reader.read(), 5)  # and is closed once idle
        writer.close()
        await server.close()
        return fetched, waited, meta, rest

    fetched, waited, meta, rest = asyncio.run(scenario())
    assert fetched.header.correlation_id == 1 and waited >= 0.75
    assert [t.name for t in meta.topics] == ["t"]
    assert rest == b""


@pytest.mark.parametrize("idle", [None, 0])
def test_no_idle_timeout_when_disabled(idle):
    assert ConnectionLimits(idle_timeout=idle).idle_timeout is None


class GatedEngine(MemoryEngine):
    """Appends are queued (in order) at once but become durable only when
    the test opens the gate: like a WAL whose fsync (or S3 PUT) is slow."""

    def __init__(self):
        super().__init__(1)
        self.gate = asyncio.Event()
        self.gate_waiters = []
        self.queued_order: list[int] = []

    async def queue_append(self, topic, partition, batch, leader_epoch=0):
        result = await (await super().queue_append(topic, partition, batch, leader_epoch))
        self.queued_order.append(result.base_offset)
        durable = asyncio.get_running_loop().create_future()
        self.gate_waiters.append((durable, result))
        if self.gate.is_set():
            self.open_gate()
        return durable

    def open_gate(self):
        self.gate.set()
        for durable, result in self.gate_waiters:
            durable.set_result(result)
        self.gate_waiters = []


def test_pipelined_produce_requests_queue_in_order_without_waiting_for_durability():
    """A connection's next Produce starts once the previous one's batches are
    queued, not once they are durable: so they can share a group commit, and
    an idempotent producer's sequence order is kept."""
    async def scenario():
        engine = GatedEngine()
        server = await start(ConnectionLimits(), engine=engine)
        reader, writer = await asyncio.open_connection("127.0.0.1", server.port)
        for seq in range(5):  # one idempotent producer, sequences 0, 2, 4, … (2 records a batch)
            data = records([b"a%d" % seq, b"b%d" % seq], producer_id=7, epoch=0, sequence=2 * seq)
            writer.write(frame(produce_request("t", 0, data), 8, seq))
        await writer.drain()
        deadline = time.monotonic() + 5
        while len(engine.queued_order) < 5 and time.monotonic() < deadline:
            await asyncio.sleep(0.01)
        assert engine.queued_order == [0, 2, 4, 6, 8]   # all queued while none is durable yet
        engine.open_gate()
        answers = [await read_response(reader, ProduceResponse, 8) for _ in range(5)]
        assert [a.header.correlation_id for a in answers] == list(range(5))
        assert [a.responses[0].partition_responses[0].error_code for a in answers] == [0] * 5
        assert [a.responses[0].partition_responses[0].base_offset for a in answers] == [0, 2, 4, 6, 8]
        writer.close()
        await server.close()
    asyncio.run(scenario())


class HeldEngine(MemoryEngine):
    """Batches are queued (placed in memory) at once, but their durability
    futures resolve only when the test says, with success or a failure; the
    `block_from`-th append and later ones wait for room that never comes."""

    def __init__(self, block_from: int):
        super().__init__(1)
        self.block_from = block_from
        self.calls = 0
        self.held: list[asyncio.Future] = []
        self.queued = asyncio.Event()
        self.waiting_for_room = asyncio.Event()

    async def queue_append(self, topic, partition, batch, leader_epoch=0):
        self.calls += 1
        if self.calls >= self.block_from:
            self.waiting_for_room.set()
            await asyncio.Event().wait()  # a full cache that never drains: cancelled with the connection
        await (await super().queue_append(topic, partition, batch, leader_epoch))
        durable = asyncio.get_running_loop().create_future()
        self.held.append(durable)
        self.queued.set()
        return durable


@pytest.mark.timeout(180)
def test_a_reset_in_the_middle_of_produce_leaves_no_unretrieved_exception(caplog):
    """Pipelined idempotent Produce requests; one has a sequence gap, one
    waits for room; the client resets the connection while the others wait
    for durability, which then fails. Each failure is logged once, as the
    failure of an abandoned request, and nothing is left for asyncio to
    report as 'exception was never retrieved'."""
    import gc
    import socket

    async def scenario():
        engine = HeldEngine(block_from=4)
        server = await start(ConnectionLimits(), engine=engine)
        reader, writer = await asyncio.open_connection("127.0.0.1", server.port)
        for i, seq in enumerate([0, 1, 5, 2, 3]):  # 5: a gap (OUT_OF_ORDER_SEQUENCE_NUMBER); 2, 3: no room
            data = records([b"v%d" % i], producer_id=7, epoch=0, sequence=seq)
            writer.write(frame(produce_request("t", 0, data), 8, i))
        await writer.drain()
        await asyncio.wait_for(engine.waiting_for_room.wait(), 5)
        assert len(engine.held) == 2 and engine.calls == 4
        sock = writer.get_extra_info("socket")
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        writer.transport.abort()  # RST
        deadline = time.monotonic() + 5
        while server.connections and time.monotonic() < deadline:
            await asyncio.sleep(0.01)
        assert not server.connections
        for durable in engine.held:  # the WAL fails under the abandoned appends
            durable.set_exception(KafkaError(errors.KAFKA_STORAGE_ERROR, "WAL write failed: EIO"))
        for _ in range(5):
            await asyncio.sleep(0)
        gc.collect()
        await asyncio.sleep(0)
        await server.close()

    with caplog.at_level(logging.WARNING):
        asyncio.run(scenario())
        gc.collect()
    messages = [r.getMessage() for r in caplog.records]
    assert not [m for m in messages if "never retrieved" in m], messages
    abandoned = [m for m in messages if "abandoned" in m]
    assert len(abandoned) == 2 and all("WAL write failed: EIO" in m for m in abandoned), messages
