"""libfaketime as the clock fault drives it, wherever the node runs: the
process starts with libfaketime preloaded and reads its offset from a file
on every clock call, so writing that file (atomically) moves the process's
wall clock at once. Monotonic clocks are left alone: a skewed wall clock is
the fault; a monotonic clock that jumps (backwards, for a negative offset)
would be a different, impossible one, and would make a lease kept on the
monotonic clock (reference/CLUSTER.md) fail in ways no real host can.

Known limit of libfaketime 0.9.10 (Debian 12): with the monotonic clock left
alone, `clock_nanosleep(CLOCK_MONOTONIC, TIMER_ABSTIME)` fails with EINVAL,
at any offset: Python's `time.sleep` raises OSError under it (asyncio,
`select`, `threading` waits and relative `nanosleep` are fine). The
reference broker does not call time.sleep; pass `fake_monotonic=True` for a
program that does, knowing its monotonic clock then jumps with the offset."""
from __future__ import annotations

# Where distributions install it (Debian/Ubuntu multiarch first).
LIBRARY_CANDIDATES = (
    "/usr/lib/x86_64-linux-gnu/faketime/libfaketime.so.1",
    "/usr/lib/aarch64-linux-gnu/faketime/libfaketime.so.1",
    "/usr/lib/faketime/libfaketime.so.1",
    "/usr/lib64/faketime/libfaketime.so.1",
    "/usr/local/lib/faketime/libfaketime.so.1",
)


def offset_spec(seconds: float) -> str:
    """The offset file's content: a relative offset libfaketime parses
    (`+3600.000000`, `-0.500000`)."""
    return f"{float(seconds):+.6f}\n"


def preload_env(library: str, offset_file: str, fake_monotonic: bool = False) -> dict[str, str]:
    """Environment for a process whose wall clock follows `offset_file`."""
    return {
        "LD_PRELOAD": library,
        "FAKETIME_TIMESTAMP_FILE": offset_file,
        "FAKETIME_NO_CACHE": "1",  # re-read the file on every call (about 4 us): the skew applies at once
        "FAKETIME_DONT_FAKE_MONOTONIC": "0" if fake_monotonic else "1",
    }
