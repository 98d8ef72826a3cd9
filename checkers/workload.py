"""A quiet run is not a passing run (design.md, "Checker output").

A run is only allowed to be valid if it did real work: ok sends and ok polls
on every key sent to, at least one ok send after every heal, and every fault
injected while client operations were in flight. Otherwise the verdict is
"unknown", with the reasons.

"In flight" means the fault met the workload: some client operation was
pending when it started, or was invoked before it was healed. Demanding an
operation pending at the very instant of injection would reject honest runs
at low rates, where clients are often between operations.
"""
from __future__ import annotations

from bisect import bisect_left

import numpy as np

from .history import History
from .util import sort_key

MAX_REASONS = 20


def _fault_name(op):
    v = op.value if isinstance(op.value, dict) else {}
    return f"{v.get('fault', op.f.split('-', 1)[-1])} id {v.get('id')}"


def workload_sanity(history: History, options=None) -> dict:
    ops = history.ops
    reasons = []
    keys_sent, keys_acked, keys_polled = set(), set(), set()
    ok_sends = ok_polls = 0
    last_ok_send_invoke = -1
    invokes, completions = [], []
    lazy_ok = []  # ok polls whose reads are in history.polls
    for op in ops:
        invokes.append(op.invoke_index)
        if op.index is not None:
            completions.append(op.index)
        if op.f not in ("send", "poll", "txn"):
            continue
        if op.lazy_poll() is not None:  # value [["poll", {...}]], not decoded
            if op.type == "ok":
                ok_polls += 1
                lazy_ok.append(op.id)
            continue
        if not isinstance(op.value, list):
            continue
        sent_here = False
        for m in op.value:
            if m and m[0] == "send" and len(m) > 1:
                keys_sent.add(m[1])
                if op.type == "ok":
                    keys_acked.add(m[1])
                    sent_here = True
            elif m and m[0] == "poll" and op.type == "ok":
                ok_polls += 1
                if len(m) > 1 and isinstance(m[1], dict):
                    keys_polled.update(k for k, pairs in m[1].items() if pairs)
        if sent_here:
            ok_sends += 1
            last_ok_send_invoke = max(last_ok_send_invoke, op.invoke_index)
    if lazy_ok:
        t = history.polls
        ne = np.diff(t.seg_lo) > 0
        okop = np.zeros(len(ops), dtype=bool)
        okop[lazy_ok] = True
        sel = ne & okop[t.seg_op]
        seen = np.bincount(t.seg_key[sel], minlength=len(t.keys))
        keys_polled.update(t.keys[k] for k in np.flatnonzero(seen).tolist())
    if ok_sends == 0:
        reasons.append("no ok send")
    if ok_polls == 0:
        reasons.append("no ok poll")
    for k in sorted(keys_sent, key=sort_key):
        if k not in keys_acked:
            reasons.append(f"no ok send to key {k}")
        if k not in keys_polled:
            reasons.append(f"no ok poll read key {k}")
    completions.sort()  # invokes are already in file order
    healed_at = {}
    for nop in history.nemesis:
        v = nop.value if isinstance(nop.value, dict) else {}
        if nop.f.startswith("stop-"):
            healed_at.setdefault((v.get("fault"), v.get("id")), nop.invoke_index)
    faults = 0
    for nop in history.nemesis:
        idx = nop.index if nop.index is not None else nop.invoke_index
        if nop.f.startswith("stop-"):
            if last_ok_send_invoke < idx:
                reasons.append(f"no ok send after heal of {_fault_name(nop)}")
        elif nop.f.startswith("start-"):
            faults += 1
            at = nop.invoke_index  # when the fault began to be injected
            v = nop.value if isinstance(nop.value, dict) else {}
            until = healed_at.get((v.get("fault"), v.get("id")), float("inf"))
            pending_at_start = bisect_left(invokes, at) - bisect_left(completions, at)
            invoked_during = bisect_left(invokes, until) - bisect_left(invokes, at)
            if pending_at_start <= 0 and invoked_during <= 0:
                reasons.append(f"{_fault_name(nop)} started at index {at} "
                               f"with no client operation in flight")
    result = {"valid": True if not reasons else "unknown",
              "ok_sends": ok_sends, "ok_polls": ok_polls,
              "keys": len(keys_sent), "faults": faults}
    if reasons:
        result["reason"] = "; ".join(reasons[:3]) + (
            f" (and {len(reasons) - 3} more)" if len(reasons) > 3 else "")
        result["reasons"] = reasons[:MAX_REASONS]
    return result


class WorkloadChecker:
    name = "workload"

    def check(self, history: History, options=None) -> dict:
        return workload_sanity(history, options)
