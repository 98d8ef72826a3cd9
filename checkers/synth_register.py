"""Synthetic cas-register histories like Jepsen's etcd tests (the ones
Knossos and Porcupine are measured on): for the linearizability benchmark
and tests (no I/O, deterministic per seed).

Client threads run reads, writes and compare-and-sets of small integers on
one register, back to back. Each op takes effect at one instant between its
invoke and its completion, so the history is linearizable; a cas whose
expected value is not there fails. An op may time out (``info``): it then
takes effect at some instant after its invoke, before or after the client
gave up on it, or never, and the thread goes on as a fresh process (as
Jepsen's clients do). ``stale_reads`` makes some reads return a value the
register held before a write that completed before the read began: the
bug the etcd tests found, which a checker must report.
"""
from __future__ import annotations

import random


def cas_register_history(n_ops: int = 1000, clients: int = 5, seed: int = 0,
                         values: int = 5, p_info: float = 0.03, stale_reads: int = 0,
                         latency_ns: float = 2_000_000, timeout_ns: int = 1_000_000_000) -> list:
    """A list of event dicts (process, type, f, value, time, index) of
    n_ops operations by `clients` threads."""
    rng = random.Random(seed)
    ops = []  # [call, ret, effect (None: never), thread, f, value]
    for thread in range(clients):
        t = rng.randrange(1_000_000)
        for _ in range(n_ops // clients + (thread < n_ops % clients)):
            f = rng.choice(("read", "write", "cas"))
            v = None if f == "read" else (rng.randrange(values) if f == "write" else
                                          [rng.randrange(values), rng.randrange(values)])
            call = t + rng.randrange(1, 200_000)
            if rng.random() < p_info:
                ret = call + timeout_ns
                effect = call + rng.randrange(2 * timeout_ns) if rng.random() < 0.5 else None
                info = True
            else:
                ret = call + 1 + int(rng.expovariate(1 / latency_ns))
                effect = rng.randrange(call, ret + 1)
                info = False
            ops.append([call, ret, effect, thread, f, v, info])
            t = ret
    # outcomes, in the order the ops took effect
    state = None
    history_of = []  # (time, value written) of every change, to find stale values
    outcome = [None] * len(ops)
    for j in sorted((j for j, o in enumerate(ops) if o[2] is not None), key=lambda j: ops[j][2]):
        call, ret, effect, thread, f, v, info = ops[j]
        if f == "read":
            outcome[j] = ("ok", state)
        elif f == "write":
            state = v
            history_of.append((effect, v))
            outcome[j] = ("ok", v)
        elif state == v[0]:
            state = v[1]
            history_of.append((effect, v[1]))
            outcome[j] = ("ok", v)
        else:
            outcome[j] = ("fail", v)
    # stale reads: the value before the last change that happened before
    # the read began, where it differs from what the register held
    reads = [j for j, o in enumerate(ops) if o[4] == "read" and not o[6]]
    for j in rng.sample(reads, min(stale_reads, len(reads))):
        call = ops[j][0]
        before = [x for x in history_of if x[0] < call]
        if len(before) >= 2 and before[-2][1] != outcome[j][1]:
            outcome[j] = ("ok", before[-2][1])
    # events, per thread: invoke, completion; a timed out thread goes on as
    # a fresh process
    events = []
    process = list(range(clients))
    for j, (call, ret, effect, thread, f, v, info) in sorted(enumerate(ops),
                                                              key=lambda x: x[1][0]):
        p = process[thread]
        events.append((call, 0, {"process": p, "type": "invoke", "f": f, "value": v}))
        if info:
            events.append((ret, 1, {"process": p, "type": "info", "f": f, "value": v}))
            process[thread] += clients
        else:
            typ, out = outcome[j]
            events.append((ret, 1, {"process": p, "type": typ, "f": f, "value": out}))
    events.sort(key=lambda e: (e[0], e[1]))
    out = []
    for i, (t, _, ev) in enumerate(events):
        ev["time"] = t
        ev["index"] = i
        out.append(ev)
    return out


def etcd_like_set(n: int = 100, seed: int = 0, stale_every: int = 10):
    """n histories like Jepsen's etcd runs: 5 to 10 clients, 100 to 3000
    operations each, a few timeouts; every stale_every-th one with stale
    reads. Yields (name, events)."""
    rng = random.Random(seed)
    for k in range(n):
        clients = rng.randint(5, 10)
        n_ops = rng.randint(100, 3000)
        stale = 2 if stale_every and k % stale_every == stale_every - 1 else 0
        yield (f"etcd-{k:03d}", cas_register_history(n_ops, clients, seed=seed * 1000 + k,
                                                      p_info=rng.uniform(0.005, 0.03),
                                                      stale_reads=stale))
