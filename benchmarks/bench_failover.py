"""Failover time, as a client sees it: a 3-node reference cluster under
steady acks=all idempotent load; SIGKILL a broker (10 times) and the
controller (10 times); each time, the seconds from the kill until every
partition the victim led accepts writes again. Prints each time, the median
and the worst per kind, the controller's own step timings, and whether any
acknowledged record was lost.

    python3 benchmarks/bench_failover.py [--kills 10] [--session-timeout 3s]

Aim (issue 10): median < 2 s, worst < 5 s with a 3 s session timeout. On
FUSE volumes (the default: a detach fences the old node's I/O) a dead node
is found out at once (its RPC port refuses connections) and failed over
without waiting for its session; with `--volumes directory` (no I/O
fencing) the controller must wait for the session to expire before another
node reads the dead node's volume (CLUSTER.md, "Fast failure detection").
"""
from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from harness.db.reference import ReferenceCluster  # noqa: E402
from harness.failover import SteadyLoad, lost_acked, read_all, time_until_writable  # noqa: E402

PARTITIONS = 6


def led_by(c: ReferenceCluster, topic: str) -> dict[int, int]:
    return {p: owner for t, p, owner, _ in c.controller_call("cluster", timeout=10)["streams"] if t == topic}


def wait(pred, timeout: float) -> bool:
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        try:
            if pred():
                return True
        except Exception:
            pass
        time.sleep(0.1)
    return False


def spread(c: ReferenceCluster, topic: str) -> None:
    """Give every live node its share of partitions again (a node that came
    back leads nothing until something moves to it)."""
    info = c.controller_call("cluster", timeout=10)
    live = sorted(int(n) for n, v in info["nodes"].items() if not v["fenced"])
    lead = led_by(c, topic)
    want = {p: live[i % len(live)] for i, p in enumerate(sorted(lead))}
    moves = [[topic, p, n] for p, n in want.items() if lead[p] != n]
    if moves:
        c.controller_call("reassign", {"moves": moves}, timeout=60)


def one_kill(c: ReferenceCluster, topic: str, controller: bool) -> dict:
    ctl = c.controller()
    lead = led_by(c, topic)
    if controller:
        victim = ctl
    else:
        victim = next(n.name for n in c.nodes.values() if n.name != ctl and n.node_id in lead.values())
    vid = c.nodes[victim].node_id
    parts = sorted(p for p, o in lead.items() if o == vid)
    t0 = time.monotonic()
    c.kill_node(victim)
    times = time_until_writable(c.bootstrap_servers, topic, parts, t0, deadline=60)
    worst = max(times.values()) if len(times) == len(parts) else float("inf")
    c.start_node(victim)
    wait(lambda: not c.controller_call("cluster", timeout=5)["nodes"][str(vid)]["fenced"], 30)
    fo = [f for f in c.failovers() if f.get("node") == vid]
    return {"victim": victim, "controller": controller, "partitions": parts, "seconds": round(worst, 3),
            "steps": fo[-1]["steps"] if fo else None}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--kills", type=int, default=10, help="kills of each kind (default 10)")
    ap.add_argument("--session-timeout", default="3s")
    ap.add_argument("--dir", help="work directory (default: a temporary one)")
    ap.add_argument("--volumes", choices=("local", "directory"), default="local",
                    help="local: FUSE volumes that fence I/O on detach (default); directory: none")
    args = ap.parse_args()
    work = Path(args.dir or tempfile.mkdtemp(prefix="hw-bench-failover-"))
    c = ReferenceCluster(work, nodes_count=3, broker_args=["--wal-capacity", "64MiB"],
                         session_timeout=args.session_timeout, volume_kind=args.volumes)
    results = []
    try:
        c.setup()
        from kafka.admin import KafkaAdminClient, NewTopic
        admin = KafkaAdminClient(bootstrap_servers=c.bootstrap_servers)
        admin.create_topics([NewTopic("bench", PARTITIONS, 1)])
        admin.close()
        wait(lambda: all(o is not None for o in led_by(c, "bench").values()), 20)
        load = SteadyLoad(c.bootstrap_servers, "bench", PARTITIONS).start()
        wait(lambda: len(load.acked) > 100, 30)
        for i in range(2 * args.kills):
            r = one_kill(c, "bench", controller=(i % 2 == 1))
            results.append(r)
            print(json.dumps(r), flush=True)
            spread(c, "bench")
            wait(lambda n=len(load.acked): len(load.acked) > n + 50, 30)
        load.stop()
        lost = lost_acked(load.acked, read_all(c.bootstrap_servers, "bench", PARTITIONS, timeout=60))
    finally:
        c.teardown()
    print(f"volumes: {c.volume_kind} ({'FUSE, detach fences I/O' if c.volume_kind == 'local' else 'no I/O fencing'}); "
          f"session timeout {args.session_timeout}; "
          f"{len(load.acked)} records acknowledged, {len(lost)} lost")
    for kind in (False, True):
        secs = [r["seconds"] for r in results if r["controller"] == kind]
        name = "controller" if kind else "broker"
        print(f"{name:10s} kills: {len(secs)}  median {statistics.median(secs):.2f} s  worst {max(secs):.2f} s  "
              f"all {[round(s, 2) for s in secs]}")
    return 1 if lost else 0


if __name__ == "__main__":
    sys.exit(main())
