"""Checker benchmark: generates valid histories of N client operations (and
the same with planted anomalies, and a badly broken one with millions of
anomalies), each written in two layouts, then times reading and checking
each file in a fresh process and reports its peak memory (max RSS; and that
of the forked child in which the checkers other than kafka run, which
shares most of its pages with the parent), and whether both layouts gave
the same result.

    python benchmarks/bench_checker.py                  # 100k and 1M ops
    python benchmarks/bench_checker.py --ops 100000 --variants valid
    python benchmarks/bench_checker.py --layouts default
    python benchmarks/bench_checker.py --dir /tmp/hwb    # keep / reuse histories

Layouts: ``canonical`` is what the harness writes (``json.dumps`` with
``separators=(",", ":")``, the fields in the design's order); ``default``
is ``json.dumps`` with its defaults (a space after every ``,`` and ``:``)
and ``index`` as the last field, as another tool might write it.

The timings include loading the compiled kernels from numba's cache (the
compiling itself, once per machine, happens before and is reported apart).
Each line gives wall times and, less at the mercy of other work on a shared
machine, CPU times: the checking process's, and its forked child's (the
checkers other than kafka, on the other core).
An "operation" is one invoke + completion pair (two history lines); the
final polls of every worker come on top. Target (issue 13): 1M ops in at
most 10 s and 3 GiB on a 2-core machine, in either layout.
"""
from __future__ import annotations

import argparse
import hashlib
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
LAYOUTS = {  # name: suffix of the history file
    "canonical": "", "default": "-d",
}


def _canonical(ev):
    return json.dumps(ev, separators=(",", ":"))


def _default(ev):
    return json.dumps({**{k: v for k, v in ev.items() if k != "index"}, "index": ev["index"]})


def make(paths, n_ops, variant, seed=7):
    """Writes the history into paths ({layout: path}); returns (lines, s)."""
    from checkers.synth import generate, plant_anomalies, plant_many
    t = time.monotonic()
    events = generate(n_ops, processes=10, keys=20, seed=seed, nemesis_every=5000,
                      batch=4)
    if variant == "planted":  # one of each kind of fault
        events = plant_anomalies(events)
    elif variant == "broken":  # 2 % of acked sends lost, 2 % failed, 2 % duplicated
        events = plant_many(events, fraction=0.02, seed=seed)
    for layout, path in paths.items():
        dump = _canonical if layout == "canonical" else _default
        with open(path, "w") as fh:
            for ev in events:
                fh.write(dump(ev))
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
    t0, c0 = time.monotonic(), time.process_time()
    h = read_history(path)
    t1, c1 = time.monotonic(), time.process_time()
    r = check_history(h, options={"recovery_bound_s": None})
    t2, c2 = time.monotonic(), time.process_time()
    child = resource.getrusage(resource.RUSAGE_CHILDREN)
    peak_kib = _peak_rss_kib()
    # the checkers other than kafka run in a forked child (checkers.core)
    child_kib = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    digest = hashlib.sha256(json.dumps(_without_timings(r), sort_keys=True).encode())
    print(json.dumps({"read_s": round(t1 - t0, 2), "check_s": round(t2 - t1, 2),
                      "digest": digest.hexdigest()[:16],
                      "read_cpu_s": round(c1 - c0, 2), "check_cpu_s": round(c2 - c1, 2),
                      "child_cpu_s": round(child.ru_utime + child.ru_stime, 2),
                      "total_s": round(t2 - t0, 2), "peak_mib": round(peak_kib / 1024),
                      "child_peak_mib": round(child_kib / 1024),
                      "valid": r["valid"], "anomaly_types": r["anomaly_types"],
                      "cases": sum((r["checkers"]["kafka"].get("anomaly_counts") or {}).values()),
                      "kafka_s": r["checkers"]["kafka"].get("elapsed_s"),
                      "size_mib": round(size_mib)}))


def _without_timings(x):
    if isinstance(x, dict):
        return {k: _without_timings(v) for k, v in x.items() if k != "elapsed_s"}
    if isinstance(x, list):
        return [_without_timings(v) for v in x]
    return x


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
    ap.add_argument("--layouts", default="canonical,default",
                    help="comma-separated, of: " + ", ".join(LAYOUTS))
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
    layouts = [v for v in args.layouts.split(",") if v]
    unknown = [v for v in layouts if v not in LAYOUTS]
    if unknown:
        ap.error(f"unknown layout(s) {', '.join(unknown)}; choose from {', '.join(LAYOUTS)}")
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
                paths = {layout: os.path.join(d, f"h{n}{VARIANTS[variant]}{LAYOUTS[layout]}.jsonl")
                         for layout in layouts}
                missing = {k: p for k, p in paths.items() if not (args.dir and os.path.exists(p))}
                if missing:
                    make(missing, n, variant)
                digests = set()
                for layout, path in paths.items():
                    with open(path, "rb") as fh:
                        lines = sum(1 for _ in fh)
                    res = _measure_in_child(path)
                    digests.add(res["digest"])
                    print(f"{n:>9} ops {lines:>9} lines {variant:7} {layout:9} "
                          f"read {res['read_s']:6.2f}s  check {res['check_s']:6.2f}s  "
                          f"total {res['total_s']:6.2f}s  (cpu: read {res['read_cpu_s']:.2f}s, "
                          f"check {res['check_cpu_s']:.2f}s + child {res['child_cpu_s']:.2f}s)  "
                          f"peak {res['peak_mib']:6d} MiB  "
                          f"(child {res.get('child_peak_mib', 0)} MiB, both on the "
                          f"machine {res['machine_mib']} MiB)  "
                          f"file {res['size_mib']} MiB  "
                          f"valid={res['valid']} cases={res['cases']} "
                          f"{','.join(res['anomaly_types'])}  result {res['digest']}",
                          flush=True)
                if len(paths) > 1:
                    print(f"{'':>9}     {n} ops {variant}: results of the layouts "
                          f"{'identical' if len(digests) == 1 else 'DIFFER'}", flush=True)


if __name__ == "__main__":
    main()
