"""What the Kafka front end asks of storage.

The protocol handlers see only this interface; the in-memory model
(`memory.py`) and the WAL + S3 engine (`engine.py`) both implement it, so
the handlers are tested without sockets or S3, and the engine is checked
against the model.

Offsets: every partition is a stream with `log_start_offset <= high_watermark`;
an append's future resolves only once the batch is durable (in the WAL), so an
ack is a promise the engine keeps across crashes.
"""
from __future__ import annotations

import abc
import asyncio
from dataclasses import dataclass, field

from reference import ids
from reference.validation import ValidBatch


@dataclass
class TopicInfo:
    name: str
    partitions: int
    configs: dict = field(default_factory=dict)
    topic_id: str = field(default_factory=lambda: str(ids.uuid4()))


@dataclass(frozen=True)
class AppendResult:
    base_offset: int
    log_start_offset: int
    duplicate: bool = False  # an idempotent retry: nothing was appended


@dataclass(frozen=True)
class CommittedOffset:
    offset: int
    metadata: str | None = None
    leader_epoch: int = -1


class Wakeup:
    """Wakes every waiter once per `notify()`: the next append for a
    long-polling fetch, or the next durable batch for an idempotent retry.
    (A fresh Event per round, so a waiter never sees a stale wake-up.)"""

    def __init__(self):
        self._event = asyncio.Event()

    def notify(self) -> None:
        event, self._event = self._event, asyncio.Event()
        event.set()

    async def wait(self, timeout: float | None = None) -> None:
        """Return after the next notify(), or silently after `timeout`."""
        try:
            await asyncio.wait_for(self._event.wait(), timeout)
        except asyncio.TimeoutError:
            pass


class StorageEngine(abc.ABC):
    node_id: int

    async def start(self) -> None:
        """Recover (replay the WAL, load metadata) and get ready to serve."""

    async def close(self) -> None:
        """Flush what is pending and release resources (not called on SIGKILL)."""

    # --- topics ---------------------------------------------------------
    @abc.abstractmethod
    def list_topics(self) -> dict[str, TopicInfo]: ...

    @abc.abstractmethod
    async def create_topic(self, name: str, partitions: int, configs: dict | None = None) -> TopicInfo:
        """Raises KafkaError(TOPIC_ALREADY_EXISTS)."""

    @abc.abstractmethod
    async def delete_topic(self, name: str) -> None:
        """Raises KafkaError(UNKNOWN_TOPIC_OR_PARTITION)."""

    # --- producers ------------------------------------------------------
    @abc.abstractmethod
    async def allocate_producer_id(self) -> int:
        """A producer id never handed out before, durable across restarts."""

    # --- partitions -----------------------------------------------------
    @abc.abstractmethod
    async def queue_append(self, topic: str, partition: int, batch: bytes | ValidBatch,
                           leader_epoch: int = 0) -> asyncio.Future:
        """Validate one record batch and queue it for its partition: the one
        way in for records.

        `batch` is a partition's records as a client sent them (or a
        ValidBatch already validated): exactly one magic-v2 batch, every
        record of which is read and checked (reference.validation) before
        anything is queued.

        When this returns, the batch's place in its partition is fixed: its
        offsets are assigned (or it is recognised as an exact retry of a batch
        already there), so a caller that must keep batches in order (a
        pipelining idempotent producer) may queue the next one at once, and
        both can share one group commit. It may wait first while the log
        cache is full (back-pressure); cancelled then, nothing is queued.

        Returns the batch's durability future: its result is the
        AppendResult once the batch is durable (an idempotent retry: the
        original's offset with duplicate=True, once the original is durable);
        it fails with KafkaError(KAFKA_STORAGE_ERROR) if the engine cannot
        make it durable. The append goes on whether or not anyone waits:
        a caller that stops waiting must still retrieve a failure.

        Raises at once, queueing nothing: KafkaError(CORRUPT_MESSAGE /
        INVALID_RECORD / MESSAGE_TOO_LARGE) for a batch Kafka would refuse,
        UNKNOWN_TOPIC_OR_PARTITION, OUT_OF_ORDER_SEQUENCE_NUMBER,
        INVALID_PRODUCER_EPOCH, UNKNOWN_PRODUCER_ID, KAFKA_STORAGE_ERROR."""

    async def append(self, topic: str, partition: int, batch: bytes | ValidBatch,
                     leader_epoch: int = 0) -> AppendResult:
        """queue_append, then wait until durable (tests and tools)."""
        return await (await self.queue_append(topic, partition, batch, leader_epoch))

    @abc.abstractmethod
    async def read(self, topic: str, partition: int, offset: int, max_bytes: int) -> bytes:
        """Whole stored batches, starting with the one that contains `offset`;
        at least one batch if any exists at or after `offset` (even past
        max_bytes), b'' at the high watermark. Raises
        KafkaError(OFFSET_OUT_OF_RANGE) outside [log_start_offset, high_watermark]."""

    @abc.abstractmethod
    def offsets(self, topic: str, partition: int) -> tuple[int, int]:
        """(log_start_offset, high_watermark). Raises KafkaError(UNKNOWN_TOPIC_OR_PARTITION)."""

    def stale_read_epoch(self, topic: str, partition: int) -> int | None:
        """The epoch of a partition this node no longer holds but still
        answers reads for (only ever with the planted stale-read bug), else None."""
        return None

    @abc.abstractmethod
    async def offset_for_timestamp(self, topic: str, partition: int, timestamp: int) -> tuple[int, int]:
        """(offset, timestamp) of the first batch with max_timestamp >= timestamp,
        or (-1, -1) if none."""

    @abc.abstractmethod
    async def wait_for_append(self, timeout: float) -> None:
        """Return after the next append anywhere on this node, or after timeout
        (a long-polling fetch re-checks its partitions after each wake-up)."""

    # --- consumer group offsets ------------------------------------------
    @abc.abstractmethod
    async def commit_group_offsets(self, group: str, offsets: dict[tuple[str, int], CommittedOffset]) -> None:
        """Durable before return."""

    @abc.abstractmethod
    def group_offsets(self, group: str) -> dict[tuple[str, int], CommittedOffset]: ...
