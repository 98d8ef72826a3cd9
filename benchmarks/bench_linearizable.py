"""Linearizability benchmark: a set of generated etcd-like cas-register
histories (checkers.synth_register.etcd_like_set: 5 to 10 clients, 100 to
3 000 operations each, some timed out, every tenth with stale reads),
checked as ``highwater check --checker linearizable --model cas-register``
checks them: the time per history and for the set, in one fresh process
(reading each JSON Lines file and checking it), and the wall time of the
command itself on the whole set (one process: interpreter start, imports
and loading the compiled kernels included).

    python benchmarks/bench_linearizable.py
    python benchmarks/bench_linearizable.py --histories 20 --dir /tmp/etcd

Target (issue 13): within 2x of ~0.5 s for the set (what Porcupine, in Go,
takes on Jepsen's etcd histories on this machine type). The kernels are
compiled before (``python -m checkers.warmup``) and that is reported apart.
"""
from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)


def write_set(d, n, seed):
    from checkers.synth_register import etcd_like_set
    paths = []
    for name, events in etcd_like_set(n, seed=seed):
        path = os.path.join(d, f"{name}.jsonl")
        if not os.path.exists(path):
            with open(path, "w") as fh:
                fh.write("".join(json.dumps(e) + "\n" for e in events))
        paths.append(path)
    return paths


def measure(paths):
    """In a child: each path read and checked; one JSON line per path and
    one for the set."""
    t0 = time.monotonic()
    from checkers.model_history import check_model_file
    t_import = time.monotonic() - t0
    total = 0.0
    c0 = time.process_time()
    for path in paths:
        t = time.monotonic()
        r, stats, _ = check_model_file(path, "cas-register")
        dt = time.monotonic() - t
        total += dt
        print(json.dumps({"path": path, "s": dt, "valid": r["valid"],
                          "operations": r.get("operations"), "stats": stats,
                          "stale": bool((r.get("anomalies") or {}).get("nonlinearizable", [{}])[0]
                                        .get("reason"))}), flush=True)
    print(json.dumps({"set_s": total, "set_cpu_s": time.process_time() - c0,
                      "import_s": t_import}), flush=True)


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--histories", type=int, default=100)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--dir", help="write the histories here and reuse those already there")
    ap.add_argument("--measure", nargs="*", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.measure is not None:
        measure(args.measure)
        return
    t = time.monotonic()
    subprocess.run([sys.executable, "-m", "checkers.warmup"], cwd=ROOT, check=True,
                   capture_output=True)
    print(f"checker kernels compiled or loaded from cache in {time.monotonic() - t:.1f} s",
          flush=True)
    with tempfile.TemporaryDirectory() as tmp:
        d = args.dir or tmp
        os.makedirs(d, exist_ok=True)
        paths = write_set(d, args.histories, args.seed)
        out = subprocess.run([sys.executable, __file__, "--measure", *paths], cwd=ROOT,
                             check=True, capture_output=True, text=True).stdout
        rows = [json.loads(line) for line in out.splitlines()]
        print(f"{'history':<12} {'ops':>5} {'ok':>5} {'fail':>5} {'info':>5}  "
              f"{'verdict':<8} {'ms':>8}")
        verdicts = {}
        for r in rows[:-1]:
            s = r["stats"]
            v = {True: "valid", False: "invalid", "unknown": "unknown"}[r["valid"]]
            verdicts[v] = verdicts.get(v, 0) + 1
            print(f"{os.path.basename(r['path'])[:-6]:<12} {r['operations']:>5} {s['ok']:>5} "
                  f"{s['fail']:>5} {s['info']:>5}  {v + ('*' if r['stale'] else ''):<8} "
                  f"{1000 * r['s']:8.1f}")
        n_ops = sum(r["operations"] for r in rows[:-1])
        print(f"set: {len(paths)} histories, {n_ops} operations, "
              f"{', '.join(f'{k} {v}' for k, v in sorted(verdicts.items()))} "
              f"(* found by the stale-read pass): read and checked in "
              f"{rows[-1]['set_s']:.2f} s ({rows[-1]['set_cpu_s']:.2f} s CPU) in one process "
              f"(+ {rows[-1]['import_s']:.2f} s importing the checker); the histories after "
              f"the first (whose time holds numba's one-time start, loading the compiled "
              f"kernels): {sum(r['s'] for r in rows[1:-1]):.2f} s", flush=True)
        before = resource.getrusage(resource.RUSAGE_CHILDREN)
        t = time.monotonic()
        cli = subprocess.run([sys.executable, "-m", "harness.cli", "check", "--checker",
                              "linearizable", "--model", "cas-register", *paths], cwd=ROOT,
                             capture_output=True, text=True)
        wall = time.monotonic() - t
        after = resource.getrusage(resource.RUSAGE_CHILDREN)
        cpu = (after.ru_utime + after.ru_stime) - (before.ru_utime + before.ru_stime)
        codes = {0: "all valid", 1: "some invalid", 3: "some unknown"}
        print(f"highwater check --checker linearizable --model cas-register on the set: "
              f"{wall:.2f} s wall, {cpu:.2f} s CPU, one process, interpreter start, imports "
              f"and numba's first load included (exit {cli.returncode}: "
              f"{codes.get(cli.returncode, cli.stderr.strip()[-200:])})", flush=True)


if __name__ == "__main__":
    main()
