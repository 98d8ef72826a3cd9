"""The S3 fault proxy: an HTTP-aware proxy in front of any S3 endpoint.

One instance per node, so one node's S3 can be degraded alone. It frames
HTTP/1.1 requests and responses (nemeses.http_framing) but forwards every byte
unchanged, so signed requests (SigV4, aws-chunked streaming payloads) stay
valid; keep-alive and pipelined requests are answered in order.

Faults, switchable at run time from any thread (`add_*` return a rule id for
`remove`; `clear` removes them all):

- latency before a request is forwarded: fixed, uniform, or a long tail;
- `503 SlowDown` / `500 InternalError` at a rate, answered by the proxy with
  the XML body S3 sends, so SDKs classify and retry them as against AWS;
- connection reset (RST) before the request reaches S3;
- hang: the request is never forwarded nor answered until the client gives up
  (or the fault is cleared, which resets the connection);
- ambiguous success: the request is forwarded and applied, its response
  dropped and the connection reset (or answered with a 500, which an SDK
  retries: a retried conditional PUT then meets its own first write).

Each rule selects requests by operation (`OPS`) and key prefix (and, with
`body_contains`, by a substring of the request body: "fail the writes that
commit", not every write), fires with a probability `rate` and at most
`limit` times. Every matching latency rule
adds its delay; the first matching rule of another kind decides the request's
fate. The proxy counts requests by operation and faults by kind (`stats()`).
"""
from __future__ import annotations

import asyncio
import itertools
import logging
import math
import random
import socket
import struct
import threading
import uuid
from dataclasses import dataclass, field, replace
from email.utils import formatdate
from urllib.parse import parse_qs, unquote, urlsplit

from nemeses.http_framing import (CLOSED, END, NEED_DATA, Body, FramingError, Head,
                                  MessageReader)

log = logging.getLogger(__name__)

OPS = ("get", "put", "put-if", "list", "delete", "multipart", "head", "other")
WRITE_OPS = frozenset({"put", "put-if", "delete", "multipart"})
KINDS = ("latency", "error", "reset", "hang", "ambiguous")
READ_SIZE = 256 * 1024
# A body is read before the request's fate is decided only when a rule
# matches on it, and only this small (metadata records, not object data).
BODY_PEEK_BYTES = 64 * 1024


# --- what a request is --------------------------------------------------------------

@dataclass(frozen=True)
class S3Request:
    op: str           # one of OPS
    method: str
    bucket: str
    key: str          # the object key; for a LIST, its `prefix` parameter
    body: bytes | None = None   # the body's bytes, read only when a rule matches on them


def classify(head: Head, virtual_host: bool = False) -> S3Request:
    """The S3 operation of a request head. Path-style addressing
    (`/bucket/key`) unless `virtual_host` (bucket as the Host's first label).
    `put-if` is a PUT with If-None-Match or If-Match (a conditional write);
    `multipart` is create/upload-part/complete/abort/list-parts."""
    method = head.method.upper()
    split = urlsplit(head.target)
    path = unquote(split.path)
    query = parse_qs(split.query, keep_blank_values=True)
    if virtual_host:
        bucket = (head.get("host") or "").split(".", 1)[0]
        key = path.lstrip("/")
    else:
        bucket, _, key = path.lstrip("/").partition("/")
    multipart = "uploadId" in query or "uploads" in query
    if method == "HEAD":
        op = "head"
    elif method == "GET":
        op = "multipart" if multipart and key else ("get" if key else "list")
    elif method == "PUT":
        if not key:
            op = "other"
        elif multipart:
            op = "multipart"
        elif head.get("if-none-match") is not None or head.get("if-match") is not None:
            op = "put-if"
        else:
            op = "put"
    elif method == "POST":
        op = "multipart" if multipart else ("delete" if "delete" in query else "other")
    elif method == "DELETE":
        op = "multipart" if multipart else ("delete" if key else "other")
    else:
        op = "other"
    if op == "list":
        key = query.get("prefix", [""])[0]
    return S3Request(op, method, bucket, key)


# --- latency distributions ------------------------------------------------------------

@dataclass(frozen=True)
class Fixed:
    seconds: float

    def sample(self, rng: random.Random) -> float:
        return self.seconds

    def describe(self) -> str:
        return f"{self.seconds * 1000:g}ms"


@dataclass(frozen=True)
class Uniform:
    low: float
    high: float

    def __post_init__(self):
        if not 0 <= self.low <= self.high:
            raise ValueError(f"uniform latency needs 0 <= low <= high, got {self.low}..{self.high}")

    def sample(self, rng: random.Random) -> float:
        return rng.uniform(self.low, self.high)

    def describe(self) -> str:
        return f"{self.low * 1000:g}ms..{self.high * 1000:g}ms"


_Z99 = 2.3263478740408408  # the standard normal's 99th percentile


@dataclass(frozen=True)
class LongTail:
    """Log-normal with the given median and 99th percentile, capped at `cap`
    (default 10 x p99) so one draw cannot outlast a test."""
    median: float
    p99: float
    cap: float | None = None

    def __post_init__(self):
        if not 0 < self.median <= self.p99:
            raise ValueError(f"long-tail latency needs 0 < median <= p99, got {self.median}, {self.p99}")

    def sample(self, rng: random.Random) -> float:
        sigma = (math.log(self.p99) - math.log(self.median)) / _Z99
        value = rng.lognormvariate(math.log(self.median), sigma)
        return min(value, self.cap if self.cap is not None else 10 * self.p99)

    def describe(self) -> str:
        return f"tail:{self.median * 1000:g}ms:{self.p99 * 1000:g}ms"


def parse_latency(text) -> Fixed | Uniform | LongTail:
    """`200ms` (fixed), `50ms..500ms` (uniform), `tail:20ms:2s` (log-normal
    with median 20 ms and p99 2 s), or a number of seconds."""
    from harness.durations import parse_duration
    if isinstance(text, (Fixed, Uniform, LongTail)):
        return text
    if isinstance(text, (int, float)):
        return Fixed(parse_duration(text))
    text = str(text).strip()
    if text.startswith("tail:"):
        parts = text[5:].split(":")
        if len(parts) != 2:
            raise ValueError(f"long-tail latency is tail:MEDIAN:P99, e.g. tail:20ms:2s; got {text!r}")
        return LongTail(parse_duration(parts[0]), parse_duration(parts[1]))
    if ".." in text:
        low, high = text.split("..", 1)
        return Uniform(parse_duration(low), parse_duration(high))
    return Fixed(parse_duration(text))


# --- rules ------------------------------------------------------------------------------

@dataclass(frozen=True)
class Rule:
    kind: str                              # one of KINDS
    rate: float = 1.0
    ops: frozenset[str] | None = None      # None: every operation
    prefix: str = ""
    limit: int | None = None               # fire at most this many times
    latency: Fixed | Uniform | LongTail | None = None
    status: int = 503                      # error: 503 SlowDown or 500 InternalError
    answer: str = "reset"                  # ambiguous: "reset" or "500"
    body_contains: str = ""                # only requests whose body holds this text
    id: int = 0

    def __post_init__(self):
        if self.kind not in KINDS:
            raise ValueError(f"unknown S3 fault kind {self.kind!r}; known: {', '.join(KINDS)}")
        if not 0 <= self.rate <= 1:
            raise ValueError(f"rate must be within 0..1, got {self.rate}")
        if self.ops is not None:
            unknown = set(self.ops) - set(OPS)
            if unknown:
                raise ValueError(f"unknown S3 operation(s) {sorted(unknown)}; known: {', '.join(OPS)}")
        if self.kind == "latency" and self.latency is None:
            raise ValueError("a latency rule needs a latency")
        if self.kind == "error" and self.status not in ERRORS:
            raise ValueError(f"error status must be one of {sorted(ERRORS)}, got {self.status}")
        if self.kind == "ambiguous" and self.answer not in ("reset", "500"):
            raise ValueError(f"ambiguous answer must be reset or 500, got {self.answer!r}")
        if self.limit is not None and self.limit < 0:
            raise ValueError(f"limit must be >= 0, got {self.limit}")

    def selects(self, request: S3Request) -> bool:
        return ((self.ops is None or request.op in self.ops) and request.key.startswith(self.prefix)
                and (not self.body_contains
                     or (request.body is not None and self.body_contains.encode() in request.body)))

    def describe(self) -> dict:
        d = {"kind": self.kind, "rate": self.rate, "ops": sorted(self.ops) if self.ops else "all",
             "prefix": self.prefix}
        if self.limit is not None:
            d["limit"] = self.limit
        if self.body_contains:
            d["body_contains"] = self.body_contains
        if self.kind == "latency":
            d["latency"] = self.latency.describe()
        elif self.kind == "error":
            d["status"] = self.status
        elif self.kind == "ambiguous":
            d["answer"] = self.answer
        return d


def parse_ops(ops) -> frozenset[str] | None:
    """None (every operation) for None or "all"; else the set named by a list
    or a comma-separated string, "write" standing for every write operation."""
    if ops is None or ops == "all":
        return None
    if isinstance(ops, str):
        ops = [o.strip() for o in ops.split(",") if o.strip()]
    if "write" in ops:  # shorthand for every operation that changes the bucket
        ops = (set(ops) - {"write"}) | WRITE_OPS
    return frozenset(ops)


# --- S3's own error answers -------------------------------------------------------------

ERRORS = {
    503: ("Slow Down", "SlowDown", "Please reduce your request rate."),
    500: ("Internal Server Error", "InternalError", "We encountered an internal error. Please try again."),
}


def error_response(status: int, request: S3Request, *, close: bool, head_only: bool = False) -> bytes:
    """The bytes of an S3 error answer, as AWS words it (boto3 retries
    SlowDown as throttling and InternalError as transient)."""
    reason, code, message = ERRORS[status]
    request_id = uuid.uuid4().hex[:16].upper()
    resource = f"/{request.bucket}/{request.key}" if request.key else f"/{request.bucket}"
    body = ('<?xml version="1.0" encoding="UTF-8"?>\n'
            f"<Error><Code>{code}</Code><Message>{message}</Message>"
            f"<Resource>{_xml_escape(resource)}</Resource><RequestId>{request_id}</RequestId></Error>").encode()
    lines = [f"HTTP/1.1 {status} {reason}", "Content-Type: application/xml",
             f"Content-Length: {len(body)}", f"x-amz-request-id: {request_id}",
             f"Date: {formatdate(usegmt=True)}", "Server: AmazonS3"]
    if close:
        lines.append("Connection: close")
    return ("\r\n".join(lines) + "\r\n\r\n").encode() + (b"" if head_only else body)


def _xml_escape(text: str) -> str:
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def _abort(writer: asyncio.StreamWriter) -> None:
    """Close with a TCP RST (SO_LINGER 0): the client sees a connection reset."""
    sock = writer.get_extra_info("socket")
    if sock is not None:
        try:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        except OSError:
            pass
    writer.transport.abort()


class _Closed(Exception):
    """The exchange cannot go on; close the client connection."""


@dataclass
class _Stats:
    requests: dict = field(default_factory=dict)
    faults: dict = field(default_factory=dict)
    forwarded: int = 0
    upstream_failures: int = 0
    hanging: int = 0


# --- the proxy --------------------------------------------------------------------------

class S3FaultProxy:
    def __init__(self, upstream_host: str, upstream_port: int, *, listen_host: str = "127.0.0.1",
                 listen_port: int = 0, seed: int | None = None, virtual_host: bool = False,
                 connect_timeout: float = 10.0, name: str = "s3-proxy"):
        self.upstream = (upstream_host, upstream_port)
        self.listen = (listen_host, listen_port)
        self.virtual_host = virtual_host
        self.connect_timeout = connect_timeout
        self.name = name
        self.port: int | None = None
        self._rng = random.Random(seed)
        self._lock = threading.Lock()
        self._rules: tuple[Rule, ...] = ()
        self._fired: dict[int, int] = {}
        self._ids = itertools.count(1)
        self._stats = _Stats()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._server = None
        self._hung: set[asyncio.Event] = set()
        self._error: BaseException | None = None

    @classmethod
    def for_endpoint(cls, endpoint: str, **kw) -> "S3FaultProxy":
        """A proxy in front of `http://host:port`."""
        split = urlsplit(endpoint)
        if split.scheme != "http" or not split.hostname:
            raise ValueError(f"the S3 fault proxy forwards plain HTTP; got endpoint {endpoint!r}")
        return cls(split.hostname, split.port or 80, **kw)

    @classmethod
    def for_nodes(cls, endpoint: str, nodes, *, listen_host: str = "127.0.0.1", seed: int | None = None,
                  **kw) -> dict[str, "S3FaultProxy"]:
        """One started proxy per node in front of `endpoint`, each on its own
        port (so a partition can cut one node's S3 path alone); seeds differ
        per node but follow `seed`."""
        proxies: dict[str, S3FaultProxy] = {}
        try:
            for i, node in enumerate(nodes):
                proxies[node] = cls.for_endpoint(endpoint, listen_host=listen_host, name=f"s3-proxy-{node}",
                                                 seed=None if seed is None else seed * 1000 + i, **kw).start()
        except BaseException:
            for p in proxies.values():
                p.stop()
            raise
        return proxies

    @property
    def endpoint(self) -> str:
        return f"http://{self.listen[0]}:{self.port}"

    # --- lifecycle ----------------------------------------------------------------------
    def start(self) -> "S3FaultProxy":
        ready = threading.Event()

        def run():
            loop = asyncio.new_event_loop()
            self._loop = loop
            try:
                self._server = loop.run_until_complete(asyncio.start_server(self._serve, *self.listen))
                self.port = self._server.sockets[0].getsockname()[1]
            except BaseException as e:
                self._error = e
                ready.set()
                loop.close()
                return
            ready.set()
            loop.run_forever()
            loop.close()

        self._thread = threading.Thread(target=run, name=f"{self.name}", daemon=True)
        self._thread.start()
        if not ready.wait(10) or self._error is not None:
            raise RuntimeError(f"S3 fault proxy could not listen on {self.listen[0]}:{self.listen[1]}: "
                               f"{self._error or 'timed out'}")
        return self

    async def _shutdown(self):
        self._server.close()
        tasks = [t for t in asyncio.all_tasks() if t is not asyncio.current_task()]
        for t in tasks:
            t.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        asyncio.get_running_loop().stop()

    def stop(self) -> None:
        loop, self._loop = self._loop, None
        if loop is not None and self._server is not None:
            asyncio.run_coroutine_threadsafe(self._shutdown(), loop)
            self._thread.join(10)

    def __enter__(self):
        return self.start()

    def __exit__(self, *exc):
        self.stop()

    # --- faults (thread-safe) -----------------------------------------------------------
    def add(self, rule: Rule) -> int:
        with self._lock:
            rule = replace(rule, id=next(self._ids))
            self._rules = self._rules + (rule,)
            self._fired[rule.id] = 0
        return rule.id

    def add_latency(self, latency, *, ops=None, prefix: str = "", rate: float = 1.0,
                    limit: int | None = None) -> int:
        return self.add(Rule("latency", rate, parse_ops(ops), prefix, limit, latency=parse_latency(latency)))

    def add_error(self, status: int = 503, *, ops=None, prefix: str = "", rate: float = 1.0,
                  limit: int | None = None) -> int:
        return self.add(Rule("error", rate, parse_ops(ops), prefix, limit, status=int(status)))

    def add_reset(self, *, ops=None, prefix: str = "", rate: float = 1.0, limit: int | None = None) -> int:
        return self.add(Rule("reset", rate, parse_ops(ops), prefix, limit))

    def add_hang(self, *, ops=None, prefix: str = "", rate: float = 1.0, limit: int | None = None) -> int:
        return self.add(Rule("hang", rate, parse_ops(ops), prefix, limit))

    def add_ambiguous(self, *, ops=None, prefix: str = "", rate: float = 1.0, limit: int | None = None,
                      answer: str = "reset") -> int:
        return self.add(Rule("ambiguous", rate, parse_ops(ops), prefix, limit, answer=answer))

    def remove(self, rule_id: int) -> None:
        """Remove one rule (unknown ids are ignored: healing twice is safe).
        Requests already hanging under it are released (reset) when no hang
        rule is left."""
        with self._lock:
            self._rules = tuple(r for r in self._rules if r.id != rule_id)
            self._fired.pop(rule_id, None)
            release = not any(r.kind == "hang" for r in self._rules)
        if release:
            self._release_hung()

    def clear(self) -> None:
        """Remove every rule and release hanging requests: the proxy forwards
        untouched again."""
        with self._lock:
            self._rules = ()
            self._fired.clear()
        self._release_hung()

    def rules(self) -> list[dict]:
        return [r.describe() for r in self._rules]

    def stats(self) -> dict:
        """Requests seen by operation, faults injected by kind (`latency`,
        `error-503`, `error-500`, `reset`, `hang`, `ambiguous`), requests
        forwarded upstream, upstream connection failures, requests hanging now."""
        with self._lock:
            s = self._stats
            return {"requests": dict(s.requests), "faults": dict(s.faults), "forwarded": s.forwarded,
                    "upstream_failures": s.upstream_failures, "hanging": s.hanging}

    def _release_hung(self) -> None:
        loop = self._loop
        if loop is not None:
            try:
                loop.call_soon_threadsafe(lambda: [e.set() for e in list(self._hung)])
            except RuntimeError:  # the loop is closing
                pass

    # --- deciding a request's fate (loop thread) ------------------------------------------
    def _plan(self, request: S3Request) -> tuple[float, Rule | None]:
        delay, action = 0.0, None
        with self._lock:
            self._stats.requests[request.op] = self._stats.requests.get(request.op, 0) + 1
            for rule in self._rules:
                if not rule.selects(request):
                    continue
                if rule.kind != "latency" and action is not None:
                    continue
                if rule.limit is not None and self._fired.get(rule.id, 0) >= rule.limit:
                    continue
                if self._rng.random() >= rule.rate:
                    continue
                self._fired[rule.id] = self._fired.get(rule.id, 0) + 1
                if rule.kind == "latency":
                    delay += rule.latency.sample(self._rng)
                else:
                    action = rule
                self._count(rule)
        return delay, action

    def _count(self, rule: Rule) -> None:
        kind = f"error-{rule.status}" if rule.kind == "error" else rule.kind
        self._stats.faults[kind] = self._stats.faults.get(kind, 0) + 1

    # --- one client connection --------------------------------------------------------------
    async def _serve(self, creader: asyncio.StreamReader, cwriter: asyncio.StreamWriter) -> None:
        requests = MessageReader("request")
        upstream: tuple[asyncio.StreamReader, asyncio.StreamWriter] | None = None
        try:
            while True:
                head = await self._next_head(creader, requests)
                if head is None:
                    return
                request = classify(head, self.virtual_host)
                early: list = []   # body events read to decide (forwarded or dropped like the rest)
                if self._peeks_body(head):
                    if head.expects_continue:   # botocore asks before every PUT's body
                        cwriter.write(b"HTTP/1.1 100 Continue\r\n\r\n")
                        await cwriter.drain()
                    early = await self._read_body(creader, requests)
                    if early is None:
                        return
                    request = replace(request, body=b"".join(e.raw for e in early if isinstance(e, Body)))
                delay, action = self._plan(request)
                if delay > 0:
                    await asyncio.sleep(delay)
                kind = action.kind if action is not None else None
                if kind == "reset":
                    _abort(cwriter)
                    return
                if kind == "hang":
                    await self._hang(creader, cwriter)
                    return
                if kind == "error":
                    if not await self._answer_locally(head, request, action.status, creader, requests, cwriter,
                                                      body_read=bool(early)):
                        return
                    continue
                upstream = await self._connect(upstream)
                if upstream is None:
                    _abort(cwriter)
                    return
                keep = await self._exchange(head, request, action, creader, requests, cwriter, upstream, early)
                if not keep:
                    return
        except FramingError as e:
            log.warning("%s: closing a connection that is not HTTP/1.1 it can frame: %s", self.name, e)
        except (_Closed, ConnectionError, OSError) as e:
            log.debug("%s: connection closed: %r", self.name, e)
        except asyncio.CancelledError:
            pass
        finally:
            if not cwriter.transport.is_closing():
                cwriter.close()
            if upstream is not None:
                upstream[1].close()

    async def _next_head(self, creader, requests: MessageReader) -> Head | None:
        while True:
            event = requests.next_event()
            if event is NEED_DATA:
                data = await creader.read(READ_SIZE)
                if data:
                    requests.feed(data)
                else:
                    requests.feed_eof()
                continue
            if event is CLOSED:
                return None
            if not isinstance(event, Head):
                raise FramingError(f"expected a request head, got {event!r}")
            return event

    def _peeks_body(self, head: Head) -> bool:
        """Read the body before deciding? Only when a rule matches on bodies,
        and for a small body of known length (a rule never matches a body
        it did not read). A client waiting for 100 Continue is told to send
        it by the proxy (S3's own 100, if it sends one, is then not relayed)."""
        with self._lock:
            wanted = any(r.body_contains for r in self._rules)
        if not wanted:
            return False
        try:
            length = int(head.get("content-length") or 0)
        except ValueError:
            return False
        return 0 < length <= BODY_PEEK_BYTES and head.get("transfer-encoding") is None

    async def _read_body(self, creader, requests: MessageReader) -> list | None:
        """The body's events up to and including its end; None if the client
        left before sending it all."""
        events = []
        while True:
            event = requests.next_event()
            if event is NEED_DATA:
                data = await creader.read(READ_SIZE)
                if not data:
                    return None
                requests.feed(data)
                continue
            events.append(event)
            if event is END:
                return events

    async def _discard_body(self, creader, requests: MessageReader) -> None:
        while True:
            event = requests.next_event()
            if event is END:
                return
            if event is NEED_DATA:
                data = await creader.read(READ_SIZE)
                if data:
                    requests.feed(data)
                else:
                    requests.feed_eof()

    async def _answer_locally(self, head, request, status, creader, requests, cwriter, body_read=False) -> bool:
        """Answer an injected error without forwarding. A client waiting for
        100 Continue gets the error at once and the connection closes (it may
        or may not send the body: HTTP leaves no other safe way); otherwise
        the body is read and dropped and the connection stays open."""
        if head.expects_continue and not body_read:
            cwriter.write(error_response(status, request, close=True, head_only=request.method == "HEAD"))
            await cwriter.drain()
            return False
        if not body_read:
            await self._discard_body(creader, requests)
        keep = head.keep_alive
        cwriter.write(error_response(status, request, close=not keep, head_only=request.method == "HEAD"))
        await cwriter.drain()
        return keep

    async def _hang(self, creader, cwriter) -> None:
        """Never forward nor answer; read and drop what the client sends until
        it gives up (closes), or the fault is cleared (then reset)."""
        released = asyncio.Event()
        self._hung.add(released)
        with self._lock:
            self._stats.hanging += 1
        try:
            async def drain_client():
                while await creader.read(READ_SIZE):
                    pass

            drain = asyncio.ensure_future(drain_client())
            wait = asyncio.ensure_future(released.wait())
            try:
                await asyncio.wait({drain, wait}, return_when=asyncio.FIRST_COMPLETED)
            finally:
                drain.cancel()
                wait.cancel()
            if released.is_set():
                _abort(cwriter)
        finally:
            self._hung.discard(released)
            with self._lock:
                self._stats.hanging -= 1

    async def _connect(self, upstream):
        if upstream is not None:
            reader, writer = upstream
            # StreamReader keeps no public count of unread bytes; bytes waiting
            # while no request is out mean the connection is out of step.
            stray = len(getattr(reader, "_buffer", b""))
            if not reader.at_eof() and not writer.is_closing() and not stray:
                return upstream
            writer.close()   # closed by S3 while idle (or it sent bytes nobody asked for)
        try:
            return await asyncio.wait_for(asyncio.open_connection(*self.upstream), self.connect_timeout)
        except (OSError, asyncio.TimeoutError) as e:
            with self._lock:
                self._stats.upstream_failures += 1
            log.warning("%s: upstream %s:%d unreachable: %s", self.name, *self.upstream, e)
            return None

    async def _exchange(self, head, request, action, creader, requests, cwriter, upstream, early=()) -> bool:
        """Forward one request and relay its response (or, for an ambiguous
        fault, swallow it). True if the connection stays open."""
        ureader, uwriter = upstream
        ambiguous = action is not None and action.kind == "ambiguous"
        with self._lock:
            self._stats.forwarded += 1
        uwriter.write(head.raw)
        for event in early:
            if isinstance(event, Body):
                uwriter.write(event.raw)
        body = asyncio.ensure_future(self._forward_body(creader, requests, uwriter, done=bool(early)))
        # A client that breaks off its request body leaves S3 waiting for the
        # rest: close the upstream side so the response read ends too.
        body.add_done_callback(
            lambda t: uwriter.transport.abort() if not t.cancelled() and t.exception() else None)
        try:
            responses = MessageReader("response")
            sent_continue = False
            while True:
                responses.expect_response_to(request.method)
                rhead = await self._next_response_event(ureader, responses)
                if rhead is CLOSED:
                    raise _Closed("S3 closed the connection without answering")
                status = rhead.status
                interim = 100 <= status < 200
                if interim:   # a 100 Continue the proxy already sent for a body it read is not sent twice
                    relay = not (early and status == 100)
                else:
                    relay = not ambiguous
                if relay:
                    cwriter.write(rhead.raw)
                while (event := await self._next_response_event(ureader, responses)) is not END:
                    if relay:
                        cwriter.write(event.raw)
                        await cwriter.drain()
                if relay:
                    await cwriter.drain()
                if not interim:
                    break
                sent_continue = sent_continue or status == 100
            if not body.done():
                if head.expects_continue and not sent_continue and not early:
                    # S3 answered before asking for the body: the client may
                    # never send it, so this connection cannot be reused.
                    return False
                await body
            body.result()
            if ambiguous:
                if action.answer == "reset":
                    _abort(cwriter)
                    return False
                keep = head.keep_alive and rhead.keep_alive and not responses.closes_after
                cwriter.write(error_response(500, request, close=not keep, head_only=request.method == "HEAD"))
                await cwriter.drain()
                return keep
            return head.keep_alive and rhead.keep_alive and not responses.closes_after
        finally:
            if not body.done():
                body.cancel()

    async def _forward_body(self, creader, requests: MessageReader, uwriter, done: bool = False) -> None:
        while not done:
            event = requests.next_event()
            if event is END:
                return
            if event is NEED_DATA:
                data = await creader.read(READ_SIZE)
                if data:
                    requests.feed(data)
                else:
                    requests.feed_eof()
                continue
            uwriter.write(event.raw)
            await uwriter.drain()

    async def _next_response_event(self, ureader, responses: MessageReader):
        while True:
            event = responses.next_event()
            if event is NEED_DATA:
                data = await ureader.read(READ_SIZE)
                if data:
                    responses.feed(data)
                else:
                    responses.feed_eof()
                continue
            if isinstance(event, (Head, Body)) or event is END or event is CLOSED:
                return event


class DelayProxy(S3FaultProxy):
    """A fixed latency on every request (the proxy's first form, kept for its
    users: benchmarks/bench_storage.py)."""

    def __init__(self, upstream_host: str, upstream_port: int, latency: float = 0.0,
                 listen_host: str = "127.0.0.1", listen_port: int = 0):
        super().__init__(upstream_host, upstream_port, listen_host=listen_host, listen_port=listen_port,
                         name="s3-delay-proxy")
        self._latency_rule: int | None = None
        self.latency = latency

    @property
    def latency(self) -> float:
        return self._latency

    @latency.setter
    def latency(self, seconds: float) -> None:
        self._latency = float(seconds)
        if self._latency_rule is not None:
            self.remove(self._latency_rule)
            self._latency_rule = None
        if self._latency > 0:
            self._latency_rule = self.add_latency(Fixed(self._latency))

    @property
    def requests_delayed(self) -> int:
        return self.stats()["faults"].get("latency", 0)


def main(argv=None) -> int:
    import argparse
    import time
    p = argparse.ArgumentParser(description="S3 fault proxy in front of an S3 endpoint")
    p.add_argument("upstream", help="HOST:PORT of the S3 server")
    p.add_argument("--latency", default="0", help="200ms, 50ms..500ms or tail:20ms:2s")
    p.add_argument("--error-rate", type=float, default=0.0, help="fraction answered 503 SlowDown")
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=0)
    a = p.parse_args(argv)
    host, port = a.upstream.rsplit(":", 1)
    proxy = S3FaultProxy(host, int(port), listen_host=a.host, listen_port=a.port).start()
    latency = parse_latency(a.latency)
    if not (isinstance(latency, Fixed) and latency.seconds == 0):
        proxy.add_latency(latency)
    if a.error_rate:
        proxy.add_error(503, rate=a.error_rate)
    print(proxy.endpoint, flush=True)
    try:
        while True:
            time.sleep(3600)
    except KeyboardInterrupt:
        print(proxy.stats(), flush=True)
        proxy.stop()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
