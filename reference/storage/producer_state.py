"""Idempotent-producer bookkeeping for one partition, as plain data.

Kafka keeps, per producer id and partition, the epoch and the last five
batches (first and last sequence, base offset). A retry that matches one of
them exactly is a duplicate: the broker answers with the original offset and
appends nothing. The table is part of the partition's durable state: it is
snapshotted with every upload commit and rebuilt by replaying the WAL, so
deduplication survives a broker restart or failover.
"""
from __future__ import annotations

from collections import deque
from dataclasses import dataclass, field

from reference import bugs, errors
from reference.batch import BatchHeader, increment_sequence

BATCHES_REMEMBERED = 5


@dataclass(frozen=True, slots=True)
class BatchRecord:
    first_sequence: int
    last_sequence: int
    base_offset: int
    last_offset_delta: int


@dataclass(slots=True)
class ProducerEntry:
    epoch: int
    batches: deque = field(default_factory=lambda: deque(maxlen=BATCHES_REMEMBERED))


@dataclass(frozen=True, slots=True)
class Append:
    """The batch is new: append it."""


@dataclass(frozen=True, slots=True)
class Duplicate:
    """An exact retry of a batch already in the log."""
    base_offset: int


@dataclass(frozen=True, slots=True)
class Reject:
    code: int
    reason: str


class ProducerStateTable:
    def __init__(self):
        self.producers: dict[int, ProducerEntry] = {}

    def decide(self, header: BatchHeader) -> Append | Duplicate | Reject:
        if not header.is_idempotent:
            return Append()
        entry = self.producers.get(header.producer_id)
        if entry is None:
            if header.base_sequence == 0:
                return Append()
            return Reject(errors.UNKNOWN_PRODUCER_ID,
                          f"producer {header.producer_id} unknown here and sequence {header.base_sequence} != 0")
        if header.producer_epoch < entry.epoch:
            return Reject(errors.INVALID_PRODUCER_EPOCH,
                          f"producer {header.producer_id} epoch {header.producer_epoch} < current {entry.epoch}")
        if header.producer_epoch > entry.epoch:
            if header.base_sequence == 0:
                return Append()
            return Reject(errors.OUT_OF_ORDER_SEQUENCE_NUMBER,
                          f"new epoch {header.producer_epoch} must start at sequence 0, got {header.base_sequence}")
        for batch in entry.batches:
            if batch.first_sequence == header.base_sequence and batch.last_sequence == header.last_sequence:
                if bugs.enabled("no-dedup"):  # planted bug: a retry is appended again
                    return Append()
                return Duplicate(batch.base_offset)
        if entry.batches:
            expected = increment_sequence(entry.batches[-1].last_sequence, 1)
            if header.base_sequence != expected:
                return Reject(errors.OUT_OF_ORDER_SEQUENCE_NUMBER,
                              f"producer {header.producer_id}: expected sequence {expected}, got {header.base_sequence}")
        return Append()

    def record(self, header: BatchHeader, base_offset: int) -> None:
        """Remember an appended batch (also used when replaying the WAL)."""
        if not header.is_idempotent:
            return
        entry = self.producers.get(header.producer_id)
        if entry is None or header.producer_epoch > entry.epoch:
            entry = self.producers[header.producer_id] = ProducerEntry(header.producer_epoch)
        entry.batches.append(BatchRecord(header.base_sequence, header.last_sequence,
                                         base_offset, header.last_offset_delta))

    def snapshot(self) -> dict:
        """JSON-ready form, stored with each committed upload."""
        return {str(pid): {"epoch": e.epoch,
                           "batches": [[b.first_sequence, b.last_sequence, b.base_offset, b.last_offset_delta]
                                       for b in e.batches]}
                for pid, e in self.producers.items()}

    @classmethod
    def from_snapshot(cls, data: dict) -> "ProducerStateTable":
        table = cls()
        for pid, e in data.items():
            entry = ProducerEntry(e["epoch"])
            entry.batches.extend(BatchRecord(*b) for b in e["batches"])
            table.producers[int(pid)] = entry
        return table
