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
must match the log at that moment, and ``("read-end", start, [(offset,
value), ...])`` is a read to the end: exactly the log's slice from ``start``
to its end at that moment, so it must include every append acknowledged
before the read began (the search linearizes those first).

On a violation the result names the longest linearizable prefix found and
the operation that cannot be placed after it; ``render_linear`` draws it.
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
        n = len(state)
        if inp[0] == "read-end":
            _, start, pairs = inp
            if start + len(pairs) != n:
                return False, state      # missed (or invented) the tail
            for j, (o, v) in enumerate(pairs):
                if (o is not None and o != start + j) or state[start + j] != v:
                    return False, state
            return True, state
        pairs = inp[1]
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
            prefix = [part[j] for j in info["prefix"]]
            state = model.init
            for o in prefix:
                _, state = model.step(state, o.input, o.output)
            return {"valid": False, "model": model.name,
                    "prefix": prefix,
                    "cannot_place": part[info["cannot_place"]],
                    "state": state, "partition": part}
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
    offset it returned."""
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
    return by_key


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
    shown.sort(key=lambda o: (o.call, o.ret if o.ret is not None else float("inf")))
    if len(shown) > MAX_TIMELINE:
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


# ------------------------------------------- register / cas / kv histories

def _s(x):
    return str(x) if x is not None else None


def model_operations(events, model: str, source="<memory>"):
    """Operations of a register, cas-register or kv history given as
    Jepsen/Knossos-style event dicts (``process``, ``type``
    invoke/ok/fail/info, ``f`` read/write/cas, ``value``; kv values are
    ``[key, value]`` as Jepsen's independent checker writes them; times from
    ``time``, else the event's position). Invoke/completion pairs per
    process; fail ops are dropped, info ops (and invokes never completed)
    are indeterminate. Returns (operations, stats)."""
    from .history import HistoryError
    open_ = {}
    ops = []
    stats = {"ok": 0, "fail": 0, "info": 0}
    for n, ev in enumerate(events):
        if not isinstance(ev, dict):
            raise HistoryError(source, n + 1, f"event must be a map, got {ev!r}")
        p = ev.get("process")
        if _s(p) == "nemesis":
            continue
        t = ev.get("time", n)
        typ = _s(ev.get("type"))
        f = _s(ev.get("f"))
        if typ == "invoke":
            if p in open_:
                raise HistoryError(source, n + 1, f"process {p} invokes while an op is open")
            open_[p] = (t, f, ev.get("value"), ev.get("index", n))
            continue
        if typ not in ("ok", "fail", "info"):
            raise HistoryError(source, n + 1, f"unknown type {typ!r}")
        if p not in open_:
            raise HistoryError(source, n + 1, f"{typ} of process {p} without an invoke")
        call, f0, v_in, idx = open_.pop(p)
        stats[typ] += 1
        if typ == "fail":
            continue
        ret = t if typ == "ok" else None
        v_out = ev.get("value")
        ops.append(_model_op(model, f0, v_in, v_out if typ == "ok" else None, call, ret,
                             {"process": _jsonable(p), "f": f0, "type": typ,
                              "index": ev.get("index", n), "invoke_index": idx},
                             source, n + 1))
    for p, (call, f0, v_in, idx) in open_.items():
        stats["info"] += 1
        ops.append(_model_op(model, f0, v_in, None, call, None,
                             {"process": _jsonable(p), "f": f0, "type": "info",
                              "index": idx, "invoke_index": idx}, source, None))
    return ops, stats


def _model_op(model, f, v_in, v_out, call, ret, ref, source, line):
    from .history import HistoryError
    key = None
    if model == "kv":
        kv_in = v_in if isinstance(v_in, (list, tuple)) and len(v_in) == 2 else None
        kv_out = v_out if isinstance(v_out, (list, tuple)) and len(v_out) == 2 else None
        if kv_in is None and kv_out is None:
            raise HistoryError(source, line, f"kv value must be [key, value], got {v_in!r}")
        key = _jsonable((kv_in or kv_out)[0])
        v_in = kv_in[1] if kv_in else None
        v_out = kv_out[1] if kv_out else None
        ref = {**ref, "key": key}
    v_in, v_out = _hashable(v_in), _hashable(v_out)
    if f == "read":
        inp = ("read", None)
        out = v_out
        if ret is None:        # an indeterminate read constrains nothing
            out = None
    elif f == "write":
        inp, out = ("write", v_in), None
    elif f == "cas" and model in ("cas-register", "kv"):
        if not isinstance(v_in, tuple) or len(v_in) != 2:
            raise HistoryError(source, line, f"cas value must be [old, new], got {v_in!r}")
        inp, out = ("cas", v_in), None
    else:
        raise HistoryError(source, line, f"f {f!r} is not an operation of the {model} model")
    if model == "kv":
        inp = (inp[0], key, inp[1])
    return Operation(call, ret, inp, out, ref)


def _hashable(x):
    if isinstance(x, list):
        return tuple(_hashable(y) for y in x)
    return x


def check_model_events(events, model: str, options=None, source="<memory>") -> dict:
    """A linearizable checker result (plus "stats") for a register,
    cas-register or kv history of event dicts."""
    options = options or {}
    ops, stats = model_operations(events, model, source)
    # an indeterminate read tells nothing: leave it out
    ops = [o for o in ops if not (o.input[0] == "read" and o.ret is None)]
    r = check_operations(ops, model, options.get("linearizable_budget_s", 10.0),
                         options.get("linearizable_max_states", 2_000_000))
    if r["valid"] is False:
        w = violation_witness(r, key=r["cannot_place"].input[1] if model == "kv" else None)
        out = {"valid": False, "model": model, "anomaly_types": ["nonlinearizable"],
               "anomalies": {"nonlinearizable": [w]}}
    else:
        out = {k: v for k, v in r.items() if k in ("valid", "model", "reason", "states",
                                                  "partitions")}
    out["operations"] = len(ops)
    return out, stats


def read_model_events(path, fmt=None):
    """Event dicts of a generic (register/cas/kv) history file: JSON Lines,
    or Jepsen EDN (a vector of op maps, or one map per line)."""
    import json
    import os
    from .history import HistoryError
    path = os.fspath(path)
    if os.path.isdir(path):
        for name in ("history.jsonl", "history.edn"):
            if os.path.exists(os.path.join(path, name)):
                path = os.path.join(path, name)
                break
    if fmt is None:
        fmt = "edn" if path.endswith(".edn") else "jsonl"
    try:
        with open(path, encoding="utf-8") as fh:
            text = fh.read()
    except OSError as e:
        raise HistoryError(path, None, f"cannot read: {e.strerror or e}") from None
    if fmt == "edn":
        from .edn import EdnError, Tagged, read_all
        try:
            forms = read_all(text)
        except EdnError as e:
            raise HistoryError(path, None, f"EDN: {e}") from None
        if len(forms) == 1 and isinstance(forms[0], list):
            forms = forms[0]
        events = []
        for f in forms:
            while isinstance(f, Tagged):
                f = f.value
            if isinstance(f, dict):
                f = {str(k): v for k, v in f.items()}
            events.append(f)
        return events, path
    events = []
    for n, line in enumerate(text.splitlines()):
        if not line.strip():
            continue
        try:
            events.append(json.loads(line))
        except ValueError as e:
            raise HistoryError(path, n + 1, f"invalid JSON: {e}") from None
    return events, path
