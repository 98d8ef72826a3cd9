"""The layout of an object in S3, as pure encode/decode functions.

One format serves both kinds of object: a *stream-set object* holds the
uploaded delta of many streams (partitions); a *stream object* holds one
stream's data (large streams are split out of an upload, and compaction
produces them). AutoMQ's layout, with a CRC added to each data block:

    +---------------------------+  position 0
    | data block                |  header: magic u8, flag u8, record count u32,
    |   record batch ...        |          data length u32, data CRC32C u32
    +---------------------------+
    | data block ...            |  one stream per block, blocks <= ~512 KiB
    +---------------------------+  index position
    | index entry (36 bytes)    |  stream id u64, start offset u64,
    | index entry ...           |  end offset delta u32, record count u32,
    +---------------------------+  position u64, size u32 (of the block)
    | footer (48 bytes)         |  index position u64, index length u32,
    +---------------------------+  28 bytes padding, magic u64

A "record" here is a stream record: one Kafka record batch, stored with its
broker-assigned offsets, byte for byte. A reader fetches the footer (the last
48 bytes), then the index, then only the blocks it needs, by range GETs.
"""
from __future__ import annotations

import struct
from dataclasses import dataclass

from crc32c import crc32c

from reference.batch import parse_header

BLOCK_MAGIC = 0x5A
BLOCK_HEADER = struct.Struct(">BBIII")          # magic, flag, count, length, crc
INDEX_ENTRY = struct.Struct(">QQIIQI")          # 36 bytes
FOOTER = struct.Struct(">QI28xQ")               # 48 bytes
FOOTER_MAGIC = 0x88E241B785F4CFF7
DEFAULT_BLOCK_BYTES = 512 * 1024

assert INDEX_ENTRY.size == 36 and FOOTER.size == 48


class CorruptObject(ValueError):
    pass


@dataclass(frozen=True, slots=True)
class IndexEntry:
    stream_id: int
    start_offset: int
    end_offset: int          # exclusive
    record_count: int        # batches in the block
    position: int
    size: int                # block size, header included


@dataclass(frozen=True, slots=True)
class StreamRecord:
    """One batch of one stream: [base_offset, end_offset) and its bytes."""
    stream_id: int
    base_offset: int
    end_offset: int
    data: bytes


def encode_object(records: list[StreamRecord], block_bytes: int = DEFAULT_BLOCK_BYTES) -> tuple[bytes, list[IndexEntry]]:
    """Lay out records (per stream, offsets increasing; compaction may leave
    gaps, and a block never spans one) into one object. Returns the bytes
    and the index."""
    by_stream: dict[int, list[StreamRecord]] = {}
    for r in records:
        by_stream.setdefault(r.stream_id, []).append(r)
    out = bytearray()
    index: list[IndexEntry] = []
    for stream_id in sorted(by_stream):
        rs = by_stream[stream_id]
        for a, b in zip(rs, rs[1:]):
            if b.base_offset < a.end_offset:
                raise ValueError(f"stream {stream_id}: records overlap or go back ({a.end_offset} then {b.base_offset})")
        i = 0
        while i < len(rs):
            j, size = i, 0
            while j < len(rs) and (j == i or (size + len(rs[j].data) <= block_bytes
                                              and rs[j].base_offset == rs[j - 1].end_offset)):
                size += len(rs[j].data)
                j += 1
            data = b"".join(r.data for r in rs[i:j])
            position = len(out)
            out += BLOCK_HEADER.pack(BLOCK_MAGIC, 0, j - i, len(data), crc32c(data))
            out += data
            index.append(IndexEntry(stream_id, rs[i].base_offset, rs[j - 1].end_offset, j - i,
                                    position, BLOCK_HEADER.size + len(data)))
            i = j
    index_position = len(out)
    for e in index:
        out += INDEX_ENTRY.pack(e.stream_id, e.start_offset, e.end_offset - e.start_offset,
                                e.record_count, e.position, e.size)
    out += FOOTER.pack(index_position, len(out) - index_position, FOOTER_MAGIC)
    return bytes(out), index


def decode_footer(tail: bytes) -> tuple[int, int]:
    """(index position, index length) from the object's last 48 bytes."""
    if len(tail) < FOOTER.size:
        raise CorruptObject(f"footer needs {FOOTER.size} bytes, got {len(tail)}")
    index_position, index_length, magic = FOOTER.unpack_from(tail, len(tail) - FOOTER.size)
    if magic != FOOTER_MAGIC:
        raise CorruptObject(f"bad footer magic {magic:#x}")
    if index_length % INDEX_ENTRY.size:
        raise CorruptObject(f"index length {index_length} not a multiple of {INDEX_ENTRY.size}")
    return index_position, index_length


def decode_index(buf: bytes) -> list[IndexEntry]:
    if len(buf) % INDEX_ENTRY.size:
        raise CorruptObject("truncated index")
    out = []
    for pos in range(0, len(buf), INDEX_ENTRY.size):
        sid, start, delta, count, position, size = INDEX_ENTRY.unpack_from(buf, pos)
        out.append(IndexEntry(sid, start, start + delta, count, position, size))
    return out


def decode_block(buf: bytes) -> list[bytes]:
    """The record batches of one data block, CRC checked."""
    if len(buf) < BLOCK_HEADER.size:
        raise CorruptObject("truncated block header")
    magic, _flag, count, length, crc = BLOCK_HEADER.unpack_from(buf, 0)
    if magic != BLOCK_MAGIC:
        raise CorruptObject(f"bad block magic {magic:#x}")
    data = buf[BLOCK_HEADER.size:BLOCK_HEADER.size + length]
    if len(data) != length:
        raise CorruptObject("truncated block")
    if crc32c(data) != crc:
        raise CorruptObject("block CRC mismatch")
    batches, pos = [], 0
    while pos < len(data):
        h = parse_header(data, pos)
        batches.append(bytes(data[pos:pos + h.size]))
        pos += h.size
    if len(batches) != count:
        raise CorruptObject(f"block says {count} batches, holds {len(batches)}")
    return batches


def decode_object(buf: bytes) -> list[StreamRecord]:
    """Every record of a whole object (used by compaction and tests)."""
    index_position, index_length = decode_footer(buf)
    out = []
    for e in decode_index(buf[index_position:index_position + index_length]):
        for batch in decode_block(buf[e.position:e.position + e.size]):
            h = parse_header(batch)
            out.append(StreamRecord(e.stream_id, h.base_offset, h.base_offset + h.last_offset_delta + 1, batch))
    return out
