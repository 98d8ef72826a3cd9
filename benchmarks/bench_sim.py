"""Simulator speed: simulated cluster-seconds per real second for a 3-node
reference cluster under load (issue 15; aim: 100x or more).

    python benchmarks/bench_sim.py                        # 3 seeds, 60 s each, faults on
    python benchmarks/bench_sim.py --seeds 5 --sim-time 120 --rate 60 --no-faults

Each seed is one whole simulated run (cluster start, topics, the queue
workload with faults for --sim-time, heal, final polls) of the real
reference code; the checker is not timed (it is the same as for a real run).
"Under load": --rate client operations per virtual second (half sends, half
polls, each poll a long-poll Fetch), every node uploading to S3 and
heartbeating the controller meanwhile. The figure printed is the total
virtual time simulated divided by the real time spent, with the log at
WARNING (as `highwater sim` runs by default); --log-level INFO shows what the
full log costs. A warm-up run comes first (imports, codec generation).
"""
from __future__ import annotations

import argparse
import os
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--seeds", type=int, default=3)
    p.add_argument("--first-seed", type=int, default=1)
    p.add_argument("--sim-time", type=float, default=60.0, help="virtual seconds of workload per seed")
    p.add_argument("--rate", type=float, default=30.0, help="client operations per virtual second")
    p.add_argument("--nodes", type=int, default=3)
    p.add_argument("--no-faults", action="store_true")
    p.add_argument("--log-level", default="WARNING")
    args = p.parse_args()

    from harness.sim import faults as F
    from harness.sim.world import SimOptions, run_seed

    options = SimOptions(nodes=args.nodes, sim_time=args.sim_time, rate=args.rate, check=False,
                         faults=[] if args.no_faults else list(F.FAULTS), log_level=args.log_level.upper())
    run_seed(0, SimOptions(sim_time=5.0, check=False, faults=[]))     # warm-up
    total_sim = total_real = 0.0
    print(f"{'seed':>5} {'virtual s':>10} {'real s':>8} {'x real':>7} {'ops':>6} {'steps':>8}  faults")
    for seed in range(args.first_seed, args.first_seed + args.seeds):
        started = time.perf_counter()
        r = run_seed(seed, options)
        real = time.perf_counter() - started
        sim = r.stats["sim_seconds"]
        ops = sum(1 for line in r.history.splitlines() if b'"type":"invoke"' in line and b'"nemesis"' not in line)
        total_sim += sim
        total_real += real
        print(f"{seed:>5} {sim:>10.1f} {real:>8.2f} {sim / real:>7.0f} {ops:>6} {r.stats['steps']:>8}  "
              f"{len(r.schedule)}")
    print(f"{args.nodes}-node cluster, {args.rate:g} client ops per virtual second: {total_sim:.0f} simulated "
          f"cluster-seconds in {total_real:.1f} real seconds = {total_sim / total_real:.0f}x real time")
    return 0


if __name__ == "__main__":
    sys.exit(main())
