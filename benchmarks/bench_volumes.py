"""What a local FUSE volume costs the WAL: fdatasync'd writes per second.

The broker's WAL does one pwrite of a group then one fdatasync, over a
preallocated ring. This does the same loop (write at the next offset of a
preallocated file, wrapping; fdatasync after each write) for 4 KiB and
256 KiB writes:

  direct        the backing file system itself, no FUSE
  fuse          through the volume's FUSE attachment, pass-through (lazy off)
  fuse-lazy     through FUSE in lazy mode (the default: unsynced writes held
                in the FUSE process, written on fdatasync), as the
                lose-unsynced fault needs

and the time to attach and to detach a volume (a FUSE process per attachment).

    python3 benchmarks/bench_volumes.py [--seconds 3] [--dir /var/tmp]

Figures are noisy on a shared machine; run it once at a quiet moment.
"""
from __future__ import annotations

import argparse
import os
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from reference.volumes.local import force_cleanup, start_service  # noqa: E402

RING = 64 << 20


def sync_loop(path: str, size: int, seconds: float) -> tuple[float, float]:
    """(writes per second, median latency in ms) of pwrite + fdatasync."""
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        os.ftruncate(fd, RING)
        os.fsync(fd)
        buf = os.urandom(size)
        off, lat = 0, []
        end = time.perf_counter() + seconds
        start = time.perf_counter()
        while time.perf_counter() < end:
            t = time.perf_counter()
            os.pwrite(fd, buf, off)
            os.fdatasync(fd)
            lat.append(time.perf_counter() - t)
            off = (off + size) % (RING - size)
        elapsed = time.perf_counter() - start
        return len(lat) / elapsed, statistics.median(lat) * 1000
    finally:
        os.close(fd)


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--seconds", type=float, default=3.0, help="per measurement (default 3)")
    p.add_argument("--dir", default=tempfile.gettempdir(), help="where the backing directories go")
    args = p.parse_args()

    root = Path(tempfile.mkdtemp(prefix="hwv-bench-", dir=args.dir))
    handle = start_service(root)
    rows = []
    try:
        vols = handle.client
        vols.create("plain", lazy=False)
        vols.create("lazy", lazy=True)
        attach_ms, detach_ms = [], []
        for _ in range(5):
            t = time.perf_counter()
            vols.attach("plain", "bench")
            attach_ms.append((time.perf_counter() - t) * 1000)
            t = time.perf_counter()
            vols.detach("plain", "bench")
            detach_ms.append((time.perf_counter() - t) * 1000)
        plain = vols.attach("plain", "bench").path
        lazy = vols.attach("lazy", "bench").path
        direct_dir = root / "direct"
        direct_dir.mkdir()
        for size in (4096, 256 << 10):
            for label, where in (("direct", str(direct_dir)), ("fuse", plain), ("fuse-lazy", lazy)):
                rate, median = sync_loop(os.path.join(where, f"wal-{size}"), size, args.seconds)
                rows.append((label, size, rate, median))
    finally:
        handle.stop()
        force_cleanup(root)
        shutil.rmtree(root, ignore_errors=True)

    print(f"fdatasync'd writes, {args.seconds:.0f} s each, backing on {args.dir} "
          f"({os.uname().release}, {os.cpu_count()} cpus, load {os.getloadavg()[0]:.2f})")
    print(f"{'path':<10} {'write':>8} {'writes/s':>10} {'MiB/s':>8} {'median ms':>10}")
    for label, size, rate, median in rows:
        print(f"{label:<10} {size // 1024:>6}Ki {rate:>10.0f} {rate * size / (1 << 20):>8.1f} {median:>10.2f}")
    print(f"attach: median {statistics.median(attach_ms):.0f} ms (max {max(attach_ms):.0f}); "
          f"detach: median {statistics.median(detach_ms):.1f} ms (max {max(detach_ms):.1f})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
