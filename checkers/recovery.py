"""Recovery bounds (issue 5): how long each key was unable to take writes.

Faults come from the nemesis events (``start-<fault>`` / ``stop-<fault>``,
paired by ``value.id``). For each fault and key: the time from the fault's
start, and from its heal, until the key acknowledged a send invoked after
that moment. For each key, its unavailability windows: every send attempt
(whatever its outcome) waits until the key next acknowledges any send; the
longest such wait is the key's longest window (``longest_windows``; the
longest few per key, for plots, in ``windows``). A window longer than
``options["recovery_bound_s"]`` is a ``recovery-bound-exceeded`` anomaly
(None: report only).
"""
from __future__ import annotations

from bisect import bisect_left

from .history import History
from .util import NS_PER_S, ns_to_s, sort_key


def faults_of(history: History):
    """[{fault, id, targets, start, stop}] in start order (times in ns;
    stop None when never healed)."""
    open_, out = {}, []
    for op in history.nemesis:
        v = op.value if isinstance(op.value, dict) else {}
        fault = v.get("fault", op.f.split("-", 1)[-1])
        key = (fault, v.get("id"))
        t = op.time if op.time is not None else op.invoke_time
        if op.f.startswith("start-"):
            rec = {"fault": fault, "id": v.get("id"), "targets": v.get("targets"),
                   "start": t, "stop": None}
            open_[key] = rec
            out.append(rec)
        elif op.f.startswith("stop-"):
            rec = open_.pop(key, None)
            if rec is not None:
                rec["stop"] = t
    return out


def _sends_by_key(history: History):
    """k -> (sorted ok ack times, [(invoke time, op)] of attempts,
    [(invoke time, ack time)] of ok sends sorted by invoke)."""
    acks, attempts, oks = {}, {}, {}
    for op in history.ops:
        if op.f not in ("send", "txn") or not isinstance(op.value, list):
            continue
        ks = {m[1] for m in op.value if m and m[0] == "send" and len(m) > 1}
        for k in ks:
            attempts.setdefault(k, []).append(op.invoke_time)
            if op.type == "ok":
                acks.setdefault(k, []).append(op.time)
                oks.setdefault(k, []).append((op.invoke_time, op.time))
    for k in acks:
        acks[k].sort()
    return acks, attempts, oks


def _first_ack_after(oks, t):
    """Earliest ack among ok sends invoked at or after t."""
    best = None
    for inv, ack in oks[bisect_left(oks, (t, -1)):]:
        if best is None or ack < best:
            best = ack
        if best is not None and inv > best:
            break  # later invokes cannot ack earlier than best
    return best


def recovery(history: History, options=None) -> dict:
    options = options or {}
    bound_s = options.get("recovery_bound_s")
    max_windows = options.get("recovery_max_windows", 20)
    end = history.end_time
    faults = faults_of(history)
    acks, attempts, oks = _sends_by_key(history)
    keys = sorted(attempts, key=sort_key)

    windows = {}
    top = {}
    anomalies = []
    for k in keys:
        ak = acks.get(k, [])
        worst = None
        by_end = {}   # ack (or end) -> earliest attempt waiting for it
        for t in attempts[k]:
            j = bisect_left(ak, t)
            if j < len(ak):
                w = (t, ak[j], False)
            else:
                w = (t, end, True)
            if worst is None or w[1] - w[0] > worst[1] - worst[0]:
                worst = w
            e = (w[1], w[2])
            if e not in by_end or t < by_end[e]:
                by_end[e] = t
        longest = sorted(((e - t0, t0, e, u) for (e, u), t0 in by_end.items()),
                         reverse=True)[:max_windows]
        top[k] = [{"start_s": ns_to_s(t0), "end_s": ns_to_s(e), "window_s": ns_to_s(d),
                   "unrecovered": u} for d, t0, e, u in sorted(longest, key=lambda x: x[1])]
        if worst is None:
            continue
        t0, t1, unrecovered = worst
        overlapping = [{"fault": f["fault"], "id": f["id"]} for f in faults
                       if f["start"] <= t1 and (f["stop"] if f["stop"] is not None else end) >= t0]
        win = {"key": k, "window_s": ns_to_s(t1 - t0), "start_s": ns_to_s(t0),
               "end_s": ns_to_s(t1), "unrecovered": unrecovered, "faults": overlapping}
        windows[k] = win
        if bound_s is not None and (t1 - t0) > bound_s * NS_PER_S:
            anomalies.append({**win, "bound_s": bound_s})

    per_fault = []
    for f in faults:
        per_key = {}
        for k in keys:
            ok = oks.get(k, [])
            a_start = _first_ack_after(ok, f["start"])
            a_heal = _first_ack_after(ok, f["stop"]) if f["stop"] is not None else None
            per_key[k] = {
                "after_start_s": ns_to_s(a_start - f["start"]) if a_start is not None else None,
                "after_heal_s": (ns_to_s(a_heal - f["stop"]) if a_heal is not None else None),
            }
        heal_times = [v["after_heal_s"] for v in per_key.values() if v["after_heal_s"] is not None]
        start_times = [v["after_start_s"] for v in per_key.values()
                       if v["after_start_s"] is not None]
        per_fault.append({"fault": f["fault"], "id": f["id"], "targets": f["targets"],
                          "start_s": ns_to_s(f["start"]), "stop_s": ns_to_s(f["stop"]),
                          "max_after_start_s": max(start_times) if start_times else None,
                          "max_after_heal_s": max(heal_times) if heal_times else None,
                          "keys": per_key})
    # For plots: the time axis, fault intervals (faults), per-key times to
    # the first ok send after each start / heal (faults[].keys), and per key
    # its longest unavailability windows (windows, by start time).
    result = {"valid": not anomalies, "bound_s": bound_s, "end_s": ns_to_s(end),
              "keys": keys, "faults": per_fault,
              "longest_windows": windows, "windows": top}
    if anomalies:
        result["anomaly_types"] = ["recovery-bound-exceeded"]
        result["anomalies"] = {"recovery-bound-exceeded": anomalies}
    return result


class RecoveryChecker:
    name = "recovery"

    def check(self, history: History, options=None) -> dict:
        return recovery(history, options)
