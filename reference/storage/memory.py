"""The plain in-memory model of the storage interface: no WAL, no S3.

It is the oracle the real engine is checked against, and the storage the
protocol handlers are unit-tested on. Everything is lost when the process
ends, so it must never back a broker that claims durability.
"""
from __future__ import annotations

import asyncio
import bisect
import itertools

from reference import errors
from reference.batch import assign_offset, parse_header
from reference.errors import KafkaError
from reference.storage.api import AppendResult, StorageEngine, TopicInfo, Wakeup
from reference.storage.producer_state import Duplicate, ProducerStateTable, Reject
from reference.validation import validate_off_loop


class PartitionLog:
    def __init__(self):
        self.base_offsets: list[int] = []
        self.batches: list[bytes] = []
        self.max_timestamps: list[int] = []
        self.log_start_offset = 0
        self.high_watermark = 0
        self.producers = ProducerStateTable()

    def append(self, batch: bytes, leader_epoch: int) -> AppendResult:
        header = parse_header(batch)  # validated by the caller
        decision = self.producers.decide(header)
        if isinstance(decision, Reject):
            raise KafkaError(decision.code, decision.reason)
        if isinstance(decision, Duplicate):
            return AppendResult(decision.base_offset, self.log_start_offset, duplicate=True)
        base = self.high_watermark
        self.base_offsets.append(base)
        self.batches.append(assign_offset(batch, base, leader_epoch))
        self.max_timestamps.append(header.max_timestamp)
        self.high_watermark = base + header.last_offset_delta + 1
        self.producers.record(header, base)
        return AppendResult(base, self.log_start_offset)

    def read(self, offset: int, max_bytes: int) -> bytes:
        if not self.log_start_offset <= offset <= self.high_watermark:
            raise KafkaError(errors.OFFSET_OUT_OF_RANGE,
                             f"offset {offset} outside [{self.log_start_offset}, {self.high_watermark}]")
        if offset == self.high_watermark:
            return b""
        i = max(bisect.bisect_right(self.base_offsets, offset) - 1, 0)
        out, size = [], 0
        for batch in itertools.islice(self.batches, i, None):
            if out and size + len(batch) > max_bytes:
                break
            out.append(batch)
            size += len(batch)
        return b"".join(out)


class MemoryEngine(StorageEngine):
    def __init__(self, node_id: int = 0):
        self.node_id = node_id
        self.topics: dict[str, TopicInfo] = {}
        self.partitions: dict[tuple[str, int], PartitionLog] = {}
        self.groups: dict[str, dict] = {}
        self._next_producer_id = 1000
        self._appended = Wakeup()

    def list_topics(self):
        return dict(self.topics)

    async def create_topic(self, name, partitions, configs=None):
        if name in self.topics:
            raise KafkaError(errors.TOPIC_ALREADY_EXISTS, f"topic {name} exists")
        info = self.topics[name] = TopicInfo(name, partitions, dict(configs or {}))
        for p in range(partitions):
            self.partitions[(name, p)] = PartitionLog()
        return info

    async def delete_topic(self, name):
        info = self.topics.pop(name, None)
        if info is None:
            raise KafkaError(errors.UNKNOWN_TOPIC_OR_PARTITION, f"no topic {name}")
        for p in range(info.partitions):
            del self.partitions[(name, p)]

    async def allocate_producer_id(self):
        self._next_producer_id += 1
        return self._next_producer_id

    def _log(self, topic, partition) -> PartitionLog:
        try:
            return self.partitions[(topic, partition)]
        except KeyError:
            raise KafkaError(errors.UNKNOWN_TOPIC_OR_PARTITION, f"no partition {topic}-{partition}") from None

    async def queue_append(self, topic, partition, batch, leader_epoch=0):
        self._log(topic, partition)
        valid = await validate_off_loop(batch)
        result = self._log(topic, partition).append(valid.data, leader_epoch)  # in memory: durable at once
        self._appended.notify()
        done = asyncio.get_running_loop().create_future()
        done.set_result(result)
        return done

    async def read(self, topic, partition, offset, max_bytes):
        return self._log(topic, partition).read(offset, max_bytes)

    def offsets(self, topic, partition):
        log = self._log(topic, partition)
        return log.log_start_offset, log.high_watermark

    async def offset_for_timestamp(self, topic, partition, timestamp):
        log = self._log(topic, partition)
        for base, ts in zip(log.base_offsets, log.max_timestamps):
            if ts >= timestamp:
                return base, ts
        return -1, -1

    async def wait_for_append(self, timeout):
        await self._appended.wait(timeout)

    async def commit_group_offsets(self, group, offsets):
        self.groups.setdefault(group, {}).update(offsets)

    def group_offsets(self, group):
        return dict(self.groups.get(group, {}))
