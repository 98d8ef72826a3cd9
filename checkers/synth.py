"""Synthetic histories from a model of a *correct* partitioned log, for the
checkers' property tests and benchmarks (no I/O, deterministic per seed).

Each key is an append-only log. Clients are sequential processes; each op
takes effect at one instant between its invoke and its completion (so the
history is linearizable). Sends append (ok: offset reported; fail: nothing
happened; info: maybe happened, the client crashes and a fresh process takes
its place). Polls read, from each assigned key's position, up to ``batch``
entries. Assign replaces the key set, new keys starting from the beginning.
At the end every process seeks to the beginning of every key and polls until
it has caught up, like Jepsen's final polls, so nothing is left unseen.
"""
from __future__ import annotations

import heapq
import random


class _Proc:
    __slots__ = ("pid", "keys", "pos", "busy")

    def __init__(self, pid):
        self.pid = pid
        self.keys = []
        self.pos = {}
        self.busy = False


def generate(n_ops: int = 200, processes: int = 4, keys: int = 3, seed: int = 0,
             p_send: float = 0.5, p_assign: float = 0.05, p_fail: float = 0.03,
             p_info: float = 0.03, batch: int = 4, max_mops: int = 1,
             nemesis_every: int = 0, final_polls: bool = True,
             latency_ns=(1_000_000, 10_000_000)) -> list:
    """A list of event dicts (design.md's history format) of about n_ops
    client operations (plus final polls), valid by construction.

    nemesis_every: if > 0, a start-kill / stop-kill pair every that many ops
    (while ops are in flight; no effect on the log)."""
    rng = random.Random(seed)
    key_names = [str(k) for k in range(keys)]
    logs = {k: [] for k in key_names}
    next_value = {k: 1 for k in key_names}
    events = []
    heap = []   # (time, seq, kind, payload)
    seq = 0
    next_pid = processes

    def emit(t, process, type_, f, value, **extra):
        ev = {"index": len(events), "time": t, "process": process, "type": type_,
              "f": f, "value": value}
        ev.update(extra)
        events.append(ev)

    def lat():
        return rng.randint(*latency_ns)

    def schedule(t, kind, payload):
        nonlocal seq
        seq += 1
        heapq.heappush(heap, (t, seq, kind, payload))

    procs = [_Proc(p) for p in range(processes)]
    issued = 0
    final_phase = False
    fault_id = 0
    open_fault = None

    def start_op(proc, t):
        """Invoke proc's next op at time t."""
        nonlocal issued
        if final_phase:
            if not proc.keys or proc.keys != key_names or proc.pos.get("_seeked") is None:
                op = ("assign", list(key_names), True)
            elif all(proc.pos[k] >= len(logs[k]) for k in key_names):
                return  # caught up: this process is done
            else:
                op = ("poll", None, None)
        else:
            issued += 1
            r = rng.random()
            if not proc.keys or r < p_assign:
                ks = rng.sample(key_names, rng.randint(1, len(key_names)))
                op = ("assign", sorted(ks, key=int), False)
            elif r < p_assign + p_send * (1 - p_assign):
                mops = []
                for _ in range(rng.randint(1, max_mops)):
                    k = rng.choice(key_names)
                    mops.append([k, next_value[k]])
                    next_value[k] += 1
                op = ("send", mops, None)
            else:
                op = ("poll", None, None)
        f = op[0]
        if f == "assign":
            extra = {"seek_to_beginning": True} if op[2] else {}
            emit(t, proc.pid, "invoke", "assign", op[1], **extra)
        elif f == "send":
            emit(t, proc.pid, "invoke", "send", [["send", k, v] for k, v in op[1]])
        else:
            emit(t, proc.pid, "invoke", "poll", [["poll"]])
        proc.busy = True
        t_lin = t + lat()
        schedule(t_lin, "lin", (proc, op))

    def linearize(proc, op, t):
        f = op[0]
        r = rng.random()
        outcome = "ok"
        if not final_phase and f != "assign":
            if r < p_fail:
                outcome = "fail"
            elif r < p_fail + p_info:
                outcome = "info"
        if f == "assign":
            ks = op[1]
            pos = {k: (proc.pos.get(k, 0) if not op[2] else 0) for k in ks}
            if op[2]:
                pos["_seeked"] = True
            proc.keys, proc.pos = list(ks), pos
            result = ks
        elif f == "send":
            applied = outcome == "ok" or (outcome == "info" and rng.random() < 0.5)
            result = []
            for k, v in op[1]:
                if applied:
                    logs[k].append(v)
                    result.append(["send", k, [len(logs[k]) - 1, v]])
                else:
                    result.append(["send", k, v])
        else:
            if outcome != "ok":
                result = [["poll"]]
            else:
                got = {}
                size = batch * (50 if final_phase else 1)
                for k in proc.keys:
                    p = proc.pos.get(k, 0)
                    chunk = logs[k][p:p + size]
                    if chunk:
                        got[k] = [[p + i, v] for i, v in enumerate(chunk)]
                        proc.pos[k] = p + len(chunk)
                result = [["poll", got]]
        schedule(t + lat(), "done", (proc, f, outcome, result))

    def complete(proc, f, outcome, result, t):
        emit(t, proc.pid, outcome, f, result)
        proc.busy = False
        if outcome == "info":
            # the client crashed: a fresh process takes its slot
            nonlocal next_pid
            i = procs.index(proc)
            procs[i] = _Proc(next_pid)
            next_pid += 1
            proc = procs[i]
        schedule(t + rng.randint(0, latency_ns[0]), "start", proc)

    t = 0
    for proc in procs:
        schedule(rng.randint(0, latency_ns[0]), "start", proc)
    while heap:
        t, _, kind, payload = heapq.heappop(heap)
        if kind == "start":
            proc = payload
            if proc not in procs or (not final_phase and issued >= n_ops):
                pass  # replaced, or waiting for everyone to go idle
            else:
                start_op(proc, t)  # first, so the fault starts mid-operation
                late = issued >= 0.8 * n_ops  # heal early enough for sends after it
                if nemesis_every and not final_phase and issued and (
                        issued % nemesis_every == 0 or (late and open_fault is not None)):
                    if open_fault is None and not late:
                        fault_id += 1
                        open_fault = fault_id
                        emit(t, "nemesis", "info", "start-kill",
                             {"fault": "kill", "id": fault_id, "targets": ["n1"]})
                    elif open_fault is not None:
                        emit(t, "nemesis", "info", "stop-kill",
                             {"fault": "kill", "id": open_fault, "targets": ["n1"]})
                        open_fault = None
        elif kind == "lin":
            proc, op = payload
            linearize(proc, op, t)
        else:
            proc, f, outcome, result = payload
            complete(proc, f, outcome, result, t)
        if not heap and not final_phase:
            # everyone idle: heal, then final polls
            if open_fault is not None:
                emit(t, "nemesis", "info", "stop-kill",
                     {"fault": "kill", "id": open_fault, "targets": ["n1"]})
                open_fault = None
            if not final_polls:
                break
            final_phase = True
            for proc in procs:
                proc.keys = []
                proc.pos = {}
                schedule(t + 1, "start", proc)
    return events


def build(lines, dt: int = 1000) -> list:
    """Event dicts from compact lines, for hand-written histories:
    (process, type, f, value) or (process, type, f, value, extra_dict).
    index is the position; time is index * dt unless extra gives "time"."""
    events = []
    for i, line in enumerate(lines):
        process, type_, f, value = line[:4]
        ev = {"index": i, "time": i * dt, "process": process, "type": type_,
              "f": f, "value": value}
        if len(line) > 4 and line[4]:
            ev.update(line[4])
        events.append(ev)
    return events


def _report_failed(ev) -> None:
    """An ok send completion turned into a fail one (as the invoke's value)."""
    ev["type"] = "fail"
    ev["value"] = [["send", m[1], m[2][1]] for m in ev["value"]]


def plant_anomalies(events: list) -> list:
    """Plants, in place: one acked value lost mid-log (removed from every
    poll), another duplicated at a far offset, a send that polls saw
    reported as failed, and one poll reading a value nobody sent at an
    offset that holds another. lost-write, duplicate, G1a, garbage-read,
    inconsistent-offsets, skips and G0 cycles must then be found (the
    checker benchmark, tests, and the kernels' warm-up use it)."""
    sends = [m for ev in events if ev["type"] == "ok" and ev["f"] == "send"
             for m in ev["value"]]
    _, k, (_, v) = sends[len(sends) // 2]
    _, k2, (_, v2) = sends[len(sends) // 3]
    _, k3, (_, v3) = sends[2 * len(sends) // 3]
    dup_done = False
    for ev in events:
        if ev["f"] == "poll" and ev["type"] != "invoke":
            for m in ev["value"]:
                if len(m) > 1 and k in m[1]:
                    m[1][k] = [p for p in m[1][k] if p[1] != v]
                if not dup_done and ev["type"] == "ok" and len(m) > 1 and k2 in m[1] \
                        and any(p[1] == v2 for p in m[1][k2]):
                    m[1][k2].append([10**9, v2])
                    dup_done = True
        elif ev["f"] == "send" and ev["type"] == "ok" and \
                any(m[1] == k3 and m[2][1] == v3 for m in ev["value"]):
            _report_failed(ev)
    # a value nobody sent, yet near the others (the checker's dense value
    # arrays would not take a far one, and the benchmark would time the
    # fallback instead)
    garbage = 1 + max(m[2][1] if isinstance(m[2], list) else m[2]
                      for ev in events if ev["f"] == "send" for m in ev["value"])
    for ev in reversed(events):
        if ev["f"] == "poll" and ev["type"] == "ok":
            reads = [ps for m in ev["value"] if len(m) > 1 for kk, ps in m[1].items()
                     if ps and kk != k and kk != k2]
            if reads:
                reads[0][0] = [reads[0][0][0], garbage]
                break
    return events


def plant_many(events: list, fraction: float = 0.02, seed: int = 0) -> list:
    """A badly broken system, in place: of the acked sends, a fraction lost
    (removed from every poll), a fraction reported failed though polls saw
    them, a fraction duplicated at a far offset. Thousands to millions of
    cases of one type, for the checker benchmark and tests (the result
    must stay quick to make and small to print)."""
    rng = random.Random(seed)
    sends = [(m[1], m[2][1]) for ev in events if ev["type"] == "ok" and ev["f"] == "send"
             for m in ev["value"]]
    n = int(len(sends) * fraction)
    lost, failed, dup = (set(rng.sample(sends, n)) for _ in range(3))
    far = 1 + max((p[0] for ev in events if ev["f"] == "poll" and ev["type"] == "ok"
                   for m in ev["value"] if len(m) > 1 for ps in m[1].values() for p in ps),
                  default=0)
    for ev in events:
        if ev["f"] == "poll" and ev["type"] == "ok":
            for m in ev["value"]:
                for k, ps in (m[1].items() if len(m) > 1 else ()):
                    ps[:] = [p for p in ps if (k, p[1]) not in lost]
                    ps.extend([[p[0] + far, p[1]] for p in ps if (k, p[1]) in dup])
        elif ev["f"] == "send" and ev["type"] == "ok" and \
                any((m[1], m[2][1]) in failed for m in ev["value"]):
            _report_failed(ev)
    return events
