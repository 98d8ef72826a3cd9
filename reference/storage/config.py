"""The storage engine's settings, and the command-line flags that set them.

Defaults follow AutoMQ where that makes sense (2 GiB WAL, 500 MiB upload
threshold capped at a third of the cache, 512 KiB data blocks, 8 MiB stream
object split, 60 min prepared-object TTL); all of them can be shrunk for
tests (`--wal-capacity 4MiB --upload-bytes 64KiB --upload-interval 500ms`).
"""
from __future__ import annotations

import argparse
from dataclasses import dataclass, fields

from harness import durations

KiB, MiB, GiB = 1 << 10, 1 << 20, 1 << 30



def parse_size(text: str | int) -> int:
    """'64MiB', '4MB', '512KiB', '1048576' -> bytes, as an argparse type."""
    try:
        return durations.parse_size(text)
    except ValueError as e:
        raise argparse.ArgumentTypeError(str(e)) from None


def parse_duration(text: str | float) -> float:
    """'500ms', '2s', '2m', '1.5' -> seconds, as an argparse type."""
    try:
        return durations.parse_duration(text)
    except ValueError as e:
        raise argparse.ArgumentTypeError(str(e)) from None


@dataclass
class EngineConfig:
    wal: str = "file"                     # "file": the volume's WAL (or --wal-device); "s3": WAL objects in S3
    wal_capacity: int = 2 * GiB           # ring size of the WAL file (incl. its 8 KiB header area); with --wal s3,
                                          # the most un-uploaded WAL bytes before appends wait
    wal_device: str | None = None         # raw block device (O_DIRECT) instead of <volume>/wal; capacity min(device, wal_capacity)
    wal_max_write: int = 8 * MiB          # most bytes one group commit writes
    s3_wal_interval: float = 0.25         # --wal s3: PUT a WAL object when its oldest record is this old ...
    s3_wal_bytes: int = 8 * MiB           # ... or when this much is batched (AutoMQ main, WarpStream: 250ms / 8MiB)
    cache_size: int = 512 * MiB           # log cache (durable tail; pending data is never evicted)
    upload_bytes: int | None = None       # upload when pending >= this; None: min(cache/3, 500 MiB)
    upload_interval: float = 60.0         # ... or when this long has passed with anything pending
    block_cache_size: int = 256 * MiB     # decoded S3 blocks for reads below the log cache
    data_block_bytes: int = 512 * KiB     # data block size inside objects
    stream_object_bytes: int = 8 * MiB    # a stream with this much in one upload gets its own object
    object_ttl: float = 3600.0            # a prepared object not committed by then is garbage
    object_retention: float = 600.0       # how long a garbage object lives before it is deleted
    cleanup_interval: float = 1.0         # how often expired/garbage objects are checked
    s3_prefix: str = ""                   # every key of this cluster under this prefix (share a bucket)
    metadata_prefix: str = "metadata"     # key prefix of the metadata log and snapshots
    metadata_snapshot_every: int = 200    # snapshot the metadata every N log records
    producer_id_block: int = 1000         # producer ids reserved per metadata write
    s3_timeout: float = 10.0              # connect/read timeout of each S3 request
    s3_threads: int = 16                  # blocking S3 calls run in this many threads
    close_upload_timeout: float = 30.0    # at a clean close, how long to try uploading what is left
    compaction_interval: float = 0.0      # 0 disables stream-set object compaction
    compaction_max_objects: int = 16      # merge at most this many objects at once
    compaction_small_bytes: int = 64 * MiB  # objects smaller than this are merged
    stream_compaction_max_bytes: int = 256 * MiB  # contiguous stream objects of a stream merged up to this
    max_decompressed_batch: int = 64 * MiB  # a compressed batch inflating past this is refused (MESSAGE_TOO_LARGE)

    @property
    def effective_upload_bytes(self) -> int:
        if self.upload_bytes is not None:
            return self.upload_bytes
        return min(self.cache_size // 3, 500 * MiB)


def parse_wal_mode(text: str) -> str:
    if text not in ("file", "s3"):
        raise argparse.ArgumentTypeError(f"--wal must be file or s3, not {text!r}")
    return text


_FLAGS = [
    # (flag, field, parser, help)
    ("--wal", "wal", parse_wal_mode, "where the WAL lives: file (the volume's, or --wal-device; default) or s3 "
     "(no volume: batches PUT to S3 every --s3-wal-interval or --s3-wal-bytes, acked after the PUT)"),
    ("--wal-capacity", "wal_capacity", parse_size, "WAL ring capacity (default 2GiB; a few MiB for tests)"),
    ("--wal-device", "wal_device", str, "raw block device for the WAL instead of <volume>/wal, opened O_DIRECT|O_DSYNC (capacity: the device size, or --wal-capacity if smaller)"),
    ("--s3-wal-interval", "s3_wal_interval", parse_duration, "--wal s3: PUT a WAL object at least this often (default 250ms)"),
    ("--s3-wal-bytes", "s3_wal_bytes", parse_size, "--wal s3: ... or once this much is batched (default 8MiB)"),
    ("--cache-size", "cache_size", parse_size, "log cache size (default 512MiB); producers wait when it is full of un-uploaded data"),
    ("--upload-bytes", "upload_bytes", parse_size, "upload when this much is pending (default min(cache/3, 500MiB))"),
    ("--upload-interval", "upload_interval", parse_duration, "upload at least this often when anything is pending (default 60s)"),
    ("--block-cache-size", "block_cache_size", parse_size, "cache of S3 blocks for reads (default 256MiB)"),
    ("--stream-object-bytes", "stream_object_bytes", parse_size, "split a stream into its own object above this (default 8MiB)"),
    ("--object-ttl", "object_ttl", parse_duration, "prepared objects not committed by then are garbage (default 60m)"),
    ("--object-retention", "object_retention", parse_duration, "delete garbage objects after this (default 10m)"),
    ("--compaction-interval", "compaction_interval", parse_duration, "merge small stream-set objects, and contiguous stream objects, this often (default 0: off)"),
    ("--max-decompressed-batch", "max_decompressed_batch", parse_size, "refuse a compressed batch that decompresses to more than this (MESSAGE_TOO_LARGE; default 64MiB): every record is validated before it is stored"),
    ("--s3-prefix", "s3_prefix", str, "put every key of this cluster under this prefix in the bucket (default: none)"),
    ("--metadata-prefix", "metadata_prefix", str, "S3 key prefix of the metadata log (default 'metadata')"),
]


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Add the storage flags to a broker's argument parser."""
    group = parser.add_argument_group("storage engine")
    for flag, name, parse, help_text in _FLAGS:
        group.add_argument(flag, dest=f"storage_{name}", type=parse, default=None, help=help_text)


def config_from_args(args: argparse.Namespace) -> EngineConfig:
    config = EngineConfig()
    for f in fields(EngineConfig):
        value = getattr(args, f"storage_{f.name}", None)
        if value is not None:
            setattr(config, f.name, value)
    return config
