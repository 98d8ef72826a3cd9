"""Record batches (magic v2) as the broker sees them: a header it reads and
patches, and a body it stores byte for byte.

The broker never re-encodes records. It validates the batch and every record
in it (`reference.validation`, CRC32C included, which covers the attributes
field to the end), then overwrites the two fields that lie *before* the
CRC-covered bytes: the base offset it assigns and the partition leader epoch.
Compressed batches are therefore stored exactly as the client sent them.
"""
from __future__ import annotations

import struct
from dataclasses import dataclass

# BaseOffset, Length, PartitionLeaderEpoch, Magic, CRC, Attributes,
# LastOffsetDelta, FirstTimestamp, MaxTimestamp, ProducerId, ProducerEpoch,
# BaseSequence, RecordCount: Kafka's RecordBatch header.
HEADER = struct.Struct(">qiibIhiqqqhii")
HEADER_SIZE = HEADER.size  # 61
LENGTH_PREFIX = 12  # base offset (8) + length (4): bytes not counted in Length
CRC_OFFSET = 17
ATTRIBUTES_OFFSET = 21
LEADER_EPOCH_OFFSET = 12
TRANSACTIONAL_FLAG = 0x10
CONTROL_FLAG = 0x20
NO_PRODUCER_ID = -1
NO_SEQUENCE = -1
MAX_SEQUENCE = 2**31 - 1


class CorruptBatch(ValueError):
    """The bytes are not a well-formed magic-v2 record batch."""


@dataclass(frozen=True, slots=True)
class BatchHeader:
    base_offset: int
    length: int
    leader_epoch: int
    magic: int
    crc: int
    attributes: int
    last_offset_delta: int
    first_timestamp: int
    max_timestamp: int
    producer_id: int
    producer_epoch: int
    base_sequence: int
    record_count: int

    @property
    def size(self) -> int:
        return self.length + LENGTH_PREFIX

    @property
    def is_idempotent(self) -> bool:
        return self.producer_id != NO_PRODUCER_ID and self.base_sequence != NO_SEQUENCE

    @property
    def is_transactional(self) -> bool:
        return bool(self.attributes & TRANSACTIONAL_FLAG)

    @property
    def is_control(self) -> bool:
        return bool(self.attributes & CONTROL_FLAG)

    @property
    def last_sequence(self) -> int:
        return increment_sequence(self.base_sequence, self.last_offset_delta)


def increment_sequence(sequence: int, delta: int) -> int:
    """Producer sequences wrap from 2**31-1 to 0, as in Kafka."""
    return (sequence + delta) % (MAX_SEQUENCE + 1)


def parse_header(buf: bytes | memoryview, pos: int = 0) -> BatchHeader:
    if len(buf) - pos < HEADER_SIZE:
        raise CorruptBatch(f"batch header needs {HEADER_SIZE} bytes, got {len(buf) - pos}")
    header = BatchHeader(*HEADER.unpack_from(buf, pos))
    if header.magic != 2:
        raise CorruptBatch(f"unsupported record batch magic {header.magic} (only v2)")
    if header.length < HEADER_SIZE - LENGTH_PREFIX:
        raise CorruptBatch(f"batch length {header.length} shorter than its header")
    if header.record_count < 0 or header.last_offset_delta < 0:
        raise CorruptBatch("negative record count or offset delta")
    return header


def assign_offset(batch: bytes, base_offset: int, leader_epoch: int) -> bytes:
    """Stamp the broker-assigned base offset and leader epoch; both precede
    the CRC-covered bytes, so the CRC stays valid."""
    out = bytearray(batch)
    struct.pack_into(">q", out, 0, base_offset)
    struct.pack_into(">i", out, LEADER_EPOCH_OFFSET, leader_epoch)
    return bytes(out)


def iter_batches(data: bytes | memoryview):
    """Yield (header, batch bytes) for stored, already-validated batches."""
    view = memoryview(data)
    pos = 0
    while pos + HEADER_SIZE <= len(view):
        header = parse_header(view, pos)
        yield header, view[pos:pos + header.size]
        pos += header.size


def first_record_at_or_after(batch: bytes | memoryview, timestamp: int) -> tuple[int, int] | None:
    """(offset, timestamp) of the first record in a stored batch whose
    timestamp is >= `timestamp` (ListOffsets by time, exact to the record as
    in Kafka, not just to the batch), or None. Decompresses as needed."""
    from kafka.record.default_records import DefaultRecordBatch
    for record in DefaultRecordBatch(bytes(batch)):
        if record.timestamp >= timestamp:
            return record.offset, record.timestamp
    return None
