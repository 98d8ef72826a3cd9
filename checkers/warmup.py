"""Compiles the checkers' numba kernels into their on-disk cache.

The first check on a machine would otherwise spend tens of seconds compiling
(later runs load the machine code from ``__pycache__``). ``setup.sh`` runs
this once; so does the checker benchmark, before it times anything.

    python -m checkers.warmup
"""
from __future__ import annotations

import json
import os
import re
import sys
import tempfile
import time


def warm_up() -> float:
    """Reads and checks small generated histories that exercise every
    kernel (poll tables, anomalies, cycles, the linearizability search);
    returns the seconds it took."""
    from .core import check_history
    from .history import parse_lines
    from .synth import generate, plant_anomalies

    t = time.monotonic()
    # planted anomalies, so that the anomaly and cycle searches run too
    events = plant_anomalies(generate(400, processes=4, keys=3, seed=1,
                                      nemesis_every=100, batch=2))
    lines = [json.dumps(e, separators=(",", ":")) for e in events]
    # one poll result mid-history in a shape the compiled scan leaves to
    # the decoder (a second, empty poll micro-op), so that the kernel
    # merging decoded reads into the poll table is compiled too; an extra
    # field, for the kernel that joins them for the decoder
    for i in range(len(events) // 2, len(events)):
        if lines[i].endswith("}]]}") and '"type":"ok","f":"poll"' in lines[i]:
            lines[i] = lines[i][:-3] + '],["poll",{}]]}'
            break
    lines[1] = lines[1][:-1] + ',"note":"warm-up"}'
    check_history(parse_lines(lines), options={"recovery_bound_s": None})
    # a time written as a float: the ordinary reader, which still
    # keeps poll results as arrays (scan.find_bodies)
    lines[2] = re.sub(r'"time":(\d+)', r'"time":\1.0', lines[2], count=1)
    parse_lines(lines)
    _warm_up_linearizability()
    return time.monotonic() - t


def _warm_up_linearizability():
    """The compiled linearizability search (checkers.wgl) and the compiled
    reading of generic histories: a valid and a broken etcd-like history,
    and a search that outgrows its first table."""
    from .linearizable import check_operations
    from .model_history import check_model_file
    from .models import Operation
    from .synth_register import cas_register_history

    with tempfile.TemporaryDirectory() as d:
        for stale in (0, 3):
            path = os.path.join(d, f"h{stale}.jsonl")
            with open(path, "w") as fh:
                for e in cas_register_history(300, clients=5, seed=1, p_info=0.1,
                                              stale_reads=stale):
                    fh.write(json.dumps(e) + "\n")
            check_model_file(path, "cas-register")
    ops = [Operation(0, 100, ("write", i), None) for i in range(12)]
    ops += [Operation(101, 102, ("read", None), 1), Operation(103, 104, ("read", None), 2)]
    check_operations(ops, "register", max_states=5000)


def main() -> int:
    print(f"checker kernels ready ({warm_up():.1f} s)", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
