"""The cluster's internal RPC: length-prefixed JSON over TCP.

A frame is a 4-byte big-endian length, then that many bytes of UTF-8 JSON.
A request is `{"id": N, "method": NAME, "params": {...}}`; its response is
`{"id": N, "result": ...}` or `{"id": N, "error": {"code": C, "message": M}}`.
Requests on one connection may be answered out of order (matched by id).
Every node serves the same listener (`--rpc-listen`); controller methods
are answered only by the controller (`not_controller` elsewhere, with the
controller's address when known in `message`).

Controller methods (a broker, the harness or a CLI asks the controller):

- `register {node, rpc, listen, volume}` -> `{"epoch"}`, or
  `{"recover": {"epoch", "token"}}`: the node's previous incarnation was not
  fenced yet, so the new process first recovers its own WAL as that
  incarnation and then calls `recovered`; or `{"retry": reason}` (a
  failover of this node is running).
- `recovered {node, token, ends}` -> `{"epoch"}`: the previous incarnation's
  WAL is in S3; the node is registered anew.
- `heartbeat {node, epoch, seq}` -> `{"status": "ok"|"fenced", "seq",
  "records"}`: keeps the session; `records` are metadata records after the
  broker's `seq` (the broker's metadata replica catches up from them, or
  from S3 when they are too many).
- `append {node, epoch, record, recovery?}` -> `{"seq", "result",
  "records"}`: the controller stamps the record with node and node epoch,
  checks it (nodeEpochCheck, streamAdvanceCheck, ...), writes it to the
  metadata log, and may follow it with its own (a new topic's open_streams).
  Errors: `rejected` (CommitRejected: the record does not fit), `fenced`
  (the node's epoch is stale), `not_controller`.
- `reassign {moves: [[topic, partition, node], ...]}` -> `{"moved": [...]}`,
  once every move is done (or `{"errors"}`).
- `leave {node, epoch}` -> `{"closed"}`: a clean shutdown (everything
  uploaded): the node's streams open elsewhere now and the node is fenced.
- `reassignments {}` -> `{"active": [[topic, partition, from, to], ...]}`.
- `cluster {}` -> controller, nodes (epoch, fenced, listen, streams led),
  failovers with their step timings.

Broker methods (the controller asks a broker):

- `recover_wal {node, epoch, token, path}` -> `{"ends", "replayed",
  "replayed_bytes", "seconds"}`: recover another node's WAL (attached here at
  `path`) as that node at the fenced epoch (commits carry the token).
- `move_out {stream, epoch}` -> `{"end", "delta_bytes", "seconds"}`: stop
  appending to the stream, upload its not-yet-uploaded delta, commit, and
  let go of it (reassignment).
- `move_cancel {stream, epoch}` -> `{}`: a reassignment failed before the
  stream closed; the broker takes appends to it again.
- `catch_up {seq, records}` -> `{"seq"}`: metadata records to apply now
  (pushed after the controller wrote, so leadership moves in milliseconds).
- `upload {}` -> `{"bytes"}`: upload and commit everything durable now
  (tests and benchmarks).
- `stats {}` -> the node's storage and cluster counters.
"""
from __future__ import annotations

import asyncio
import json
import logging
import struct
from typing import Awaitable, Callable

log = logging.getLogger(__name__)

LENGTH = struct.Struct(">I")
MAX_FRAME = 64 << 20

# error codes
NOT_CONTROLLER = "not_controller"
FENCED = "fenced"
REJECTED = "rejected"
UNKNOWN_METHOD = "unknown_method"
BAD_REQUEST = "bad_request"
UNAVAILABLE = "unavailable"
INTERNAL = "internal"


class RpcError(Exception):
    """The peer answered with an error."""

    def __init__(self, code: str, message: str = ""):
        super().__init__(f"{code}: {message}")
        self.code = code
        self.message = message


class FrameError(Exception):
    pass


def encode_frame(obj) -> bytes:
    data = json.dumps(obj, separators=(",", ":")).encode()
    if len(data) > MAX_FRAME:
        raise FrameError(f"RPC frame of {len(data)} bytes exceeds {MAX_FRAME}")
    return LENGTH.pack(len(data)) + data


class FrameDecoder:
    """Sans-I/O: feed bytes, get whole decoded frames."""

    def __init__(self, max_frame: int = MAX_FRAME):
        self.buf = bytearray()
        self.max_frame = max_frame

    def feed(self, data: bytes) -> list:
        self.buf += data
        out = []
        while len(self.buf) >= LENGTH.size:
            (n,) = LENGTH.unpack_from(self.buf)
            if n > self.max_frame:
                raise FrameError(f"RPC frame of {n} bytes exceeds {self.max_frame}")
            if len(self.buf) < LENGTH.size + n:
                break
            body = bytes(self.buf[LENGTH.size:LENGTH.size + n])
            del self.buf[:LENGTH.size + n]
            try:
                obj = json.loads(body)
            except ValueError as e:
                raise FrameError(f"RPC frame is not JSON: {e}") from None
            if not isinstance(obj, dict):
                raise FrameError("RPC frame is not a JSON object")
            out.append(obj)
        return out


def parse_address(text: str) -> tuple[str, int]:
    host, _, port = text.rpartition(":")
    return host.strip("[]") or "127.0.0.1", int(port)


Handler = Callable[[dict, "Connection"], Awaitable[object]]


class Connection:
    """One accepted connection; handlers may tag it (e.g. with the node
    whose heartbeats arrive on it)."""

    def __init__(self, peer):
        self.peer = peer
        self.tags: dict = {}
        self.closed = False


class RpcServer:
    def __init__(self, host: str, port: int, handlers: dict[str, Handler],
                 on_closed: Callable[[Connection], None] | None = None):
        self.host, self.port = host, port
        self.handlers = handlers
        self.on_closed = on_closed
        self._server: asyncio.AbstractServer | None = None
        self._writers: set[asyncio.StreamWriter] = set()
        self._tasks: set[asyncio.Task] = set()

    async def start(self) -> None:
        self._server = await asyncio.start_server(self._serve, self.host, self.port)
        self.port = self._server.sockets[0].getsockname()[1]

    @property
    def address(self) -> str:
        return f"{self.host}:{self.port}"

    async def close(self) -> None:
        if self._server is not None:
            self._server.close()
        for w in list(self._writers):
            w.close()
        for t in list(self._tasks):
            t.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self._writers.add(writer)
        conn = Connection(writer.get_extra_info("peername"))
        decoder = FrameDecoder()
        lock = asyncio.Lock()
        try:
            while True:
                data = await reader.read(1 << 16)
                if not data:
                    break
                try:
                    frames = decoder.feed(data)
                except FrameError as e:
                    log.warning("RPC from %s: %s; closing the connection", conn.peer, e)
                    break
                for req in frames:
                    t = asyncio.ensure_future(self._answer(req, conn, writer, lock))
                    self._tasks.add(t)
                    t.add_done_callback(self._tasks.discard)
        except (ConnectionError, asyncio.CancelledError):
            pass
        finally:
            conn.closed = True
            self._writers.discard(writer)
            writer.close()
            if self.on_closed is not None:
                try:
                    self.on_closed(conn)
                except Exception:
                    log.exception("RPC on_closed")

    async def _answer(self, req: dict, conn: Connection, writer, lock) -> None:
        rid = req.get("id")
        method = req.get("method")
        handler = self.handlers.get(method) if isinstance(method, str) else None
        if handler is None:
            resp = {"id": rid, "error": {"code": UNKNOWN_METHOD, "message": f"no method {method!r}"}}
        elif not isinstance(req.get("params", {}), dict):
            resp = {"id": rid, "error": {"code": BAD_REQUEST, "message": "params must be an object"}}
        else:
            try:
                resp = {"id": rid, "result": await handler(req.get("params", {}), conn)}
            except RpcError as e:
                resp = {"id": rid, "error": {"code": e.code, "message": e.message}}
            except (KeyError, TypeError, ValueError) as e:
                log.warning("RPC %s from %s: bad request: %r", method, conn.peer, e)
                resp = {"id": rid, "error": {"code": BAD_REQUEST, "message": repr(e)}}
            except asyncio.CancelledError:
                return
            except Exception as e:
                log.exception("RPC %s failed", method)
                resp = {"id": rid, "error": {"code": INTERNAL, "message": repr(e)}}
        try:
            async with lock:
                writer.write(encode_frame(resp))
                await writer.drain()
        except (ConnectionError, RuntimeError):
            pass


class RpcClient:
    """One persistent connection to a peer, requests multiplexed by id.
    A broken connection fails every request in flight (ConnectionError) and
    is re-made by the next call."""

    def __init__(self, address: str, connect_timeout: float = 1.0):
        self.address = address
        self.connect_timeout = connect_timeout
        self._writer: asyncio.StreamWriter | None = None
        self._reader_task: asyncio.Task | None = None
        self._pending: dict[int, asyncio.Future] = {}
        self._next_id = 1
        self._connecting: asyncio.Lock | None = None
        self.on_closed: Callable[[], None] | None = None

    async def _connect(self) -> asyncio.StreamWriter:
        if self._connecting is None:
            self._connecting = asyncio.Lock()
        async with self._connecting:
            if self._writer is not None and not self._writer.is_closing():
                return self._writer
            host, port = parse_address(self.address)
            reader, writer = await asyncio.wait_for(asyncio.open_connection(host, port), self.connect_timeout)
            self._writer = writer
            self._reader_task = asyncio.ensure_future(self._read(reader, writer))
            return writer

    async def _read(self, reader: asyncio.StreamReader, writer) -> None:
        decoder = FrameDecoder()
        try:
            while True:
                data = await reader.read(1 << 16)
                if not data:
                    break
                for resp in decoder.feed(data):
                    fut = self._pending.pop(resp.get("id"), None)
                    if fut is not None and not fut.done():
                        fut.set_result(resp)
        except (ConnectionError, FrameError, asyncio.CancelledError):
            pass
        finally:
            if self._writer is writer:
                self._writer = None
            writer.close()
            for fut in self._pending.values():
                if not fut.done():
                    fut.set_exception(ConnectionError(f"RPC connection to {self.address} closed"))
            self._pending.clear()
            if self.on_closed is not None:
                try:
                    self.on_closed()
                except Exception:
                    log.exception("RPC client on_closed")

    async def call(self, method: str, params: dict | None = None, timeout: float = 10.0):
        writer = await self._connect()
        rid = self._next_id
        self._next_id += 1
        fut = asyncio.get_running_loop().create_future()
        self._pending[rid] = fut
        try:
            writer.write(encode_frame({"id": rid, "method": method, "params": params or {}}))
            await writer.drain()
            resp = await asyncio.wait_for(fut, timeout)
        finally:
            self._pending.pop(rid, None)
        if "error" in resp:
            err = resp["error"] or {}
            raise RpcError(err.get("code", INTERNAL), err.get("message", ""))
        return resp.get("result")

    async def close(self) -> None:
        if self._writer is not None:
            self._writer.close()
        if self._reader_task is not None:
            self._reader_task.cancel()
            await asyncio.gather(self._reader_task, return_exceptions=True)


class RpcPool:
    """Clients by address (the transport the controller and brokers share;
    a simulator replaces it with its own `call`)."""

    def __init__(self):
        self.clients: dict[str, RpcClient] = {}

    def client(self, address: str) -> RpcClient:
        c = self.clients.get(address)
        if c is None:
            c = self.clients[address] = RpcClient(address)
        return c

    async def call(self, address: str, method: str, params: dict | None = None, timeout: float = 10.0):
        return await self.client(address).call(method, params, timeout)

    async def close(self) -> None:
        await asyncio.gather(*(c.close() for c in self.clients.values()), return_exceptions=True)
        self.clients.clear()


async def probe(address: str, timeout: float = 0.5) -> str:
    """Is anything listening there? "open", "refused" (nothing: the process
    is gone) or "timeout" (paused, or cut off: unknown)."""
    host, port = parse_address(address)
    try:
        _r, w = await asyncio.wait_for(asyncio.open_connection(host, port), timeout)
    except ConnectionRefusedError:
        return "refused"
    except (asyncio.TimeoutError, OSError):
        return "timeout"
    w.close()
    return "open"


def call_sync(address: str, method: str, params: dict | None = None, timeout: float = 10.0):
    """A one-off blocking call (the harness and the CLI)."""
    async def once():
        c = RpcClient(address, connect_timeout=min(timeout, 2.0))
        try:
            return await c.call(method, params, timeout)
        finally:
            await c.close()
    return asyncio.run(once())
