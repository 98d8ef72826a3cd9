"""HTTP/1.1 framing: message boundaries found in any split of the stream, bytes unchanged."""
from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from nemeses.http_framing import (CLOSED, END, NEED_DATA, Body, FramingError, Head, MessageReader,
                                  parse_head)

pytestmark = pytest.mark.timeout(60)


def request_bytes(method: str, body: bytes, framing: str, chunk_sizes: list[int], extra: str = "") -> bytes:
    head = f"{method} /bucket/key?x=1 HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Amz-Date: 20240101T000000Z\r\n{extra}"
    if framing == "length":
        return (head + f"Content-Length: {len(body)}\r\n\r\n").encode() + body
    if framing == "none":
        return (head + "\r\n").encode()
    out, i = [], 0
    for size in chunk_sizes:
        piece = body[i:i + size]
        if not piece:
            break
        out.append(f"{len(piece):x};chunk-signature=abc\r\n".encode() + piece + b"\r\n")
        i += len(piece)
    if i < len(body):
        out.append(f"{len(body) - i:X}\r\n".encode() + body[i:] + b"\r\n")
    out.append(b"0\r\nx-amz-checksum-crc32:AAAAAA==\r\n\r\n")
    return (head + "Transfer-Encoding: chunked\r\n\r\n").encode() + b"".join(out)


messages = st.lists(
    st.tuples(st.sampled_from(["GET", "PUT", "POST", "DELETE", "HEAD"]),
              st.binary(max_size=300),
              st.sampled_from(["length", "chunked", "none"]),
              st.lists(st.integers(1, 64), max_size=6)),
    min_size=1, max_size=5)


def drive(reader: MessageReader, stream: bytes, cuts: list[int]) -> list:
    """Feed `stream` cut at `cuts`; collect (head, body bytes) per message."""
    pieces, last = [], 0
    for c in sorted(set(cuts)) + [len(stream)]:
        pieces.append(stream[last:c])
        last = c
    out, current = [], None
    feed = iter(pieces)
    while True:
        event = reader.next_event()
        if event is NEED_DATA:
            try:
                reader.feed(next(feed))
            except StopIteration:
                reader.feed_eof()
            continue
        if event is CLOSED:
            return out
        if isinstance(event, Head):
            current = [event, b""]
        elif isinstance(event, Body):
            current[1] += event.raw
        else:
            assert event is END
            out.append(tuple(current))


@settings(max_examples=200, deadline=None)
@given(messages, st.lists(st.integers(0, 4000), max_size=12))
def test_pipelined_requests_are_framed_in_any_split(msgs, cuts):
    raws = [request_bytes(m, b if f != "none" else b"", f, sizes) for m, b, f, sizes in msgs]
    stream = b"".join(raws)
    cuts = [c % (len(stream) + 1) for c in cuts]
    framed = drive(MessageReader("request"), stream, cuts)
    assert [h.raw + body for h, body in framed] == raws
    assert [h.method for h, _ in framed] == [m for m, *_ in msgs]


def test_response_to_head_has_no_body_even_with_content_length():
    r = MessageReader("response")
    r.expect_response_to("HEAD")
    r.feed(b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nHTTP/1.1 204 No Content\r\n\r\n")
    h = r.next_event()
    assert isinstance(h, Head) and h.status == 200
    assert r.next_event() is END
    r.expect_response_to("GET")
    assert r.next_event().status == 204
    assert r.next_event() is END


def test_interim_100_continue_then_final_response():
    r = MessageReader("response")
    r.feed(b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
    assert r.next_event().status == 100
    assert r.next_event() is END
    assert r.next_event().status == 200
    assert r.next_event().raw == b"ok"
    assert r.next_event() is END


def test_response_without_length_runs_until_close():
    r = MessageReader("response")
    r.feed(b"HTTP/1.1 200 OK\r\n\r\nabc")
    assert isinstance(r.next_event(), Head)
    assert r.closes_after
    assert r.next_event().raw == b"abc"
    assert r.next_event() is NEED_DATA
    r.feed_eof()
    assert r.next_event() is END


@pytest.mark.parametrize("stream", [
    b"GET / HTTP/1.1\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\n",
    b"GET / HTTP/1.1\r\nContent-Length: -1\r\n\r\n",
    b"PUT / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n",
    b"PUT / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n2\r\nabXY",
    b"GET / HTTP/1.1\r\n folded\r\n\r\n",
    b"garbage\r\n\r\n",
])
def test_malformed_streams_raise(stream):
    r = MessageReader("request")
    r.feed(stream)
    with pytest.raises(FramingError):
        while r.next_event() is not NEED_DATA:
            pass


def test_stream_closed_inside_a_body_raises():
    r = MessageReader("request")
    r.feed(b"PUT /b/k HTTP/1.1\r\nContent-Length: 10\r\n\r\nabc")
    r.next_event()
    r.next_event()
    r.feed_eof()
    with pytest.raises(FramingError):
        r.next_event()


def test_head_parsing():
    h = parse_head(b"PUT /b/k HTTP/1.1\r\nIf-None-Match: *\r\nConnection: close\r\nExpect: 100-continue\r\n\r\n")
    assert h.method == "PUT" and h.target == "/b/k" and h.get("if-none-match") == "*"
    assert not h.keep_alive and h.expects_continue
