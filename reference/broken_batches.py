"""Record batches built field by field, and broken one way at a time: what a
hostile or buggy producer sends. Every batch here has a right CRC and a
length that matches its bytes, so only record validation
(`reference.validation`) can tell it is broken. For the tests and for
`benchmarks/bench_fuzz.py`.

    build(values, compression=GZIP)                 a good batch
    BROKEN["record-length-lies"](values, codec)     a broken one
    EXPECTED["record-length-lies"]                   Kafka's answer to it
"""
from __future__ import annotations

import random
import struct
from typing import Callable

from crc32c import crc32c

from reference import errors
from reference.batch import HEADER, LENGTH_PREFIX
from reference.validation import GZIP, LZ4, NONE, SNAPPY, ZSTD

CODECS = {"none": NONE, "gzip": GZIP, "snappy": SNAPPY, "lz4": LZ4, "zstd": ZSTD}
FIRST_TIMESTAMP = 1_700_000_000_000


def varint(n: int) -> bytes:
    """Kafka's zigzag varint (any width)."""
    z = (n << 1) ^ (n >> 63) if n < 0 else n << 1
    out = bytearray()
    while True:
        b, z = z & 0x7F, z >> 7
        out.append(b | (0x80 if z else 0))
        if not z:
            return bytes(out)


def _field(data: bytes | None) -> bytes:
    return varint(-1) if data is None else varint(len(data)) + data


def record(index: int, value: bytes | None, key: bytes | None = None, headers=(), *, attributes: int = 0,
           timestamp_delta: int | None = None, offset_delta: int | None = None, length_change: int = 0) -> bytes:
    """One record (DefaultRecord) as a client encodes it; the keyword
    arguments are the fields a broken one lies about."""
    body = (bytes([attributes]) + varint(index if timestamp_delta is None else timestamp_delta)
            + varint(index if offset_delta is None else offset_delta) + _field(key) + _field(value)
            + varint(len(headers)) + b"".join(_field(k) + _field(v) for k, v in headers))
    return varint(len(body) + length_change) + body


def compress(codec: int, data: bytes) -> bytes:
    from kafka import codec as kc
    if codec == NONE:
        return data
    return {GZIP: kc.gzip_encode, SNAPPY: kc.snappy_encode, LZ4: kc.lz4_encode, ZSTD: kc.zstd_encode}[codec](data)


def frame(payload: bytes, count: int, codec: int = NONE, *, last_offset_delta: int | None = None,
          producer_id: int = -1, producer_epoch: int = -1, base_sequence: int = -1,
          first_timestamp: int = FIRST_TIMESTAMP, attributes_extra: int = 0, magic: int = 2) -> bytes:
    """A batch header around an already encoded (and compressed) payload,
    with its length and CRC made to agree with the bytes."""
    lod = count - 1 if last_offset_delta is None else last_offset_delta
    length = HEADER.size - LENGTH_PREFIX + len(payload)
    head = bytearray(HEADER.pack(0, length, -1, magic, 0, codec | attributes_extra, lod, first_timestamp,
                                 first_timestamp + max(lod, 0), producer_id, producer_epoch, base_sequence, count))
    out = head + payload
    struct.pack_into(">I", out, 17, crc32c(bytes(out[21:])))
    return bytes(out)


def build(values, codec: int = NONE, **header) -> bytes:
    """A good batch of `values` (bytes)."""
    return frame(compress(codec, b"".join(record(i, v) for i, v in enumerate(values))), len(values), codec,
                 **header)


def _records(values, broken_at: int | None = None, **lie) -> bytes:
    return b"".join(record(i, v, **(lie if i == broken_at else {})) for i, v in enumerate(values))


def _raw_record(fields: bytes) -> bytes:
    """Record 0 with attributes 0, deltas 0 and `fields` (key, value, headers) as given."""
    body = bytes([0]) + varint(0) + varint(0) + fields
    return varint(len(body)) + body


def _bad(values, codec, payload: bytes, count: int | None = None, **header) -> bytes:
    return frame(compress(codec, payload), len(values) if count is None else count, codec, **header)


def _random_records(values, codec):
    rng = random.Random(len(values))
    size = len(_records(values))
    return _bad(values, codec, bytes(rng.getrandbits(8) for _ in range(size)))


def _undecompressable(values, codec):
    if codec == NONE:
        raise ValueError("only a compressed batch can fail to decompress")
    good = compress(codec, _records(values))
    garbage = bytearray(good)
    for i in range(len(garbage) // 3, len(garbage)):  # keep the codec's magic, wreck the rest
        garbage[i] ^= 0x5A
    return frame(bytes(garbage), len(values), codec)


BROKEN: dict[str, Callable[[list[bytes], int], bytes]] = {
    # a record length varint that lies: longer, then shorter than the record
    "record-length-lies": lambda v, c: _bad(v, c, _records(v, 0, length_change=3)),
    "record-length-short": lambda v, c: _bad(v, c, _records(v, len(v) - 1, length_change=-2)),
    # the batch claims more records than it holds, or 2**31-1 of them
    "fewer-records": lambda v, c: _bad(v, c, _records(v), count=len(v) + 1),
    "count-2^31-1": lambda v, c: _bad(v, c, _records(v), count=2**31 - 1),
    # bytes after the last record
    "bytes-after-last": lambda v, c: _bad(v, c, _records(v) + b"\x00\x02\x04"),
    "random-record-bytes": _random_records,
    # fields of one record that lie or break the rules
    "offset-delta": lambda v, c: _bad(v, c, _records(v, len(v) - 1, offset_delta=len(v) + 5)),
    "key-length-lies": lambda v, c: _bad(v, c, _raw_record(varint(200) + b"k" + _field(v[0]) + varint(0))
                                         + _records(v)[len(record(0, v[0])):]),
    "negative-value-length": lambda v, c: _bad(v, c, _raw_record(varint(-1) + varint(-7) + varint(0))
                                               + _records(v)[len(record(0, v[0])):]),
    "header-key-not-utf8": lambda v, c: _bad(v, c, _records(v, 0, headers=[(b"\xff\xfe", b"x")])),
    "attributes-high-bit": lambda v, c: _bad(v, c, _records(v, 0, attributes=0x80)),
    "timestamp-overflows": lambda v, c: _bad(v, c, _records(v, 0, timestamp_delta=2**63 - 1)),
    # the compressed payload does not decompress
    "undecompressable": _undecompressable,
}
EXPECTED: dict[str, int] = {kind: errors.INVALID_RECORD for kind in BROKEN}
EXPECTED["undecompressable"] = errors.CORRUPT_MESSAGE
COMPRESSED_ONLY = {"undecompressable"}


def bomb(codec: int, size: int) -> bytes:
    """A compressed batch of one record that inflates to `size` bytes."""
    return frame(compress(codec, record(0, bytes(size))), 1, codec)
