"""Checker benchmark: generates valid histories of N client operations (and
the same with planted anomalies, and a badly broken one with millions of
anomalies), then times reading and checking each one
in a fresh process and reports its peak memory (max RSS; and that of the
forked child in which the checkers other than kafka run, which shares most
of its pages with the parent).

    python benchmarks/bench_checker.py                  # 100k and 1M ops
    python benchmarks/bench_checker.py --ops 100000 --variants valid
    python benchmarks/bench_checker.py --dir /tmp/hwb    # keep / reuse histories

The timings include loading the compiled kernels from numba's cache (the
compiling itself, once per machine, happens before and is reported apart).
An "operation" is one invoke + completion pair (two history lines); the
final polls of every worker come on top. Target (issue 5): 1M ops in under
20 s and 4 GiB on a 2-core machine.
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


VARIANTS = {  # name: suffix of the history file
    "valid": "", "planted": "p", "broken": "b",
}


def make(path, n_ops, variant, seed=7):
    from checkers.synth import generate, plant_anomalies, plant_many
    t = time.monotonic()
    events = generate(n_ops, processes=10, keys=20, seed=seed, nemesis_every=5000,
                      batch=4)
    if variant == "planted":  # one of each kind of fault
        events = plant_anomalies(events)
    elif variant == "broken":  # 2 % of acked sends lost, 2 % failed, 2 % duplicated
        events = plant_many(events, fraction=0.02, seed=seed)
    with open(path, "w") as fh:
        for ev in events:
            fh.write(json.dumps(ev, separators=(",", ":")))
            fh.write("\n")
    return len(events), time.monotonic() - t


def _peak_rss_kib():
    """This process's peak RSS. VmHWM, not ru_maxrss: Linux carries
    ru_maxrss across exec, so a child started by a parent that once held a
    generated history in memory would report the parent's peak."""
    try:
        with open("/proc/self/status") as fh:
            for line in fh:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1])
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss


def measure(path):
    """Runs in a child: read + check, prints one JSON line."""
    from checkers import check_history, read_history
    size_mib = os.path.getsize(path) / 2**20
    t0 = time.monotonic()
    h = read_history(path)
    t1 = time.monotonic()
    r = check_history(h, options={"recovery_bound_s": None})
    t2 = time.monotonic()
    peak_kib = _peak_rss_kib()
    # the checkers other than kafka run in a forked child (checkers.core)
    child_kib = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    print(json.dumps({"read_s": round(t1 - t0, 2), "check_s": round(t2 - t1, 2),
                      "total_s": round(t2 - t0, 2), "peak_mib": round(peak_kib / 1024),
                      "child_peak_mib": round(child_kib / 1024),
                      "valid": r["valid"], "anomaly_types": r["anomaly_types"],
                      "cases": sum((r["checkers"]["kafka"].get("anomaly_counts") or {}).values()),
                      "kafka_s": r["checkers"]["kafka"].get("elapsed_s"),
                      "size_mib": round(size_mib)}))


def _machine_used_mib():
    """MemTotal - MemAvailable: what every process uses, shared pages once."""
    info = {}
    with open("/proc/meminfo") as fh:
        for line in fh:
            k, v = line.split(":", 1)
            info[k] = int(v.split()[0])
    return (info["MemTotal"] - info["MemAvailable"]) / 1024


def _measure_in_child(path):
    """measure() in a fresh process; adds the peak rise of the machine's used
    memory while it ran (the checker and its forked child together: their
    peaks alone overlap, as the child shares the parent's pages)."""
    base = _machine_used_mib()
    with tempfile.TemporaryFile("w+") as out:
        proc = subprocess.Popen([sys.executable, __file__, "--measure", path], stdout=out)
        rise = 0.0
        while proc.poll() is None:
            rise = max(rise, _machine_used_mib() - base)
            time.sleep(0.05)
        if proc.returncode:
            raise SystemExit(f"measuring {path} failed with exit code {proc.returncode}")
        out.seek(0)
        res = json.loads(out.read().strip().splitlines()[-1])
    res["machine_mib"] = round(rise)
    return res


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--ops", type=int, nargs="*", default=[100_000, 1_000_000])
    ap.add_argument("--variants", default="valid,planted,broken",
                    help="comma-separated, of: " + ", ".join(VARIANTS))
    ap.add_argument("--dir", help="write histories here and reuse those already there "
                                  "(generating 1M ops takes ~70 s)")
    ap.add_argument("--measure", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.measure:
        measure(args.measure)
        return
    variants = [v for v in args.variants.split(",") if v]
    unknown = [v for v in variants if v not in VARIANTS]
    if unknown:
        ap.error(f"unknown variant(s) {', '.join(unknown)}; choose from {', '.join(VARIANTS)}")
    # numba compiles the kernels on a machine's first check (then caches
    # them): done here, outside the timings, and reported
    t = time.monotonic()
    subprocess.run([sys.executable, "-m", "checkers.warmup"], cwd=ROOT, check=True,
                   capture_output=True)
    print(f"checker kernels compiled or loaded from cache in {time.monotonic() - t:.1f} s",
          flush=True)
    with tempfile.TemporaryDirectory() as tmp:
        d = args.dir or tmp
        os.makedirs(d, exist_ok=True)
        for n in args.ops:
            for variant in variants:
                path = os.path.join(d, f"h{n}{VARIANTS[variant]}.jsonl")
                if args.dir and os.path.exists(path):
                    with open(path, "rb") as fh:
                        lines = sum(1 for _ in fh)
                else:
                    lines, gen_s = make(path, n, variant)
                res = _measure_in_child(path)
                print(f"{n:>9} ops {lines:>9} lines {variant:7} "
                      f"read {res['read_s']:6.2f}s  check {res['check_s']:6.2f}s  "
                      f"total {res['total_s']:6.2f}s  peak {res['peak_mib']:6d} MiB  "
                      f"(child {res.get('child_peak_mib', 0)} MiB, both on the "
                      f"machine {res['machine_mib']} MiB)  "
                      f"file {res['size_mib']} MiB  "
                      f"valid={res['valid']} cases={res['cases']} "
                      f"{','.join(res['anomaly_types'])}",
                      flush=True)


if __name__ == "__main__":
    main()
