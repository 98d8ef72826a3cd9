"""Where HTTP/1.1 messages begin and end in a byte stream, without changing a byte.

A sans-I/O reader in the manner of h11, but one that never re-serialises: the
S3 fault proxy must forward signed requests (SigV4, aws-chunked payloads)
exactly as the client wrote them, so this module only *frames*. Feed it bytes;
it hands back the raw head of each message (parsed enough to classify it), the
raw body bytes (chunk framing included) and the message's end. Keep-alive and
pipelining follow: whatever is fed past a message's end stays buffered for
the next one.

Body length (RFC 9112 section 6.3): no body for a response to HEAD, for 1xx,
204 and 304; `Transfer-Encoding: chunked` frames by chunks (trailers
included); else `Content-Length`; else a request has no body and a response
runs until the connection closes.
"""
from __future__ import annotations

from dataclasses import dataclass, field

MAX_HEAD = 64 * 1024
MAX_CHUNK_LINE = 4096


class FramingError(ValueError):
    """The stream is not HTTP/1.1 this module can frame; the connection must close."""


@dataclass(frozen=True)
class Head:
    raw: bytes                       # the exact bytes, request/status line to the blank line
    start_line: str
    headers: tuple[tuple[str, str], ...]   # (lower-cased name, value) in order

    def get(self, name: str, default: str | None = None) -> str | None:
        name = name.lower()
        for k, v in self.headers:
            if k == name:
                return v
        return default

    def get_all(self, name: str) -> list[str]:
        name = name.lower()
        return [v for k, v in self.headers if k == name]

    def tokens(self, name: str) -> list[str]:
        """Comma-separated tokens of every `name` header, lower-cased."""
        return [t.strip().lower() for v in self.get_all(name) for t in v.split(",") if t.strip()]

    # requests
    @property
    def method(self) -> str:
        return self.start_line.split(" ", 1)[0]

    @property
    def target(self) -> str:
        parts = self.start_line.split(" ")
        return parts[1] if len(parts) > 1 else ""

    @property
    def version(self) -> str:
        if self.start_line.startswith("HTTP/"):
            return self.start_line.split(" ", 1)[0]
        return self.start_line.rsplit(" ", 1)[-1]

    # responses
    @property
    def status(self) -> int:
        try:
            return int(self.start_line.split(" ")[1])
        except (IndexError, ValueError):
            raise FramingError(f"bad status line {self.start_line!r}") from None

    @property
    def keep_alive(self) -> bool:
        conn = self.tokens("connection")
        if "close" in conn:
            return False
        if self.version == "HTTP/1.0":
            return "keep-alive" in conn
        return True

    @property
    def expects_continue(self) -> bool:
        return (self.get("expect") or "").strip().lower() == "100-continue"


@dataclass(frozen=True)
class Body:
    raw: bytes


@dataclass(frozen=True)
class End:
    pass


class NeedData:
    """More bytes are needed (or `feed_eof`)."""


class Closed:
    """The peer closed the stream between messages."""


NEED_DATA = NeedData()
CLOSED = Closed()
END = End()


def parse_head(raw: bytes) -> Head:
    try:
        text = raw.decode("latin-1")
    except UnicodeDecodeError:  # pragma: no cover - latin-1 decodes every byte
        raise FramingError("undecodable head") from None
    lines = text.split("\r\n")
    start = lines[0]
    if not start or " " not in start:
        raise FramingError(f"bad start line {start!r}")
    headers = []
    for line in lines[1:]:
        if not line:
            continue
        if line[0] in " \t":
            raise FramingError("obsolete header line folding")
        name, sep, value = line.partition(":")
        if not sep or not name or name != name.strip():
            raise FramingError(f"bad header line {line!r}")
        headers.append((name.lower(), value.strip(" \t")))
    return Head(raw, start, tuple(headers))


@dataclass
class _Chunked:
    state: str = "size"      # size, data, data-crlf, trailer
    left: int = 0


@dataclass
class MessageReader:
    """Frames a stream of requests (`role="request"`) or of responses
    (`role="response"`; call `expect_response_to(method)` before each one)."""
    role: str
    _buf: bytearray = field(default_factory=bytearray)
    _eof: bool = False
    _state: str = "head"     # head, fixed, chunked, until-close, done
    _left: int = 0
    _chunked: _Chunked | None = None
    _request_method: str = "GET"
    closes_after: bool = False   # the last message's body ran until the peer closed

    def __post_init__(self):
        if self.role not in ("request", "response"):
            raise ValueError(f"role must be request or response, not {self.role!r}")

    def feed(self, data: bytes) -> None:
        if self._eof and data:
            raise FramingError("data after end of stream")
        self._buf += data

    def feed_eof(self) -> None:
        self._eof = True

    def expect_response_to(self, method: str) -> None:
        self._request_method = method.upper()

    @property
    def buffered(self) -> int:
        return len(self._buf)

    @property
    def at_message_start(self) -> bool:
        return self._state == "head"

    def next_event(self):
        """Head, Body, End, NEED_DATA or CLOSED; raises FramingError."""
        if self._state == "head":
            return self._head()
        if self._state == "fixed":
            if self._left == 0:
                return self._end()
            if not self._buf:
                return self._need_body()
            n = min(self._left, len(self._buf))
            self._left -= n
            return Body(self._take(n))
        if self._state == "until-close":
            if self._buf:
                return Body(self._take(len(self._buf)))
            if self._eof:
                return self._end()
            return NEED_DATA
        if self._state == "chunked":
            return self._chunk()
        raise AssertionError(self._state)

    # --- internals ------------------------------------------------------------------
    def _take(self, n: int) -> bytes:
        data = bytes(self._buf[:n])
        del self._buf[:n]
        return data

    def _end(self):
        self._state = "head"
        return END

    def _need_body(self):
        if self._eof:
            raise FramingError("stream closed inside a message body")
        return NEED_DATA

    def _head(self):
        # A client may send empty lines before a request (RFC 9112 2.2).
        if self.role == "request":
            while self._buf[:2] == b"\r\n":
                del self._buf[:2]
        end = self._buf.find(b"\r\n\r\n")
        if end < 0:
            if len(self._buf) > MAX_HEAD:
                raise FramingError(f"message head longer than {MAX_HEAD} bytes")
            if self._eof:
                if self._buf:
                    raise FramingError("stream closed inside a message head")
                return CLOSED
            return NEED_DATA
        head = parse_head(self._take(end + 4))
        self._frame_body(head)
        return head

    def _frame_body(self, head: Head) -> None:
        self._frame(head)
        self.closes_after = self._state == "until-close"

    def _frame(self, head: Head) -> None:
        if self.role == "response":
            status = head.status
            if self._request_method == "HEAD" or 100 <= status < 200 or status in (204, 304):
                self._state, self._left = "fixed", 0
                return
        te = head.tokens("transfer-encoding")
        if te:
            if te[-1] != "chunked":
                if self.role == "request":
                    raise FramingError(f"request with transfer-encoding {te} but not chunked last")
                self._state = "until-close"
                return
            self._state, self._chunked = "chunked", _Chunked()
            return
        lengths = head.get_all("content-length")
        if lengths:
            values = {v.strip() for v in lengths}
            if len(values) != 1 or not next(iter(values)).isdigit():
                raise FramingError(f"bad content-length {lengths}")
            self._state, self._left = "fixed", int(next(iter(values)))
            return
        if self.role == "request":
            self._state, self._left = "fixed", 0
        else:
            self._state = "until-close"

    def _chunk(self):
        c = self._chunked
        if c.state == "data":
            if not self._buf:
                return self._need_body()
            n = min(c.left, len(self._buf))
            c.left -= n
            if c.left == 0:
                c.state = "data-crlf"
            return Body(self._take(n))
        if c.state == "data-crlf":
            if len(self._buf) < 2:
                return self._need_body()
            if self._buf[:2] != b"\r\n":
                raise FramingError("chunk data not followed by CRLF")
            c.state = "size"
            return Body(self._take(2))
        line_end = self._buf.find(b"\r\n")
        if line_end < 0:
            if len(self._buf) > MAX_CHUNK_LINE:
                raise FramingError("chunk size or trailer line too long")
            return self._need_body()
        line = bytes(self._buf[:line_end])
        if c.state == "size":
            size_text = line.split(b";", 1)[0].strip()
            try:
                size = int(size_text, 16)
            except ValueError:
                raise FramingError(f"bad chunk size {line!r}") from None
            if size < 0:
                raise FramingError(f"bad chunk size {line!r}")
            if size == 0:
                c.state = "trailer"
            else:
                c.state, c.left = "data", size
            return Body(self._take(line_end + 2))
        # trailer section: header lines until an empty line
        raw = self._take(line_end + 2)
        if line == b"":
            # The message ends after these bytes: the next call reports End.
            self._chunked = None
            self._state, self._left = "fixed", 0
        return Body(raw)
