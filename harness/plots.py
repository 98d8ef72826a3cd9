"""Plots of a run, written into its store directory:

- `latency-raw.png`: every operation's latency over time, by f and completion
  type, with the fault windows shaded (Jepsen's latency-raw);
- `rate.png`: completions per second by f and type;
- `latency-quantiles.png`: per second, the p50 / p95 / p99 / max latency of
  sends and polls (Jepsen's latency-quantiles);
- `lag.png`: realtime lag, as the number of acknowledged values no poll had
  read yet, per key over time (the kafka checker's unseen series);
- `availability.png`: per key, each ok send as a tick, the longest
  unavailability windows as bars, the fault windows shaded: what the recovery
  checker measured, made visible.

Plotting never decides a verdict; a failure here is logged, not raised.
"""
from __future__ import annotations

import logging
from collections import defaultdict
from pathlib import Path

log = logging.getLogger(__name__)

COLORS = {"ok": "#2b8a3e", "info": "#e67700", "fail": "#c92a2a"}
MARKERS = {"send": "o", "poll": "^", "assign": "s", "subscribe": "s", "txn": "D"}


def _fault_windows(history) -> list[tuple[float, float, str]]:
    starts, windows = {}, []
    end = history.end_time / 1e9 if getattr(history, "end_time", None) else None
    for op in history.nemesis:
        v = op.value if isinstance(op.value, dict) else {}
        key = (v.get("fault"), v.get("id"))
        t = op.invoke_time / 1e9
        if op.f.startswith("start-"):
            starts[key] = t
        elif op.f.startswith("stop-") and key in starts:
            windows.append((starts.pop(key), t, f"{key[0]} {','.join(v.get('targets', []))}"))
    for key, t in starts.items():
        windows.append((t, end or t, f"{key[0]} (not healed)"))
    return sorted(windows)


def _shade(ax, windows) -> None:
    for i, (a, b, label) in enumerate(windows):
        ax.axvspan(a, b, color="#868e96", alpha=0.15, lw=0)
        ax.text(a, 1.0, label, transform=ax.get_xaxis_transform(), fontsize=7, va="bottom", color="#495057")


def write_plots(run_dir, history, results: dict) -> list[Path]:
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError as e:
        log.warning("no plots: matplotlib unavailable (%s)", e)
        return []
    run_dir = Path(run_dir)
    written = []
    windows = _fault_windows(history)
    client_ops = [op for op in history.ops if op.time is not None and op.f in MARKERS]

    fig, ax = plt.subplots(figsize=(11, 4.5))
    groups = defaultdict(lambda: ([], []))
    for op in client_ops:
        xs, ys = groups[(op.f, op.type)]
        xs.append(op.invoke_time / 1e9)
        ys.append(max((op.time - op.invoke_time) / 1e6, 0.01))
    for (f, type_), (xs, ys) in sorted(groups.items()):
        ax.scatter(xs, ys, s=6, marker=MARKERS[f], color=COLORS.get(type_, "k"), alpha=0.6, label=f"{f} {type_}")
    ax.set_yscale("log")
    ax.set_xlabel("time (s)")
    ax.set_ylabel("latency (ms)")
    _shade(ax, windows)
    ax.legend(fontsize=7, markerscale=2, loc="upper right")
    ax.set_title(f"latency — valid: {results.get('valid')}", fontsize=10)
    fig.tight_layout()
    fig.savefig(run_dir / "latency-raw.png", dpi=110)
    plt.close(fig)
    written.append(run_dir / "latency-raw.png")

    fig, ax = plt.subplots(figsize=(11, 3.5))
    buckets = defaultdict(lambda: defaultdict(int))
    for op in client_ops:
        buckets[(op.f, op.type)][int(op.time / 1e9)] += 1
    for (f, type_), counts in sorted(buckets.items()):
        xs = sorted(counts)
        ax.plot(xs, [counts[x] for x in xs], drawstyle="steps-post", color=COLORS.get(type_, "k"),
                ls="-" if f == "send" else "--", label=f"{f} {type_}")
    ax.set_xlabel("time (s)")
    ax.set_ylabel("completions / s")
    _shade(ax, windows)
    ax.legend(fontsize=7, loc="upper right")
    fig.tight_layout()
    fig.savefig(run_dir / "rate.png", dpi=110)
    plt.close(fig)
    written.append(run_dir / "rate.png")

    written += _quantiles_plot(plt, run_dir, client_ops, windows)
    written += _lag_plot(plt, run_dir, results, windows)

    recovery = results.get("checkers", {}).get("recovery", {})
    keys = recovery.get("keys") or []
    if keys:
        ok_sends = defaultdict(list)
        for op in client_ops:
            if op.f == "send" and op.type == "ok":
                for m in op.value:
                    ok_sends[m[1]].append(op.time / 1e9)
        fig, ax = plt.subplots(figsize=(11, 0.45 * len(keys) + 1.5))
        bound = recovery.get("bound_s")
        for row, key in enumerate(keys):
            ax.scatter(ok_sends.get(key, []), [row] * len(ok_sends.get(key, [])), marker="|", s=40,
                       color=COLORS["ok"], lw=0.6)
            for w in recovery.get("windows", {}).get(key, []):
                if w["window_s"] < 0.5:
                    continue
                too_long = bound is not None and w["window_s"] > bound
                ax.broken_barh([(w["start_s"], w["window_s"])], (row - 0.3, 0.6),
                               color="#c92a2a" if too_long else "#ffa94d", alpha=0.7)
        ax.set_yticks(range(len(keys)), [f"key {k}" for k in keys], fontsize=7)
        ax.set_xlabel("time (s)")
        title = "ok sends per key; bars: unavailability windows"
        ax.set_title(title + (f" (red: longer than the {bound:g}s bound)" if bound else ""), fontsize=10)
        _shade(ax, windows)
        fig.tight_layout()
        fig.savefig(run_dir / "availability.png", dpi=110)
        plt.close(fig)
        written.append(run_dir / "availability.png")
    return written


QUANTILES = ((0.5, "p50", "-"), (0.95, "p95", "--"), (0.99, "p99", "-."), (1.0, "max", ":"))


def _quantiles_plot(plt, run_dir: Path, client_ops, windows) -> list[Path]:
    import numpy as np
    fig, ax = plt.subplots(figsize=(11, 3.5))
    drawn = False
    for f, color in (("send", "#1971c2"), ("poll", "#862e9c")):
        ops = [op for op in client_ops if op.f == f]
        if not ops:
            continue
        second = np.array([int(op.invoke_time / 1e9) for op in ops])
        latency = np.array([max((op.time - op.invoke_time) / 1e6, 0.01) for op in ops])
        xs = np.unique(second)
        for q, label, ls in QUANTILES:
            ys = [np.quantile(latency[second == x], q) for x in xs]
            ax.plot(xs, ys, ls=ls, color=color, drawstyle="steps-post", label=f"{f} {label}")
            drawn = True
    if not drawn:
        plt.close(fig)
        return []
    ax.set_yscale("log")
    ax.set_xlabel("time (s)")
    ax.set_ylabel("latency (ms)")
    _shade(ax, windows)
    ax.legend(fontsize=7, loc="upper right", ncol=2)
    fig.tight_layout()
    out = run_dir / "latency-quantiles.png"
    fig.savefig(out, dpi=110)
    plt.close(fig)
    return [out]


def _lag_plot(plt, run_dir: Path, results: dict, windows) -> list[Path]:
    series = (results.get("checkers", {}).get("kafka") or {}).get("unseen_series") or []
    if not series:
        return []
    keys = sorted({k for point in series for k in point.get("unseen", {})}, key=lambda k: (len(k), k))
    fig, ax = plt.subplots(figsize=(11, 3.5))
    xs = [point["time"] / 1e9 for point in series]
    ax.plot(xs, [sum(point.get("unseen", {}).values()) for point in series], color="k", lw=1.2,
            drawstyle="steps-post", label="all keys")
    for k in keys[:12]:
        ax.plot(xs, [point.get("unseen", {}).get(k, 0) for point in series], lw=0.7, alpha=0.7,
                drawstyle="steps-post", label=f"key {k}")
    ax.set_xlabel("time (s)")
    ax.set_ylabel("acked, not yet read")
    _shade(ax, windows)
    ax.legend(fontsize=7, loc="upper right", ncol=2)
    fig.tight_layout()
    out = run_dir / "lag.png"
    fig.savefig(out, dpi=110)
    plt.close(fig)
    return [out]
