"""The broker's clocks, behind one seam.

Every clock read in `reference/` goes through here: `monotonic()` for
durations and deadlines, `wall()` / `wall_ns()` for timestamps that other
processes compare (the controller lease, record timestamps, object
deadlines). Outside simulation they are the OS clocks, read at call time.
The deterministic simulator (`harness/sim`) installs virtual clocks, so a
whole simulated cluster reads one virtual time that moves only when every
task is waiting. The event loop's own clock (`loop.time()`) needs no seam:
the simulator's loop provides it.
"""
from __future__ import annotations

import time
from typing import Callable

_monotonic: Callable[[], float] = time.monotonic
_wall: Callable[[], float] = time.time
_wall_ns: Callable[[], int] = time.time_ns


def monotonic() -> float:
    return _monotonic()


def wall() -> float:
    return _wall()


def wall_ns() -> int:
    return _wall_ns()


def install(monotonic_fn: Callable[[], float], wall_fn: Callable[[], float],
            wall_ns_fn: Callable[[], int] | None = None) -> None:
    """Replace the clocks (the simulator does, for the length of a run)."""
    global _monotonic, _wall, _wall_ns
    _monotonic, _wall = monotonic_fn, wall_fn
    _wall_ns = wall_ns_fn or (lambda: int(round(wall_fn() * 1e9)))


def restore() -> None:
    """Back to the OS clocks."""
    global _monotonic, _wall, _wall_ns
    _monotonic, _wall, _wall_ns = time.monotonic, time.time, time.time_ns
