"""The body of a WAL record: one record batch of one stream.

    stream id u64, stream epoch u32, base offset u64, last offset delta u32,
    payload length u32, payload (the batch, its offsets already assigned)

As in AutoMQ, the WAL knows nothing of Kafka: it stores framed bodies; this
is what the engine puts in them, and what recovery reads back.
"""
from __future__ import annotations

import struct
from dataclasses import dataclass

BODY_HEADER = struct.Struct(">QIQII")


@dataclass(frozen=True, slots=True)
class WalEntry:
    stream_id: int
    epoch: int
    base_offset: int
    last_offset_delta: int
    payload: bytes

    @property
    def end_offset(self) -> int:
        return self.base_offset + self.last_offset_delta + 1


def encode_body(stream_id: int, epoch: int, base_offset: int, last_offset_delta: int, payload: bytes) -> bytes:
    return BODY_HEADER.pack(stream_id, epoch, base_offset, last_offset_delta, len(payload)) + payload


def decode_body(body: bytes) -> WalEntry:
    sid, epoch, base, delta, n = BODY_HEADER.unpack_from(body, 0)
    payload = body[BODY_HEADER.size:BODY_HEADER.size + n]
    if len(payload) != n:
        raise ValueError(f"WAL body truncated: payload {len(payload)} of {n} bytes")
    return WalEntry(sid, epoch, base, delta, payload)
