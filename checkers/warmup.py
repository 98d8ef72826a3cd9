"""Compiles the checkers' numba kernels into their on-disk cache.

The first check on a machine would otherwise spend tens of seconds compiling
(later runs load the machine code from ``__pycache__``). ``setup.sh`` runs
this once; so does the checker benchmark, before it times anything.

    python -m checkers.warmup
"""
from __future__ import annotations

import json
import sys
import time


def warm_up() -> float:
    """Reads and checks a small generated history that exercises every
    kernel (poll tables, anomalies, cycles); returns the seconds it took."""
    from .core import check_history
    from .history import parse_lines
    from .synth import generate, plant_anomalies

    t = time.monotonic()
    # planted anomalies, so that the anomaly and cycle searches run too
    events = plant_anomalies(generate(400, processes=4, keys=3, seed=1,
                                      nemesis_every=100, batch=2))
    lines = [json.dumps(e, separators=(",", ":")) for e in events]
    # one poll result mid-history in a form the compiled scan leaves to the
    # ordinary reader, so that the kernel merging decoded reads into the
    # poll table is compiled too
    for i in range(len(events) // 2, len(events)):
        e = events[i]
        if e.get("f") == "poll" and e.get("type") == "ok" and e.get("value"):
            lines[i] = json.dumps(e)
            break
    check_history(parse_lines(lines), options={"recovery_bound_s": None})
    return time.monotonic() - t


def main() -> int:
    print(f"checker kernels ready ({warm_up():.1f} s)", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
