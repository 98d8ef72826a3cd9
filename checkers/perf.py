"""Performance statistics: latency percentiles per f and type, throughput,
and a rate series for plots. Never judges: valid is always true."""
from __future__ import annotations

import numpy as np

from .history import History
from .util import NS_PER_S, distribution, ns_to_s


def perf(history: History, options=None) -> dict:
    options = options or {}
    max_buckets = options.get("rate_buckets", 600)
    fast = _perf_arrays(history, max_buckets)
    if fast is not None:
        return fast
    lat = {}          # f -> type -> [latency ns]
    count = {}        # f -> type -> n
    first = last = None
    for op in history.ops:
        if op.invoke_time is not None:
            first = op.invoke_time if first is None else min(first, op.invoke_time)
        if op.time is None:
            count.setdefault(op.f, {}).setdefault("info", 0)
            count[op.f]["info"] += 1
            continue
        last = op.time if last is None else max(last, op.time)
        lat.setdefault(op.f, {}).setdefault(op.type, []).append(op.time - op.invoke_time)
        count.setdefault(op.f, {}).setdefault(op.type, 0)
        count[op.f][op.type] += 1
    duration_ns = (last - first) if first is not None and last is not None else 0
    dur_s = duration_ns / NS_PER_S
    width = _bucket_width(dur_s, max_buckets)
    rate = {}
    if first is not None:
        for op in history.ops:
            if op.time is None:
                continue
            b = int((op.time - first) / NS_PER_S / width)
            series = rate.setdefault(f"{op.f}:{op.type}", {})
            series[b] = series.get(b, 0) + 1
    return _summary(lat, count, first, dur_s, width, rate)


def _perf_arrays(history: History, max_buckets):
    """perf() with numpy, for integer times (the common case): the same
    numbers, exactly. None when it does not apply."""
    ops = history.ops
    if not ops:
        return None
    inv = [op.invoke_time for op in ops]
    tm = [op.time for op in ops]
    if set(map(type, inv)) != {int} or not set(map(type, tm)) <= {int, type(None)}:
        return None
    groups = {}   # (f, type) -> code, in first-seen order
    codes = [groups.setdefault((op.f, op.type if op.time is not None else None), len(groups))
             for op in ops]
    inv = np.array(inv, dtype=np.int64)
    done = np.array([t is not None for t in tm], dtype=bool)
    tm = np.array([t if t is not None else 0 for t in tm], dtype=np.int64)
    codes = np.array(codes, dtype=np.int64)
    first = int(inv.min())
    last = int(tm[done].max()) if done.any() else None
    lat, count = {}, {}
    ng = len(groups)
    ncount = np.bincount(codes, minlength=ng).tolist()
    order = np.argsort(codes, kind="stable")
    sc = codes[order]
    bounds = np.searchsorted(sc, np.arange(ng + 1))
    dt = (tm - inv)[order]
    for (f, t), c in groups.items():
        if t is None:
            count.setdefault(f, {}).setdefault("info", 0)
            count[f]["info"] += ncount[c]
            continue
        lat.setdefault(f, {})[t] = dt[bounds[c]:bounds[c + 1]].tolist()
        count.setdefault(f, {}).setdefault(t, 0)
        count[f][t] += ncount[c]
    duration_ns = (last - first) if last is not None else 0
    dur_s = duration_ns / NS_PER_S
    width = _bucket_width(dur_s, max_buckets)
    rate = {}
    if done.any():
        b = ((tm[done] - first) / NS_PER_S / width).astype(np.int64)
        cd = codes[done]
        nb = int(b.max()) + 1
        per = np.bincount(cd * nb + b, minlength=ng * nb).reshape(ng, nb)
        for (f, t), c in groups.items():
            if t is None:
                continue
            row = per[c]
            nz = np.flatnonzero(row)
            series = rate.setdefault(f"{f}:{t}", {})
            for bb, nn in zip(nz.tolist(), row[nz].tolist()):
                series[bb] = series.get(bb, 0) + nn
    return _summary(lat, count, first, dur_s, width, rate)


def _bucket_width(dur_s: float, max_buckets: int) -> float:
    """Rate series buckets: 1 s, widened so that at most max_buckets fit."""
    return dur_s / max_buckets if dur_s > max_buckets else 1.0


def _summary(lat: dict, count: dict, first, dur_s: float, width: float, rate: dict) -> dict:
    """The result, from latencies (f -> type -> [ns]), counts (f -> type ->
    n) and the rate buckets ("f:type" -> bucket -> n), however gathered."""
    latency = {f: {t: distribution(xs, 1e-9) for t, xs in sorted(by_t.items())}
               for f, by_t in sorted(lat.items())}
    throughput = {f: {t: (n / dur_s if dur_s > 0 else None) for t, n in sorted(by_t.items())}
                  for f, by_t in sorted(count.items())}
    total_ok = sum(by_t.get("ok", 0) for by_t in count.values())
    rate_series = {name: [[round(b * width, 3), n / width] for b, n in sorted(s.items())]
                   for name, s in sorted(rate.items())}
    return {"valid": True,
            "duration_s": dur_s,
            "start_s": ns_to_s(first),
            "throughput_ok_per_s": (total_ok / dur_s) if dur_s > 0 else None,
            "throughput_per_s": throughput,
            "counts": {f: dict(sorted(by_t.items())) for f, by_t in sorted(count.items())},
            "latency_s": latency,
            "rate": {"bucket_s": width, "series": rate_series}}


class PerfChecker:
    name = "perf"

    def check(self, history: History, options=None) -> dict:
        return perf(history, options)
