"""Small pure helpers shared by the checkers."""
from __future__ import annotations

import math

NS_PER_S = 1_000_000_000


def percentile(sorted_xs, q: float):
    """Nearest-rank percentile of an already sorted sequence (q in [0, 100])."""
    if not sorted_xs:
        return None
    n = len(sorted_xs)
    rank = math.ceil(q * n / 100 - 1e-9)  # nearest rank: the ceil(q% * n)-th
    return sorted_xs[min(n, max(1, rank)) - 1]


def distribution(xs, scale: float = 1.0) -> dict:
    """count/p50/p90/p99/max (and mean) of xs, each multiplied by scale."""
    xs = sorted(xs)
    if not xs:
        return {"count": 0, "p50": None, "p90": None, "p99": None, "max": None,
                "mean": None}
    return {"count": len(xs),
            "p50": percentile(xs, 50) * scale,
            "p90": percentile(xs, 90) * scale,
            "p99": percentile(xs, 99) * scale,
            "max": xs[-1] * scale,
            "mean": sum(xs) / len(xs) * scale}


def ns_to_s(ns):
    return None if ns is None else ns / NS_PER_S


def sort_key(x):
    """A total order over keys/values of mixed types (JSON keys are strings,
    but numeric strings sort numerically so "10" comes after "9")."""
    if isinstance(x, str):
        try:
            return (0, int(x), x)
        except ValueError:
            return (1, 0, x)
    if isinstance(x, (int, float)):
        return (0, x, "")
    return (2, 0, repr(x))


def downsample(points, max_points: int = 1000):
    """Keeps at most about max_points of a time series, always the last."""
    n = len(points)
    if n <= max_points:
        return list(points)
    step = n / max_points
    out = [points[int(i * step)] for i in range(max_points)]
    if out[-1] is not points[-1]:
        out.append(points[-1])
    return out
