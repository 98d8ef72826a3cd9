"""A Kafka client for the simulation: kafka-python's request and response
classes and record codecs over the simulated network, driven the way
kafka-python's own producer and consumer drive them (its threads and
sockets cannot run in a simulated process).

- Producer: idempotent, acks=all. `InitProducerId` once; each partition's
  batches carry consecutive sequence numbers; a batch is retried with the
  *same* sequence (after a metadata refresh) on retriable errors, lost
  connections and timeouts, until its delivery timeout. Then the client is
  in an unknown state: the caller records `info` and replaces the client
  (a new producer id), as the harness does with kafka-python.
  DUPLICATE_SEQUENCE_NUMBER counts as written with its offset unknown;
  OUT_OF_ORDER_SEQUENCE_NUMBER / UNKNOWN_PRODUCER_ID are fatal for the batch.
- Consumer: `assign` / `seek_to_beginning` as kafka-python without a group;
  unknown positions reset to the earliest offset (auto_offset_reset), as does
  OFFSET_OUT_OF_RANGE; `poll` fetches from each leader, returns records at or
  above the positions and advances them; `read_to_end` compares positions
  with the last high watermarks seen.
"""
from __future__ import annotations

import asyncio
import logging
import struct

from kafka.protocol.admin import CreateTopicsRequest, CreateTopicsResponse
from kafka.protocol.consumer import FetchRequest, FetchResponse, ListOffsetsRequest, ListOffsetsResponse
from kafka.protocol.metadata import MetadataRequest, MetadataResponse
from kafka.protocol.producer import InitProducerIdRequest, InitProducerIdResponse, ProduceRequest, ProduceResponse
from kafka.record.memory_records import MemoryRecords, MemoryRecordsBuilder

from harness.workloads.queue import PARTITIONS_PER_TOPIC, key_topic_partition, topic_partition_key
from reference import errors as E

log = logging.getLogger("highwater.sim.client")

VERSIONS = {ProduceRequest: 8, FetchRequest: 11, ListOffsetsRequest: 5, MetadataRequest: 8,
            InitProducerIdRequest: 1, CreateTopicsRequest: 4}
RESPONSES = {ProduceRequest: ProduceResponse, FetchRequest: FetchResponse, ListOffsetsRequest: ListOffsetsResponse,
             MetadataRequest: MetadataResponse, InitProducerIdRequest: InitProducerIdResponse,
             CreateTopicsRequest: CreateTopicsResponse}
RETRIABLE = {E.NOT_LEADER_OR_FOLLOWER, E.UNKNOWN_TOPIC_OR_PARTITION, E.LEADER_NOT_AVAILABLE, E.REQUEST_TIMED_OUT,
             E.NOT_ENOUGH_REPLICAS, E.KAFKA_STORAGE_ERROR, 74, 75}   # + FENCED_/UNKNOWN_LEADER_EPOCH


class ClientCrashed(Exception):
    """The client is in an unknown state; the worker replaces it."""


class Connection:
    """One connection to a broker; requests pipelined, answered in order."""

    def __init__(self, client_id: str):
        self.client_id = client_id
        self.reader = self.writer = None
        self.pending: dict[int, tuple] = {}
        self.next_id = 1
        self.task = None
        self.closed = False

    async def open(self, host: str, port: int, timeout: float) -> None:
        self.reader, self.writer = await asyncio.wait_for(asyncio.open_connection(host, port), timeout)
        self.task = asyncio.ensure_future(self._read())

    async def _read(self) -> None:
        try:
            while True:
                head = await self.reader.readexactly(4)
                (n,) = struct.unpack(">i", head)
                body = await self.reader.readexactly(n)
                (cid,) = struct.unpack_from(">i", body, 0)
                entry = self.pending.pop(cid, None)
                if entry is None:
                    continue
                fut, response_class, version = entry
                if not fut.done():
                    try:
                        fut.set_result(response_class.decode(head + body, version=version, header=True, framed=True))
                    except Exception as e:  # an answer we cannot read: the connection is useless
                        fut.set_exception(ConnectionError(f"undecodable response: {e!r}"))
                        break
        except (asyncio.IncompleteReadError, ConnectionError, OSError):
            pass
        finally:
            self.close()

    async def request(self, request, timeout: float):
        if self.closed:
            raise ConnectionError("connection closed")
        cid = self.next_id
        self.next_id += 1
        version = VERSIONS[type(request)]
        request.with_header(correlation_id=cid, client_id=self.client_id)
        fut = asyncio.get_running_loop().create_future()
        self.pending[cid] = (fut, RESPONSES[type(request)], version)
        self.writer.write(bytes(request.encode(version=version, header=True, framed=True)))
        try:
            return await asyncio.wait_for(fut, timeout)
        finally:
            self.pending.pop(cid, None)

    def close(self) -> None:
        if self.closed:
            return
        self.closed = True
        if self.writer is not None:
            self.writer.close()
        for fut, _, _ in self.pending.values():
            if not fut.done():
                fut.set_exception(ConnectionError("connection closed"))
        self.pending.clear()


class SimKafkaClient:
    name = "sim-kafka-python"

    def __init__(self, bootstrap: list[tuple[str, int]], client_id: str, request_timeout: float = 5.0,
                 poll_timeout: float = 0.5, delivery_timeout: float | None = None):
        self.bootstrap = list(bootstrap)
        self.client_id = client_id
        self.request_timeout = request_timeout
        self.poll_timeout = poll_timeout
        self.delivery_timeout = delivery_timeout or 2 * request_timeout
        self.conns: dict[tuple, Connection] = {}
        self.brokers: dict[int, tuple[str, int]] = {}
        self.leaders: dict[tuple[str, int], int] = {}
        self.producer_id = -1
        self.producer_epoch = -1
        self.sequences: dict[tuple[str, int], int] = {}
        self.positions: dict[str, int | None] = {}
        self.highwater: dict[str, int] = {}
        self.assigned: list[str] = []
        self.rotation = 0

    # -- connections -----------------------------------------------------------
    async def _conn(self, address) -> Connection:
        c = self.conns.get(address)
        if c is not None and not c.closed:
            return c
        c = Connection(self.client_id)
        await c.open(address[0], address[1], self.request_timeout)
        self.conns[address] = c
        return c

    async def _call(self, address, request, timeout: float | None = None):
        c = await self._conn(address)
        try:
            return await c.request(request, timeout or self.request_timeout)
        except asyncio.TimeoutError:
            c.close()   # kafka-python closes a connection whose request timed out
            raise

    async def _any(self, request):
        """Send to the bootstrap brokers in turn until one answers."""
        last = None
        n = len(self.bootstrap)
        for i in range(n):
            address = self.bootstrap[(self.rotation + i) % n]
            try:
                return await self._call(address, request)
            except (ConnectionError, OSError, asyncio.TimeoutError) as e:
                last = e
        self.rotation += 1
        raise ConnectionError(f"no broker answered: {last!r}")

    def close(self) -> None:
        for c in self.conns.values():
            c.close()
        self.conns = {}

    # -- metadata ----------------------------------------------------------------
    async def refresh(self, topics: list[str]) -> None:
        T = MetadataRequest.MetadataRequestTopic
        r = await self._any(MetadataRequest(topics=[T(name=t) for t in sorted(set(topics))],
                                            allow_auto_topic_creation=False))
        for b in r.brokers:
            self.brokers[b.node_id] = (b.host, b.port)
        for t in r.topics:
            for p in t.partitions:
                if p.error_code == 0 and p.leader_id >= 0:
                    self.leaders[(t.name, p.partition_index)] = p.leader_id
                else:
                    self.leaders.pop((t.name, p.partition_index), None)

    async def _leader(self, tp) -> tuple[str, int] | None:
        node = self.leaders.get(tp)
        if node is None or node not in self.brokers:
            try:
                await self.refresh([tp[0]])
            except (ConnectionError, OSError, asyncio.TimeoutError):
                return None
            node = self.leaders.get(tp)
        return self.brokers.get(node) if node is not None else None

    async def create_topics(self, topics: list[str]) -> None:
        T = CreateTopicsRequest.CreatableTopic
        r = await self._any(CreateTopicsRequest(
            topics=[T(name=t, num_partitions=PARTITIONS_PER_TOPIC, replication_factor=1, assignments=[], configs=[])
                    for t in topics], timeout_ms=int(self.request_timeout * 1000), validate_only=False))
        bad = [(t.name, t.error_code) for t in r.topics if t.error_code not in (0, E.TOPIC_ALREADY_EXISTS)]
        if bad:
            raise ConnectionError(f"create topics: {bad}")

    # -- producing -----------------------------------------------------------------
    async def _init_producer(self) -> None:
        r = await self._any(InitProducerIdRequest(transactional_id=None, transaction_timeout_ms=-1))
        if r.error_code != 0:
            raise ConnectionError(f"InitProducerId: error {r.error_code}")
        self.producer_id, self.producer_epoch = r.producer_id, r.producer_epoch

    async def send(self, mops: list) -> tuple[str, list]:
        """One or more sends, one after the other; returns (type, completed micro-ops)."""
        loop = asyncio.get_running_loop()
        if self.producer_id < 0:
            try:
                await self._init_producer()
            except (ConnectionError, OSError, asyncio.TimeoutError):
                # nothing left the client: certainly not written
                return "fail", [["send", k, [None, v]] for _, k, v in mops]
        done = []
        for _, key, value in mops:
            tp = key_topic_partition(key)
            seq = self.sequences.get(tp, 0)
            self.sequences[tp] = seq + 1
            builder = MemoryRecordsBuilder(magic=2, compression_type=0, batch_size=1 << 16,
                                           producer_id=self.producer_id, producer_epoch=self.producer_epoch,
                                           base_sequence=seq)
            builder.append(int(loop.time() * 1000), None, str(value).encode())
            builder.close()
            data = bytes(builder.buffer())
            deadline = loop.time() + self.delivery_timeout
            offset = await self._send_batch(tp, data, deadline, key, value)
            done.append(["send", key, [offset, value]])
        return "ok", done

    async def _send_batch(self, tp, data: bytes, deadline: float, key, value):
        loop = asyncio.get_running_loop()
        P = ProduceRequest.TopicProduceData
        last = None
        backoff = 0.1
        while True:
            if loop.time() >= deadline:
                raise ClientCrashed(f"send {key}={value}: delivery timeout ({last})")
            address = await self._leader(tp)
            if address is not None:
                request = ProduceRequest(transactional_id=None, acks=-1,
                                         timeout_ms=int(self.request_timeout * 1000), topic_data=[
                                             P(name=tp[0], partition_data=[P.PartitionProduceData(
                                                 index=tp[1], records=data)])])
                try:
                    r = await self._call(address, request, min(self.request_timeout,
                                                               max(0.001, deadline - loop.time())))
                    p = r.responses[0].partition_responses[0]
                    code = p.error_code
                    if code == 0:
                        return p.base_offset if p.base_offset >= 0 else None
                    if code == E.DUPLICATE_SEQUENCE_NUMBER:
                        return None
                    if code not in RETRIABLE:
                        raise ClientCrashed(f"send {key}={value}: error {code}")
                    last = f"error {code}"
                    self.leaders.pop(tp, None)
                except (ConnectionError, OSError, asyncio.TimeoutError) as e:
                    last = repr(e)
                    self.leaders.pop(tp, None)
            else:
                last = "no leader"
            # retry.backoff.ms, growing to retry.backoff.max.ms (the Java client's, since 3.7)
            await asyncio.sleep(backoff)
            backoff = min(1.0, backoff * 2)

    # -- consuming -------------------------------------------------------------------
    def assign(self, keys: list[str], seek_to_beginning: bool = False) -> None:
        self.assigned = list(keys)
        self.positions = {k: (None if seek_to_beginning else self.positions.get(k)) for k in keys}

    async def _reset(self, keys: list[str]) -> None:
        """Unknown positions: the earliest offset (auto_offset_reset=earliest)."""
        by_leader: dict = {}
        for k in keys:
            address = await self._leader(key_topic_partition(k))
            if address is not None:
                by_leader.setdefault(address, []).append(k)
        L = ListOffsetsRequest.ListOffsetsTopic
        for address, ks in by_leader.items():
            topics: dict = {}
            for k in ks:
                t, p = key_topic_partition(k)
                topics.setdefault(t, []).append(L.ListOffsetsPartition(partition_index=p, current_leader_epoch=-1,
                                                                       timestamp=-2))
            try:
                r = await self._call(address, ListOffsetsRequest(replica_id=-1, isolation_level=0, topics=[
                    L(name=t, partitions=ps) for t, ps in topics.items()]))
            except (ConnectionError, OSError, asyncio.TimeoutError):
                continue
            for t in r.topics:
                for p in t.partitions:
                    k = topic_partition_key(t.name, p.partition_index)
                    if p.error_code == 0:
                        self.positions[k] = p.offset
                    else:
                        self.leaders.pop((t.name, p.partition_index), None)

    async def poll(self) -> tuple[str, list]:
        unknown = [k for k in self.assigned if self.positions.get(k) is None]
        if unknown:
            await self._reset(unknown)
        by_leader: dict = {}
        for k in self.assigned:
            if self.positions.get(k) is None:
                continue
            address = await self._leader(key_topic_partition(k))
            if address is not None:
                by_leader.setdefault(address, []).append(k)
        seen: dict[str, list] = {}
        F = FetchRequest.FetchTopic
        wait_ms = int(min(0.5, self.poll_timeout) * 1000)

        async def fetch(address, ks):
            topics: dict = {}
            for k in ks:
                t, p = key_topic_partition(k)
                topics.setdefault(t, []).append(F.FetchPartition(
                    partition=p, current_leader_epoch=-1, fetch_offset=self.positions[k], log_start_offset=-1,
                    partition_max_bytes=1 << 20))
            request = FetchRequest(replica_id=-1, max_wait_ms=wait_ms, min_bytes=1, max_bytes=4 << 20,
                                   isolation_level=0, session_id=0, session_epoch=-1,
                                   topics=[F(topic=t, partitions=ps) for t, ps in topics.items()],
                                   forgotten_topics_data=[], rack_id="")
            try:
                return await self._call(address, request, self.request_timeout + wait_ms / 1000)
            except (ConnectionError, OSError, asyncio.TimeoutError):
                return None

        # one fetch per leader, all at once (as kafka-python's fetcher sends them)
        answers = await asyncio.gather(*(fetch(a, ks) for a, ks in by_leader.items()))
        for r in answers:
            if r is None:
                continue
            for t in r.responses:
                for p in t.partitions:
                    k = topic_partition_key(t.topic, p.partition_index)
                    if k not in self.positions or self.positions[k] is None:
                        continue
                    if p.error_code == E.OFFSET_OUT_OF_RANGE:
                        self.positions[k] = None
                        continue
                    if p.error_code != 0:
                        self.leaders.pop((t.topic, p.partition_index), None)
                        continue
                    self.highwater[k] = p.high_watermark
                    pos = self.positions[k]
                    got = []
                    records = MemoryRecords(bytes(p.records)) if p.records else None
                    while records is not None and records.has_next():
                        batch = records.next_batch()
                        if batch is None:
                            break
                        for rec in batch:
                            if rec.offset >= pos:
                                got.append([rec.offset, int(rec.value)])
                                pos = rec.offset + 1
                    if got:
                        seen.setdefault(k, []).extend(got)
                        self.positions[k] = pos
        return "ok", [["poll", seen]]

    def read_to_end(self, keys: list[str]) -> list[str]:
        return [k for k in keys if self.positions.get(k) is not None and k in self.highwater
                and self.positions[k] == self.highwater[k]]
