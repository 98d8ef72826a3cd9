"""Recovery bounds (issue 5): how long each key was unable to take writes.

Faults come from the nemesis events (``start-<fault>`` / ``stop-<fault>``,
paired by ``value.id``; each timed from its invoke, so the recovery after a
heal counts the restart and the replay). For each fault and key: the time from the fault's
start, and from its heal, until the key acknowledged a send invoked after
that moment. For each key, its unavailability windows: every send attempt
(whatever its outcome) waits until the key next acknowledges any send; the
longest such wait is the key's longest window (``longest_windows``; the
longest few per key, for plots, in ``windows``). A window longer than
``options["recovery_bound_s"]`` is a ``recovery-bound-exceeded`` anomaly
(None: report only).
"""
from __future__ import annotations

import numpy as np

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
        # From the request (the invoke), as Jepsen: a heal's recovery
        # includes the restart and the WAL replay it sets off.
        t = op.invoke_time if op.invoke_time is not None else op.time
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
    """k -> (invoke times of its send attempts, ok flags, ack times), as
    arrays in invoke order."""
    inv, ok, ack = {}, {}, {}
    for op in history.ops:
        f = op.f
        if f != "send" and f != "txn":
            continue
        v = op.value
        if type(v) is not list:
            continue
        if len(v) == 1:  # the usual send: one micro-op, one key
            m = v[0]
            ks = (m[1],) if m and m[0] == "send" and len(m) > 1 else ()
        else:
            ks = {m[1] for m in v if m and m[0] == "send" and len(m) > 1}
        good = op.type == "ok"
        for k in ks:
            lst = inv.get(k)
            if lst is None:
                lst = inv[k] = []
                ok[k] = []
                ack[k] = []
            lst.append(op.invoke_time)
            ok[k].append(good)
            ack[k].append(op.time if good else 0)
    return {k: (np.array(inv[k]), np.array(ok[k], dtype=bool), np.array(ack[k]))
            for k in inv}


def _first_ack_after(oks, t):
    """Earliest ack among ok sends invoked at or after t; oks: (invoke
    times sorted, suffix minima of their acks)."""
    inv, suffix_min = oks
    i = int(np.searchsorted(inv, t, "left"))
    return suffix_min[i] if i < len(inv) else None


def _windows(attempts, acks, end):
    """Each attempt waits for the key's next ack (or the end: unrecovered).
    Returns (the longest wait (start, end, unrecovered) -- the first of
    equals, and per distinct wait end, the earliest attempt waiting for
    it: arrays start, end, unrecovered)."""
    if len(attempts) > 1 and (attempts[1:] < attempts[:-1]).any():
        attempts = np.sort(attempts, kind="stable")  # times went back (warned)
    j = np.searchsorted(acks, attempts, "left")
    unrecovered = j >= len(acks)
    e = acks[np.minimum(j, len(acks) - 1)] if len(acks) else np.zeros_like(attempts)
    e = np.where(unrecovered, end, e)
    w = int(np.argmax(e - attempts))
    worst = (attempts[w].item(), e[w].item(), bool(unrecovered[w]))
    # attempts are in time order, so each wait end is one run of them
    first = np.ones(len(e), dtype=bool)
    first[1:] = (e[1:] != e[:-1]) | (unrecovered[1:] != unrecovered[:-1])
    return worst, attempts[first], e[first], unrecovered[first]


def recovery(history: History, options=None) -> dict:
    options = options or {}
    bound_s = options.get("recovery_bound_s")
    max_windows = options.get("recovery_max_windows", 20)
    end = history.end_time
    faults = faults_of(history)
    sends = _sends_by_key(history)
    keys = sorted(sends, key=sort_key)

    windows = {}
    top = {}
    anomalies = []
    oks = {}
    for k in keys:
        inv, good, ack = sends[k]
        ak = np.sort(ack[good])
        o = np.lexsort((ack[good], inv[good]))
        oi, oa = inv[good][o], ack[good][o]
        oks[k] = (oi, np.minimum.accumulate(oa[::-1])[::-1].tolist())
        (t0, t1, unrecovered), starts, ends, unrec = _windows(inv, ak, end)
        d = ends - starts
        longest = np.lexsort((unrec, ends, starts, d))[::-1][:max_windows]
        longest = longest[np.argsort(starts[longest], kind="stable")]
        top[k] = [{"start_s": ns_to_s(a), "end_s": ns_to_s(b), "window_s": ns_to_s(c),
                   "unrecovered": u}
                  for a, b, c, u in zip(starts[longest].tolist(), ends[longest].tolist(),
                                        d[longest].tolist(), unrec[longest].tolist())]
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
            ok = oks[k]
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
