"""The TCP edge: asyncio streams in, `reference.protocol.dispatch` in the
middle, bytes out. Nothing about Kafka's semantics lives here.

Per connection:
- one reader loop cuts frames (`codec.FrameReader`; a declared size above
  the limit closes the connection before anything is buffered);
- each request runs as its own task, and a writer loop sends the responses
  in request order, whatever order the tasks finish in (Kafka clients match
  responses to requests by position as well as by correlation id);
- Produce requests of one connection are placed one after another: the next
  starts once the previous one's step 1 (`produce.queue`: every batch
  validated and queued by the engine, or refused) has returned, so a
  pipelining idempotent producer's batches reach storage in sequence order,
  yet can share one group commit; each then waits for its own durability;
- memory is bounded: at most `max_inflight_requests` requests and about
  `max_inflight_bytes` are in flight before the reader stops reading (TCP
  back-pressure does the rest). A request's cost is its frame plus the most
  its response may take (`dispatch.response_reservation`: a Fetch response
  is capped by the broker's fetch limit, and reserved as such); one request
  whatever its cost is always admitted when nothing else is in flight. So a
  connection holds at most about: its read buffer (one partial frame, at
  most `max_frame_size`, plus one read chunk) + `max_inflight_bytes` + one
  more request and its response;
- a connection with nothing in flight and no byte read or written for
  `idle_timeout` seconds (Kafka's connections.max.idle.ms, 10 minutes by
  default) is closed, also one that stalls in the middle of a frame;
- any failure, in decoding or in a handler, is logged and closes only that
  connection; the broker keeps serving the others;
- a reset connection's requests in flight are cancelled at once (after an
  orderly end of input, the responses still in flight are sent); a Produce
  whose batches were already queued still sees them through, and any that
  fails is logged once (`produce.QueuedProduce.abandon`).
"""
from __future__ import annotations

import asyncio
import itertools
import logging

from reference.protocol import codec, dispatch
from reference.protocol.handlers import produce

log = logging.getLogger("highwater.server")

READ_CHUNK = 256 * 1024
DEFAULT_IDLE_TIMEOUT = 600.0  # seconds: Kafka's connections.max.idle.ms default, 10 minutes
_CLOSE = object()  # a response slot meaning: stop after the responses before it


class ConnectionLimits:
    def __init__(self, max_frame_size: int = codec.DEFAULT_MAX_FRAME_SIZE,
                 max_inflight_requests: int = 64, max_inflight_bytes: int = 128 * 1024 * 1024,
                 idle_timeout: float | None = DEFAULT_IDLE_TIMEOUT):
        self.max_frame_size = max_frame_size
        self.max_inflight_requests = max_inflight_requests
        self.max_inflight_bytes = max_inflight_bytes
        self.idle_timeout = idle_timeout if idle_timeout and idle_timeout > 0 else None  # None: never


class Connection:
    def __init__(self, ctx, reader: asyncio.StreamReader, writer: asyncio.StreamWriter,
                 limits: ConnectionLimits, name: str):
        self.ctx = ctx
        self.reader = reader
        self.writer = writer
        self.limits = limits
        self.name = name
        self.frames = codec.FrameReader(limits.max_frame_size)
        self.slots: asyncio.Queue = asyncio.Queue()  # response tasks (or _CLOSE), in request order
        self.inflight_requests = 0
        self.inflight_bytes = 0
        self.room = asyncio.Condition()
        self.produce_queued: asyncio.Event | None = None  # set once the last Produce's batches are queued
        self.tasks: set[asyncio.Task] = set()
        self.last_activity = asyncio.get_running_loop().time()  # last byte read or written

    async def serve(self) -> None:
        reader_task = asyncio.create_task(self._read_until_done())
        idle_task = asyncio.create_task(self._close_when_idle()) if self.limits.idle_timeout else None
        try:
            await self._write_responses()
        finally:
            # The writer stops on a close decision, a dead socket or after the
            # reader's end marker; in every case nothing more is to be read.
            reader_task.cancel()
            if idle_task is not None:
                idle_task.cancel()
            for task in list(self.tasks):
                task.cancel()
            self.writer.close()  # flushes what was written, then closes

    async def _close_when_idle(self) -> None:
        idle = self.limits.idle_timeout
        loop = asyncio.get_running_loop()
        while True:
            remaining = self.last_activity + idle - loop.time()
            if remaining <= 0:
                if self.inflight_requests == 0:
                    log.info("%s: closing: idle for %.0f ms (connections max idle)", self.name,
                             (loop.time() - self.last_activity) * 1000)
                    self.slots.put_nowait(_CLOSE)  # after any response still being written
                    return
                remaining = min(idle, 1.0)  # busy (a long poll, a slow reader): not idle
            await asyncio.sleep(remaining)

    async def _read_until_done(self) -> None:
        try:
            await self._read_requests()
        except ConnectionError:
            # reset: no response can reach the client any more, so stop the
            # requests in flight now (appends already queued go on, and
            # produce.QueuedProduce.abandon reports any that fail)
            for task in list(self.tasks):
                task.cancel()
        except asyncio.IncompleteReadError:
            pass
        except codec.FrameError as exc:
            log.warning("%s: closing: %s", self.name, exc)
        except asyncio.CancelledError:
            raise
        except Exception:
            log.exception("%s: reader failed", self.name)
        finally:
            self.slots.put_nowait(_CLOSE)

    async def _read_requests(self) -> None:
        while True:
            frame = self.frames.next_frame()
            if frame is None:
                data = await self.reader.read(READ_CHUNK)
                if not data:
                    return
                self.last_activity = asyncio.get_running_loop().time()
                self.frames.receive_data(data)
                continue
            try:
                prefix, request = dispatch.parse(frame)
            except dispatch.CloseConnection as exc:
                log.warning("%s: closing: %s", self.name, exc)
                return
            if isinstance(request, (bytes, bytearray)):  # an immediate answer (unsupported version)
                cost = len(frame) + len(request)
                await self._wait_for_room(cost)
                self._enqueue(self._ready(bytes(request)), cost)
            else:
                cost = len(frame) + dispatch.response_reservation(self.ctx, prefix, request)
                await self._wait_for_room(cost)
                if prefix.api_key == codec.PRODUCE_KEY:
                    queued = asyncio.Event()
                    self._enqueue(self._handle_produce(prefix, request, self.produce_queued, queued), cost)
                    self.produce_queued = queued
                else:
                    self._enqueue(self._handle(prefix, request), cost)

    async def _wait_for_room(self, size: int) -> None:
        async with self.room:
            await self.room.wait_for(lambda: self.inflight_requests == 0 or (
                self.inflight_requests < self.limits.max_inflight_requests
                and self.inflight_bytes + size <= self.limits.max_inflight_bytes))
            self.inflight_requests += 1
            self.inflight_bytes += size

    def _enqueue(self, coro, size: int) -> asyncio.Task:
        task = asyncio.create_task(coro)
        self.tasks.add(task)
        task.add_done_callback(self.tasks.discard)
        self.slots.put_nowait((task, size))
        return task

    @staticmethod
    async def _ready(data: bytes) -> bytes:
        return data

    async def _handle(self, prefix, request):
        try:
            return await dispatch.handle(self.ctx, prefix, request)
        except dispatch.CloseConnection as exc:
            log.warning("%s: closing: %s", self.name, exc)
            return _CLOSE

    async def _handle_produce(self, prefix, request, after: asyncio.Event | None, queued: asyncio.Event):
        """A Produce: its batches are queued once the connection's previous
        Produce queued its own (whatever its outcome); then `queued` lets the
        next one go, and this one waits for durability and answers."""
        async def both_steps():
            try:
                if after is not None:
                    await after.wait()
                pending = await produce.queue(request, self.ctx)
            finally:
                queued.set()
            return await pending.response()
        try:
            return await dispatch.respond(prefix, both_steps())
        except dispatch.CloseConnection as exc:
            log.warning("%s: closing: %s", self.name, exc)
            return _CLOSE

    async def _write_responses(self) -> None:
        while True:
            slot = await self.slots.get()
            if slot is _CLOSE:
                return
            task, size = slot
            try:
                response = await task
            except asyncio.CancelledError:
                return
            except Exception:
                log.exception("%s: request task failed", self.name)
                return
            finally:
                async with self.room:
                    self.inflight_requests -= 1
                    self.inflight_bytes -= size
                    self.room.notify_all()
            if response is _CLOSE:
                return
            if response is not None:
                try:
                    self.writer.write(response)
                    await self.writer.drain()
                except (ConnectionError, RuntimeError):
                    return
                self.last_activity = asyncio.get_running_loop().time()


class BrokerServer:
    def __init__(self, ctx, host: str, port: int, limits: ConnectionLimits | None = None):
        self.ctx = ctx
        self.host = host
        self.port = port
        self.limits = limits or ConnectionLimits()
        self._server: asyncio.AbstractServer | None = None
        self._connections: set[asyncio.Task] = set()
        self.connections: set[Connection] = set()  # the live ones, for inspection
        self._ids = itertools.count(1)

    async def start(self) -> None:
        self._server = await asyncio.start_server(self._accept, self.host, self.port,
                                                  limit=READ_CHUNK, reuse_address=True)
        self.port = self._server.sockets[0].getsockname()[1]

    async def _accept(self, reader, writer) -> None:
        peer = writer.get_extra_info("peername")
        name = f"conn{next(self._ids)}{peer}"
        log.debug("%s: accepted", name)
        task = asyncio.current_task()
        self._connections.add(task)
        connection = Connection(self.ctx, reader, writer, self.limits, name)
        self.connections.add(connection)
        try:
            await connection.serve()
        except asyncio.CancelledError:
            pass
        except Exception:
            log.exception("%s: connection failed", name)
        finally:
            self.connections.discard(connection)
            self._connections.discard(task)
            log.debug("%s: closed", name)

    async def close(self) -> None:
        if self._server is not None:
            self._server.close()
        for task in list(self._connections):
            task.cancel()
        if self._connections:
            await asyncio.wait(list(self._connections), timeout=5)
        if self._server is not None:
            await self._server.wait_closed()
