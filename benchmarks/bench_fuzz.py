"""A hostile client against one reference broker (WAL on a volume + S3), for a
million mutated frames.

Seeds: a valid request of every API and version the broker advertises,
encoded by kafka-python's classes (Produce carries good batches, plain and
under every codec). Each frame sent is one of:

- valid             a seed as it is (the broker's state keeps moving);
- bit-flip          1 to 8 bits of a seed flipped;
- truncated         a seed cut short (its size prefix says so);
- lying-length      a 2- or 4-byte slot of a seed overwritten with a huge or
                    negative number: array and string lengths that lie;
- unknown-api       an api key or version the broker does not speak;
- size-lie          a size prefix that disagrees with what follows (on a
                    connection of its own, half-closed after it);
- broken:<kind>     a Produce whose batch has a right CRC and broken records,
                    one kind of reference.broken_batches at a time, plain or
                    compressed; garbage compression among them, and now and
                    then a decompression bomb;
- half-sent         a frame cut off midway and held open on its connection
                    for a few seconds (up to --held of them at once);
- burst             now and then, hundreds of connections at once, each asking
                    ApiVersions.

Frames go over --workers connections; behind each frame a sentinel request
(ApiVersions v0) tells when the broker has dealt with it (answer, silence or
close); a connection the broker closed is replaced, and one frame in ten
goes on a fresh connection. While it runs, a fresh kafka-python client
produces and reads a record every --probe-every seconds.

At the end it checks: the broker never restarted (the same process ran
throughout), no broken batch was accepted (each gets CORRUPT_MESSAGE,
INVALID_RECORD or MESSAGE_TOO_LARGE), and every record of every partition
reads back the same through kafka-python and confluent-kafka. It prints
frames per second, the broker's peak memory (VmHWM) and the counts by kind;
exit 0 when every check held.

    python benchmarks/bench_fuzz.py                   # 1 M mutated frames
    python benchmarks/bench_fuzz.py --frames 20000    # a quick look
"""
from __future__ import annotations

import argparse
import asyncio
import collections
import random
import socket
import struct
import sys
import tempfile
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from kafka.protocol.admin import (CreateTopicsRequest, DeleteTopicsRequest, DescribeConfigsRequest,  # noqa: E402
                                  DescribeGroupsRequest, ListGroupsRequest)
from kafka.protocol.consumer import (FetchRequest, HeartbeatRequest, JoinGroupRequest, LeaveGroupRequest,  # noqa: E402
                                     ListOffsetsRequest, ListOffsetsResponse, OffsetCommitRequest,
                                     OffsetFetchRequest, OffsetForLeaderEpochRequest, SyncGroupRequest)
from kafka.protocol.metadata import (ApiVersionsRequest, FindCoordinatorRequest, MetadataRequest,  # noqa: E402
                                     MetadataResponse)
from kafka.protocol.producer import InitProducerIdRequest, ProduceRequest, ProduceResponse  # noqa: E402

from harness.db.reference import ReferenceCluster  # noqa: E402
from harness.s3server import SeaweedS3, s3_client  # noqa: E402
from reference import errors  # noqa: E402
from reference.broken_batches import BROKEN, CODECS, COMPRESSED_ONLY, bomb, build  # noqa: E402
from reference.protocol import codec  # noqa: E402

TOPIC, PARTITIONS, PROBE_TOPIC = "fuzz", 8, "probe"
REFUSED = {errors.CORRUPT_MESSAGE, errors.INVALID_RECORD, errors.MESSAGE_TOO_LARGE}
SENTINEL_API = struct.pack(">hh", 18, 0)  # ApiVersions v0: every broker answers it
FRAME_TIMEOUT = 1.5


# --------------------------------------------------------------------------
# seeds: a valid request of every API and version, by kafka-python's classes
# --------------------------------------------------------------------------

def _produce(partition: int, records: bytes, acks: int = -1):
    P = ProduceRequest.TopicProduceData
    return ProduceRequest(transactional_id=None, acks=acks, timeout_ms=5000, topic_data=[
        P(name=TOPIC, partition_data=[P.PartitionProduceData(index=partition, records=records)])])


def _requests(rng: random.Random) -> dict[int, list]:
    """Request objects per api key (fields every version needs)."""
    F, L, C = FetchRequest.FetchTopic, ListOffsetsRequest.ListOffsetsTopic, OffsetCommitRequest.OffsetCommitRequestTopic
    E, O = OffsetForLeaderEpochRequest.OffsetForLeaderTopic, OffsetFetchRequest.OffsetFetchRequestTopic
    R = DescribeConfigsRequest.DescribeConfigsResource
    goods = [build([b"ok-%d-%d" % (c, i) for i in range(1 + c)], c) for c in range(5)]
    return {
        0: [_produce(rng.randrange(PARTITIONS), g) for g in goods],  # (zstd below v7: refused, as Kafka)
        1: [FetchRequest(replica_id=-1, max_wait_ms=0, min_bytes=1, max_bytes=1 << 16, isolation_level=0,
                         session_id=0, session_epoch=-1, topics=[F(topic=TOPIC, partitions=[F.FetchPartition(
                             partition=p, current_leader_epoch=-1, fetch_offset=0, log_start_offset=-1,
                             partition_max_bytes=1 << 15)]) for p in range(2)])],
        2: [ListOffsetsRequest(replica_id=-1, isolation_level=0, topics=[L(name=TOPIC, partitions=[
            L.ListOffsetsPartition(partition_index=0, current_leader_epoch=-1, timestamp=t)])]) for t in (-1, -2, 0)],
        3: [MetadataRequest(topics=None, allow_auto_topic_creation=False),
            MetadataRequest(topics=[MetadataRequest.MetadataRequestTopic(name=TOPIC)], allow_auto_topic_creation=True)],
        8: [OffsetCommitRequest(group_id="fz-g", generation_id_or_member_epoch=-1, member_id="", retention_time_ms=-1,
                                topics=[C(name=TOPIC, partitions=[C.OffsetCommitRequestPartition(
                                    partition_index=0, committed_offset=1, committed_leader_epoch=-1,
                                    committed_metadata="m")])])],
        9: [OffsetFetchRequest(group_id="fz-g", topics=[O(name=TOPIC, partition_indexes=[0, 1])])],
        10: [FindCoordinatorRequest(key="fz-g", key_type=0)],
        11: [JoinGroupRequest(group_id="fz-j", session_timeout_ms=6000, rebalance_timeout_ms=100, member_id="",
                              group_instance_id=None, protocol_type="consumer",
                              protocols=[JoinGroupRequest.JoinGroupRequestProtocol(name="range", metadata=b"")])],
        12: [HeartbeatRequest(group_id="fz-j", generation_id=1, member_id="nobody")],
        13: [LeaveGroupRequest(group_id="fz-j", member_id="nobody")],
        14: [SyncGroupRequest(group_id="fz-j", generation_id=1, member_id="nobody", assignments=[])],
        15: [DescribeGroupsRequest(groups=["fz-g", "fz-j"])],
        16: [ListGroupsRequest()],
        18: [ApiVersionsRequest(client_software_name="fuzz", client_software_version="1")],
        19: [CreateTopicsRequest(topics=[CreateTopicsRequest.CreatableTopic(
            name="fz-new", num_partitions=1, replication_factor=1, assignments=[], configs=[])],
            timeout_ms=1000, validate_only=True)],
        20: [DeleteTopicsRequest(topic_names=["fz-absent"], timeout_ms=1000)],
        22: [InitProducerIdRequest(transactional_id=None, transaction_timeout_ms=-1)],
        23: [OffsetForLeaderEpochRequest(replica_id=-1, topics=[E(topic=TOPIC, partitions=[
            E.OffsetForLeaderPartition(partition=0, current_leader_epoch=-1, leader_epoch=0)])])],
        32: [DescribeConfigsRequest(resources=[R(resource_type=2, resource_name=TOPIC, configuration_keys=None)],
                                    include_synonyms=False)],
    }


def encode(request, version: int, correlation_id: int) -> bytes:
    request.with_header(correlation_id=correlation_id, client_id="fuzz")
    return bytes(request.encode(version=version, header=True))


def seeds(rng: random.Random) -> tuple[list[tuple[int, int, bytes]], list[str]]:
    """(api key, version, frame body) of every request that encodes; and what did not."""
    out, skipped = [], []
    for key, requests in _requests(rng).items():
        spec = codec.API_SPECS[key]
        for version in range(spec.min_version, spec.max_version + 1):
            for request in requests:
                try:
                    out.append((key, version, encode(request, version, rng.randrange(1 << 30))))
                except Exception as e:  # a field this version cannot carry
                    skipped.append(f"{spec.request_class.__name__} v{version}: {e!r}")
    return out, skipped


# --------------------------------------------------------------------------
# mutations
# --------------------------------------------------------------------------

class Fuzzer:
    def __init__(self, rng: random.Random, bomb_every: int):
        self.rng = rng
        self.seeds, self.skipped = seeds(rng)
        self.bomb_every = bomb_every
        self.kinds = [k for k in BROKEN]
        self.broken_pool = self._broken_pool()
        self.bombs = [bomb(CODECS[c], 80 << 20) for c in ("gzip", "zstd", "lz4", "snappy")]
        self.n = 0

    def _broken_pool(self) -> list[tuple[str, bytes]]:
        pool = []
        for kind in BROKEN:
            for name, c in CODECS.items():
                if name == "none" and kind in COMPRESSED_ONLY:
                    continue
                for size in (1, 3, 20):
                    values = [b"BROKEN-%s-%d" % (kind.encode(), i) for i in range(size)]
                    pool.append((f"broken:{kind}" + ("" if name == "none" else f"+{name}"), BROKEN[kind](values, c)))
        return pool

    def next(self) -> tuple[str, bytes, dict]:
        """(kind, bytes to send, what to expect)."""
        self.n += 1
        rng = self.rng
        if self.bomb_every and self.n % self.bomb_every == 0:
            data = rng.choice(self.bombs)
            return "broken:bomb", self._frame(encode(_produce(rng.randrange(PARTITIONS), data), 8, 7)), \
                {"produce_version": 8}
        r = rng.random()
        if r < 0.25:
            kind, batch = rng.choice(self.broken_pool)
            version = rng.choice([7, 8]) if "zstd" in kind else rng.randint(3, 8)
            return kind, self._frame(encode(_produce(rng.randrange(PARTITIONS), batch), version, 7)), \
                {"produce_version": version}
        key, version, body = rng.choice(self.seeds)
        if r < 0.35:
            return "valid", self._frame(body), {"valid_produce": version if key == 0 and version >= 7 else None}
        if r < 0.60:
            b = bytearray(body)
            for _ in range(rng.randint(1, 8)):
                i = rng.randrange(len(b))
                b[i] ^= 1 << rng.randrange(8)
            return "bit-flip", self._frame(bytes(b)), {}
        if r < 0.70:
            return "truncated", self._frame(body[:rng.randrange(4, len(body))]), {}
        if r < 0.85:
            b = bytearray(body)
            i = rng.randrange(8, max(9, len(b) - 4))
            if rng.random() < 0.5:
                struct.pack_into(">i", b, i, rng.choice([0x7FFFFFFF, 0x40000000, 1 << 24, -2, -0x7FFFFFFF]))
            else:
                struct.pack_into(">h", b, min(i, len(b) - 2), rng.choice([0x7FFF, 0x4000, -2, -0x7FFF]))
            return "lying-length", self._frame(bytes(b)), {}
        if r < 0.93:
            b = bytearray(body)
            if rng.random() < 0.5:
                struct.pack_into(">h", b, 0, rng.choice([-1, 4, 17, 21, 50, 67, 1000, 0x7FFF]))
            else:
                struct.pack_into(">h", b, 2, rng.choice([-1, 9, 12, 30, 0x7FFF]))
            return "unknown-api", self._frame(bytes(b)), {}
        lie = rng.choice([0, 3, 7, len(body) // 2, len(body) + 1, len(body) + 4096, -1, 0x7FFFFFFF])
        return "size-lie", struct.pack(">i", lie) + body, {"own_connection": True}

    @staticmethod
    def _frame(body: bytes) -> bytes:
        return struct.pack(">i", len(body)) + body


# --------------------------------------------------------------------------
# the load
# --------------------------------------------------------------------------

class Stats:
    def __init__(self):
        self.by_kind = collections.Counter()
        self.outcomes = collections.Counter()
        self.broken_accepted: list[str] = []
        self.valid_refused = collections.Counter()
        self.mutated = 0
        self.sent = 0
        self.probes: list[float] = []
        self.probe_failures: list[str] = []


class Worker:
    def __init__(self, port: int, stats: Stats):
        self.port = port
        self.stats = stats
        self.reader = self.writer = None
        self.sentinel = 0

    async def _connect(self):
        self.close()
        self.reader, self.writer = await asyncio.open_connection("127.0.0.1", self.port, limit=1 << 20)

    def close(self):
        if self.writer is not None:
            self.writer.transport.abort()
        self.reader = self.writer = None

    async def send(self, kind: str, data: bytes, expect: dict, fresh: bool) -> str:
        if expect.get("own_connection"):
            return await self._send_alone(data)
        if fresh or self.writer is None:
            await self._connect()
        self.sentinel = (self.sentinel + 1) % (1 << 30)
        sentinel_id = -1 - self.sentinel
        sentinel = SENTINEL_API + struct.pack(">ih", sentinel_id, -1)
        try:
            self.writer.write(data + struct.pack(">i", len(sentinel)) + sentinel)
            first = None
            async with asyncio.timeout(FRAME_TIMEOUT):
                while True:
                    size = struct.unpack(">i", await self.reader.readexactly(4))[0]
                    body = await self.reader.readexactly(size)
                    (cid,) = struct.unpack_from(">i", body, 0)
                    if cid == sentinel_id:
                        break
                    if first is None:
                        first = struct.pack(">i", size) + body
        except (asyncio.IncompleteReadError, ConnectionError):
            self.close()
            return "closed"
        except asyncio.TimeoutError:
            self.close()
            return "timeout"
        if first is None:
            return "no-answer"
        self._check(kind, first, expect)
        return "answered"

    def _check(self, kind: str, response: bytes, expect: dict) -> None:
        version = expect.get("produce_version") or expect.get("valid_produce")
        if version is None:
            return
        try:
            decoded = ProduceResponse.decode(response, version=version, header=True, framed=True)
            code = decoded.responses[0].partition_responses[0].error_code
        except Exception as e:
            self.stats.outcomes["undecodable-produce-answer"] += 1
            if kind.startswith("broken"):
                self.stats.broken_accepted.append(f"{kind}: answer not decodable ({e!r})")
            return
        if kind.startswith("broken"):
            if code not in REFUSED:
                self.stats.broken_accepted.append(f"{kind}: answered error code {code}")
        elif code != 0:
            self.stats.valid_refused[code] += 1

    async def _send_alone(self, data: bytes) -> str:
        try:
            reader, writer = await asyncio.open_connection("127.0.0.1", self.port)
        except OSError:
            return "connect-failed"
        try:
            writer.write(data)
            writer.write_eof()  # half-close: the broker sees the end of input
            while await asyncio.wait_for(reader.read(65536), FRAME_TIMEOUT * 2):
                pass
            return "closed"
        except (ConnectionError, asyncio.TimeoutError):
            return "closed"
        finally:
            writer.transport.abort()


async def hold_half_frames(port: int, fuzzer: Fuzzer, stop: asyncio.Event, held_max: int, stats: Stats):
    """Keep up to held_max connections, each with a frame cut off midway."""
    held: collections.deque = collections.deque()
    rng = random.Random(fuzzer.rng.random())
    while not stop.is_set():
        try:
            _reader, writer = await asyncio.open_connection("127.0.0.1", port)
            _key, _version, body = rng.choice(fuzzer.seeds)
            frame = struct.pack(">i", len(body) + rng.choice([0, 10, 100_000])) + body
            writer.write(frame[:rng.randrange(1, len(frame))])
            held.append((time.monotonic(), writer))
            stats.by_kind["half-sent"] += 1
            stats.mutated += 1
        except OSError:
            pass
        while held and (len(held) > held_max or time.monotonic() - held[0][0] > 5):
            held.popleft()[1].transport.abort()
        try:
            await asyncio.wait_for(stop.wait(), 0.02)
        except asyncio.TimeoutError:
            pass
    for _, w in held:
        w.transport.abort()


async def burst(port: int, n: int, stats: Stats) -> None:
    async def one(i):
        try:
            reader, writer = await asyncio.open_connection("127.0.0.1", port)
        except OSError:
            return "connect-failed"
        try:
            body = SENTINEL_API + struct.pack(">ih", i, -1)
            writer.write(struct.pack(">i", len(body)) + body)
            size = struct.unpack(">i", await asyncio.wait_for(reader.readexactly(4), 10))[0]
            await asyncio.wait_for(reader.readexactly(size), 10)
            return "answered"
        except (ConnectionError, asyncio.IncompleteReadError, asyncio.TimeoutError):
            return "failed"
        finally:
            writer.transport.abort()
    results = await asyncio.gather(*(one(i) for i in range(n)))
    stats.by_kind["burst-connection"] += n
    stats.outcomes.update(f"burst-{r}" for r in results)


def probe(bootstrap: str, n: int) -> float:
    """A fresh kafka-python client produces one record and reads it back."""
    from kafka import KafkaConsumer, KafkaProducer, TopicPartition
    started = time.monotonic()
    producer = KafkaProducer(bootstrap_servers=bootstrap, request_timeout_ms=10_000, max_block_ms=10_000)
    try:
        meta = producer.send(PROBE_TOPIC, b"probe-%d" % n, partition=0).get(10)
    finally:
        producer.close(5)
    consumer = KafkaConsumer(bootstrap_servers=bootstrap, enable_auto_commit=False)
    try:
        tp = TopicPartition(PROBE_TOPIC, 0)
        consumer.assign([tp])
        consumer.seek(tp, meta.offset)
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            for messages in consumer.poll(timeout_ms=200).values():
                if any(m.value == b"probe-%d" % n for m in messages):
                    return time.monotonic() - started
        raise RuntimeError(f"probe {n}: record at {meta.offset} not read back within 10 s")
    finally:
        consumer.close()


def prober(bootstrap: str, every: float, stop: threading.Event, stats: Stats) -> None:
    n = 0
    while not stop.wait(every):
        n += 1
        try:
            stats.probes.append(probe(bootstrap, n))
        except Exception as e:
            stats.probe_failures.append(f"probe {n}: {e!r}")


async def run_load(port: int, args, stats: Stats, fuzzer: Fuzzer) -> float:
    stop = asyncio.Event()
    holder = asyncio.create_task(hold_half_frames(port, fuzzer, stop, args.held, stats))
    next_burst = args.burst_every
    started = time.monotonic()
    last_report = started
    lock_rng = random.Random(args.seed + 1)

    async def work(worker: Worker):
        nonlocal next_burst, last_report
        while stats.mutated < args.frames:
            kind, data, expect = fuzzer.next()
            fresh = lock_rng.random() < 0.1
            outcome = await worker.send(kind, data, expect, fresh)
            base, _, compression = kind.partition("+")
            stats.by_kind[base] += 1
            if compression:
                stats.by_kind[f"broken, compressed: {compression}"] += 1
            stats.outcomes[outcome] += 1
            stats.sent += 1
            if kind != "valid":
                stats.mutated += 1
            if stats.mutated >= next_burst:
                next_burst += args.burst_every
                await burst(port, args.burst_size, stats)
            now = time.monotonic()
            if now - last_report >= 30:
                last_report = now
                rate = stats.sent / (now - started)
                print(f"  {stats.mutated:>9,} mutated frames, {rate:,.0f} frames/s, "
                      f"{len(stats.broken_accepted)} broken accepted", flush=True)
        worker.close()

    await asyncio.gather(*(work(Worker(port, stats)) for _ in range(args.workers)))
    elapsed = time.monotonic() - started
    stop.set()
    await holder
    return elapsed


# --------------------------------------------------------------------------
# the final checks
# --------------------------------------------------------------------------

def partitions_with_data(bootstrap: str) -> dict[tuple[str, int], tuple[int, int]]:
    host, port = bootstrap.split(":")
    with socket.create_connection((host, int(port)), timeout=30) as s:
        def call(request, version, response_class):
            body = encode(request, version, 1)
            s.sendall(struct.pack(">i", len(body)) + body)
            size = struct.unpack(">i", _exactly(s, 4))[0]
            return response_class.decode(struct.pack(">i", size) + _exactly(s, size), version=version,
                                         header=True, framed=True)
        meta = call(MetadataRequest(topics=None, allow_auto_topic_creation=False), 8, MetadataResponse)
        print(f"topics at the end: {len(meta.topics)} ({sum(len(t.partitions) for t in meta.topics)} partitions)",
              flush=True)
        out = {}
        L = ListOffsetsRequest.ListOffsetsTopic
        for t in meta.topics:
            for p in t.partitions:
                ends = []
                for ts in (-2, -1):
                    r = call(ListOffsetsRequest(replica_id=-1, isolation_level=0, topics=[L(name=t.name, partitions=[
                        L.ListOffsetsPartition(partition_index=p.partition_index, current_leader_epoch=-1,
                                               timestamp=ts)])]), 5, ListOffsetsResponse)
                    ends.append(r.topics[0].partitions[0].offset)
                if ends[1] > ends[0]:
                    out[(t.name, p.partition_index)] = (ends[0], ends[1])
        return out


def _exactly(s: socket.socket, n: int) -> bytes:
    out = b""
    while len(out) < n:
        chunk = s.recv(n - len(out))
        if not chunk:
            raise ConnectionError("closed")
        out += chunk
    return out


def read_kafka_python(bootstrap: str, wanted: dict) -> dict:
    from kafka import KafkaConsumer, TopicPartition
    consumer = KafkaConsumer(bootstrap_servers=bootstrap, enable_auto_commit=False, max_partition_fetch_bytes=1 << 20)
    got = {tp: [] for tp in wanted}
    try:
        tps = {TopicPartition(t, p): (t, p) for t, p in wanted}
        consumer.assign(list(tps))
        for tp, key in tps.items():
            consumer.seek(tp, wanted[key][0])
        total = sum(end - start for start, end in wanted.values())
        deadline = time.monotonic() + 120
        while sum(map(len, got.values())) < total and time.monotonic() < deadline:
            for tp, messages in consumer.poll(timeout_ms=500).items():
                got[tps[tp]].extend((m.offset, m.value) for m in messages)
    finally:
        consumer.close()
    return got


def read_confluent(bootstrap: str, wanted: dict) -> dict:
    from confluent_kafka import Consumer, TopicPartition
    consumer = Consumer({"bootstrap.servers": bootstrap, "group.id": "fuzz-check", "enable.auto.commit": False})
    got = {tp: [] for tp in wanted}
    errors_seen = []
    try:
        consumer.assign([TopicPartition(t, p, start) for (t, p), (start, _) in wanted.items()])
        total = sum(end - start for start, end in wanted.values())
        deadline = time.monotonic() + 120
        while sum(map(len, got.values())) < total and time.monotonic() < deadline:
            for m in consumer.consume(num_messages=10_000, timeout=0.5):
                if m.error():
                    errors_seen.append(str(m.error()))
                    continue
                got[(m.topic(), m.partition())].append((m.offset(), m.value()))
    finally:
        consumer.close()
    if errors_seen:
        raise RuntimeError(f"confluent-kafka read errors: {errors_seen[:5]}")
    return got


# --------------------------------------------------------------------------

def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--frames", type=int, default=1_000_000, help="mutated frames to send (default 1 M)")
    p.add_argument("--workers", type=int, default=24, help="connections sending at once")
    p.add_argument("--held", type=int, default=200, help="most half-sent frames held open at once")
    p.add_argument("--burst-every", type=int, default=100_000, help="a burst of connections every N frames")
    p.add_argument("--burst-size", type=int, default=300)
    p.add_argument("--bomb-every", type=int, default=10_000, help="a decompression bomb every N frames (0: none)")
    p.add_argument("--probe-every", type=float, default=10.0, help="seconds between fresh-client probes")
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("--broker-arg", action="append", default=[], help="an extra broker flag (repeatable)")
    args = p.parse_args(argv)

    rng = random.Random(args.seed)
    fuzzer = Fuzzer(rng, args.bomb_every)
    stats = Stats()
    with tempfile.TemporaryDirectory() as d, SeaweedS3(Path(d) / "s3") as s3:
        bucket = f"fuzz-{int(time.time())}"
        s3_client(s3.endpoint).create_bucket(Bucket=bucket)
        cluster = ReferenceCluster(Path(d) / "run", s3_endpoint=s3.endpoint, bucket=bucket,
                                   broker_args=["--log-level", "ERROR", *args.broker_arg])
        cluster.setup()
        try:
            node = cluster.nodes["n1"]
            pid = node.pid
            bootstrap = cluster.bootstrap_servers
            from kafka.admin import KafkaAdminClient, NewTopic
            admin = KafkaAdminClient(bootstrap_servers=bootstrap)
            admin.create_topics([NewTopic(TOPIC, PARTITIONS, 1), NewTopic(PROBE_TOPIC, 1, 1)])
            admin.close()
            print(f"broker pid {pid} on {bootstrap}; {len(fuzzer.seeds)} seed requests "
                  f"({len(fuzzer.skipped)} API versions skipped), {len(fuzzer.broken_pool)} broken batches; "
                  f"{args.frames:,} mutated frames over {args.workers} connections", flush=True)
            stop_probe = threading.Event()
            prober_thread = threading.Thread(target=prober, args=(bootstrap, args.probe_every, stop_probe, stats),
                                             daemon=True)
            prober_thread.start()
            port = int(bootstrap.rsplit(":", 1)[1])
            elapsed = asyncio.run(run_load(port, args, stats, fuzzer))
            stop_probe.set()
            prober_thread.join(30)
            alive = node.process.poll() is None and node.process.pid == pid
            peak = peak_memory_mib(pid) if alive else float("nan")
            wanted = partitions_with_data(bootstrap)
            kp = read_kafka_python(bootstrap, wanted)
            ck = read_confluent(bootstrap, wanted)
            alive = alive and node.process.poll() is None
            log_text = node.log_path.read_text(errors="replace")
        finally:
            cluster.teardown()
    return report(args, stats, elapsed, alive, peak, wanted, kp, ck, log_text, fuzzer)


def peak_memory_mib(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def report(args, stats: Stats, elapsed, alive, peak, wanted, kp, ck, log_text, fuzzer) -> int:
    records = sum(end - start for start, end in wanted.values())
    unreadable = []
    for key, (start, end) in wanted.items():
        want = list(range(start, end))
        if [o for o, _ in kp[key]] != want:
            unreadable.append(f"{key}: kafka-python read {len(kp[key])} of {end - start}")
        if [o for o, _ in ck[key]] != want:
            unreadable.append(f"{key}: confluent-kafka read {len(ck[key])} of {end - start}")
        if kp[key] != ck[key]:
            unreadable.append(f"{key}: the two clients read different records")
    broken_stored = sum(1 for rs in kp.values() for _, v in rs if v is not None and v.startswith(b"BROKEN"))
    tracebacks = log_text.count("Traceback")
    unretrieved = log_text.count("never retrieved")
    print()
    print(f"frames sent           {stats.sent:>12,}  ({stats.mutated:,} mutated) in {elapsed:,.0f} s: "
          f"{stats.sent / elapsed:,.0f} frames/s")
    print(f"broker                {'never restarted' if alive else 'DIED OR RESTARTED':>12}")
    print(f"broker peak memory    {peak:>10,.0f} MiB (VmHWM)")
    print(f"broken accepted       {len(stats.broken_accepted):>12,}  (+{broken_stored} broken values stored)")
    print(f"partitions read back  {len(wanted):>12,}  {records:,} records, identical through kafka-python and "
          f"confluent-kafka: {'yes' if not unreadable else 'NO'}")
    print(f"fresh-client probes   {len(stats.probes):>12,}  ok, {len(stats.probe_failures)} failed"
          + (f"; slowest {max(stats.probes):.2f} s" if stats.probes else ""))
    problems = collections.Counter(" ".join(line.split()[2:5]) for line in log_text.splitlines()
                                   if " ERROR " in line or " CRITICAL " in line)
    print(f"broker log            {tracebacks:>12,}  tracebacks, {unretrieved} 'never retrieved', "
          f"{sum(problems.values())} errors" + (f" (most: {problems.most_common(3)})" if problems else ""))
    print("by kind:")
    for kind, n in sorted(stats.by_kind.items()):
        if n:
            print(f"  {kind:<34} {n:>10,}")
    print("outcomes:", ", ".join(f"{k} {v:,}" for k, v in sorted(stats.outcomes.items())))
    if stats.valid_refused:
        print("valid produce refused, by code:", dict(stats.valid_refused))
    for line in (stats.broken_accepted[:10] + unreadable[:10] + stats.probe_failures[:5]):
        print("  !", line)
    ok = (alive and not stats.broken_accepted and not broken_stored and not unreadable
          and not stats.probe_failures and not unretrieved and peak < 256)
    print("PASS" if ok else "FAIL")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
