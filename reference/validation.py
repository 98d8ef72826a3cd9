"""Record validation, as Kafka's LogValidator does it, before a batch is
stored and again whenever a stored batch is read back (WAL replay, S3).

A batch whose CRC is right can still be broken inside: a record length that
lies, fewer records than the batch claims, bytes after the last record, a
compressed payload that does not decompress or decompresses into broken
records. Kafka refuses those (`LogValidator`, `DefaultRecord.readFrom`,
`ProduceRequest.validateRecords`); a broker that stores one leaves every
consumer of the partition stuck at it for good. So every record is read here,
exactly as a consumer will read it, before anything is appended.

The answers follow Kafka's:

- CORRUPT_MESSAGE (2): the batch itself is damaged: a length field that
  does not match the bytes, a CRC mismatch, a compressed payload that does not
  decompress, an unknown compression codec;
- INVALID_RECORD (87): the batch is whole but breaks the rules: not exactly
  one batch, not magic v2, a record count or offset deltas that do not
  match, a record whose fields run past it or leave bytes over, bytes after
  the last record, a control or transactional batch, a producer id without a
  sequence;
- MESSAGE_TOO_LARGE (10): a compressed batch decompressing to more than
  `max_decompressed` bytes (Kafka streams records and has no such bound; we
  read a batch whole, so we need one; a Java producer splits its batch and
  retries on this answer).

Two checks are stricter than Kafka's, because stored bytes must stay
readable by kafka-python and librdkafka, not only by Java: a varint
must fit the width Kafka reads it with (int32, or int64 for the timestamp
delta) instead of silently wrapping, header keys must be valid UTF-8
(kafka-python decodes them), a record's attributes byte must be below 0x80
(kafka-python reads it as a varint), and a key or value length below -1
is refused rather than read as null. Timestamps are not bounded
(`message.timestamp.*.max.ms` default to unbounded in Kafka 3).

Pure functions over bytes; the codecs are the ones kafka-python uses
(gzip from the standard library, python-snappy, lz4, zstandard), fed in
bounded steps so a decompression bomb costs at most `max_decompressed`.
"""
from __future__ import annotations

import asyncio
import mmap
import struct
import zlib
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

from crc32c import crc32c

from reference import errors
from reference.batch import (ATTRIBUTES_OFFSET, CONTROL_FLAG, HEADER, HEADER_SIZE, LENGTH_PREFIX, NO_PRODUCER_ID,
                             TRANSACTIONAL_FLAG, BatchHeader)
from reference.errors import KafkaError

MAX_DECOMPRESSED = 64 << 20
COMPRESSION_MASK = 0x07
NONE, GZIP, SNAPPY, LZ4, ZSTD = range(5)
CODEC_NAMES = {NONE: "none", GZIP: "gzip", SNAPPY: "snappy", LZ4: "lz4", ZSTD: "zstd"}
MIN_RECORD = 7  # length, attributes, timestamp delta, offset delta, key, value, header count: 1 byte each
INT32_MIN, INT32_MAX = -(1 << 31), (1 << 31) - 1
INT64_MIN, INT64_MAX = -(1 << 63), (1 << 63) - 1
_XERIAL_MAGIC = b"\x82SNAPPY\x00"


class InvalidBatch(KafkaError):
    """A batch Kafka would refuse: `code` is the answer, `record_index` the
    offending record's index in the batch when there is one (Produce v8's
    record_errors)."""

    def __init__(self, code: int, message: str, record_index: int | None = None):
        super().__init__(code, message)
        self.record_index = record_index


@dataclass(frozen=True, slots=True)
class ValidBatch:
    """One batch that passed `validate_batch`: its header and its bytes."""
    header: BatchHeader
    data: bytes

    @property
    def compression(self) -> int:
        return self.header.attributes & COMPRESSION_MASK


def _corrupt(message: str) -> InvalidBatch:
    return InvalidBatch(errors.CORRUPT_MESSAGE, message)


def _invalid(message: str, record_index: int | None = None) -> InvalidBatch:
    return InvalidBatch(errors.INVALID_RECORD, message, record_index)


def validate_batch(records: bytes | bytearray | memoryview, max_decompressed: int = MAX_DECOMPRESSED) -> ValidBatch:
    """The records of one partition in a Produce request (or one stored
    batch): exactly one well-formed magic-v2 batch, every record readable.
    Raises InvalidBatch."""
    data = bytes(records)
    if len(data) < LENGTH_PREFIX:
        raise _invalid("a partition's records must hold exactly one record batch, got "
                       f"{len(data)} bytes" if data else "no record batch")
    (length,) = struct.unpack_from(">i", data, 8)
    if length < HEADER_SIZE - LENGTH_PREFIX:
        raise _corrupt(f"batch length {length} is shorter than a batch header")
    size = LENGTH_PREFIX + length
    if size > len(data):
        raise _corrupt(f"batch claims {size} bytes, only {len(data)} present")
    header = BatchHeader(*HEADER.unpack_from(data, 0))
    if header.magic != 2:
        raise _invalid(f"record batch magic {header.magic}: only magic v2 is accepted")
    if crc32c(memoryview(data)[ATTRIBUTES_OFFSET:size]) != header.crc:
        raise _corrupt("batch CRC mismatch")
    if size != len(data):
        raise _invalid(f"{len(data) - size} bytes after the record batch: Produce v3+ carries exactly one "
                       "record batch per partition")
    _check_header(header)
    payload = memoryview(data)[HEADER_SIZE:]
    codec = header.attributes & COMPRESSION_MASK
    if codec != NONE:
        payload = memoryview(decompress(codec, payload, max_decompressed))
    check_records(payload, header)
    return ValidBatch(header, data)


_decompressing: ThreadPoolExecutor | None = None


async def validate_off_loop(batch: bytes | ValidBatch, max_decompressed: int = MAX_DECOMPRESSED) -> ValidBatch:
    """validate_batch, with a compressed batch decompressed in a worker
    thread (the codecs release the GIL): a batch that inflates to the limit
    takes a tenth of a second, which the event loop should not wait out.
    One thread: at most one decompressed batch in memory at a time."""
    global _decompressing
    if isinstance(batch, ValidBatch):
        return batch
    if len(batch) > ATTRIBUTES_OFFSET + 1 and batch[ATTRIBUTES_OFFSET + 1] & COMPRESSION_MASK:
        if _decompressing is None:
            _decompressing = ThreadPoolExecutor(1, thread_name_prefix="decompress")
        return await asyncio.get_running_loop().run_in_executor(_decompressing, validate_batch, batch,
                                                                max_decompressed)
    return validate_batch(batch, max_decompressed)


def _check_header(h: BatchHeader) -> None:
    if h.attributes & CONTROL_FLAG:
        raise _invalid("clients may not write control batches")
    if h.attributes & TRANSACTIONAL_FLAG:
        raise _invalid("transactional batches are not supported by this broker")
    if h.attributes & COMPRESSION_MASK not in CODEC_NAMES:
        raise _corrupt(f"unknown compression codec {h.attributes & COMPRESSION_MASK}")
    if h.record_count <= 0:
        raise _invalid(f"record count {h.record_count}: a batch holds at least one record")
    if h.last_offset_delta < 0 or h.record_count != h.last_offset_delta + 1:
        raise _invalid(f"{h.record_count} records but last offset delta {h.last_offset_delta}: "
                       "offsets in a produced batch are dense")
    if h.producer_id > NO_PRODUCER_ID and h.base_sequence < 0:
        raise _invalid(f"producer id {h.producer_id} with sequence {h.base_sequence}")
    if h.producer_id < NO_PRODUCER_ID:
        raise _invalid(f"producer id {h.producer_id}")


# --------------------------------------------------------------------------
# records
# --------------------------------------------------------------------------

class _Truncated(Exception):
    pass


def _varint(buf, pos: int, end: int, long: bool = False) -> tuple[int, int]:
    """A zigzag varint of Kafka's width (int32, or int64 for `long`) ending
    at or before `end`. Raises _Truncated, or ValueError if it does not fit."""
    limit = 10 if long else 5
    raw = shift = 0
    for i in range(limit):
        if pos >= end:
            raise _Truncated()
        b = buf[pos]
        pos += 1
        raw |= (b & 0x7F) << shift
        if not b & 0x80:
            value = (raw >> 1) ^ -(raw & 1)
            lo, hi = (INT64_MIN, INT64_MAX) if long else (INT32_MIN, INT32_MAX)
            if raw >> (64 if long else 32) or not lo <= value <= hi:
                raise ValueError(f"varint out of {'int64' if long else 'int32'} range")
            return value, pos
        shift += 7
    raise ValueError(f"varint longer than {limit} bytes")


def check_records(buf: memoryview, header: BatchHeader) -> None:
    """Read every record as Kafka's DefaultRecord.readFrom does: `count`
    records filling `buf` exactly. Raises InvalidBatch."""
    count = header.record_count
    end = len(buf)
    if count > end // MIN_RECORD:
        raise _invalid(f"batch claims {count} records, its {end} bytes hold at most {end // MIN_RECORD}")
    pos = 0
    for index in range(count):
        try:
            pos = _check_record(buf, pos, end, index, header.first_timestamp)
        except _Truncated:
            raise _invalid(f"record {index} of {count} runs past the end of the batch", index) from None
        except ValueError as e:
            raise _invalid(f"record {index}: {e}", index) from None
    if pos != end:
        raise _invalid(f"{end - pos} bytes after the last of {count} records", count - 1)


def _check_record(buf, pos: int, end: int, index: int, first_timestamp: int) -> int:
    length, pos = _varint(buf, pos, end)
    if length < MIN_RECORD - 1 or pos + length > end:
        raise ValueError(f"record length {length} does not fit the {end - pos} bytes left")
    start, rec_end = pos, pos + length
    if buf[pos] & 0x80:
        raise ValueError(f"record attributes {buf[pos]:#x} (unused by Kafka; must be below 0x80)")
    pos += 1
    delta, pos = _varint(buf, pos, rec_end, long=True)
    if not INT64_MIN <= first_timestamp + delta <= INT64_MAX:
        raise ValueError(f"timestamp delta {delta} overflows the batch's first timestamp")
    offset_delta, pos = _varint(buf, pos, rec_end)
    if offset_delta != index:
        raise ValueError(f"offset delta {offset_delta}, expected {index}")
    for what in ("key", "value"):
        n, pos = _varint(buf, pos, rec_end)
        if n < -1 or pos + max(n, 0) > rec_end:
            raise ValueError(f"{what} length {n} does not fit the record")
        pos += max(n, 0)
    headers, pos = _varint(buf, pos, rec_end)
    if headers < 0 or headers > rec_end - pos:
        raise ValueError(f"{headers} headers do not fit the record")
    for h in range(headers):
        n, pos = _varint(buf, pos, rec_end)
        if n < 0 or pos + n > rec_end:
            raise ValueError(f"header {h} key length {n} does not fit the record")
        try:
            bytes(buf[pos:pos + n]).decode("utf-8")
        except UnicodeDecodeError:
            raise ValueError(f"header {h} key is not UTF-8") from None
        pos += n
        n, pos = _varint(buf, pos, rec_end)
        if n < -1 or pos + max(n, 0) > rec_end:
            raise ValueError(f"header {h} value length {n} does not fit the record")
        pos += max(n, 0)
    if pos != rec_end:
        raise ValueError(f"record length {length}, but its fields take {pos - start} bytes")
    return pos


# --------------------------------------------------------------------------
# bounded decompression
# --------------------------------------------------------------------------

class _TooLarge(Exception):
    pass


_STEP = 1 << 20  # decompressed bytes per step: no step makes a big temporary copy


class _Output:
    """Where a batch decompresses to: an anonymous mapping of `limit` bytes,
    touched only as far as it is written and unmapped when dropped. (A heap
    buffer grown to tens of MiB leaves the allocator's arenas that high for
    good: bombs made the broker's memory creep up by ~80 MiB over a
    million frames.)"""

    def __init__(self, limit: int):
        self.limit = limit
        self.buf = mmap.mmap(-1, max(limit, 1))
        self.n = 0

    def __len__(self) -> int:
        return self.n

    def __iadd__(self, piece: bytes):
        if self.n + len(piece) > self.limit:
            raise _TooLarge()
        self.buf[self.n:self.n + len(piece)] = piece
        self.n += len(piece)
        return self

    def view(self) -> memoryview:
        return memoryview(self.buf)[:self.n]


def decompress(codec: int, payload: memoryview, limit: int = MAX_DECOMPRESSED) -> bytes | memoryview:
    """The payload of a compressed batch, decompressed as kafka-python does
    (whole, nothing left over), but never more than `limit` bytes of it.
    Raises InvalidBatch: CORRUPT_MESSAGE if it does not decompress,
    MESSAGE_TOO_LARGE past the limit."""
    name = CODEC_NAMES[codec]
    try:
        if codec == GZIP:
            return _gunzip(payload, limit)
        if codec == SNAPPY:
            return _unsnappy(bytes(payload), limit)
        if codec == LZ4:
            return _unlz4(bytes(payload), limit)
        return _unzstd(bytes(payload), limit)
    except _TooLarge:
        raise InvalidBatch(errors.MESSAGE_TOO_LARGE,
                           f"{name} batch decompresses to more than {limit} bytes") from None
    except InvalidBatch:
        raise
    except Exception as e:  # each codec has its own error types
        raise _corrupt(f"{name} payload does not decompress: {e}") from None


def _gunzip(payload, limit: int) -> memoryview:
    """Every gzip member, as GzipFile reads them; nothing but members."""
    out = _Output(limit)
    data = bytes(payload)
    if not data:
        raise ValueError("empty payload")
    while data:
        d = zlib.decompressobj(16 + zlib.MAX_WBITS)
        while not d.eof:
            piece = d.decompress(data, min(_STEP, limit + 1 - len(out)))
            out += piece
            if len(out) > limit:
                raise _TooLarge()
            data = d.unconsumed_tail
            if not data and not piece and not d.eof:
                raise ValueError("gzip stream ends early")
        data = d.unused_data
    return out.view()


def _raw_snappy_length(block: bytes) -> int:
    n = shift = 0
    for i, b in enumerate(block[:5]):
        n |= (b & 0x7F) << shift
        if not b & 0x80:
            return n
        shift += 7
    raise ValueError("bad snappy length preamble")


def _unsnappy(payload: bytes, limit: int) -> bytes | memoryview:
    import snappy
    if len(payload) > 16 and payload[:8] == _XERIAL_MAGIC:  # xerial's framing, as the Java client sends it
        out, pos = _Output(limit), 16
        while pos < len(payload):
            if pos + 4 > len(payload):
                raise ValueError("truncated xerial block size")
            (size,) = struct.unpack_from(">i", payload, pos)
            pos += 4
            if size < 0 or pos + size > len(payload):
                raise ValueError(f"xerial block of {size} bytes does not fit")
            block = payload[pos:pos + size]
            if len(out) + _raw_snappy_length(block) > limit:
                raise _TooLarge()
            out += snappy.decompress(block)
            pos += size
        return out.view()
    if _raw_snappy_length(payload) > limit:
        raise _TooLarge()
    return snappy.decompress(payload)


def _unlz4(payload: bytes, limit: int) -> memoryview:
    import lz4.frame
    d = lz4.frame.LZ4FrameDecompressor()
    out = _Output(limit)
    data = payload
    while not d.eof:
        piece = d.decompress(data, max_length=min(_STEP, limit + 1 - len(out)))
        out += piece
        if len(out) > limit:
            raise _TooLarge()
        data = b""
        if d.needs_input and not d.eof:
            raise ValueError("lz4 frame ends early")
    if d.unused_data:
        raise ValueError(f"{len(d.unused_data)} bytes after the lz4 frame")
    return out.view()


def _unzstd(payload: bytes, limit: int) -> memoryview:
    """Every zstd frame (kafka-python reads across frames), fed a few bytes at
    a time: one zstd block (3 bytes of header + 1) can stand for 128 KiB, so
    each step feeds what cannot expand past a quarter of what is left of the
    limit."""
    import zstandard
    out = _Output(limit)
    data = payload
    if not data:
        raise ValueError("empty payload")
    dctx = zstandard.ZstdDecompressor()
    while data:
        d = dctx.decompressobj()
        pos = 0
        while not d.eof:
            if pos >= len(data):
                raise ValueError("zstd frame ends early")
            step = max(16, (limit + 1 - len(out)) >> 17)
            out += d.decompress(data[pos:pos + step])
            pos += step
            if len(out) > limit:
                raise _TooLarge()
        data = d.unused_data + data[pos:]
    return out.view()
