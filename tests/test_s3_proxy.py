"""The S3 fault proxy, observed from outside: through boto3 and raw sockets
against a real SeaweedFS, one that checks every SigV4 signature."""
from __future__ import annotations

import datetime
import hashlib
import hmac
import random
import socket
import time
from urllib.parse import urlsplit

import botocore.exceptions
import pytest
from botocore.auth import S3SigV4Auth, SigV4Auth
from botocore.awsrequest import AWSRequest
from botocore.credentials import Credentials

from harness.s3server import ACCESS_KEY, SECRET_KEY, SeaweedS3, s3_client
from nemeses.http_framing import parse_head
from nemeses.s3_proxy import (OPS, DelayProxy, Fixed, LongTail, Rule, S3FaultProxy, Uniform, classify,
                              parse_latency)

pytestmark = pytest.mark.timeout(120)


@pytest.fixture(scope="module")
def signed_s3(tmp_path_factory):
    """A SeaweedFS that refuses any request whose signature does not verify."""
    server = SeaweedS3(tmp_path_factory.mktemp("seaweedfs-auth"), auth=True)
    server.start()
    yield server
    server.stop()


@pytest.fixture
def signed_bucket(signed_s3):
    name = f"signed-{random.randrange(1 << 30):x}"
    s3_client(signed_s3.endpoint).create_bucket(Bucket=name)
    return signed_s3.endpoint, name


@pytest.fixture
def proxy(s3_bucket):
    endpoint, bucket = s3_bucket
    p = S3FaultProxy.for_endpoint(endpoint, seed=7).start()
    yield p, endpoint, bucket
    p.stop()


def client(endpoint, retries=0, timeout=10.0):
    # botocore's max_attempts counts retries after the first attempt
    return s3_client(endpoint, timeout=timeout, retries=retries)


def timed(fn, *a, **kw):
    t0 = time.monotonic()
    out = fn(*a, **kw)
    return out, time.monotonic() - t0


def wait_for(predicate, timeout=10.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.02)
    return predicate()


# --- latency -----------------------------------------------------------------------------

def test_delay_proxy_adds_latency_per_request(s3_bucket):
    endpoint, bucket = s3_bucket
    host, port = endpoint[len("http://"):].rsplit(":", 1)
    proxy = DelayProxy(host, int(port), latency=0.2).start()
    try:
        direct, delayed = s3_client(endpoint), s3_client(proxy.endpoint)
        body = bytes(range(256)) * 400
        delayed.put_object(Bucket=bucket, Key="warm", Body=b"x")  # connection set-up outside the timing
        before = proxy.requests_delayed
        t0 = time.monotonic()
        delayed.put_object(Bucket=bucket, Key="k", Body=body)    # with Expect: 100-continue
        put = time.monotonic() - t0
        assert proxy.requests_delayed == before + 1              # once, not once per chunk
        t0 = time.monotonic()
        got = delayed.get_object(Bucket=bucket, Key="k")["Body"].read()
        get = time.monotonic() - t0
        assert proxy.requests_delayed == before + 2
        assert got == body
        assert direct.get_object(Bucket=bucket, Key="k")["Body"].read() == body
        assert put >= 0.2 and get >= 0.2
    finally:
        proxy.stop()


def test_latency_hits_only_the_targeted_op_and_prefix(proxy):
    p, _, bucket = proxy
    c = client(p.endpoint)
    c.put_object(Bucket=bucket, Key="slow/a", Body=b"1")      # before the fault: untouched
    p.add_latency("600ms", ops="put", prefix="slow/")
    _, put_slow = timed(c.put_object, Bucket=bucket, Key="slow/b", Body=b"2")
    c.put_object(Bucket=bucket, Key="fast/b", Body=b"3")       # other prefix
    c.get_object(Bucket=bucket, Key="slow/a")["Body"].read()   # other op
    c.put_object(Bucket=bucket, Key="slow/c", Body=b"4", IfNoneMatch="*")  # put-if is not put
    assert put_slow >= 0.6
    s = p.stats()
    assert s["faults"] == {"latency": 1}
    assert s["requests"]["put"] == 3 and s["requests"]["put-if"] == 1 and s["requests"]["get"] == 1


# --- injected errors -------------------------------------------------------------------------

@pytest.mark.parametrize("status,code", [(503, "SlowDown"), (500, "InternalError")])
def test_errors_are_seen_and_retried_by_boto3(proxy, status, code):
    p, endpoint, bucket = proxy
    p.add_error(status, ops="put", limit=2)
    out = client(p.endpoint, retries=2).put_object(Bucket=bucket, Key="k", Body=b"v" * 5000)
    assert out["ResponseMetadata"]["RetryAttempts"] == 2          # two injected failures, then through
    assert p.stats()["faults"] == {f"error-{status}": 2}
    assert p.stats()["forwarded"] == 1
    assert client(endpoint).get_object(Bucket=bucket, Key="k")["Body"].read() == b"v" * 5000

    p.clear()
    p.add_error(status)
    with pytest.raises(botocore.exceptions.ClientError) as e:
        client(p.endpoint, retries=1).put_object(Bucket=bucket, Key="k2", Body=b"x")
    assert e.value.response["Error"]["Code"] == code
    assert e.value.response["ResponseMetadata"]["HTTPStatusCode"] == status
    with pytest.raises(botocore.exceptions.ClientError):
        client(endpoint).head_object(Bucket=bucket, Key="k2")      # never reached S3


def test_an_error_matched_on_the_body_fails_only_the_writes_that_hold_it(proxy):
    # e.g. the metadata log's commits fail while its other records go through
    p, endpoint, bucket = proxy
    p.add(Rule("error", ops=frozenset({"put-if"}), prefix="log/", body_contains='"type":"commit"'))
    c = client(p.endpoint)
    c.put_object(Bucket=bucket, Key="log/1", Body=b'{"type":"prepare","n":1}', IfNoneMatch="*")
    with pytest.raises(botocore.exceptions.ClientError) as e:
        c.put_object(Bucket=bucket, Key="log/2", Body=b'{"type":"commit","n":2}', IfNoneMatch="*")
    assert e.value.response["Error"]["Code"] == "SlowDown"
    c.put_object(Bucket=bucket, Key="data/2", Body=b'{"type":"commit","n":2}')   # other op and prefix
    c.put_object(Bucket=bucket, Key="log/3", Body=b'{"type":"prepare","n":3}', IfNoneMatch="*")
    assert p.stats()["faults"] == {"error-503": 1}
    direct = client(endpoint)
    assert direct.get_object(Bucket=bucket, Key="log/1")["Body"].read() == b'{"type":"prepare","n":1}'
    assert direct.get_object(Bucket=bucket, Key="log/3")["Body"].read() == b'{"type":"prepare","n":3}'
    with pytest.raises(botocore.exceptions.ClientError):
        direct.head_object(Bucket=bucket, Key="log/2")      # never reached S3


def test_a_body_read_to_decide_is_forwarded_unchanged_and_signed(signed_bucket):
    endpoint, bucket = signed_bucket
    with S3FaultProxy.for_endpoint(endpoint) as p:
        p.add(Rule("error", body_contains="never in any body"))
        c = client(p.endpoint)
        for i, body in enumerate([b"x" * 10, random.Random(3).randbytes(60_000), b"y" * 200_000]):
            c.put_object(Bucket=bucket, Key=f"k{i}", Body=body)      # small, peeked; and past the peek limit
            assert client(endpoint).get_object(Bucket=bucket, Key=f"k{i}")["Body"].read() == body
        p.add(Rule("hang", body_contains="zzz", ops=frozenset({"put"})))
        c.put_object(Bucket=bucket, Key="big", Body=b"zzz" * 30_000)  # 90 KB: past the peek, never matched
        assert p.stats()["faults"] == {}


def test_error_on_head_request_has_no_body_and_keeps_the_connection(proxy):
    p, _, bucket = proxy
    c = client(p.endpoint)
    c.put_object(Bucket=bucket, Key="h", Body=b"1")
    p.add_error(503, ops="head", limit=1)
    with pytest.raises(botocore.exceptions.ClientError) as e:
        c.head_object(Bucket=bucket, Key="h")
    assert e.value.response["ResponseMetadata"]["HTTPStatusCode"] == 503
    assert c.head_object(Bucket=bucket, Key="h")["ContentLength"] == 1


def test_reset_is_a_connection_error_and_nothing_is_stored(proxy):
    p, endpoint, bucket = proxy
    p.add_reset(ops="put")
    with pytest.raises((botocore.exceptions.ConnectionClosedError, botocore.exceptions.EndpointConnectionError,
                        ConnectionResetError)):
        client(p.endpoint).put_object(Bucket=bucket, Key="r", Body=b"x" * 10000)
    assert p.stats()["faults"] == {"reset": 1}
    with pytest.raises(botocore.exceptions.ClientError):
        client(endpoint).head_object(Bucket=bucket, Key="r")


def test_hang_lasts_until_the_client_gives_up(proxy):
    p, _, bucket = proxy
    c = client(p.endpoint, timeout=1.0)
    c.put_object(Bucket=bucket, Key="k", Body=b"v")
    p.add_hang(ops="get")
    with pytest.raises(botocore.exceptions.ReadTimeoutError):
        _, took = timed(c.get_object, Bucket=bucket, Key="k")
    assert p.stats()["faults"] == {"hang": 1}
    assert wait_for(lambda: p.stats()["hanging"] == 0)             # the client closed: released
    c.put_object(Bucket=bucket, Key="k2", Body=b"v")               # other ops pass meanwhile


def test_hang_lasts_at_least_the_client_timeout(proxy):
    p, _, bucket = proxy
    p.add_hang()
    c = client(p.endpoint, timeout=1.5)
    t0 = time.monotonic()
    with pytest.raises(botocore.exceptions.ReadTimeoutError):
        c.list_objects_v2(Bucket=bucket)
    assert time.monotonic() - t0 >= 1.5


def test_clear_releases_hanging_requests_with_a_reset(proxy):
    p, _, bucket = proxy
    p.add_hang()
    s = socket.create_connection(("127.0.0.1", p.port), timeout=30)
    s.sendall(f"GET /{bucket}/k HTTP/1.1\r\nHost: x\r\n\r\n".encode())
    assert wait_for(lambda: p.stats()["hanging"] == 1)
    t0 = time.monotonic()
    p.clear()
    with pytest.raises(ConnectionResetError):
        s.recv(100)
    assert time.monotonic() - t0 < 5
    s.close()


def test_ambiguous_put_is_stored_although_the_client_saw_an_error(proxy):
    p, endpoint, bucket = proxy
    p.add_ambiguous(ops="put")
    with pytest.raises((botocore.exceptions.ConnectionClosedError, ConnectionResetError)):
        client(p.endpoint).put_object(Bucket=bucket, Key="amb", Body=b"applied" * 1000)
    assert client(endpoint).get_object(Bucket=bucket, Key="amb")["Body"].read() == b"applied" * 1000
    assert p.stats()["faults"] == {"ambiguous": 1}


def test_ambiguous_500_makes_a_retried_conditional_put_meet_its_own_write(proxy):
    p, endpoint, bucket = proxy
    p.add_ambiguous(ops="put-if", answer="500", limit=1)
    with pytest.raises(botocore.exceptions.ClientError) as e:
        client(p.endpoint, retries=2).put_object(Bucket=bucket, Key="lease", Body=b"mine", IfNoneMatch="*")
    # the first attempt was applied and answered 500; boto3 retried; S3 refused the retry
    assert e.value.response["Error"]["Code"] == "PreconditionFailed"
    assert client(endpoint).get_object(Bucket=bucket, Key="lease")["Body"].read() == b"mine"


def test_multipart_targeting_leaves_plain_puts_alone(proxy):
    p, endpoint, bucket = proxy
    p.add_error(500, ops="multipart")
    c = client(p.endpoint)
    c.put_object(Bucket=bucket, Key="plain", Body=b"1")
    with pytest.raises(botocore.exceptions.ClientError) as e:
        c.create_multipart_upload(Bucket=bucket, Key="big")
    assert e.value.response["Error"]["Code"] == "InternalError"
    p.clear()
    up = c.create_multipart_upload(Bucket=bucket, Key="big")["UploadId"]
    part = c.upload_part(Bucket=bucket, Key="big", UploadId=up, PartNumber=1, Body=b"p" * 1000)
    c.complete_multipart_upload(Bucket=bucket, Key="big", UploadId=up,
                                MultipartUpload={"Parts": [{"PartNumber": 1, "ETag": part["ETag"]}]})
    assert client(endpoint).get_object(Bucket=bucket, Key="big")["Body"].read() == b"p" * 1000
    assert p.stats()["requests"]["multipart"] == 4


def test_remove_heals_one_rule_and_is_idempotent(proxy):
    p, _, bucket = proxy
    slow = p.add_latency("50ms")
    err = p.add_error(503, ops="delete")
    p.remove(err)
    p.remove(err)
    p.remove(12345)
    client(p.endpoint).delete_object(Bucket=bucket, Key="none")
    assert [r["kind"] for r in p.rules()] == ["latency"]
    p.remove(slow)
    assert p.rules() == []


# --- bytes unchanged: a server that checks signatures ----------------------------------------

def test_signed_puts_pass_unchanged_through_the_proxy(signed_bucket):
    endpoint, bucket = signed_bucket
    with S3FaultProxy.for_endpoint(endpoint) as p:
        p.add_latency("10ms")
        c = client(p.endpoint)
        body = random.Random(1).randbytes(300_000)
        c.put_object(Bucket=bucket, Key="signed", Body=body)
        c.put_object(Bucket=bucket, Key="cond", Body=b"first", IfNoneMatch="*")
        with pytest.raises(botocore.exceptions.ClientError) as e:
            c.put_object(Bucket=bucket, Key="cond", Body=b"second", IfNoneMatch="*")
        assert e.value.response["Error"]["Code"] == "PreconditionFailed"
        etag = c.head_object(Bucket=bucket, Key="cond")["ETag"]
        c.put_object(Bucket=bucket, Key="cond", Body=b"third", IfMatch=etag)
        assert c.get_object(Bucket=bucket, Key="signed")["Body"].read() == body
        assert c.get_object(Bucket=bucket, Key="cond")["Body"].read() == b"third"
        # the server really checks: a wrong secret is refused through the same proxy
        bad = s3_client(p.endpoint, retries=0)
        bad._request_signer._credentials = Credentials(ACCESS_KEY, "wrong-secret")
        with pytest.raises(botocore.exceptions.ClientError) as e:
            bad.put_object(Bucket=bucket, Key="forged", Body=b"x")
        assert e.value.response["ResponseMetadata"]["HTTPStatusCode"] == 403


def _signing_key(secret: str, date: str) -> bytes:
    key = ("AWS4" + secret).encode()
    for part in (date, "us-east-1", "s3", "aws4_request"):
        key = hmac.new(key, part.encode(), hashlib.sha256).digest()
    return key


def streaming_put(endpoint: str, bucket: str, key: str, payload: bytes, chunk: int) -> bytes:
    """A PUT with an aws-chunked, chunk-signed body (STREAMING-AWS4-HMAC-SHA256-PAYLOAD),
    written by hand as SDKs do for unknown-length uploads."""
    now = datetime.datetime.now(datetime.timezone.utc)
    stamp, date = now.strftime("%Y%m%dT%H%M%SZ"), now.strftime("%Y%m%d")
    pieces = [payload[i:i + chunk] for i in range(0, len(payload), chunk)] + [b""]
    sig_len = 64
    encoded_len = sum(len(f"{len(p):x};chunk-signature=".encode()) + sig_len + 2 + len(p) + 2 for p in pieces)
    url = f"{endpoint}/{bucket}/{key}"
    req = AWSRequest("PUT", url, headers={
        "X-Amz-Content-SHA256": "STREAMING-AWS4-HMAC-SHA256-PAYLOAD", "Content-Encoding": "aws-chunked",
        "X-Amz-Decoded-Content-Length": str(len(payload)), "Content-Length": str(encoded_len),
        "X-Amz-Date": stamp})
    req.context["timestamp"] = stamp
    SigV4Auth(Credentials(ACCESS_KEY, SECRET_KEY), "s3", "us-east-1")._inject_signature_to_request(
        req, _seed_signature(req, stamp))
    previous = req.headers["Authorization"].rsplit("Signature=", 1)[1]
    signing = _signing_key(SECRET_KEY, date)
    scope = f"{date}/us-east-1/s3/aws4_request"
    body = b""
    for p in pieces:
        to_sign = "\n".join(["AWS4-HMAC-SHA256-PAYLOAD", stamp, scope, previous,
                             hashlib.sha256(b"").hexdigest(), hashlib.sha256(p).hexdigest()])
        previous = hmac.new(signing, to_sign.encode(), hashlib.sha256).hexdigest()
        body += f"{len(p):x};chunk-signature={previous}\r\n".encode() + p + b"\r\n"
    assert len(body) == encoded_len
    return _raw(req, body)


def _seed_signature(req: AWSRequest, stamp: str) -> str:
    auth = SigV4Auth(Credentials(ACCESS_KEY, SECRET_KEY), "s3", "us-east-1")
    req.headers["Host"] = urlsplit(req.url).netloc
    canonical = auth.canonical_request(req)
    to_sign = auth.string_to_sign(req, canonical)
    return auth.signature(to_sign, req)


def _raw(req: AWSRequest, body: bytes) -> bytes:
    split = urlsplit(req.url)
    target = split.path + (f"?{split.query}" if split.query else "")
    lines = [f"{req.method} {target} HTTP/1.1"] + [f"{k}: {v}" for k, v in req.headers.items()]
    return ("\r\n".join(lines) + "\r\n\r\n").encode() + body


def signed_get(endpoint: str, bucket: str, key: str) -> bytes:
    req = AWSRequest("GET", f"{endpoint}/{bucket}/{key}")
    S3SigV4Auth(Credentials(ACCESS_KEY, SECRET_KEY), "s3", "us-east-1").add_auth(req)
    req.headers["Host"] = urlsplit(req.url).netloc
    return _raw(req, b"")


def read_responses(sock: socket.socket, n: int, deadline: float = 20.0) -> list[tuple[int, bytes]]:
    from nemeses.http_framing import END, NEED_DATA, Body, Head, MessageReader
    reader, out, status, body = MessageReader("response"), [], None, b""
    sock.settimeout(deadline)
    while len(out) < n:
        event = reader.next_event()
        if event is NEED_DATA:
            data = sock.recv(65536)
            if not data:
                reader.feed_eof()
            reader.feed(data)
        elif isinstance(event, Head):
            status, body = event.status, b""
        elif isinstance(event, Body):
            body += event.raw
        elif event is END:
            out.append((status, body))
    return out


def test_streaming_signed_payload_passes_unchanged(signed_bucket):
    endpoint, bucket = signed_bucket
    payload = random.Random(2).randbytes(200_000)
    with S3FaultProxy.for_endpoint(endpoint) as p:
        request = streaming_put(p.endpoint, bucket, "streamed", payload, chunk=64 * 1024)
        with socket.create_connection(("127.0.0.1", p.port)) as s:
            for i in range(0, len(request), 7000):     # dribbled, so framing meets every split
                s.sendall(request[i:i + 7000])
            [(status, body)] = read_responses(s, 1)
        assert status == 200, body
        assert p.stats()["requests"] == {"put": 1}
    assert client(endpoint).get_object(Bucket=bucket, Key="streamed")["Body"].read() == payload


def test_pipelined_requests_are_answered_in_order_around_an_injected_error(signed_bucket):
    endpoint, bucket = signed_bucket
    c = client(endpoint)
    for k in ("a", "b", "c"):
        c.put_object(Bucket=bucket, Key=k, Body=f"value-{k}".encode())
    with S3FaultProxy.for_endpoint(endpoint) as p:
        p.add_error(503, prefix="b")
        burst = b"".join(signed_get(p.endpoint, bucket, k) for k in ("a", "b", "c", "a"))
        with socket.create_connection(("127.0.0.1", p.port)) as s:
            s.sendall(burst)                           # all four before any answer
            answers = read_responses(s, 4)
    assert [st for st, _ in answers] == [200, 503, 200, 200]
    assert answers[0][1] == b"value-a" and answers[2][1] == b"value-c" and answers[3][1] == b"value-a"
    assert b"<Code>SlowDown</Code>" in answers[1][1]


# --- the pure parts ---------------------------------------------------------------------------

@pytest.mark.parametrize("line,headers,op,key", [
    ("GET /b/k/x.bin HTTP/1.1", "", "get", "k/x.bin"),
    ("GET /b?list-type=2&prefix=wal%2F HTTP/1.1", "", "list", "wal/"),
    ("GET /b/ HTTP/1.1", "", "list", ""),
    ("HEAD /b/k HTTP/1.1", "", "head", "k"),
    ("PUT /b/k HTTP/1.1", "", "put", "k"),
    ("PUT /b/k HTTP/1.1", "If-None-Match: *\r\n", "put-if", "k"),
    ("PUT /b/k HTTP/1.1", "If-Match: \"abc\"\r\n", "put-if", "k"),
    ("PUT /b/k?partNumber=1&uploadId=u HTTP/1.1", "", "multipart", "k"),
    ("POST /b/k?uploads HTTP/1.1", "", "multipart", "k"),
    ("POST /b/k?uploadId=u HTTP/1.1", "", "multipart", "k"),
    ("DELETE /b/k?uploadId=u HTTP/1.1", "", "multipart", "k"),
    ("DELETE /b/k%20sp HTTP/1.1", "", "delete", "k sp"),
    ("POST /b?delete HTTP/1.1", "", "delete", ""),
    ("PUT /b HTTP/1.1", "", "other", ""),
])
def test_classify(line, headers, op, key):
    r = classify(parse_head(f"{line}\r\nHost: h\r\n{headers}\r\n".encode()))
    assert (r.op, r.key, r.bucket) == (op, key, "b")
    assert r.op in OPS


def test_classify_virtual_host_style():
    r = classify(parse_head(b"GET /k HTTP/1.1\r\nHost: mybucket.s3.amazonaws.com\r\n\r\n"), virtual_host=True)
    assert (r.op, r.bucket, r.key) == ("get", "mybucket", "k")


def test_latency_distributions():
    rng = random.Random(3)
    assert parse_latency("200ms") == Fixed(0.2)
    assert parse_latency("50ms..1s") == Uniform(0.05, 1.0)
    tail = parse_latency("tail:20ms:2s")
    assert tail == LongTail(0.02, 2.0)
    draws = sorted(tail.sample(rng) for _ in range(20000))
    assert 0.017 < draws[10000] < 0.023                  # median
    assert 1.5 < draws[19800] < 2.7                      # p99
    assert draws[-1] <= 20.0                             # capped
    u = [Uniform(0.1, 0.3).sample(rng) for _ in range(1000)]
    assert min(u) >= 0.1 and max(u) <= 0.3
    for bad in ("tail:1s", "2s..1s", "fast"):
        with pytest.raises(ValueError):
            parse_latency(bad)


@pytest.mark.parametrize("kw", [dict(kind="boom"), dict(kind="error", status=404), dict(kind="reset", rate=2),
                                dict(kind="reset", ops=frozenset({"copy"})), dict(kind="latency"),
                                dict(kind="ambiguous", answer="maybe")])
def test_bad_rules_are_refused(kw):
    with pytest.raises(ValueError):
        Rule(**kw)


def test_rate_is_a_probability(proxy):
    p, _, bucket = proxy
    p.add_error(503, rate=0.5)
    c = client(p.endpoint)
    outcomes = []
    for i in range(60):
        try:
            c.head_bucket(Bucket=bucket)
            outcomes.append(True)
        except botocore.exceptions.ClientError:
            outcomes.append(False)
    assert 10 < outcomes.count(False) < 50
    assert p.stats()["faults"]["error-503"] == outcomes.count(False)


def test_rules_change_from_many_threads_while_requests_flow(s3_bucket):
    import threading
    endpoint, bucket = s3_bucket
    proxies = S3FaultProxy.for_nodes(endpoint, ["n1", "n2"], seed=1)
    try:
        p = proxies["n1"]
        assert proxies["n2"].port != p.port
        stop = threading.Event()
        errors = []

        def churn(i):
            rng = random.Random(i)
            try:
                while not stop.is_set():
                    rid = rng.choice([lambda: p.add_latency("1ms"), lambda: p.add_error(503, rate=0.05),
                                      lambda: p.add_reset(rate=0.1, ops="get")])()
                    time.sleep(0.001)
                    p.remove(rid)
            except Exception as e:  # surfaced below
                errors.append(e)

        threads = [threading.Thread(target=churn, args=(i,)) for i in range(4)]
        for t in threads:
            t.start()
        c = client(p.endpoint, retries=5)
        for i in range(30):
            c.put_object(Bucket=bucket, Key=f"k{i}", Body=b"x")
        stop.set()
        for t in threads:
            t.join(10)
        assert not errors and p.rules() == []
        s = p.stats()
        assert s["requests"]["put"] >= 30 and s["hanging"] == 0
        assert client(endpoint).list_objects_v2(Bucket=bucket)["KeyCount"] == 30
    finally:
        for p in proxies.values():
            p.stop()


def test_garbage_from_a_client_closes_only_its_connection(proxy):
    p, _, bucket = proxy
    with socket.create_connection(("127.0.0.1", p.port), timeout=10) as s:
        s.sendall(b"PUT /b/k HTTP/1.1\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\nxx")
        assert s.recv(100) == b""                                  # closed, nothing forwarded
    assert p.stats()["forwarded"] == 0
    client(p.endpoint).put_object(Bucket=bucket, Key="after", Body=b"ok")   # the proxy still serves
