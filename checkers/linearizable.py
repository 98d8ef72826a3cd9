"""Linearizability: Wing & Gong's search with Lowe's memoisation (as in
Porcupine), P-compositional (each part a model's ``partition`` makes is
checked on its own, stopping at the first violation), within a time and
state budget ("unknown" past it).

An operation is ``Operation(call, ret, input, output)`` with ``ret`` None
for an indeterminate (info) op: it may take effect at any point after its
call, or never. Failed ops are left out by the caller. The models
(``checkers.models``): ``register``, ``cas-register``, ``kv`` (a register
per key, with append) and ``log``, the Kafka partition.

The search runs compiled (``checkers.wgl``) on the parts a model can
``encode`` as integer arrays (the register family); ``_search`` below is
the same search in Python, the reference the compiled one is tested
against, and the one for the other models (the log, kv appends).

On a violation the result names the longest linearizable prefix found and
the operation that cannot be placed after it; ``render_linear`` draws it.
Histories of the generic models given as events: ``checkers.model_history``.
"""
from __future__ import annotations

import time

import numpy as np

from . import wgl
from .history import History
from .models import MODELS, Operation  # noqa: F401  (Operation: part of this API)

INF = float("inf")


def info_classes(ops):
    """Indeterminate operations by what they do: (class of each op, -1 for
    a determinate one; size of each class). Two indeterminate operations
    with the same input and output are interchangeable once both have been
    called (either may still take effect, at any time), so the search's
    cache counts how many of each class it linearized rather than which:
    the same answer, far fewer states where many operations timed out."""
    cls = [-1] * len(ops)
    ids = {}
    sizes = []
    for i, op in enumerate(ops):
        if op.ret is None:
            try:
                g = ids.setdefault((op.input, op.output), len(ids))
            except TypeError:  # unhashable: a class of its own
                g = len(ids)
                ids[object()] = g
            if g == len(sizes):
                sizes.append(0)
            sizes[g] += 1
            cls[i] = g
    return cls, sizes


def _search(ops, model, deadline, max_states):
    """Lowe's just-in-time linearization over one partition: the
    reference checkers.wgl is tested against. Returns (True|False|
    "unknown", info).

    Indeterminate operations (which may take effect at any time after
    their call, or never) are what makes such searches explode, so the
    search only tries linearizations in a canonical form that every
    linearizable history also has: none where an indeterminate operation
    leaves the state as it was, or is followed at once by a blind one
    (``model.blind``: a write, whose effect does not depend on the state;
    the indeterminate one can then be left out, or taken later: where its
    effect is read). So after an indeterminate operation the next one may
    not be blind, and the cache holds (determinate operations linearized,
    count of each class of indeterminate ones linearized (info_classes),
    state, whether the last one was indeterminate). And a determinate read
    (``model.read_only``) the state allows is taken at once, alone (see
    below)."""
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

    # what linearizing op i adds to the cache key: a bit, or one more of
    # its class (counts in mixed radix)
    cls, sizes = info_classes(ops)
    radix = [1]
    for size in sizes:
        radix.append(radix[-1] * (size + 1))
    weight = [(1 << i) if g < 0 else radix[g] << len(ops) for i, g in enumerate(cls)]
    blind = [hasattr(model, "blind") and model.blind(op.input) for op in ops]
    read_only = [hasattr(model, "read_only") and model.read_only(op.input) for op in ops]
    state = model.init
    linearized = 0
    after_info = False  # the last op linearized was indeterminate
    cache = set()
    stack = []
    order = []
    best = (0, [], None)
    entry = nxt[head]
    steps = 0
    fresh = True  # a state not looked at yet: first, a forced move?
    while True:
        if remaining == 0 or entry == -1:
            return True, {"order": order}
        steps += 1
        if steps & 1023 == 0 and (time.monotonic() > deadline or len(cache) > max_states):
            return "unknown", {"reason": "budget exhausted", "states": len(cache)}
        exhausted = False
        if fresh:
            fresh = False
            # A determinate read (model.read_only: legal in some states,
            # changing none) the state allows can go first: whatever
            # linearization follows from here with it later also holds
            # with it now. So the search takes it, and nothing else from
            # this state.
            p = nxt[head]
            while p != -1 and not events[p][1]:
                i = events[p][2]
                op = ops[i]
                if op.ret is not None and read_only[i]:
                    ok, _ = model.step(state, op.input, op.output)
                    if ok:
                        break
                p = nxt[p]
            else:
                p = -1
            if p != -1:
                key = (linearized + weight[i], state, False)
                if key in cache:
                    exhausted = True
                else:
                    cache.add(key)
                    stack.append((p, state, linearized, after_info, True))
                    linearized, after_info = linearized + weight[i], False
                    order.append(i)
                    lift(p)
                    lift(ret_pos[i])
                    remaining -= 1
                    entry = nxt[head]
                    fresh = True
                    continue
        if not exhausted:
            _, is_ret, i = events[entry]
            if not is_ret:
                op = ops[i]
                indeterminate = op.ret is None
                if after_info and blind[i]:
                    ok = False
                else:
                    ok, new_state = model.step(state, op.input, op.output)
                    if indeterminate and new_state == state:
                        ok = False  # changes nothing: leave it out
                if ok:
                    new_lin = linearized + weight[i]
                    key = (new_lin, new_state, indeterminate)
                    if key not in cache:
                        cache.add(key)
                        stack.append((entry, state, linearized, after_info, False))
                        state, linearized, after_info = new_state, new_lin, indeterminate
                        order.append(i)
                        lift(entry)
                        if i in ret_pos:
                            lift(ret_pos[i])
                            remaining -= 1
                        entry = nxt[head]
                        fresh = True
                        continue
                entry = nxt[entry]
                continue
            # op i returned without being linearized: backtrack
            done = sum(1 for j in order if ops[j].ret is not None)
            if done >= best[0]:
                best = (done, list(order), i)
        # back to the last state with moves left (past forced moves: the
        # state before one has none)
        while True:
            if not stack:
                return False, {"prefix": best[1], "cannot_place": best[2]}
            entry, state, linearized, after_info, forced = stack.pop()
            j = order.pop()
            if j in ret_pos:
                unlift(ret_pos[j])
                remaining += 1
            unlift(entry)
            if not forced:
                break
        entry = nxt[entry]


def _search_compiled(ops, encoded, deadline, max_states):
    """_search by checkers.wgl over a part the model encoded as
    (init, kind, a, b): the same events in the same order, the same
    verdict and information."""
    init, kind, a, b = encoded
    events = []
    for i, op in enumerate(ops):
        events.append((op.call, 0, i))
        if op.ret is not None:
            events.append((op.ret, 1, i))
    events.sort(key=lambda e: (e[0], e[1]))
    ev_op = np.fromiter((e[2] for e in events), dtype=np.int64, count=len(events))
    ev_ret = np.fromiter((e[1] == 1 for e in events), dtype=np.bool_, count=len(events))
    ret_pos = np.full(len(ops), -1, dtype=np.int64)
    pos = np.flatnonzero(ev_ret)
    ret_pos[ev_op[pos]] = pos
    cls, sizes = info_classes(ops)
    try:  # the first pass wants integer times
        call = np.array([op.call for op in ops], dtype=np.int64)
        ret = np.array([op.ret if op.ret is not None else 0 for op in ops], dtype=np.int64)
        done = ret_pos >= 0
        if any(type(op.call) is not int or type(op.ret) not in (int, type(None)) for op in ops):
            call = None
    except (TypeError, OverflowError, ValueError):
        call = ret = done = None
    return wgl.check(ev_op, ev_ret, ret_pos, kind, a, b, init, cls, sizes, call, ret, done,
                     deadline, max_states)


def search_part(part, model, deadline, max_states, compiled=True):
    """One part's search: compiled if the model encodes it, else _search."""
    encoded = model.encode(part) if compiled and hasattr(model, "encode") else None
    if encoded is not None:
        return _search_compiled(part, encoded, deadline, max_states)
    return _search(part, model, deadline, max_states)


def violation(part, model, info):
    """check_operations' result for a part whose search said False."""
    prefix = [part[j] for j in info["prefix"]]
    state = model.init
    for o in prefix:
        _, state = model.step(state, o.input, o.output)
    r = {"valid": False, "model": model.name, "prefix": prefix,
         "cannot_place": part[info["cannot_place"]], "state": state, "partition": part}
    if "stale" in info:  # found by wgl.stale_read, not by the search
        r["stale"] = {k: part[j] if j >= 0 else None for k, j in info["stale"].items()}
    return r


def check_operations(ops, model, budget_s: float = 10.0, max_states: int = 2_000_000,
                     compiled: bool = True):
    """{"valid": True|False|"unknown", ...} for a list of Operations
    (compiled: False runs the Python search on every part, for tests)."""
    if isinstance(model, str):
        model = MODELS[model]
    deadline = time.monotonic() + budget_s
    parts = model.partition(ops) if hasattr(model, "partition") else [ops]
    unknown = None
    for part in parts:
        verdict, info = search_part(part, model, deadline, max_states, compiled)
        if verdict is False:
            return violation(part, model, info)
        if verdict == "unknown":
            unknown = info
    if unknown:
        return {"valid": "unknown", "model": model.name, **unknown}
    return {"valid": True, "model": model.name, "partitions": len(parts)}


# ------------------------------------------------------- Kafka histories

def _to_end_keys(op):
    """Keys an ok poll read to the end (extra field ``to_end``: true for
    every key it returned, or a list of keys), else an empty set."""
    te = op.extra.get("to_end") if op.extra else None
    if not te:
        return ()
    return _ALL if te is True else set(te)


class _AllKeys:
    def __contains__(self, _):
        return True


_ALL = _AllKeys()


def log_operations(history: History):
    """Per-key log operations from a Kafka history: each send micro-op of an
    ok or info send is an append (info: may or may not have happened), each
    key of an ok poll a read. (A multi-key send is split by key.) A poll
    that says it read to the end (``"to_end": true`` or a list of keys, an
    extra field of its completion) gives ``read-end`` reads from the first
    offset it returned; ``"to_end_at": {key: offset}`` names keys it read
    nothing of because their end was that offset (an empty ``read-end``)."""
    by_key = {}
    for op in history.ops:
        if op.f not in ("send", "poll", "txn") or op.type == "fail" or not op.value:
            continue
        ret = op.time if op.type == "ok" else None
        ref = op.ref()
        to_end = _to_end_keys(op) if op.type == "ok" else ()
        for m in op.value:
            if m[0] == "send":
                v = m[2]
                o, v = (v[0], v[1]) if isinstance(v, list) else (None, v)
                by_key.setdefault(m[1], []).append(
                    Operation(op.invoke_time, ret, ("append", v, o), None, ref))
            elif op.type == "ok" and len(m) > 1 and m[1]:
                for k, pairs in m[1].items():
                    ps = tuple((p[0], p[1]) for p in pairs)
                    if k in to_end and ps and ps[0][0] is not None:
                        inp = ("read-end", ps[0][0], ps)
                    elif pairs:
                        inp = ("read", ps)
                    else:
                        continue
                    by_key.setdefault(k, []).append(Operation(op.invoke_time, ret, inp, None, ref))
        if op.f == "poll" and op.type == "ok":
            for k, at in _empty_reads_to_end(op).items():
                by_key.setdefault(k, []).append(Operation(op.invoke_time, ret, ("read-end", at, ()), None, ref))
    return by_key


def _empty_reads_to_end(op) -> dict:
    """``to_end_at`` of an ok poll: {key: the offset that was the key's end}."""
    at = op.extra.get("to_end_at") if op.extra else None
    if not at:
        return {}
    if not isinstance(at, dict) or not all(isinstance(o, int) and not isinstance(o, bool) and o >= 0
                                           for o in at.values()):
        raise ValueError(f"to_end_at of op {op.index} must map keys to offsets >= 0, got {at!r}")
    return {str(k): o for k, o in at.items()}


MAX_TIMELINE = 200


def _jsonable(x):
    if isinstance(x, tuple):
        return [_jsonable(y) for y in x]
    if isinstance(x, list):
        return [_jsonable(y) for y in x]
    if isinstance(x, (str, int, float, bool)) or x is None:
        return x
    return str(x)


def _describe_state(model_name, state):
    if model_name == "log":
        return {"length": len(state), "tail": [[len(state) - len(state[-8:]) + j, v]
                                               for j, v in enumerate(state[-8:])]}
    return _jsonable(state)


def violation_witness(r, key=None, time_unit="ns") -> dict:
    """The witness of a linearizability violation from check_operations'
    result: the op that cannot be placed, the longest linearizable prefix
    found (its length, its tail) and the model state after it, and a
    timeline of the operations around them (what render_linear draws)."""
    bad = r["cannot_place"]
    prefix = r["prefix"]
    part = r["partition"]
    pos = {id(o): n for n, o in enumerate(prefix)}
    # the ops worth drawing: the prefix's tail, the bad op, and everything
    # not linearized that was called before the bad op returned
    horizon = bad.ret if bad.ret is not None else max(o.call for o in part)
    tail_ids = {id(o) for o in prefix[-MAX_TIMELINE // 2:]}
    shown = [o for o in part if id(o) in tail_ids or o is bad or
             (id(o) not in pos and o.call <= horizon)]
    stale = r.get("stale")
    if stale:  # the ops from the last write of the value to the read
        must = [o for o in (stale["writer"], stale["overwriter"], bad) if o is not None]
        lo = min(o.call for o in must)
        shown = [o for o in part if o.call <= horizon and (o.ret is None or o.ret >= lo)]
    shown.sort(key=lambda o: (o.call, o.ret if o.ret is not None else float("inf")))
    if len(shown) > MAX_TIMELINE:
        if stale:  # the latest, and the ops the reason names
            keep = [o for o in shown[-MAX_TIMELINE:] if all(o is not m for m in must)]
            keep = sorted(keep[len(must):] + must,
                          key=lambda o: (o.call, o.ret if o.ret is not None else INF))
        else:
            keep = shown[:MAX_TIMELINE]
            if bad not in keep:
                keep[-1] = bad
        shown = keep

    def entry(o):
        e = {"call": o.call, "ret": o.ret, "input": _jsonable(o.input),
             "output": _jsonable(o.output),
             "linearized": pos.get(id(o)), "cannot_place": o is bad}
        if o.ref is not None:
            e["op"] = o.ref
        return e

    w = {"op": {**(bad.ref or {}), "input": _jsonable(bad.input)},
         "prefix_length": len(prefix),
         "prefix_tail": [o.ref if o.ref is not None else {"input": _jsonable(o.input)}
                         for o in prefix[-5:]],
         "state": _describe_state(r["model"], r["state"]),
         "model": r["model"], "time_unit": time_unit,
         "timeline": [entry(o) for o in shown]}
    if bad.output is not None:
        w["op"]["output"] = _jsonable(bad.output)
    if stale:
        def ref(o):
            return o.ref if o.ref is not None else {"input": _jsonable(o.input)}
        w["reason"] = ("stale read: every operation that could have set the value it read "
                       "was followed by one that set another value and completed before "
                       "the read began" if stale["overwriter"] is not None else
                       "no operation ever set the value it read")
        w["written_by"] = ref(stale["writer"]) if stale["writer"] is not None else None
        w["overwritten_by"] = (ref(stale["overwriter"]) if stale["overwriter"] is not None
                               else None)
    if key is not None:
        w = {"key": key, **w}
    return w


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
                w = violation_witness(r, key=k)
                return {"valid": False, "model": "log",
                        "anomaly_types": ["nonlinearizable"],
                        "anomalies": {"nonlinearizable": [w]}}
            if r["valid"] == "unknown":
                unknown.append(k)
        if unknown:
            return {"valid": "unknown", "model": "log",
                    "reason": f"search budget exhausted on keys {unknown[:10]}"}
        return {"valid": True, "model": "log"}
