"""libfaketime as the clock fault drives it, wherever the node runs: the
process starts with libfaketime preloaded and reads its offset from a file
on every clock call, so writing that file (atomically) moves the process's
wall clock at once. Monotonic clocks are left alone: a skewed wall clock is
the fault; a monotonic clock that jumps (backwards, for a negative offset)
would be a different, impossible one, and would make a lease kept on the
monotonic clock (reference/CLUSTER.md) fail in ways no real host can.

Known limits of libfaketime 0.9.10 (Debian 12), and what is done about them:
- with the monotonic clock left alone, `clock_nanosleep(CLOCK_MONOTONIC,
  TIMER_ABSTIME)` fails with EINVAL at any offset, so Python's `time.sleep`
  raises OSError (asyncio, `select`, `threading` waits and relative
  `nanosleep` are fine): a Python node gets `faketime_site/sitecustomize.py`
  on its PYTHONPATH, which sleeps with select() instead;
- its default "monotonic fix" reworks every `pthread_cond_timedwait`, the
  call CPython threads hand the GIL over with: a node with a few threads ran
  ten to twenty times slower (a broker took 10 s instead of 1 s to start).
  FAKETIME_FORCE_MONOTONIC_FIX=0 turns it off;
- with no cache every clock call opens the offset file (and two rc files):
  the offset is re-read at most once a second instead (strobes of a second
  or more), and file times (stat) are not faked."""
from __future__ import annotations

from pathlib import Path

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


# For Python nodes: a sitecustomize whose time.sleep does without clock_nanosleep.
PYTHON_SITE = str(Path(__file__).resolve().parent / "faketime_site")


def preload_env(library: str, offset_file: str, fake_monotonic: bool = False,
                cache_seconds: int = 1) -> dict[str, str]:
    """Environment for a process whose wall clock follows `offset_file`,
    re-read at most every `cache_seconds` (0: at every call)."""
    monotonic = "0" if fake_monotonic else "1"
    env = {
        "LD_PRELOAD": library,
        "FAKETIME_TIMESTAMP_FILE": offset_file,
        "FAKETIME_DONT_FAKE_MONOTONIC": monotonic, "DONT_FAKE_MONOTONIC": monotonic,   # (0.9.7's name)
        "FAKETIME_FORCE_MONOTONIC_FIX": "0",
        "NO_FAKE_STAT": "1",
    }
    if cache_seconds <= 0:
        env["FAKETIME_NO_CACHE"] = "1"
    else:
        env["FAKETIME_CACHE_DURATION"] = str(int(cache_seconds))
    return env
