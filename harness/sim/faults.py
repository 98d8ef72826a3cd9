"""The fault schedule of a simulated run: plain data, drawn from the seed,
printed with a failure, replayed as given, and shrunk.

A schedule is a list of faults, each `{"at", "fault", "targets", "for",
"params"}`: at virtual second `at` the fault starts on `targets` and is
healed `for` seconds later. Fault names are the canonical ones (design.md)
where the simulator has the fault, plus `net-slow` (every link of a machine
slowed: TCP's view of packet loss and congestion):

| fault | what the simulator does | heal |
| --- | --- | --- |
| kill | the node's process dies (SIGKILL: nothing more of it runs, its sockets close, its page cache stays) | a new process starts |
| lose-unsynced | kill, and the machine loses its page cache: unsynced writes lost or torn | a new process starts |
| pause | the process stops running (SIGSTOP); its kernel still accepts and buffers | it runs again |
| partition | no byte crosses between the two sides (`params.shape`: one node isolated, a majority/minority split, or clients cut from one node) | links heal; held bytes arrive |
| detach | the node's volume is detached (EIO on every descriptor; page cache lost) | attached back, unless the controller moved it |
| disk-slow / disk-error | the node's volume is slow / fails a share of I/O with EIO | normal |
| s3-slow / s3-error / s3-reset / s3-hang / s3-ambiguous | the node's S3 requests are slow / get 503 or 500 / are reset / hang until the timeout / are applied and their answer lost | normal |
| clock | the node's wall clock jumps (`params.skew_s`) | back |
| reassign | partitions move between live brokers (the controller's reassign) | nothing to heal |
| net-slow | every link of the node gets `params.delay_s` more latency | normal |
"""
from __future__ import annotations

import json
import random

FAULTS = ("kill", "lose-unsynced", "pause", "partition", "detach", "disk-slow", "disk-error", "s3-slow",
          "s3-error", "s3-reset", "s3-hang", "s3-ambiguous", "clock", "reassign", "net-slow")
PROCESS_FAULTS = ("kill", "lose-unsynced", "pause")


def parse_faults(text: str) -> list[str]:
    if text in ("", "all"):
        return list(FAULTS)
    if text == "none":
        return []
    names = [t.strip() for t in text.split(",") if t.strip()]
    bad = [n for n in names if n not in FAULTS]
    if bad:
        raise ValueError(f"unknown fault(s) {', '.join(bad)}; the simulator has: {', '.join(FAULTS)}")
    return names


def _params(kind: str, rng: random.Random, nodes: list[str], targets: list[str]) -> dict:
    if kind == "partition":
        return {"shape": rng.choice(["isolate", "split", "clients"])}
    if kind == "disk-slow":
        return {"delay_s": rng.choice([0.005, 0.05, 0.5, 2.0])}
    if kind == "disk-error":
        return {"rate": rng.choice([0.05, 0.3, 1.0])}
    if kind in ("s3-slow",):
        return {"delay_s": rng.choice([0.1, 1.0, 5.0])}
    if kind in ("s3-error", "s3-reset", "s3-hang", "s3-ambiguous"):
        return {"rate": rng.choice([0.1, 0.3, 0.7])}
    if kind == "clock":
        return {"skew_s": rng.choice([-30.0, -5.0, 5.0, 30.0, 120.0])}
    if kind == "net-slow":
        return {"delay_s": rng.choice([0.01, 0.1, 0.5])}
    if kind == "reassign":
        return {"moves": rng.randint(1, 4)}
    return {}


def generate(rng: random.Random, kinds: list[str], nodes: list[str], start: float, end: float,
             interval: float) -> list[dict]:
    """Faults one after another, from `start` until `end`: each lasts about
    `interval`, then a quiet gap of about half that."""
    out: list[dict] = []
    if not kinds:
        return out
    t = start + rng.uniform(0, interval)
    while t < end:
        kind = rng.choice(kinds)
        if kind == "partition":
            targets = [rng.choice(nodes)]
        elif kind == "reassign":
            targets = []
        else:
            n = 1 if len(nodes) < 3 or rng.random() < 0.7 else rng.randint(1, len(nodes) // 2 + 1)
            targets = sorted(rng.sample(nodes, n))
        length = rng.uniform(0.3, 2.0) * interval   # (a reassignment's window: the moves, then nothing to heal)
        length = max(0.0, min(length, end - t))
        out.append({"at": round(t, 3), "fault": kind, "targets": targets, "for": round(length, 3),
                    "params": _params(kind, rng, nodes, targets)})
        t += length + rng.uniform(0.2, 1.0) * interval
    return out


def dumps(schedule: list[dict]) -> str:
    return json.dumps(schedule, separators=(",", ":"), sort_keys=True)


def loads(text: str) -> list[dict]:
    data = json.loads(text)
    if not isinstance(data, list):
        raise ValueError("a fault schedule is a JSON list")
    for f in data:
        if not isinstance(f, dict) or f.get("fault") not in FAULTS:
            raise ValueError(f"not a fault of the simulator: {f!r}")
        for field in ("at", "for"):
            if not isinstance(f.get(field), (int, float)) or f[field] < 0:
                raise ValueError(f"fault {f!r}: {field!r} must be a non-negative number")
        if not isinstance(f.get("targets", []), list):
            raise ValueError(f"fault {f!r}: targets must be a list")
        f.setdefault("targets", [])
        f.setdefault("params", {})
    return data
