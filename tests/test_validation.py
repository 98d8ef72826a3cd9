"""Record validation (reference/validation.py), pure: every kind of broken
record is refused with Kafka's code, plain and under every codec; batches
real clients build pass; anything validation lets through, kafka-python
reads."""
from __future__ import annotations

import gzip
import struct

import pytest
from crc32c import crc32c
from hypothesis import given, settings
from hypothesis import strategies as st
from kafka.record.default_records import DefaultRecordBatch, DefaultRecordBatchBuilder

from reference import errors
from reference.broken_batches import BROKEN, CODECS, COMPRESSED_ONLY, EXPECTED, bomb, build, compress, frame, record
from reference.validation import GZIP, LZ4, NONE, ZSTD, InvalidBatch, validate_batch

pytestmark = pytest.mark.timeout(300)
VALUES = [b"value-%d" % i for i in range(5)]
CASES = [(kind, codec) for kind in BROKEN for codec in CODECS if not (codec == "none" and kind in COMPRESSED_ONLY)]


def kafka_python_batch(codec: int, n: int = 20) -> bytes:
    b = DefaultRecordBatchBuilder(2, codec, False, 7, 0, 0, 1 << 30)
    for i in range(n):
        b.append(i, 1_700_000_000_000 + i, key=None if i % 3 else b"k%d" % i,
                 value=None if i == 4 else b"v" * i, headers=[("h", b"x"), ("empty", None)] if i % 2 else [])
    return bytes(b.build())


@pytest.mark.parametrize("codec", list(CODECS))
def test_batches_real_clients_build_pass(codec):
    for data in (kafka_python_batch(CODECS[codec]), build(VALUES, CODECS[codec])):
        valid = validate_batch(data)
        assert valid.data == data and valid.header.record_count == len(list(DefaultRecordBatch(data)))


@pytest.mark.parametrize("kind,codec", CASES)
def test_each_kind_of_broken_record_is_refused_with_kafkas_code(kind, codec):
    data = BROKEN[kind](VALUES, CODECS[codec])
    with pytest.raises(InvalidBatch) as refused:
        validate_batch(data)
    assert refused.value.code == EXPECTED[kind], refused.value


@pytest.mark.parametrize("codec", ["gzip", "snappy", "lz4", "zstd"])
def test_a_decompression_bomb_is_refused_within_the_bound(codec):
    with pytest.raises(InvalidBatch) as refused:
        validate_batch(bomb(CODECS[codec], 3 << 20), max_decompressed=1 << 20)
    assert refused.value.code == errors.MESSAGE_TOO_LARGE
    assert validate_batch(bomb(CODECS[codec], 512 << 10), max_decompressed=1 << 20)


def test_batch_framing_and_header_rules():
    good = build(VALUES)
    cases = {
        b"": errors.INVALID_RECORD,                               # no batch at all
        good + good: errors.INVALID_RECORD,                       # two batches for one partition
        good + b"\x00": errors.INVALID_RECORD,                    # bytes after the batch
        good[:-1]: errors.CORRUPT_MESSAGE,                        # the length lies
        b"\x00" * 70: errors.CORRUPT_MESSAGE,                     # garbage
        frame(b"", 0): errors.INVALID_RECORD,                     # no record
        build(VALUES, magic=1): errors.INVALID_RECORD,
        build(VALUES, last_offset_delta=9): errors.INVALID_RECORD,
        build(VALUES, producer_id=5, base_sequence=-1): errors.INVALID_RECORD,
        build(VALUES, attributes_extra=0x20): errors.INVALID_RECORD,   # a control batch from a client
        build(VALUES, attributes_extra=0x10): errors.INVALID_RECORD,   # transactional: not supported
        frame(b"".join(record(i, v) for i, v in enumerate(VALUES)), 5, 6): errors.CORRUPT_MESSAGE,  # codec 6
    }
    crc = bytearray(good)
    crc[-1] ^= 1
    cases[bytes(crc)] = errors.CORRUPT_MESSAGE
    for data, code in cases.items():
        with pytest.raises(InvalidBatch) as refused:
            validate_batch(data)
        assert refused.value.code == code, (data[:30], refused.value)


def test_codec_framings_kafka_python_reads_are_accepted_and_trailing_bytes_refused():
    import lz4.frame
    import zstandard
    payload = b"".join(record(i, v) for i, v in enumerate(VALUES))
    half = len(payload) // 2
    multi_member = gzip.compress(payload[:half]) + gzip.compress(payload[half:])
    multi_frame = zstandard.ZstdCompressor().compress(payload[:half]) + zstandard.ZstdCompressor().compress(payload[half:])
    for codec, data in ((GZIP, multi_member), (ZSTD, multi_frame)):
        batch = frame(data, len(VALUES), codec)
        assert [r.value for r in DefaultRecordBatch(batch)] == VALUES  # kafka-python reads them ...
        validate_batch(batch)                                          # ... so they pass
    for codec, data in ((GZIP, gzip.compress(payload) + b"junk"), (LZ4, lz4.frame.compress(payload) + b"junk"),
                        (ZSTD, zstandard.ZstdCompressor().compress(payload) + b"junk")):
        with pytest.raises(InvalidBatch) as refused:
            validate_batch(frame(data, len(VALUES), codec))
        assert refused.value.code == errors.CORRUPT_MESSAGE


def _with_crc(data: bytearray) -> bytes:
    struct.pack_into(">I", data, 17, crc32c(bytes(data[21:])))
    return bytes(data)


@given(st.sampled_from([NONE, GZIP, ZSTD]), st.lists(st.tuples(st.integers(0, 10_000), st.integers(0, 255)),
                                                    min_size=1, max_size=4))
@settings(max_examples=400, deadline=None)
def test_whatever_validation_accepts_kafka_python_reads(codec, flips):
    """Bytes of a batch changed at random (CRC and length kept consistent):
    either refused with a Kafka error, or every record reads back."""
    data = bytearray(kafka_python_batch(NONE, 8))
    if codec != NONE:
        data = bytearray(frame(compress(codec, bytes(data[61:])), 8, codec, producer_id=7, producer_epoch=0,
                               base_sequence=0))
    for pos, value in flips:
        data[61 + pos % (len(data) - 61)] = value
    data = _with_crc(data)
    try:
        valid = validate_batch(data)
    except InvalidBatch as e:
        assert e.code in (errors.CORRUPT_MESSAGE, errors.INVALID_RECORD, errors.MESSAGE_TOO_LARGE)
        return
    records = list(DefaultRecordBatch(valid.data))
    assert len(records) == valid.header.record_count
    assert [r.offset for r in records] == list(range(len(records)))
