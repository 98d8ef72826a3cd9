"""Linearizability: Wing & Gong's search with Lowe's memoisation (as in
Porcupine), P-compositional (each key checked on its own, stopping at the
first violation), within a time and state budget ("unknown" past it).

An operation is ``Operation(call, ret, input, output)`` with ``ret`` None
for an indeterminate (info) op: it may take effect at any point after its
call, or never. Failed ops are left out by the caller. A model is an object
with ``init`` (a hashable state), ``step(state, input, output) -> (ok,
state')`` and optionally ``partition(ops) -> [ops, ...]``.

Models: ``register``, ``cas-register``, ``kv`` (a register per key) and
``log``, the Kafka partition: ``("append", value, offset|None)`` appends
(and must land at the reported offset), ``("read", [(offset, value), ...])``
must match the log at that moment.
"""
from __future__ import annotations

import time
from collections import namedtuple

from .history import History

Operation = namedtuple("Operation", "call ret input output ref")
Operation.__new__.__defaults__ = (None,)

INF = float("inf")


class Register:
    name = "register"
    init = None

    def step(self, state, inp, out):
        f, v = inp
        if f == "write":
            return True, v
        return out == state, state          # read: output is the value read


class CasRegister(Register):
    name = "cas-register"

    def step(self, state, inp, out):
        f, v = inp
        if f == "cas":
            old, new = v
            return (state == old, new) if state == old else (False, state)
        return Register.step(self, state, inp, out)


class KV:
    """A register per key: inputs (f, key, value)."""
    name = "kv"
    init = None

    def step(self, state, inp, out):
        f, _, v = inp
        return CasRegister().step(state, (f, v), out)

    def partition(self, ops):
        by_key = {}
        for op in ops:
            by_key.setdefault(op.input[1], []).append(op)
        return list(by_key.values())


class Log:
    """One Kafka partition: an append-only tuple of values."""
    name = "log"
    init = ()

    def step(self, state, inp, out):
        if inp[0] == "append":
            _, v, offset = inp
            if offset is not None and offset != len(state):
                return False, state
            return True, state + (v,)
        pairs = inp[1]
        n = len(state)
        for o, v in pairs:
            if o is None:
                if v not in state:
                    return False, state
            elif o >= n or state[o] != v:
                return False, state
        return True, state


MODELS = {m.name: m for m in (Register(), CasRegister(), KV(), Log())}


def _search(ops, model, deadline, max_states):
    """Lowe's just-in-time linearization over one partition.
    Returns (True|False|"unknown", info)."""
    # events: (time, is_return, op index); calls before returns at equal times
    events = []
    for i, op in enumerate(ops):
        events.append((op.call, 0, i))
        if op.ret is not None:
            events.append((op.ret, 1, i))
    events.sort(key=lambda e: (e[0], e[1]))
    n = len(events)
    # doubly linked list over event positions; n is the head sentinel
    head = n
    nxt = [p + 1 if p + 1 < n else -1 for p in range(n)] + [0 if n else -1]
    prv = [p - 1 if p > 0 else head for p in range(n)] + [-1]
    ret_pos = {i: p for p, (_, is_ret, i) in enumerate(events) if is_ret}
    remaining = sum(1 for op in ops if op.ret is not None)

    def lift(p):
        nxt[prv[p]] = nxt[p]
        if nxt[p] != -1:
            prv[nxt[p]] = prv[p]

    def unlift(p):
        if nxt[p] != -1:
            prv[nxt[p]] = p
        nxt[prv[p]] = p

    state = model.init
    linearized = 0
    cache = set()
    stack = []
    order = []
    best = (0, [], None)
    entry = nxt[head]
    steps = 0
    while True:
        if remaining == 0 or entry == -1:
            return True, {"order": order}
        steps += 1
        if steps & 1023 == 0 and (time.monotonic() > deadline or len(cache) > max_states):
            return "unknown", {"reason": "budget exhausted", "states": len(cache)}
        _, is_ret, i = events[entry]
        if not is_ret:
            op = ops[i]
            ok, new_state = model.step(state, op.input, op.output)
            if ok:
                new_lin = linearized | (1 << i)
                key = (new_lin, new_state)
                if key not in cache:
                    cache.add(key)
                    stack.append((entry, state, linearized))
                    state, linearized = new_state, new_lin
                    order.append(i)
                    lift(entry)
                    if i in ret_pos:
                        lift(ret_pos[i])
                        remaining -= 1
                    entry = nxt[head]
                    continue
            entry = nxt[entry]
        else:
            # op i returned without being linearized: backtrack
            done = sum(1 for j in order if ops[j].ret is not None)
            if done >= best[0]:
                best = (done, list(order), i)
            if not stack:
                return False, {"prefix": best[1], "cannot_place": best[2]}
            entry, state, linearized = stack.pop()
            j = order.pop()
            if j in ret_pos:
                unlift(ret_pos[j])
                remaining += 1
            unlift(entry)
            entry = nxt[entry]


def check_operations(ops, model, budget_s: float = 10.0, max_states: int = 2_000_000):
    """{"valid": True|False|"unknown", ...} for a list of Operations."""
    if isinstance(model, str):
        model = MODELS[model]
    deadline = time.monotonic() + budget_s
    parts = model.partition(ops) if hasattr(model, "partition") else [ops]
    unknown = None
    for part in parts:
        verdict, info = _search(part, model, deadline, max_states)
        if verdict is False:
            return {"valid": False, "model": model.name,
                    "prefix": [part[j] for j in info["prefix"]],
                    "cannot_place": part[info["cannot_place"]]}
        if verdict == "unknown":
            unknown = info
    if unknown:
        return {"valid": "unknown", "model": model.name, **unknown}
    return {"valid": True, "model": model.name, "partitions": len(parts)}


# ------------------------------------------------------- Kafka histories

def log_operations(history: History):
    """Per-key log operations from a Kafka history: each send micro-op of an
    ok or info send is an append (info: may or may not have happened), each
    key of an ok poll a read. (A multi-key send is split by key.)"""
    by_key = {}
    for op in history.ops:
        if op.f not in ("send", "poll", "txn") or op.type == "fail" or not op.value:
            continue
        ret = op.time if op.type == "ok" else None
        ref = op.ref()
        for m in op.value:
            if m[0] == "send":
                v = m[2]
                o, v = (v[0], v[1]) if isinstance(v, list) else (None, v)
                by_key.setdefault(m[1], []).append(
                    Operation(op.invoke_time, ret, ("append", v, o), None, ref))
            elif op.type == "ok" and len(m) > 1 and m[1]:
                for k, pairs in m[1].items():
                    if pairs:
                        by_key.setdefault(k, []).append(
                            Operation(op.invoke_time, ret,
                                      ("read", tuple((p[0], p[1]) for p in pairs)), None, ref))
    return by_key


class LinearizableChecker:
    name = "linearizable"

    def check(self, history: History, options=None) -> dict:
        options = options or {}
        budget = options.get("linearizable_budget_s", 10.0)
        max_states = options.get("linearizable_max_states", 2_000_000)
        deadline = time.monotonic() + budget
        unknown = []
        for k, ops in sorted(log_operations(history).items()):
            left = deadline - time.monotonic()
            if left <= 0:
                return {"valid": "unknown", "model": "log",
                        "reason": "time budget exhausted", "key": k}
            r = check_operations(ops, "log", left, max_states)
            if r["valid"] is False:
                w = {"key": k,
                     "op": {**r["cannot_place"].ref, "input": list(r["cannot_place"].input)},
                     "prefix_length": len(r["prefix"]),
                     "prefix_tail": [o.ref for o in r["prefix"][-5:]]}
                return {"valid": False, "model": "log",
                        "anomaly_types": ["nonlinearizable"],
                        "anomalies": {"nonlinearizable": [w]}}
            if r["valid"] == "unknown":
                unknown.append(k)
        if unknown:
            return {"valid": "unknown", "model": "log",
                    "reason": f"search budget exhausted on keys {unknown[:10]}"}
        return {"valid": True, "model": "log"}
