"""Histories of the generic models (``register``, ``cas-register``, ``kv``)
given as Jepsen/Knossos-style events, from JSON Lines or Jepsen EDN, made
into operations and checked for linearizability (``checkers.linearizable``).

An event has ``process``, ``type`` (invoke/ok/fail/info), ``f`` (read,
write, cas; for kv also append), ``value`` and optionally ``time`` (else its
position) and ``index``. kv values are ``[key, value]``, Jepsen's
independent form. A register or cas-register history whose values are all
such tuples (``[key, value]``, or ``#jepsen.independent.Tuple{:key k :value
v}`` in EDN; a cas's value ``[key, [old, new]]``) is Jepsen's independent
history: one register per key, checked per key.

``model_operations`` is the reference reading: it validates every event and
names the one at fault. ``check_model_events`` first tries ``_columns``,
which reads the same operations with C-speed passes over the events (a
Python loop per event costs more than the compiled search on a history of
a few thousand operations), and leaves anything unusual, and the witness of
a violation, to ``model_operations``.
"""
from __future__ import annotations

import json
import os
import time
from itertools import count, repeat
from operator import eq, itemgetter, methodcaller

import numpy as np
from numba import njit

from . import model_scan, scan, wgl
from .history import HistoryError
from .linearizable import (MODELS, Operation, _jsonable, check_operations, violation,
                           violation_witness)
from .model_scan import NULL, V_INT, V_NESTED, V_NULL, V_OTHER, V_PAIR
from .models import Independent

_TYPES = {t: j for j, t in enumerate(model_scan.TYPES)}
_FS = {f: j for j, f in enumerate(model_scan.FS)}
_READ, _WRITE, _CAS, _APPEND = range(4)


def _s(x):
    return str(x) if x is not None else None


def _pair(v):
    return v if isinstance(v, (list, tuple)) and len(v) == 2 else None


def is_independent(events) -> bool:
    """True if every read, write and cas invoke's value is a [key, value]
    tuple (a cas's [key, [old, new]]): Jepsen's independent history (a
    plain register history's read invokes carry no value)."""
    seen = False
    for ev in events:
        if not isinstance(ev, dict) or _s(ev.get("process")) == "nemesis" \
                or _s(ev.get("type")) != "invoke":
            continue
        f = _s(ev.get("f"))
        if f not in ("read", "write", "cas"):
            continue
        v = _pair(ev.get("value"))
        if v is None or (f == "cas" and _pair(v[1]) is None):
            return False
        seen = True
    return seen


def _model(model: str, independent: bool):
    m = MODELS[model]
    return Independent(m) if independent else m


def model_operations(events, model: str, source="<memory>", independent=False):
    """Operations of a register, cas-register or kv history given as event
    dicts (see the module's doc). Invoke/completion pairs per process; fail
    ops are dropped, info ops (and invokes never completed) are
    indeterminate. Returns (operations, stats)."""
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
                             source, n + 1, independent))
    for p, (call, f0, v_in, idx) in open_.items():
        stats["info"] += 1
        ops.append(_model_op(model, f0, v_in, None, call, None,
                             {"process": _jsonable(p), "f": f0, "type": "info",
                              "index": idx, "invoke_index": idx}, source, None, independent))
    return ops, stats


def _model_op(model, f, v_in, v_out, call, ret, ref, source, line, independent=False):
    key = None
    keyed = model == "kv" or independent
    if keyed:
        kv_in, kv_out = _pair(v_in), _pair(v_out)
        if kv_in is None and kv_out is None:
            what = "kv" if model == "kv" else "independent"
            raise HistoryError(source, line, f"{what} value must be [key, value], got {v_in!r}")
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
    elif f == "append" and model == "kv":
        if type(v_in) is not str:
            raise HistoryError(source, line, f"append value must be a string, got {v_in!r}")
        inp, out = ("append", v_in), None
    else:
        raise HistoryError(source, line, f"f {f!r} is not an operation of the {model} model")
    if keyed:
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
    budget = options.get("linearizable_budget_s", 10.0)
    max_states = options.get("linearizable_max_states", 2_000_000)
    independent = model != "kv" and is_independent(events)
    m = _model(model, independent)
    fast = _check_columns(events, model, m, independent, budget, max_states, source)
    if fast is not None:
        r, n_ops, stats = fast
    else:
        ops, stats = model_operations(events, model, source, independent)
        # an indeterminate read tells nothing: leave it out
        ops = [o for o in ops if not (o.input[0] == "read" and o.ret is None)]
        n_ops = len(ops)
        r = check_operations(ops, m, budget, max_states)
    return _result(r, model, independent, n_ops), stats


def _result(r, model, independent, n_ops):
    """The linearizable checker's result from check_operations'."""
    if r["valid"] is False:
        keyed = model == "kv" or independent
        w = violation_witness(r, key=r["cannot_place"].input[1] if keyed else None)
        out = {"valid": False, "model": model, "anomaly_types": ["nonlinearizable"],
               "anomalies": {"nonlinearizable": [w]}}
    else:
        out = {k: v for k, v in r.items() if k in ("valid", "model", "reason", "states",
                                                  "partitions")}
    if independent:
        out["independent"] = True
    out["operations"] = n_ops
    return out


# ------------------------------------------------------------- the fast way

@njit(cache=True)
def _pair_events(pid, tcode, npids):
    """Invokes paired with completions per process, as model_operations
    pairs them: (ok, ops' invoke events, completion events (-1: open),
    types), the ops in the order model_operations makes them (completed,
    in completion order; then the open ones in invoke order). pid -1: a
    nemesis event. ok False for what model_operations refuses."""
    n = len(pid)
    open_inv = np.full(npids, -1, dtype=np.int64)
    op_inv = np.empty(n, dtype=np.int64)
    op_comp = np.empty(n, dtype=np.int64)
    op_type = np.empty(n, dtype=np.int64)
    m = 0
    for i in range(n):
        p = pid[i]
        if p < 0:
            continue
        t = tcode[i]
        if t == 0:
            if open_inv[p] >= 0:
                return False, op_inv[:0], op_comp[:0], op_type[:0]
            open_inv[p] = i
        elif t > 0:
            if open_inv[p] < 0:
                return False, op_inv[:0], op_comp[:0], op_type[:0]
            op_inv[m] = open_inv[p]
            op_comp[m] = i
            op_type[m] = t
            m += 1
            open_inv[p] = -1
        else:
            return False, op_inv[:0], op_comp[:0], op_type[:0]
    still = np.sort(open_inv[open_inv >= 0])
    for i in still:
        op_inv[m] = i
        op_comp[m] = -1
        op_type[m] = 3
        m += 1
    return True, op_inv[:m], op_comp[:m], op_type[:m]


def _scalars(values):
    """True if every value is None, a number or a string (a value the
    fast way may take as it is)."""
    from .edn import Keyword, Symbol
    return set(map(type, values)) <= {int, float, str, bool, type(None), Keyword, Symbol}


class _Columns:
    """A history's operations (failed ones and indeterminate reads left
    out, in model_operations' order) as arrays: invoke and completion
    event (``inv``, ``comp``; -1: none), type (1 ok, 3 info), f code,
    done (ok), call and return times, the encoded (kind, a, b) over value
    numbers (init: the model's initial state's), and the key number of
    each (keyed models; None else)."""

    __slots__ = ("inv", "comp", "typ", "fc", "done", "call", "ret", "kind", "a", "b",
                 "init", "keys", "stats")


def _check_columns(events, model, m, independent, budget, max_states, source):
    """check_operations' result on the operations model_operations would
    make, read with C-speed passes over the event dicts: (result,
    operations, stats), or None for anything else than scalar values,
    integer times and well-paired events, and for appends (model_operations
    then reads the history, naming any error)."""
    n = len(events)
    if n == 0 or set(map(type, events)) != {dict}:
        return None
    try:
        procs = list(map(methodcaller("get", "process"), events))
        types = list(map(_TYPES.get, map(methodcaller("get", "type"), events), repeat(-1)))
        fs = list(map(methodcaller("get", "f"), events))
        values = list(map(methodcaller("get", "value"), events))
        times = list(map(methodcaller("get", "time"), events))
        ids = {}
        pid = np.fromiter(map(ids.setdefault, procs, count()), dtype=np.int64, count=n)
        fcodes = np.array(list(map(_FS.get, fs, repeat(-1))), dtype=np.int64)
    except TypeError:  # unhashable
        return None
    nemesis = np.fromiter(map(eq, procs, repeat("nemesis")), dtype=bool, count=n)
    pid[nemesis] = -1
    if None in times:
        times = [i if t is None else t for i, t in enumerate(times)]
    if set(map(type, times)) != {int}:
        return None
    try:
        times = np.array(times, dtype=np.int64)
    except OverflowError:
        return None
    c = _ops(pid, np.array(types, dtype=np.int64), fcodes, times, model)
    if c is None:
        return None
    inv, comp, fc = c.inv, c.comp, c.fc
    v_in = list(map(values.__getitem__, inv.tolist()))
    v_out = [None] * len(inv)
    reads = np.flatnonzero(fc == _READ).tolist()  # (all done)
    for j, i in zip(reads, comp[reads].tolist()):
        v_out[j] = values[i]
    keyed = model == "kv" or independent
    keys = None
    if keyed:
        pairs = v_in + [v_out[j] for j in reads]
        if set(map(type, pairs)) - {list} or set(map(len, pairs)) - {2}:
            return None
        keys = list(map(itemgetter(0), v_in))
        if not _scalars(keys):
            return None
        v_in = list(map(itemgetter(1), v_in))
        for j in reads:
            v_out[j] = v_out[j][1]
    cas = np.flatnonzero(fc == _CAS).tolist()
    plain = [v for j, v in enumerate(v_in) if fc[j] != _CAS]
    if not _scalars(plain) or not _scalars([v_out[j] for j in reads]):
        return None
    for j in cas:
        v = v_in[j]
        if type(v) is not list or len(v) != 2 or not _scalars(v):
            return None
        v_in[j] = tuple(v)
    c.init, c.kind, c.a, c.b = _encode(fc, v_in, v_out, m.init, model == "kv")
    if keyed:
        kid = {}
        c.keys = np.fromiter(map(kid.setdefault, keys, count()), dtype=np.int64,
                             count=len(keys))
    return _search_parts(c, m, budget, max_states,
                         lambda part: _operations(events.__getitem__, part, c, model,
                                                  independent, source))


def _ops(pid, types, fcodes, times, model):
    """_Columns of the events (process numbers pid, -1 for the nemesis;
    type and f codes; times), but for the values; None when
    model_operations would refuse them (or for appends)."""
    ok, inv, comp, typ = _pair_events(pid, types, max(len(pid), 1))
    if not ok:
        return None
    c = _Columns()
    c.stats = {"ok": int((typ == 1).sum()), "fail": int((typ == 2).sum()),
               "info": int((typ == 3).sum())}
    keep = typ != 2
    inv, comp, typ = inv[keep], comp[keep], typ[keep]
    fc = fcodes[inv]
    allowed = {"register": (_READ, _WRITE), "cas-register": (_READ, _WRITE, _CAS),
               "kv": (_READ, _WRITE, _CAS)}[model]  # (appends: model_operations)
    if not np.isin(fc, allowed).all():
        return None
    done = typ == 1
    # an indeterminate read tells nothing: leave it out
    keep = ~((fc == _READ) & ~done)
    c.inv, c.comp, c.typ, c.fc, c.done = inv[keep], comp[keep], typ[keep], fc[keep], done[keep]
    c.call = times[c.inv]
    c.ret = np.where(c.done, times[np.maximum(c.comp, 0)], 0)
    c.keys = None
    return c


def _search_parts(c, m, budget, max_states, operations):
    """check_operations over _Columns: (result, operations, stats). The
    parts are the model's (ops of a key, in order of first appearance);
    operations(part) makes the Operations of a part for a violation."""
    if c.keys is not None:
        uk, at = np.unique(c.keys, return_index=True)
        order = np.argsort(c.keys, kind="stable")  # by key, then op order
        groups = np.split(order, np.searchsorted(c.keys[order], uk)[1:])
        parts = [groups[g] for g in np.argsort(at)]  # keys by first appearance
    else:
        parts = [np.arange(len(c.inv), dtype=np.int64)]
    deadline = time.monotonic() + budget
    unknown = None
    for part in parts:
        kind, a, b, d = c.kind[part], c.a[part], c.b[part], c.done[part]
        call, ret = c.call[part], c.ret[part]
        ev_op, ev_ret, ret_pos = _event_order(call, ret, d)
        cls, sizes = _classes(kind, a, b, d)
        verdict, info = wgl.check(ev_op, ev_ret, ret_pos, kind, a, b, c.init, cls, sizes,
                                  call, ret, d, deadline, max_states)
        if verdict is False:
            return violation(operations(part), m, info), len(c.inv), c.stats
        if verdict == "unknown":
            unknown = info
    if unknown:
        return {"valid": "unknown", "model": m.name, **unknown}, len(c.inv), c.stats
    return {"valid": True, "model": m.name, "partitions": len(parts)}, len(c.inv), c.stats


def _encode(fc, v_in, v_out, init, kv_reads):
    """(init, kind, a, b) of the operations (see models._numbered)."""
    ids = {init: 0}
    number = ids.setdefault
    n = len(fc)
    kind = np.empty(n, dtype=np.int64)
    a = np.full(n, -1, dtype=np.int64)
    b = np.full(n, -1, dtype=np.int64)
    for j, f in enumerate(fc.tolist()):
        if f == _WRITE:
            kind[j] = wgl.WRITE
            b[j] = number(v_in[j], len(ids))
        elif f == _READ:
            kind[j] = wgl.READ
            out = v_out[j]
            a[j] = number(out, len(ids))
            if kv_reads and out == "":
                b[j] = 0
        else:
            kind[j] = wgl.CAS
            old, new = v_in[j]
            a[j] = number(old, len(ids))
            b[j] = number(new, len(ids))
    return 0, kind, a, b


def _classes(kind, a, b, done):
    """linearizable.info_classes of encoded operations."""
    cls = np.full(len(kind), -1, dtype=np.int64)
    sizes = []
    ids = {}
    for j, key in zip(np.flatnonzero(~done).tolist(),
                      zip(kind[~done].tolist(), a[~done].tolist(), b[~done].tolist())):
        g = ids.setdefault(key, len(ids))
        if g == len(sizes):
            sizes.append(0)
        sizes[g] += 1
        cls[j] = g
    return cls, sizes


def _event_order(call, ret, done):
    """(ev_op, ev_ret, ret_pos) of one part for wgl.run: every call and
    return in time order, calls before returns at equal times, ties in
    operation order, a call before its return (the order
    linearizable._search sorts them in)."""
    n = len(call)
    t = np.empty(2 * n, dtype=np.int64)
    t[0::2] = call
    t[1::2] = ret
    is_ret = np.tile(np.array([False, True]), n)
    op = np.repeat(np.arange(n, dtype=np.int64), 2)
    keep = np.ones(2 * n, dtype=bool)
    keep[1::2] = done
    t, is_ret, op = t[keep], is_ret[keep], op[keep]
    order = np.lexsort((is_ret, t))  # stable: ties keep op order, call first
    ev_op, ev_ret = op[order], is_ret[order]
    ret_pos = np.full(n, -1, dtype=np.int64)
    pos = np.flatnonzero(ev_ret)
    ret_pos[ev_op[pos]] = pos
    return ev_op, ev_ret, ret_pos


def _operations(event, part, c, model, independent, source):
    """The Operations of the ops part of _Columns c, as model_operations
    makes them (event(i): the i-th event's dict)."""
    out = []
    for j in part.tolist():
        i, k, t = int(c.inv[j]), int(c.comp[j]), int(c.typ[j])
        ev = event(i)
        p, f0, idx = ev.get("process"), _s(ev.get("f")), ev.get("index", i)
        call = ev.get("time", i)
        if k >= 0:
            done = event(k)
            type_ = "ok" if t == 1 else "info"
            ret = done.get("time", k) if t == 1 else None
            ref = {"process": _jsonable(p), "f": f0, "type": type_,
                   "index": done.get("index", k), "invoke_index": idx}
            v_out = done.get("value") if t == 1 else None
            line = k + 1
        else:
            ret, v_out, line = None, None, None
            ref = {"process": _jsonable(p), "f": f0, "type": "info", "index": idx,
                   "invoke_index": idx}
        out.append(_model_op(model, f0, ev.get("value"), v_out, call, ret, ref, source, line,
                             independent))
    return out


def _check_lines(data, model, budget, max_states, source):
    """check_model_events' (result, operations, stats, independent) for
    the JSON Lines data, read by model_scan.scan_events; None for anything else than
    integer processes, times and values (the events way then)."""
    buf = np.frombuffer(data, dtype=np.uint8)
    starts, ends = scan.line_bounds(buf)
    n = len(starts)
    while n and not data[starts[n - 1]:ends[n - 1]].strip():
        n -= 1  # (a blank line elsewhere: the events way)
    starts, ends = starts[:n], ends[:n]
    (ok, nem, proc, typ, fc, shape, vx, vy, vz, times, index,
     unchecked) = model_scan.scan_events(buf, starts, ends, *model_scan.WORDS)
    if not ok or not n:
        return None
    if unchecked.any():  # what the passes did not validate, to the decoder
        try:
            _loads(scan.join_spans(buf, starts[unchecked], ends[unchecked]).tobytes())
        except ValueError:
            return None
    uniq, pid = np.unique(proc, return_inverse=True)
    pid = pid.astype(np.int64)
    pid[nem] = -1
    # Jepsen's independent form: every read, write and cas invoke's value a
    # [key, value] ([key, [old, new]] for a cas)
    client_inv = ~nem & (typ == 0)
    rw = client_inv & ((fc == _READ) | (fc == _WRITE))
    cs = client_inv & (fc == _CAS)
    if (shape[rw | cs] == V_OTHER).any():
        return None
    independent = model != "kv" and bool((rw | cs).any()) and \
        bool((shape[rw] == V_PAIR).all()) and bool((shape[cs] == V_NESTED).all())
    m = _model(model, independent)
    c = _ops(pid, typ, fc, times, model)
    if c is None:
        return None
    keyed = model == "kv" or independent
    inv, comp, f = c.inv, c.comp, c.fc
    s_in, x_in, y_in, z_in = shape[inv], vx[inv], vy[inv], vz[inv]
    reads, writes, cases = f == _READ, f == _WRITE, f == _CAS
    out_line = comp[reads]
    s_out, x_out, y_out = shape[out_line], vx[out_line], vy[out_line]
    if keyed:  # [key, v], [key, [old, new]]; a read's completion [key, v]
        if not ((s_in[reads | writes] == V_PAIR).all() and (s_in[cases] == V_NESTED).all()
                and (s_out == V_PAIR).all()) or (x_in == NULL).any():
            return None
        c.keys = x_in
        new = np.where(writes, y_in, z_in)
        old = y_in
        read = y_out
    else:
        if not (np.isin(s_in[writes], (V_INT, V_NULL)).all() and (s_in[cases] == V_PAIR).all()
                and np.isin(s_out, (V_INT, V_NULL)).all()):
            return None
        new = np.where(writes, x_in, y_in)
        old = x_in
        read = x_out
    # values numbered, null (the initial state) 0
    vals = np.concatenate(([NULL], new[writes | cases], old[cases], read))
    u, num = np.unique(vals, return_inverse=True)
    num = num.astype(np.int64) + 1
    num[vals == NULL] = 0  # (u[0] is NULL: the smallest int64)
    n, nw, nc = len(inv), int((writes | cases).sum()), int(cases.sum())
    c.init = 0
    c.kind = np.where(writes, wgl.WRITE, np.where(cases, wgl.CAS, wgl.READ)).astype(np.int64)
    c.a = np.full(n, -1, dtype=np.int64)
    c.b = np.full(n, -1, dtype=np.int64)
    c.b[writes | cases] = num[1:1 + nw]
    c.a[cases] = num[1 + nw:1 + nw + nc]
    c.a[reads] = num[1 + nw + nc:]
    def operations(part):  # (the lines of a violating part, decoded in one call)
        at = np.unique(np.concatenate((c.inv[part], c.comp[part][c.comp[part] >= 0])))
        events = dict(zip(at.tolist(), _loads(scan.join_spans(buf, starts[at],
                                                                ends[at]).tobytes())))
        return _operations(events.__getitem__, part, c, model, independent, source)
    return _search_parts(c, m, budget, max_states, operations) + (independent,)


def check_model_file(path, model: str, fmt=None, options=None):
    """check_model_events for a history file (see read_model_events):
    (result, stats, path). JSON Lines of integer processes, times and
    values are read by compiled passes; anything else as events."""
    options = options or {}
    path = _history_path(path)
    if (fmt or ("edn" if path.endswith(".edn") else "jsonl")) == "jsonl":
        data = _read(path)
        r = _check_lines(data, model, options.get("linearizable_budget_s", 10.0),
                         options.get("linearizable_max_states", 2_000_000), path)
        if r is not None:
            result, n_ops, stats, independent = r
            return _result(result, model, independent, n_ops), stats, path
    events, path = read_model_events(path, fmt)
    result, stats = check_model_events(events, model, options, path)
    return result, stats, path


# ---------------------------------------------------------------- reading

def _independent_tuple(v):
    """A Jepsen independent tuple read from EDN as a record
    (#jepsen.independent.Tuple{:key k :value v}) as [k, v]; anything else
    as it is."""
    if isinstance(v, dict) and len(v) == 2:
        d = {str(k): x for k, x in v.items()}
        if set(d) == {"key", "value"}:
            return [d["key"], d["value"]]
    return v


def read_model_events(path, fmt=None):
    """Event dicts of a generic (register/cas/kv) history file: JSON Lines,
    or Jepsen EDN (a vector of op maps, or one map per line)."""
    path = _history_path(path)
    if fmt is None:
        fmt = "edn" if path.endswith(".edn") else "jsonl"
    data = _read(path)
    if fmt == "edn":
        from .edn import EdnError, Tagged, read_all
        try:
            forms = read_all(data.decode("utf-8"))
        except (EdnError, UnicodeDecodeError) as e:
            raise HistoryError(path, None, f"EDN: {e}") from None
        if len(forms) == 1 and isinstance(forms[0], list):
            forms = forms[0]
        events = []
        for f in forms:
            while isinstance(f, Tagged):
                f = f.value
            if isinstance(f, dict):
                f = {str(k): v for k, v in f.items()}
                if "value" in f:
                    f["value"] = _independent_tuple(f["value"])
            events.append(f)
        return events, path
    lines = [line for line in data.split(b"\n") if line.strip()]
    try:  # one call of the decoder for the whole file
        return _loads(b"[" + b",".join(lines) + b"]"), path
    except ValueError:
        pass
    events = []
    for n, line in enumerate(data.split(b"\n")):
        if not line.strip():
            continue
        try:
            events.append(_loads(line))
        except ValueError as e:
            raise HistoryError(path, n + 1, f"invalid JSON: {e}") from None
    return events, path


def _history_path(path):
    """A file, or a store directory's history.jsonl or history.edn."""
    path = os.fspath(path)
    if os.path.isdir(path):
        for name in ("history.jsonl", "history.edn"):
            if os.path.exists(os.path.join(path, name)):
                return os.path.join(path, name)
    return path


def _read(path):
    try:
        with open(path, "rb") as fh:
            return fh.read()
    except OSError as e:
        raise HistoryError(path, None, f"cannot read: {e.strerror or e}") from None


def _loads(b):
    try:
        import orjson
        return orjson.loads(b)
    except ImportError:  # pragma: no cover - depends on the environment
        return json.loads(b)
