"""Helpers for tests and benchmarks of the storage engine: record batches as
a Kafka client builds them (kafka-python's builder), and batch inspection."""
from __future__ import annotations

import errno
import os

from kafka.record.default_records import DefaultRecordBatchBuilder

from reference.batch import iter_batches


def make_batch(values, producer_id: int = -1, producer_epoch: int = -1, base_sequence: int = -1,
               timestamp: int = 1_700_000_000_000, compression: int = 0) -> bytes:
    """One magic-v2 batch holding `values` (ints or bytes), optionally with
    idempotent producer fields."""
    b = DefaultRecordBatchBuilder(2, compression, False, producer_id, producer_epoch, base_sequence, 1 << 30)
    for i, v in enumerate(values):
        value = v if isinstance(v, (bytes, bytearray)) else str(v).encode()
        b.append(i, timestamp + i, None, value, [])
    return bytes(b.build())


def batch_offsets(data: bytes) -> list[tuple[int, int]]:
    """(base offset, record count) of each batch in fetched bytes."""
    return [(h.base_offset, h.last_offset_delta + 1) for h, _ in iter_batches(data)]


def batch_values(data: bytes) -> list[tuple[int, bytes]]:
    """(offset, value) of every record in fetched bytes."""
    from kafka.record.default_records import DefaultRecordBatch
    out = []
    for h, raw in iter_batches(data):
        for rec in DefaultRecordBatch(bytes(raw)):
            out.append((rec.offset, rec.value))
    return out


def pread_failing_at(real_pread, bad: int, length: int):
    """A pread that raises EIO for any read touching [bad, bad + length) of
    the file (a bad sector) and reads through `real_pread` elsewhere."""
    def pread(fd, n, pos):
        if pos < bad + length and bad < pos + n:
            raise OSError(errno.EIO, os.strerror(errno.EIO))
        return real_pread(fd, n, pos)
    return pread
