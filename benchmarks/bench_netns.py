"""Namespace nodes: how long `--nodes netns:N` takes to set up and tear
down, to connect over SSH, and what one command, a background start and a
kill cost over SSH. Needs root and openssh-server.

    python benchmarks/bench_netns.py                # 3 nodes, 3 rounds
    python benchmarks/bench_netns.py --nodes 10 --rounds 1

Prints one JSON line per round and a summary (medians).
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)


def one_round(nodes_count: int, commands: int) -> dict:
    from harness.remote.netns import NetnsCluster
    with tempfile.TemporaryDirectory(prefix="hw-bench-netns-") as tmp:
        cluster = NetnsCluster(tmp, nodes_count)
        t = time.monotonic()
        cluster.setup()
        setup = time.monotonic() - t
        try:
            t = time.monotonic()
            nodes = cluster.open_nodes()
            connect = time.monotonic() - t
            n1 = nodes["n1"]
            latencies = []
            for _ in range(commands):
                t = time.monotonic()
                n1.run(["true"], check=True)
                latencies.append(time.monotonic() - t)
            t = time.monotonic()
            n1.start_background("sleeper", ["sleep", "60"])
            background = time.monotonic() - t
            t = time.monotonic()
            n1.kill("sleeper")
            kill = time.monotonic() - t
            for node in nodes.values():
                node.close()
        finally:
            t = time.monotonic()
            cluster.teardown()
            teardown = time.monotonic() - t
    return {"nodes": nodes_count, "setup_s": round(setup, 3),
            "setup_parts_s": {k: round(v, 3) for k, v in cluster.timings.items()},
            "connect_all_s": round(connect, 3), "command_median_ms": round(statistics.median(latencies) * 1e3, 1),
            "command_p90_ms": round(sorted(latencies)[int(0.9 * (len(latencies) - 1))] * 1e3, 1),
            "start_background_ms": round(background * 1e3, 1), "kill_and_wait_gone_ms": round(kill * 1e3, 1),
            "teardown_s": round(teardown, 3)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--nodes", type=int, default=3)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--commands", type=int, default=50)
    a = ap.parse_args()
    from harness.remote.netns import unsupported
    reason = unsupported()
    if reason:
        print(f"cannot run: {reason}", file=sys.stderr)
        sys.exit(2)
    rounds = []
    for _ in range(a.rounds):
        rounds.append(one_round(a.nodes, a.commands))
        print(json.dumps(rounds[-1]), flush=True)
    keys = ["setup_s", "connect_all_s", "command_median_ms", "start_background_ms", "kill_and_wait_gone_ms",
            "teardown_s"]
    print("median of", a.rounds, "rounds:", json.dumps({k: statistics.median(r[k] for r in rounds) for k in keys}))


if __name__ == "__main__":
    main()
