"""Jepsen's Kafka queue analysis (jepsen.tests.kafka), over a parsed history.

Everything here is a pure function of a ``History`` (see history.py) and an
options dict. The stages follow Jepsen's:

1. ``extract``: per op, its sends [(key, offset, value)] and its reads
   {key: [(offset, value), ...]}, plus writer-of / failed / ok-read indexes.
2. ``version_orders``: per key, offset -> values from sends that must have
   committed (ok, or info and seen by an ok read) and from every poll, then
   compacted into a gap-free *index* (transaction markers take offsets).
3. One function per anomaly type, each returning witness dicts.
4. ``dependency_graph`` + ``cycles.find_cycles`` for G0 / G1c and their
   -process / -realtime variants.

Witnesses name ops by ``Op.ref()``: process, type, f, index (of the
completion line, so one can grep the history), time.

Speed: when the reader kept poll results as arrays (``History.polls``),
``extract`` builds a ``_ReadTable`` (reads, sends and per-op columns as flat
arrays) and the stages that walk every read, send or op (first readers,
version orders, int-poll, poll-skip, nonmonotonic-send, unseen/lag, graph
edges) run on it (``*_table`` variants and the kernels beside them); the
list-based code is the reference and still runs for histories built from
decoded events. Both give identical results (tests/test_checkers_fastpath.py).

Why numba: those walks go over tens of millions of read rows and millions
of ops, in order, with state (first reader, last read per process and key,
unseen values). In Python that is seconds per walk; numpy needs a dozen
passes and temporaries of hundreds of MB for each. A compiled loop
(``@njit(cache=True)``: the machine code is cached next to this file, and
``checkers.warmup`` compiles it at setup) does one pass, in the list
version's order, so its results are the same by construction.
"""
from __future__ import annotations

from .cycles import (PROCESS, REALTIME, WR, WW, REL_NAMES, Graph, compress,
                     find_cycles)
from .history import History, LazyPoll, no_gc
from .util import distribution, downsample, sort_key

from array import array
from collections.abc import Sequence
from itertools import chain, repeat
from operator import attrgetter, is_, itemgetter

import numpy as np
from numba import njit

_first = itemgetter(0)
_second = itemgetter(1)

TXN_FS = ("send", "poll", "txn")

# Anomaly types that fail a test unless allowed.
ALL_TYPES = ("inconsistent-offsets", "duplicate", "lost-write", "G1a",
             "precommitted-read", "poll-skip", "nonmonotonic-poll",
             "int-poll-skip", "int-nonmonotonic-poll", "int-send-skip",
             "int-nonmonotonic-send", "nonmonotonic-send", "unseen",
             "garbage-read",
             "G0", "G0-process", "G0-realtime", "G1c", "G1c-process",
             "G1c-realtime")

DEFAULT_OPTIONS = {
    # Infer write-write edges from the log order (Jepsen's --ww-deps).
    "ww_deps": True,
    # Search dependency cycles at all.
    "cycles": True,
    "cycle_budget_s": 30.0,
    # Witnesses kept per anomaly type in the result (counts are exact).
    "max_witnesses": 32,
    # Values listed in one "skipped" witness field.
    "max_skipped": 32,
    # None: Jepsen's defaults (see allowed_types); else a set of type names.
    "allowed_anomalies": None,
    # Added to whatever allowed set is in force.
    "allow": (),
    # Points kept in the "unseen over time" series.
    "series_points": 1000,
}


# ------------------------------------------------------------------ extract

class Analysis:
    """Intermediate indexes shared by the anomaly functions."""

    __slots__ = ("history", "writes", "reads", "writer_of", "failed",
                 "ok_reads", "first_reader", "committed", "orders",
                 "inconsistent", "has_subscribe", "has_txn", "rebalanced", "tab")

    def __init__(self, history):
        self.history = history


def _op_mops(op):
    """(writes, reads) of one send/poll/txn op: writes as [(k, offset, v)],
    reads as {k: [[offset, v], ...]} concatenated over its poll mops (the
    decoded JSON itself when there is one poll mop: no copy)."""
    writes = None
    reads = None
    shared = False
    value = op.value
    if not value:
        return None, None
    for m in value:
        kind = m[0]
        if kind == "send":
            v = m[2]
            if writes is None:
                writes = []
            if type(v) is list:
                writes.append((m[1], v[0], v[1]))
            else:
                writes.append((m[1], None, v))
        elif len(m) > 1 and m[1]:
            if reads is None:
                reads = m[1]
                shared = True
                continue
            if shared:  # copy before merging a second poll mop into it
                reads = {k: list(ps) for k, ps in reads.items()}
                shared = False
            for k, pairs in m[1].items():
                lst = reads.get(k)
                if lst is None:
                    reads[k] = list(pairs)
                else:
                    lst.extend(pairs)
    return writes, reads


def _rebalanced_keys(op):
    """The keys named in op's rebalance log."""
    ks = set()
    for ev in op.extra["rebalance_log"]:
        if isinstance(ev, dict):
            ks.update(ev.get("keys") or ())
    return ks


def extract(history: History) -> Analysis:
    ops = history.ops
    if history.polls is not None:
        tab = _ReadTable.build(history)
        if tab is not None:
            a = _extract_table(history, tab)
            if a is not None:
                return a
        for op in ops:  # not representable as arrays: decode lazy values
            op.value
    a = Analysis(history)
    a.tab = None
    n = len(ops)
    writes = [None] * n
    reads = [None] * n
    writer_of = {}     # k -> {v: op id}; later writers win, as in Jepsen
    failed = {}        # k -> {v: op id} of failed sends
    ok_reads = {}      # k -> set of values read by ok ops
    first_reader = {}  # k -> {v: op id} first op (invoke order) that read v
    has_subscribe = has_txn = False
    rebalanced = {}
    for op in ops:
        f = op.f
        if f not in TXN_FS:
            if f == "subscribe":
                has_subscribe = True
            continue
        if f == "txn":
            has_txn = True
        w, r = _op_mops(op)
        i = op.id
        if w:
            writes[i] = w
            ok = op.type != "fail"
            for k, _, v in w:
                d = writer_of.get(k)
                if d is None:
                    d = writer_of[k] = {}
                d[v] = i
                if not ok:
                    fd = failed.get(k)
                    if fd is None:
                        fd = failed[k] = {}
                    fd[v] = i
        if r:
            reads[i] = r
            okr = op.type == "ok"
            for k, pairs in r.items():
                if not pairs:
                    continue
                vals = set(map(_second, pairs))
                fr = first_reader.get(k)
                if fr is None:
                    fr = first_reader[k] = dict.fromkeys(vals, i)
                else:
                    new = vals.difference(fr)  # C speed (dict fast path): most were read before
                    if new:
                        fr.update(dict.fromkeys(new, i))
                if okr:
                    s = ok_reads.get(k)
                    if s is None:
                        ok_reads[k] = vals
                    else:
                        s |= vals
        if op.extra and op.extra.get("rebalance_log"):
            rebalanced[op.id] = _rebalanced_keys(op)
    a.writes, a.reads = writes, reads
    a.writer_of, a.failed, a.ok_reads = writer_of, failed, ok_reads
    a.first_reader = first_reader
    a.has_subscribe, a.has_txn = has_subscribe, has_txn
    a.rebalanced = rebalanced
    # committed[i]: op i's sends must have taken effect (ok, or info and one
    # of its values was read by an ok op): Jepsen's must-have-committed?
    committed = bytearray(n)
    for i, w in enumerate(writes):
        if w is None:
            continue
        t = ops[i].type
        if t == "ok":
            committed[i] = 1
        elif t == "info":
            for k, _, v in w:
                s = ok_reads.get(k)
                if s is not None and v in s:
                    committed[i] = 1
                    break
    a.committed = committed
    version_orders(a)
    return a


def _extract_table(history: History, tab) -> Analysis | None:
    """extract over a _ReadTable: the sends go into flat arrays too (None if
    one cannot: the caller then takes the list path), and the indexes come
    from arrays over the (key, value) universe (see _ReadTable.add_sends)."""
    a = Analysis(history)
    a.tab = tab
    ops = history.ops
    n = len(ops)
    fcode = tab.fcode
    a.has_subscribe = bool((fcode == _SUBSCRIBE).any())
    a.has_txn = bool((fcode == _TXN).any())
    # The sends, into flat arrays in one tight loop (each pass over a
    # million ops costs ~0.1 s, memory latency). The reader validated them
    # (string keys, int values, offsets int >= 0 or null: -1 here); the
    # int64 arrays refuse anything else that could come (TypeError,
    # OverflowError: the list path then).
    keys, key_id = tab.keys, tab.key_id
    s_op, s_key, s_off, s_val = array("q"), array("q"), array("q"), array("q")
    add_op, add_key, add_off, add_val = s_op.append, s_key.append, s_off.append, s_val.append
    txns = [i for i in tab.decoded if fcode[i] == _TXN]
    try:
        for i in np.flatnonzero(fcode == _SEND).tolist() + txns:
            for m in ops[i]._value or ():  # as _op_mops' writes
                if m[0] == "send":
                    k, v = m[1], m[2]
                    kid = key_id.get(k)
                    if kid is None:
                        kid = key_id[k] = len(keys)
                        keys.append(k)
                    if v.__class__ is list:
                        o = v[0]
                        add_off(-1 if o is None else o)
                        add_val(v[1])
                    else:
                        add_off(-1)
                        add_val(v)
                    add_op(i)
                    add_key(kid)
    except (TypeError, OverflowError):
        return None
    s_op, s_key, s_off, s_val = (np.frombuffer(x, dtype=np.int64) if len(x) else
                                 np.zeros(0, dtype=np.int64)
                                 for x in (s_op, s_key, s_off, s_val))
    if txns:  # into op order (stable: an op's sends keep theirs)
        o = np.argsort(s_op, kind="stable")
        s_op, s_key, s_off, s_val = s_op[o], s_key[o], s_off[o], s_val[o]
    rebalanced = {}
    for i in tab.extra_ops:
        if ops[i].extra.get("rebalance_log"):
            rebalanced[i] = _rebalanced_keys(ops[i])
    tab.add_sends(s_op, s_key, s_off, s_val)
    a.writes, a.reads = _WritesView(tab, n), tab.reads_view()
    a.rebalanced = rebalanced
    # later writers win, as in Jepsen
    a.writer_of = tab.group_dicts(s_key, s_val, s_op)
    fm = tab.typ[s_op] == _FAIL
    a.failed = tab.group_dicts(s_key[fm], s_val[fm], s_op[fm])
    a.first_reader, a.ok_reads = tab.first_reader_ok_reads()
    # committed (see extract): ok, or info with a value an ok op read
    typ = tab.typ
    committed = np.zeros(n, dtype=bool)
    committed[s_op] = typ[s_op] == _OK
    hit = (typ[s_op] == _INFO) & tab.u_ok[tab.s2u]
    committed[s_op[hit]] = True
    tab.committed = committed
    a.committed = bytearray(committed.view(np.uint8).tobytes())
    version_orders(a)
    return a


# ------------------------------------------------------------- read tables

# Per-op columns (_op_columns) as small ints, for the array code.
_OK, _INFO, _FAIL = 0, 1, 2
_TYPE_CODE = {"ok": _OK, "info": _INFO, "fail": _FAIL}
_SEND, _POLL, _TXN, _ASSIGN, _SUBSCRIBE, _CRASH, _OTHER_F = range(7)
_F_CODE = {"send": _SEND, "poll": _POLL, "txn": _TXN, "assign": _ASSIGN,
           "subscribe": _SUBSCRIBE, "crash": _CRASH}
# (type, f, class of the value, extra is None) -> type code << 3 | f code,
# | 64 if the value is a LazyPoll, | 128 if the op has extra fields
_OP_CODE = {(t, f, c, x): tc << 3 | fc | (64 if c is LazyPoll else 0) | (0 if x else 128)
            for t, tc in _TYPE_CODE.items() for f, fc in _F_CODE.items()
            for c in (list, LazyPoll, type(None)) for x in (True, False)}
_get_type, _get_f, _get_process, _get_time = (attrgetter("type"), attrgetter("f"),
                                              attrgetter("process"), attrgetter("time"))
_get_value, _get_extra = attrgetter("_value"), attrgetter("extra")


def _op_columns(ops, int_processes=False):
    """(type code, f code, lazy, has extra, process number) of every op as
    arrays: lazy if its value is a LazyPoll, has extra if its ``extra`` is
    not None; process numbers count in order of first appearance.

    Touching a million ops costs ~0.1 s per pass (memory latency), so the
    array code takes these columns instead of walking the ops again, and
    they come from two passes at C speed: one through _OP_CODE, one for
    the processes (as they are if int_processes: the reader made them
    ints)."""
    n = len(ops)
    code = np.frombuffer(bytes(map(_OP_CODE.get, zip(
        map(_get_type, ops), map(_get_f, ops), map(type, map(_get_value, ops)),
        map(is_, map(_get_extra, ops), repeat(None))), repeat(255))), dtype=np.uint8).copy()
    for i in np.flatnonzero(code == 255).tolist():  # other fs, types, values
        op = ops[i]
        code[i] = (_TYPE_CODE.get(op.type, 3) << 3 | _F_CODE.get(op.f, _OTHER_F) |
                   (64 if op._value.__class__ is LazyPoll else 0) |
                   (0 if op.extra is None else 128))
    cols = ((code >> 3) & 3, code & 7, (code & 64) != 0, (code & 128) != 0)
    p = None
    if int_processes:
        try:
            p = np.fromiter(map(_get_process, ops), dtype=np.int64, count=n)
        except OverflowError:
            pass
    if p is not None:
        if not n or int(p.max()) - int(p.min()) <= 4 * n:
            return cols + (_dense_numbers(p, p.min() if n else 0),)
        u, first, inv = np.unique(p, return_index=True, return_inverse=True)
        number = np.empty(len(u), dtype=np.int64)
        number[np.argsort(first)] = np.arange(len(u))
        return cols + (number[inv],)
    procs = list(map(_get_process, ops))
    number = {p: j for j, p in enumerate(dict.fromkeys(procs))}
    return cols + (np.fromiter(map(number.__getitem__, procs), dtype=np.int64, count=n),)


@njit(cache=True)
def _dense_numbers(p, pmin):
    """p's values numbered 0, 1, ... in order of first appearance (their
    range is small: numbers through a dense array)."""
    span = 0
    for x in p:
        span = max(span, x - pmin + 1)
    number = np.full(span, -1, dtype=np.int64)
    out = np.empty(len(p), dtype=np.int64)
    m = 0
    for j in range(len(p)):
        x = p[j] - pmin
        if number[x] < 0:
            number[x] = m
            m += 1
        out[j] = number[x]
    return out


class _ReadsView:
    """``a.reads`` over a _ReadTable: ``view[i]`` is op i's reads as
    {key: [[offset, value], ...]} (or None), built on demand."""

    def __init__(self, tab, n):
        self.tab, self.n = tab, n

    def __len__(self):
        return self.n

    def __getitem__(self, i):
        t = self.tab
        s0, s1 = t.op_lo[i], t.op_lo[i + 1]
        if s0 == s1:
            return None
        out = {}
        for s in range(s0, s1):
            out[t.keys[int(t.seg_key[s])]] = t.pairs(s)
        return out

    def __iter__(self):
        for i in range(self.n):
            yield self[i]


class _WritesView:
    """``a.writes`` over a _ReadTable's sends: ``view[i]`` is op i's sends
    as [(key, offset or None, value), ...] (or None), built on demand (from
    Python lists made on first use: cycle witnesses ask for thousands)."""

    def __init__(self, tab, n):
        self.tab, self.n = tab, n
        self.lists = None

    def __len__(self):
        return self.n

    def __getitem__(self, i):
        if self.lists is None:
            t = self.tab
            keys = t.keys
            self.lists = (t.op_send.tolist(), [keys[k] for k in t.s_key.tolist()],
                          [o if o >= 0 else None for o in t.s_off.tolist()], t.s_val.tolist())
        lo, ks, offs, vals = self.lists
        j0, j1 = lo[i], lo[i + 1]
        if j0 == j1:
            return None
        return list(zip(ks[j0:j1], offs[j0:j1], vals[j0:j1]))

    def __iter__(self):
        for i in range(self.n):
            yield self[i]


def _ops_writing(a: Analysis, at_least=1, reading=False):
    """(op id, a.writes[op id]) of the ops with at least that many sends
    (and some reads, if reading), in op order."""
    tab = a.tab
    if tab is None:
        for i, w in enumerate(a.writes):
            if w is not None and len(w) >= at_least and (
                    not reading or a.reads[i] is not None):
                yield i, w
        return
    m = np.diff(tab.op_send) >= max(1, at_least)
    if reading:
        m &= np.diff(tab.op_seg) > 0
    for i in np.flatnonzero(m).tolist():
        yield i, a.writes[i]


@njit(cache=True)
def _merge_rows(order, lo, off, val, x_lo, x_off, x_val):
    """The rows of the segments ``order`` (< len(lo) - 1: the poll table's,
    else the decoded reads' after them) as one table: (lo, off, val)."""
    nseg = len(lo) - 1
    new_lo = np.zeros(len(order) + 1, dtype=np.int64)
    for s in range(len(order)):
        j = order[s]
        if j < nseg:
            new_lo[s + 1] = new_lo[s] + lo[j + 1] - lo[j]
        else:
            new_lo[s + 1] = new_lo[s] + x_lo[j - nseg + 1] - x_lo[j - nseg]
    new_off = np.empty(new_lo[-1], dtype=np.int64)
    new_val = np.empty(new_lo[-1], dtype=np.int64)
    for s in range(len(order)):
        j = order[s]
        r0, r1 = new_lo[s], new_lo[s + 1]
        if j < nseg:
            new_off[r0:r1] = off[lo[j]:lo[j + 1]]
            new_val[r0:r1] = val[lo[j]:lo[j + 1]]
        else:
            j -= nseg
            new_off[r0:r1] = x_off[x_lo[j]:x_lo[j + 1]]
            new_val[r0:r1] = x_val[x_lo[j]:x_lo[j + 1]]
    return new_lo, new_off, new_val


@njit(cache=True)
def _scan_segment(off, val, shift, r0, r1, i, base, okr, row_code, first_op, first_off,
                  multi, ok):
    """_kv_scan over the rows r0:r1 of one segment, stored in off/val from
    row shift on."""
    for r in range(r0, r1):
        c = base + val[r - shift]
        o = off[r - shift]
        row_code[r] = c
        if first_op[c] < 0:
            first_op[c] = i
            first_off[c] = o
        elif o != first_off[c]:
            multi[c] = True
        if okr:
            ok[c] = True


@njit(cache=True)
def _kv_scan(seg_op, seg_key, lo, off, val, tail_off, tail_val, okop, vmin, vspan, nkeys):
    """One pass over the read rows: each row's dense (key, value) code, and
    per code the op and offset of its first row (rows are in op order: the
    first reader), whether it was also read at another offset, and whether
    an ok op read it (first_op -1: never read)."""
    ncode = nkeys * vspan
    first_op = np.full(ncode, -1, dtype=np.int64)
    first_off = np.zeros(ncode, dtype=np.int64)
    multi = np.zeros(ncode, dtype=np.bool_)
    ok = np.zeros(ncode, dtype=np.bool_)
    n = len(off)
    row_code = np.empty(n + len(tail_off), dtype=np.int32)
    for s in range(len(seg_op)):
        i = seg_op[s]
        base = seg_key[s] * vspan - vmin
        if lo[s] < n:
            _scan_segment(off, val, 0, lo[s], lo[s + 1], i, base, okop[i], row_code,
                          first_op, first_off, multi, ok)
        else:
            _scan_segment(tail_off, tail_val, n, lo[s], lo[s + 1], i, base, okop[i],
                          row_code, first_op, first_off, multi, ok)
    return row_code, first_op, first_off, multi, ok


@njit(cache=True)
def _remap(a, table):
    """a[r] = table[a[r]], in place (no second array of tens of millions)."""
    for r in range(len(a)):
        a[r] = table[a[r]]


@njit(cache=True)
def _rows_in(row_kv, off, tail_off, wanted):
    """(kv, offset) of the rows whose kv group is wanted (few)."""
    m = 0
    for r in range(len(row_kv)):
        if wanted[row_kv[r]]:
            m += 1
    kv = np.empty(m, dtype=np.int64)
    o = np.empty(m, dtype=np.int64)
    m = 0
    for r in range(len(row_kv)):
        if wanted[row_kv[r]]:
            kv[m] = row_kv[r]
            o[m] = off[r] if r < len(off) else tail_off[r - len(off)]
            m += 1
    return kv, o


@njit(cache=True)
def _first_index(codes, ncodes):
    """First position of each code in codes (len(codes): absent)."""
    first = np.full(ncodes, len(codes), dtype=np.int64)
    for j in range(len(codes) - 1, -1, -1):
        first[codes[j]] = j
    return first


class _ReadTable:
    """Every op's reads as flat arrays (history.PollTable's layout, plus the
    reads of ops whose value was decoded), with the per-(key, value) and
    per-(key, offset, value) groups the anomaly functions need, per-op
    columns (``typ``, ``fcode``, ``proc``, ``okop``: see _op_columns), and
    (after add_sends) the sends as flat arrays over the same key ids.

    Rows: offsets and values, and ``row_kv`` their (key, value) group;
    segment s (one per op and key read) holds rows ``lo[s]:lo[s + 1]`` of
    op ``seg_op[s]``, key ``keys[seg_key[s]]``; op i's segments are
    ``op_lo[i]:op_lo[i + 1]`` (a list; ``op_seg``: the same as an array).
    The offsets and values are stored as the poll table's arrays
    ``off``/``val`` followed by ``tail_off``/``tail_val`` (the reads of
    decoded ops after all of them, if any; ``rows`` reads them).
    (key, value) groups ``kv_*`` are sorted by key id and value;
    ``t_kv``/``t_off`` the distinct (group, offset) read, sorted. ``u_*``:
    the (key, value) universe of reads and sends (see add_sends)."""

    @classmethod
    def build(cls, history):
        P = history.polls
        ops = history.ops
        n = len(ops)
        typ, fcode, lazy, has_extra, proc = _op_columns(ops, int_processes=True)
        keys = list(P.keys)
        key_id = {k: i for i, k in enumerate(keys)}
        x_op, x_key, x_cnt, x_off, x_val = [], [], [], [], []
        # poll/txn ops whose value was decoded (a send's value holds no
        # poll: the reader checked that)
        decoded = np.flatnonzero(((fcode == _POLL) | (fcode == _TXN)) & ~lazy).tolist()
        for i in decoded:
            op = ops[i]
            _, r = _op_mops(op)
            if not r:
                continue
            for k, pairs in r.items():
                for o, v in pairs:
                    if type(o) is not int or type(v) is not int or o < 0 \
                            or not -2**62 < v < 2**62:
                        return None
                kid = key_id.get(k)
                if kid is None:
                    if type(k) is not str:
                        return None
                    kid = key_id[k] = len(keys)
                    keys.append(k)
                x_op.append(op.id)
                x_key.append(kid)
                x_cnt.append(len(pairs))
                x_off.extend(map(_first, pairs))
                x_val.extend(map(_second, pairs))
        seg_op, seg_key, lo, off, val = P.seg_op, P.seg_key, P.seg_lo, P.off, P.val
        tail_off = tail_val = np.zeros(0, dtype=np.int64)
        if x_op:  # merge the decoded reads in, in op order
            x_lo = np.zeros(len(x_cnt) + 1, dtype=np.int64)
            np.cumsum(x_cnt, out=x_lo[1:])
            x_off = np.array(x_off, dtype=np.int64)
            x_val = np.array(x_val, dtype=np.int64)
            all_op = np.concatenate((seg_op, np.array(x_op, dtype=np.int64)))
            all_key = np.concatenate((seg_key, np.array(x_key, dtype=np.int32)))
            if not len(seg_op) or x_op[0] > seg_op[-1]:
                # all after the poll table's (often: the last op's, alone):
                # their rows go after its rows, in other arrays (copying
                # hundreds of MB of fresh memory costs ~0.5 s)
                lo = np.concatenate((lo, lo[-1] + x_lo[1:]))
                tail_off, tail_val = x_off, x_val
            else:
                order = np.argsort(all_op, kind="stable")
                all_op, all_key = all_op[order], all_key[order]
                lo, off, val = _merge_rows(order, lo, off, val, x_lo, x_off, x_val)
            seg_op, seg_key = all_op, all_key
        t = cls()
        t.keys, t.key_id = keys, key_id
        t.n = n
        t.decoded = decoded
        t.has_extra = has_extra
        t.extra_ops = np.flatnonzero(has_extra & (fcode <= _TXN)).tolist()
        t.typ, t.fcode, t.proc = typ, fcode, proc
        t.okop = okop = typ == _OK
        t.seg_op, t.seg_key, t.lo = seg_op, seg_key, lo
        t.off, t.val, t.tail_off, t.tail_val = off, val, tail_off, tail_val
        vs = [int(f(x)) for x in (val, tail_val) if len(x) for f in (np.min, np.max)]
        vmin, vmax = (min(vs), max(vs)) if vs else (0, 0)
        vspan = vmax - vmin + 1
        nkeys = len(keys)
        if nkeys * vspan > 1 << 24:  # too sparse for dense (key, value) arrays
            return None
        # (key, value) groups through dense arrays indexed by a code (numpy's
        # unique sorts or hashes tens of millions of rows: seconds)
        row_kv, first_op, first_off, multi, ok = _kv_scan(
            seg_op, seg_key, lo, off, val, tail_off, tail_val, okop, vmin, vspan, nkeys)
        present = first_op >= 0
        ukv = np.flatnonzero(present)
        _remap(row_kv, (np.cumsum(present, dtype=np.int32) - 1))
        nkv = len(ukv)
        t.row_kv = row_kv
        t.kv_key = ukv // vspan
        t.kv_val = ukv % vspan + vmin
        t.kv_first, t.kv_ok = first_op[ukv], ok[ukv]
        # the distinct (group, offset) pairs read: one per group, but all
        # offsets of the values read at several
        t_kv, t_off = np.arange(nkv, dtype=np.int64), first_off[ukv]
        mm = multi[ukv]
        if mm.any():
            ck, co = _rows_in(row_kv, off, tail_off, mm)
            o = np.lexsort((co, ck))
            ck, co = ck[o], co[o]
            new = np.ones(len(ck), dtype=bool)
            new[1:] = (ck[1:] != ck[:-1]) | (co[1:] != co[:-1])
            t_kv = np.concatenate((t_kv[~mm], ck[new]))
            t_off = np.concatenate((t_off[~mm], co[new]))
            o = np.lexsort((t_off, t_kv))
            t_kv, t_off = t_kv[o], t_off[o]
        t.t_kv, t.t_off = t_kv, t_off
        t.op_seg = np.searchsorted(seg_op, np.arange(n + 1))
        t.op_lo = t.op_seg.tolist()
        return t

    def add_sends(self, s_op, s_key, s_off, s_val):
        """The sends as flat arrays (op order; offset -1: unknown; key ids
        extend ``keys``), and the (key, value) universe ``u_key``/``u_val``
        of everything read or sent, sorted: ``kv2u``/``s2u`` map read
        groups and sends into it, ``u_ok``: read by an ok op, ``u_writer``:
        the last op that sent it (-1: none)."""
        self.s_op, self.s_key, self.s_off, self.s_val = s_op, s_key, s_off, s_val
        self.op_send = np.searchsorted(s_op, np.arange(self.n + 1))
        nkv = len(self.kv_key)
        allk = np.concatenate((self.kv_key, s_key))
        allv = np.concatenate((self.kv_val, s_val))
        o = np.lexsort((allv, allk))
        sk, sv = allk[o], allv[o]
        new = np.ones(len(o), dtype=bool)
        new[1:] = (sk[1:] != sk[:-1]) | (sv[1:] != sv[:-1])
        uid = np.empty(len(o), dtype=np.int64)
        uid[o] = np.cumsum(new) - 1
        self.kv2u, self.s2u = uid[:nkv], uid[nkv:]
        self.u_key, self.u_val = sk[new], sv[new]
        nu = len(self.u_key)
        self.u_ok = np.zeros(nu, dtype=bool)
        self.u_ok[self.kv2u] = self.kv_ok
        self.u_writer = np.full(nu, -1, dtype=np.int64)
        np.maximum.at(self.u_writer, self.s2u, s_op)

    def reads_view(self):
        return _ReadsView(self, self.n)

    def _key_groups(self, key_arr):
        """[(key id, lo, hi)] of runs of a key-sorted array."""
        if not len(key_arr):
            return []
        b = np.flatnonzero(key_arr[1:] != key_arr[:-1]) + 1
        starts = np.concatenate(([0], b)).tolist()
        ends = np.concatenate((b, [len(key_arr)])).tolist()
        ks = key_arr[starts].tolist()
        return list(zip(ks, starts, ends))

    def group_dicts(self, kid, vals, ids):
        """{key: {value: id}} of parallel arrays, keys and values in order of
        first appearance, later ids winning (as dict assignments in order)."""
        o = np.argsort(kid, kind="stable")
        groups = self._key_groups(kid[o])
        groups.sort(key=lambda g: o[g[1]])
        vs, xs = vals[o], ids[o]
        return {self.keys[k]: dict(zip(vs[lo:hi].tolist(), xs[lo:hi].tolist()))
                for k, lo, hi in groups}

    def first_reader_ok_reads(self):
        fr, okr = {}, {}
        keys = self.keys
        vals, first, ok = self.kv_val, self.kv_first, self.kv_ok
        for kid, lo, hi in self._key_groups(self.kv_key):
            k = keys[kid]
            fr[k] = dict(zip(vals[lo:hi].tolist(), first[lo:hi].tolist()))
            m = ok[lo:hi]
            if m.any():
                okr[k] = set(vals[lo:hi][m].tolist())
        return fr, okr

    def key_order(self):
        """Ids of the keys read (even only empty), in order of first appearance."""
        first = _first_index(self.seg_key, len(self.keys))
        u = np.flatnonzero(first < len(self.seg_key))
        return u[np.argsort(first[u])].tolist()

    def rows(self, column, s):
        """Segment s's offsets (column "off") or values ("val"), a list."""
        a, tail = (self.off, self.tail_off) if column == "off" else (self.val, self.tail_val)
        lo, hi = int(self.lo[s]), int(self.lo[s + 1])
        if lo >= len(a):
            return tail[lo - len(a):hi - len(a)].tolist()
        return a[lo:hi].tolist()

    def value_at(self, r):
        """The value read at row r (of the main or the tail arrays)."""
        n = len(self.val)
        return int(self.val[r] if r < n else self.tail_val[r - n])

    def pairs(self, s):
        return [[o, v] for o, v in zip(self.rows("off", s), self.rows("val", s))]


# ----------------------------------------------------------- version orders

class VersionOrder:
    """One key's log. ``by_index[i]`` is the value at dense index i (the
    smallest, if an offset holds several); ``by_value[v]`` its index (the
    last, if v is at several); ``offsets[i]`` the Kafka offset of index i;
    ``values[i]`` the sorted values seen at that offset."""

    __slots__ = ("offsets", "values", "by_index", "by_value", "first_index",
                 "last_index")


def version_orders(a: Analysis):
    if a.tab is not None:
        return _version_orders_table(a)
    logs = {}  # k -> {offset: value or set of values}
    for i, w in enumerate(a.writes):
        if w is not None and a.committed[i]:
            for k, o, v in w:
                if o is None:
                    continue
                log = logs.get(k)
                if log is None:
                    log = logs[k] = {}
                cur = log.get(o)
                if cur is None:
                    log[o] = v
                elif type(cur) is set:
                    cur.add(v)
                elif cur != v:
                    log[o] = {cur, v}
    # Polls re-read the same (offset, value) pairs over and over (every final
    # poll reads the whole log): deduplicate them at C speed first.
    read_pairs = {}
    for r in a.reads:
        if r is None:
            continue
        for k, pairs in r.items():
            ps = read_pairs.get(k)
            if ps is None:
                ps = read_pairs[k] = set()
            ps.update(map(tuple, pairs))
    for k, ps in read_pairs.items():
        log = logs.get(k)
        if log is None:
            log = logs[k] = {}
        sd = log.setdefault
        for o, v in ps:
            cur = sd(o, v)  # (unknown offsets land on None, dropped below)
            if cur != v:
                if type(cur) is set:
                    cur.add(v)
                else:
                    log[o] = {cur, v}
    orders = {}
    inconsistent = []
    for k, log in logs.items():
        log.pop(None, None)
        vo = VersionOrder()
        offs = sorted(log)
        vo.offsets = offs
        values = []
        by_index = []
        by_value = {}
        first_index = {}
        for i, o in enumerate(offs):
            cur = log[o]
            if type(cur) is set:
                vs = sorted(cur)
                inconsistent.append({"key": k, "offset": o, "index": i, "values": vs})
            else:
                vs = [cur]
            values.append(vs)
            by_index.append(vs[0])
            for v in vs:
                by_value[v] = i
                if v not in first_index:
                    first_index[v] = i
        vo.values = values
        vo.by_index = by_index
        vo.by_value = by_value          # last index, as Jepsen's index-seq
        vo.first_index = first_index
        vo.last_index = by_value
        orders[k] = vo
    a.orders = orders
    inconsistent.sort(key=lambda e: (sort_key(e["key"]), e["offset"]))
    a.inconsistent = inconsistent
    return orders


def _version_orders_table(a: Analysis):
    """version_orders over a _ReadTable: the log entries (committed sends
    with an offset, distinct reads) as (key, offset, value) arrays, sorted
    and deduplicated, then each key's VersionOrder from its slice. Also
    leaves on the table, for the array code: ``u_index`` (by_value index of
    each universe value, -1: none), ``vo_keys`` (key ids in ``orders``
    order) and each key's by_index as universe ids (``bi_u``, from
    ``bi_lo[kid]``)."""
    tab = a.tab
    keys = tab.keys
    m = tab.committed[tab.s_op] & (tab.s_off >= 0)
    key = np.concatenate((tab.s_key[m], tab.kv_key[tab.t_kv]))
    off = np.concatenate((tab.s_off[m], tab.t_off))
    u = np.concatenate((tab.s2u[m], tab.kv2u[tab.t_kv]))  # (key, value) ids
    o = np.lexsort((u, off, key))
    key, off, u = key[o], off[o], u[o]
    if len(u):
        keep = np.ones(len(u), dtype=bool)
        keep[1:] = (key[1:] != key[:-1]) | (off[1:] != off[:-1]) | (u[1:] != u[:-1])
        key, off, u = key[keep], off[keep], u[keep]
    # index: position of the offset in its key's sorted distinct offsets
    new_key = np.ones(len(u), dtype=bool)
    new_key[1:] = key[1:] != key[:-1]
    new_off = new_key.copy()
    new_off[1:] |= off[1:] != off[:-1]
    c = np.cumsum(new_off) - 1
    ks = np.flatnonzero(new_key)
    idx = c - np.repeat(c[ks], np.diff(np.append(ks, len(u))))
    tab.u_index = np.full(len(tab.u_key), -1, dtype=np.int64)
    np.maximum.at(tab.u_index, u, idx)
    g = np.flatnonzero(new_off)  # first (smallest) value at each offset
    tab.bi_u = u[g]
    tab.bi_lo = np.searchsorted(key[g], np.arange(len(keys) + 1))
    row_lo = np.searchsorted(key, np.arange(len(keys) + 1))
    # keys in the order the list version's logs get them: sends (op order),
    # then reads
    sk = tab.s_key[m]
    uk, first = np.unique(sk, return_index=True)
    vo_keys = uk[np.argsort(first)].tolist()
    seen = set(vo_keys)
    vo_keys += [k for k in tab.key_order() if k not in seen]
    tab.vo_keys = vo_keys
    orders = {}
    inconsistent = []
    u_val = tab.u_val
    for kid in vo_keys:
        k = keys[kid]
        lo, hi = row_lo[kid], row_lo[kid + 1]
        glo, ghi = tab.bi_lo[kid], tab.bi_lo[kid + 1]
        vals = u_val[u[lo:hi]].tolist()
        idxs = idx[lo:hi].tolist()
        vo = VersionOrder()
        vo.offsets = off[g[glo:ghi]].tolist()
        vo.by_index = u_val[tab.bi_u[glo:ghi]].tolist()
        if ghi - glo == hi - lo:  # one value per offset
            vo.values = [[v] for v in vo.by_index]
        else:
            b = (g[glo:ghi] - lo).tolist() + [hi - lo]
            vo.values = [vals[x:y] for x, y in zip(b, b[1:])]
            for i, vs in enumerate(vo.values):
                if len(vs) > 1:
                    inconsistent.append({"key": k, "offset": vo.offsets[i], "index": i,
                                         "values": vs})
        vo.by_value = dict(zip(vals, idxs))  # last index, as Jepsen's index-seq
        vo.first_index = dict(vo.by_value)
        if len(vo.by_value) < len(vals):  # some value at several offsets
            vo.first_index.update(zip(reversed(vals), reversed(idxs)))
        vo.last_index = vo.by_value
        orders[k] = vo
    a.orders = orders
    inconsistent.sort(key=lambda e: (sort_key(e["key"]), e["offset"]))
    a.inconsistent = inconsistent
    return orders


# ---------------------------------------------------------------- anomalies

def _ref(a, i):
    return a.history.ops[i].ref()


class _Cases(Sequence):
    """Witnesses found as rows of an integer array, made into dicts only
    when read (``build(*row)``): a broken system can give millions of cases
    of one type, of which the result shows the first few and the count."""

    __slots__ = ("rows", "build")

    def __init__(self, rows, build):
        self.rows, self.build = rows, build

    def __len__(self):
        return len(self.rows)

    def __getitem__(self, j):
        if isinstance(j, slice):
            return [self.build(*r) for r in self.rows[j].tolist()]
        return self.build(*self.rows[j].tolist())


def duplicate_cases(a: Analysis):
    out = []
    for k in sorted(a.orders, key=sort_key):
        vo = a.orders[k]
        if len(vo.first_index) == sum(len(vs) for vs in vo.values):
            continue  # every value at exactly one offset
        where = {}
        for o, vs in zip(vo.offsets, vo.values):
            for v in vs:
                where.setdefault(v, []).append(o)
        for v, offs in where.items():
            if len(offs) > 1:
                out.append({"key": k, "value": v, "count": len(offs), "offsets": offs})
    return out


def g1a_cases(a: Analysis):
    """An ok read of a value whose send failed (aborted read)."""
    out = []
    bad = {k: a.ok_reads[k] & fk.keys() for k, fk in a.failed.items()
           if k in a.ok_reads}
    bad = {k: vs for k, vs in bad.items() if vs}
    if not bad:
        return out
    if a.tab is not None:
        return _g1a_table(a, bad)
    ops = a.history.ops
    for i, r in enumerate(a.reads):
        if r is None or ops[i].type != "ok":
            continue
        for k, pairs in r.items():
            bk = bad.get(k)
            if not bk:
                continue
            fk = a.failed[k]
            for _, v in pairs:
                if v in bk:
                    w = fk[v]
                    out.append({"key": k, "value": v, "writer": _ref(a, w),
                                "reader": _ref(a, i)})
    return out


def _g1a_table(a, bad):
    """g1a_cases over the table: every row of an ok read of a (key, value)
    in bad ({key: values}: values read, so the table's int64s), in the
    order the list version meets them (rows are in op order, then key, then
    offset). The failed values are few, the read rows tens of millions: one
    lookup of each row's (key, value) group in a mask."""
    tab = a.tab
    is_bad = np.zeros(len(tab.kv_key), dtype=bool)
    for k, vs in bad.items():
        kid = tab.key_id.get(k)
        if kid is not None:
            g = np.flatnonzero(tab.kv_key == kid)
            is_bad[g[np.isin(tab.kv_val[g], np.fromiter(vs, np.int64, len(vs)))]] = True
    rows = np.flatnonzero(is_bad[tab.row_kv])
    seg = np.searchsorted(tab.lo, rows, side="right") - 1
    op = tab.seg_op[seg].astype(np.int64)
    ok = tab.okop[op]
    found = np.stack((op[ok], tab.seg_key[seg[ok]].astype(np.int64),
                      tab.kv_val[tab.row_kv[rows[ok]]]), axis=1)

    def case(i, kid, v):
        k = tab.keys[kid]
        return {"key": k, "value": v, "writer": _ref(a, a.failed[k][v]), "reader": _ref(a, i)}
    return _Cases(found, case)


def garbage_read_cases(a: Analysis):
    """An ok read of a value nobody sent (Elle's garbage read)."""
    out = []
    for k, vs in a.ok_reads.items():
        wk = a.writer_of.get(k, {})
        for v in vs:
            if v not in wk:
                out.append({"key": k, "value": v,
                            "reader": _ref(a, a.first_reader[k][v])})
    out.sort(key=lambda e: (sort_key(e["key"]), e["value"]))
    return out


def precommitted_read_cases(a: Analysis):
    """An op that read a value it sent itself."""
    out = []
    for i, w in _ops_writing(a, reading=True):
        r = a.reads[i]
        by_key = {}
        for k, _, v in w:
            by_key.setdefault(k, set()).add(v)
        for k in sorted(by_key, key=sort_key):
            if k in r:
                bad = by_key[k] & {v for _, v in r[k]}
                if bad:
                    out.append({"op": _ref(a, i), "key": k, "value": min(bad)})
    return out


def lost_write_cases(a: Analysis):
    """Jepsen's lost-write: bound = largest *earliest* index of any value an
    ok op read; committed values whose *last* index <= bound that no ok op
    read are lost."""
    out = []
    for k in sorted(a.ok_reads, key=sort_key):
        vs = a.ok_reads[k]
        vo = a.orders.get(k)
        if vo is None:
            continue
        fi = vo.first_index
        bound = -1
        for v in vs:
            i = fi.get(v)
            if i is not None and i > bound:
                bound = i
        if bound < 0:
            continue
        wk = a.writer_of.get(k, {})
        frk = a.first_reader.get(k, {})
        max_read = None
        for v in vo.values[bound]:
            r = frk.get(v)
            if r is not None:
                max_read = _ref(a, r)
                break
        # values whose last appearance is at or below bound, in index order
        seen = set()
        for idx in range(bound + 1):
            for v in vo.values[idx]:
                if v in seen or v in vs:
                    continue
                seen.add(v)
                if vo.last_index[v] > bound:
                    continue
                w = wk.get(v)
                if w is None:
                    continue  # garbage: reported as garbage-read if read ok
                if not a.committed[w]:
                    continue
                out.append({"key": k, "value": v, "index": fi[v],
                            "max_read_index": bound, "writer": _ref(a, w),
                            "max_read": max_read})
    return out


def _pair_case(kind, k, v1, v2, vo, max_skipped, op_field):
    """skip / nonmonotonic classification of a consecutive pair of values."""
    i1 = vo.by_value.get(v1) if vo else None
    i2 = vo.by_value.get(v2) if vo else None
    if i1 is None or i2 is None:
        return None
    delta = i2 - i1
    if delta > 1:
        skipped = vo.by_index[i1 + 1:i2]
        case = {"type": "skip", "key": k, "values": [v1, v2], "delta": delta,
                "skipped": skipped[:max_skipped]}
        if len(skipped) > max_skipped:
            case["skipped_count"] = len(skipped)
    elif delta < 1:
        case = {"type": "nonmonotonic", "key": k, "values": [v1, v2], "delta": delta}
    else:
        return None
    case.update(op_field)
    return case


@njit(cache=True)
def _int_poll_rows(lo, row_kv, kv_index, seg_ok):
    """(segment, row) of each read, in a segment marked ok, whose value's
    index and that of the read just before it are known and not 1 apart:
    the int-poll cases, in row order. (Two passes: count, then fill.)"""
    out = np.empty((0, 2), dtype=np.int64)
    for fill in range(2):
        m = 0
        for s in range(len(lo) - 1):
            if not seg_ok[s]:
                continue
            for r in range(lo[s] + 1, lo[s + 1]):
                i1 = kv_index[row_kv[r - 1]]
                i2 = kv_index[row_kv[r]]
                if i1 >= 0 and i2 >= 0 and i2 - i1 != 1:
                    if fill:
                        out[m, 0] = s
                        out[m, 1] = r
                    m += 1
        if not fill:
            out = np.empty((m, 2), dtype=np.int64)
    return out


def int_poll_cases(a: Analysis, max_skipped=32):
    """Skips and backward steps between consecutive reads of a key inside
    one op (keys in the op's rebalance log are exempt)."""
    skips, nonmono = [], []
    orders = a.orders
    tab = a.tab
    if tab is not None:
        return _int_poll_table(a, max_skipped)
    for i, r in enumerate(a.reads):
        if r is None:
            continue
        exempt = a.rebalanced.get(i, ())
        for k, pairs in r.items():
            if len(pairs) < 2 or k in exempt:
                continue
            vo = orders.get(k)
            if vo is None:
                continue
            bv = vo.by_value
            idx = list(map(bv.get, map(_second, pairs)))
            first = idx[0]
            if first is not None and idx == list(range(first, first + len(idx))):
                continue  # the common case: consecutive indices
            _int_poll_steps(a, i, k, map(_second, pairs), vo, max_skipped, skips, nonmono)
    return _strip(skips), _strip(nonmono)


def _int_poll_table(a: Analysis, max_skipped):
    """int_poll_cases over the table: the cases found by a compiled pass
    over every read row, split by the sign of the index step."""
    tab, orders = a.tab, a.orders
    seg_ok = np.array([k in orders for k in tab.keys], dtype=bool)[tab.seg_key]
    for i, exempt in a.rebalanced.items():
        for sg in range(tab.op_lo[i], tab.op_lo[i + 1]):
            if tab.keys[int(tab.seg_key[sg])] in exempt:
                seg_ok[sg] = False
    kvi = tab.u_index[tab.kv2u]
    rows = _int_poll_rows(tab.lo, tab.row_kv, kvi, seg_ok)
    r = rows[:, 1]
    delta = kvi[tab.row_kv[r]] - kvi[tab.row_kv[r - 1]]

    def case(sg, r):
        k = tab.keys[int(tab.seg_key[sg])]
        c = _pair_case("int-poll", k, tab.value_at(r - 1), tab.value_at(r), orders[k],
                       max_skipped, {"op": _ref(a, int(tab.seg_op[sg]))})
        del c["type"]
        return c
    return _Cases(rows[delta > 1], case), _Cases(rows[delta < 1], case)


def _int_poll_steps(a, i, k, values, vo, max_skipped, skips, nonmono) -> None:
    """Within one poll of op i, each step between consecutive values of key
    k whose version-order indices are not +1 is a skip or a reordering."""
    bv = vo.by_value
    prev_i = prev_v = None
    for v in values:
        iv = bv.get(v)
        if prev_i is not None and iv is not None and iv - prev_i != 1:
            c = _pair_case("int-poll", k, prev_v, v, vo, max_skipped, {"op": _ref(a, i)})
            (skips if c["type"] == "skip" else nonmono).append(c)
        prev_i, prev_v = iv, v


def int_send_cases(a: Analysis, max_skipped=32):
    skips, nonmono = [], []
    orders = a.orders
    for i, w in _ops_writing(a, 2):
        by_key = {}
        for k, _, v in w:
            by_key.setdefault(k, []).append(v)
        for k, vs in by_key.items():
            if len(vs) < 2:
                continue
            vo = orders.get(k)
            if vo is None:
                continue
            for v1, v2 in zip(vs, vs[1:]):
                c = _pair_case("int-send", k, v1, v2, vo, max_skipped,
                               {"op": _ref(a, i)})
                if c is not None:
                    (skips if c["type"] == "skip" else nonmono).append(c)
    return _strip(skips), _strip(nonmono)


def _strip(cases):
    for c in cases:
        del c["type"]
    return cases


def _by_process(ops):
    procs = {}
    for op in ops:
        procs.setdefault(op.process, []).append(op)
    return procs


def poll_cases(a: Analysis, max_skipped=32):
    """Per process: an op's first read of k against the previous ok op's last
    read of k. assign/subscribe keep only the keys they name; an assign with
    seek_to_beginning, or a crash (fresh client), forgets everything;
    fail/info polls are checked but do not move the position."""
    skips, nonmono = [], []
    ops = a.history.ops
    orders = a.orders
    tab = a.tab
    if tab is not None:
        return _poll_cases_table(a, max_skipped)
    for process, pops in _by_process(ops).items():
        last = {}  # k -> (op id, last value read)
        for op in pops:
            f = op.f
            if f in ("assign", "subscribe"):
                if op.type != "fail" and isinstance(op.value, list):
                    if op.extra and op.extra.get("seek_to_beginning"):
                        last = {}  # an explicit rewind, not a nonmonotonic poll
                        continue
                    keep = set(op.value)
                    last = {k: x for k, x in last.items() if k in keep}
                continue
            if f == "crash":
                last = {}
                continue
            r = a.reads[op.id]
            if r is None:
                continue
            for k, pairs in r.items():
                if not pairs:
                    continue
                prev = last.get(k)
                if prev is None:
                    continue
                vo = orders.get(k)
                i1 = vo.by_value.get(prev[1]) if vo else None
                i2 = vo.by_value.get(pairs[0][1]) if vo else None
                if i1 is not None and i2 is not None and i2 - i1 != 1:
                    c = _pair_case("poll", k, prev[1], pairs[0][1], vo, max_skipped,
                                   {"ops": [_ref(a, prev[0]), op.ref()]})
                    (skips if c["type"] == "skip" else nonmono).append(c)
            if op.type == "ok":
                for k, pairs in r.items():
                    if pairs:
                        last[k] = (op.id, pairs[-1][1])
    return _strip(skips), _strip(nonmono)


def _resets(a: Analysis):
    """The assign/subscribe/crash ops of a _ReadTable's history, for the
    per-process walks: ``kind[i]`` is -1 for other ops, -2 for an
    assign/subscribe that sets nothing (failed, or no key list), -3 for a
    crash, else r: reset number r keeps the keys ``keep[keep_lo[r]:
    keep_lo[r + 1]]`` (key ids; -1: a key never read or sent), or none if
    ``seek[r]`` (a rewind). Also ``order``: the op ids by process (in order
    of first appearance), then id."""
    tab = a.tab
    if getattr(tab, "resets", None) is not None:
        return tab.resets
    ops = a.history.ops
    kind = np.full(len(ops), -1, dtype=np.int64)
    kind[tab.fcode == _CRASH] = -3
    sets = (tab.fcode == _ASSIGN) | (tab.fcode == _SUBSCRIBE)
    kind[sets] = -2
    sets = np.flatnonzero(sets & (tab.typ != _FAIL))
    values = list(map(_get_value, map(ops.__getitem__, sets.tolist())))
    is_list = np.fromiter(map(isinstance, values, repeat(list)), dtype=bool, count=len(values))
    lists = [v for v, x in zip(values, is_list.tolist()) if x]
    kind[sets[is_list]] = np.arange(len(lists))
    keep = np.fromiter(map(tab.key_id.get, chain.from_iterable(lists), repeat(-1)),
                       dtype=np.int64)
    keep_lo = np.zeros(len(lists) + 1, dtype=np.int64)
    np.cumsum(np.fromiter(map(len, lists), dtype=np.int64, count=len(lists)), out=keep_lo[1:])
    seek = np.zeros(len(lists), dtype=np.bool_)
    for i in np.flatnonzero(tab.has_extra).tolist():
        if kind[i] >= 0 and ops[i].extra.get("seek_to_beginning"):
            seek[kind[i]] = True
    order = np.argsort(tab.proc, kind="stable")
    tab.resets = (order, kind, keep, keep_lo, seek)
    return tab.resets


@njit(cache=True)
def _forget(last, touched, nt, keep, lo, hi, mark, r):
    """Drops from the per-key state ``last`` the touched keys (the first nt
    of ``touched``) not in keep[lo:hi]; returns the new nt."""
    for j in range(lo, hi):
        if keep[j] >= 0:
            mark[keep[j]] = r
    m = 0
    for j in range(nt):
        k = touched[j]
        if mark[k] == r:
            touched[m] = k
            m += 1
        else:
            last[k] = -1
    return m


@njit(cache=True)
def _forget_all(last, touched, nt):
    """Drops every touched key from ``last``; returns the new nt, 0."""
    for j in range(nt):
        last[touched[j]] = -1
    return 0


@njit(cache=True)
def _remember(last, touched, nt, k, x):
    """last[k] = x, listing k in ``touched`` if it was not set; returns the
    new nt."""
    if last[k] < 0:
        touched[nt] = k
        nt += 1
    last[k] = x
    return nt


@njit(cache=True)
def _poll_pairs(order, proc, kind, keep, keep_lo, seek, okop, op_seg, seg_key, lo,
                row_kv, kv_index, nkeys):
    """poll_cases' walk: per process (``order``: ops by process, then id),
    the segment of the last ok read of each key; an op's first read of a key
    against it. Returns the (segment, previous segment) pairs whose indices
    are known and not 1 apart, in the list version's order."""
    last = np.full(nkeys, -1, dtype=np.int64)
    touched = np.empty(nkeys, dtype=np.int64)  # keys set in last
    mark = np.full(nkeys, -1, dtype=np.int64)
    nt = 0
    out = np.empty((len(seg_key), 2), dtype=np.int64)
    m = 0
    cur = -1
    for i in order:
        if proc[i] != cur:  # a new process: no state
            cur = proc[i]
            nt = _forget_all(last, touched, nt)
        r = kind[i]
        if r == -2:
            continue
        if r == -3 or (r >= 0 and seek[r]):  # crash, rewind: forget all
            nt = _forget_all(last, touched, nt)
            continue
        if r >= 0:  # assign/subscribe: keep its keys only
            nt = _forget(last, touched, nt, keep, keep_lo[r], keep_lo[r + 1], mark, r)
            continue
        for s in range(op_seg[i], op_seg[i + 1]):
            if lo[s] == lo[s + 1]:
                continue
            y = last[seg_key[s]]
            if y >= 0:
                i1 = kv_index[row_kv[lo[y + 1] - 1]]
                i2 = kv_index[row_kv[lo[s]]]
                if i1 >= 0 and i2 >= 0 and i2 - i1 != 1:
                    out[m, 0] = s
                    out[m, 1] = y
                    m += 1
        if okop[i]:
            for s in range(op_seg[i], op_seg[i + 1]):
                if lo[s] < lo[s + 1]:
                    nt = _remember(last, touched, nt, seg_key[s], s)
    return out[:m]


def _poll_cases_table(a: Analysis, max_skipped=32):
    """poll_cases over a _ReadTable: the same walk compiled (_poll_pairs),
    witnesses as poll_cases, made when read."""
    tab = a.tab
    kvi = tab.u_index[tab.kv2u]
    order, kind, keep, keep_lo, seek = _resets(a)
    pairs = _poll_pairs(order, tab.proc, kind, keep, keep_lo, seek, tab.okop, tab.op_seg,
                        tab.seg_key, tab.lo, tab.row_kv, kvi, len(tab.keys))
    orders = a.orders
    x, y = pairs[:, 0], pairs[:, 1]
    delta = kvi[tab.row_kv[tab.lo[x]]] - kvi[tab.row_kv[tab.lo[y + 1] - 1]]

    def case(x, y):
        k = tab.keys[int(tab.seg_key[x])]
        c = _pair_case("poll", k, tab.value_at(tab.lo[y + 1] - 1), tab.value_at(tab.lo[x]),
                       orders.get(k), max_skipped,
                       {"ops": [_ref(a, int(tab.seg_op[y])), _ref(a, int(tab.seg_op[x]))]})
        del c["type"]
        return c
    return _Cases(pairs[delta > 1], case), _Cases(pairs[delta < 1], case)


@njit(cache=True)
def _nonmonotonic_sends(order, proc, typ, kind, keep, keep_lo, op_send, s_key,
                        s_index, nkeys):
    """nonmonotonic_send_cases' walk: per process (``order``: ops by
    process, then id), the send row of the last send of each key; an op's
    first send of a key against it. Returns (row, previous row) pairs with
    known indices not increasing, in the list version's order."""
    last = np.full(nkeys, -1, dtype=np.int64)
    touched = np.empty(nkeys, dtype=np.int64)
    mark = np.full(nkeys, -1, dtype=np.int64)
    stamp = np.full(nkeys, -1, dtype=np.int64)  # op whose first send of k was seen
    nt = 0
    out = np.empty((len(s_key), 2), dtype=np.int64)
    m = 0
    cur = -1
    for i in order:
        if proc[i] != cur:
            cur = proc[i]
            nt = _forget_all(last, touched, nt)
        if typ[i] == _FAIL:
            continue
        r = kind[i]
        if r >= 0:  # assign/subscribe with keys (no rewind here)
            nt = _forget(last, touched, nt, keep, keep_lo[r], keep_lo[r + 1], mark, r)
            continue
        for j in range(op_send[i], op_send[i + 1]):
            k = s_key[j]
            if stamp[k] == i:
                continue
            stamp[k] = i
            y = last[k]
            if y >= 0 and s_index[y] >= 0 and s_index[j] >= 0 and s_index[j] - s_index[y] < 1:
                out[m, 0] = j
                out[m, 1] = y
                m += 1
        for j in range(op_send[i], op_send[i + 1]):
            nt = _remember(last, touched, nt, s_key[j], j)
    return out[:m]


def nonmonotonic_send_cases(a: Analysis):
    """Per process: an op's first send to k lands at or before the previous
    (ok or info) op's last send to k."""
    out = []
    ops = a.history.ops
    orders = a.orders
    tab = a.tab
    if tab is not None:
        order, kind, keep, keep_lo, _ = _resets(a)
        s_index = tab.u_index[tab.s2u]
        pairs = _nonmonotonic_sends(order, tab.proc, tab.typ,
                                    kind, keep, keep_lo, tab.op_send, tab.s_key, s_index,
                                    len(tab.keys))
        s_op, s_val = tab.s_op, tab.s_val
        for j, y in pairs.tolist():
            out.append({"key": tab.keys[int(tab.s_key[j])],
                        "values": [int(s_val[y]), int(s_val[j])],
                        "delta": int(s_index[j] - s_index[y]),
                        "ops": [_ref(a, int(s_op[y])), _ref(a, int(s_op[j]))]})
        return out
    for process, pops in _by_process(ops).items():
        last = {}
        for op in pops:
            if op.type == "fail":
                continue
            f = op.f
            if f in ("assign", "subscribe"):
                if isinstance(op.value, list):
                    keep = set(op.value)
                    last = {k: x for k, x in last.items() if k in keep}
                continue
            w = a.writes[op.id]
            if w is None:
                continue
            firsts, lasts = {}, {}
            for k, _, v in w:
                firsts.setdefault(k, v)
                lasts[k] = v
            for k, v2 in firsts.items():
                prev = last.get(k)
                vo = orders.get(k)
                if prev is None or vo is None:
                    continue
                i1, i2 = vo.by_value.get(prev[1]), vo.by_value.get(v2)
                if i1 is not None and i2 is not None and i2 - i1 < 1:
                    out.append({"key": k, "values": [prev[1], v2], "delta": i2 - i1,
                                "ops": [_ref(a, prev[0]), op.ref()]})
            for k, v in lasts.items():
                last[k] = (op.id, v)
    return out


def unseen_and_lag(a: Analysis, series_points=1000):
    """Walks ok completions in realtime order. Returns (final unseen witness
    or None, series [(time, {k: count})], lag distribution result).

    unseen: values of ok sends no ok read has seen (yet). lag: for each ok
    send, from its ack to the completion of the first ok poll that returned
    it (clipped at 0: a poll may see a value before its send is acked)."""
    if a.tab is not None:
        r = _unseen_and_lag_table(a, series_points)
        if r is not None:
            return r
    ops = a.history.ops
    writes, reads = a.writes, a.reads
    unseen = {}       # k -> {v: ack time} of ok sends no ok read has seen yet
    polled = {}       # k -> set of values seen by ok reads so far
    lags = {}         # k -> [lag ns]
    series = []
    # one snapshot of the unseen counts per time step, not per op
    step = max(1, a.history.end_time // max(1, series_points))
    next_snapshot = 0
    changed = False
    t = 0
    for e in a.history.events:
        if not e & 1:
            continue
        op = ops[e >> 1]
        if op.type != "ok" or op.f not in TXN_FS:
            continue
        t = op.time
        r = reads[op.id]
        if r is not None:
            for k, pairs in r.items():
                if not pairs:
                    continue
                pk = polled.get(k)
                if pk is None:
                    pk = polled[k] = set()
                new = set(map(_second, pairs))
                new -= pk
                if not new:
                    continue
                pk |= new
                uk = unseen.get(k)
                if uk:
                    seen_now = [v for v in new if v in uk]
                    if seen_now:
                        lk = lags.setdefault(k, [])
                        for v in seen_now:
                            lk.append(max(0, t - uk.pop(v)))
                        changed = True
        w = writes[op.id]
        if w is not None:
            for k, _, v in w:
                pk = polled.get(k)
                if pk is not None and v in pk:
                    lags.setdefault(k, []).append(0)
                    continue
                unseen.setdefault(k, {})[v] = t
                changed = True
        if changed and t >= next_snapshot:
            series.append((t, {k: len(u) for k, u in unseen.items() if u}))
            next_snapshot = t + step
            changed = False
    if changed:
        series.append((t, {k: len(u) for k, u in unseen.items() if u}))
    return _unseen_result(unseen, series, lags, series_points)


def _unseen_result(unseen, series, lags, series_points):
    series = downsample(series, series_points)
    final = {k: s for k, s in unseen.items() if s}
    witness = None
    if final:
        keys = sorted(final, key=sort_key)
        witness = {"unseen": {k: len(final[k]) for k in keys},
                   "messages": {k: sorted(final[k])[:32] for k in keys},
                   "time": series[-1][0] if series else None}
    all_lags = [x for xs in lags.values() for x in xs]
    lag = {"unit": "s",
           "all": distribution(all_lags, 1e-9),
           "by_key": {k: distribution(lags[k], 1e-9) for k in sorted(lags, key=sort_key)}}
    return witness, series, lag


@njit(cache=True)
def _unseen_walk(seq, times, op_seg, lo, row_kv, kv2u, op_send, s2u, u_key, nkeys, step):
    """unseen_and_lag's walk over the ok completions ``seq`` (times
    ``times``), on arrays over the (key, value) universe. Returns (unseen
    at the end per universe value, lags as (key, lag) rows, snapshot
    positions and their unseen counts per key, keys in order of their first
    unseen value)."""
    nu = len(u_key)
    polled = np.zeros(nu, dtype=np.bool_)
    unseen = np.zeros(nu, dtype=np.bool_)
    since = np.zeros(nu, dtype=np.int64)  # ack time of an unseen value
    count = np.zeros(nkeys, dtype=np.int64)
    key_rank = np.full(nkeys, -1, dtype=np.int64)
    key_order = np.empty(nkeys, dtype=np.int64)
    nk = 0
    lags = np.empty((len(s2u), 2), dtype=np.int64)  # at most one per send
    nl = 0
    snap_pos = np.empty(16, dtype=np.int64)
    snap_count = np.empty((16, nkeys), dtype=np.int64)
    ns = 0
    next_snapshot = 0
    changed = False
    for p in range(len(seq)):
        i = seq[p]
        t = times[p]
        for s in range(op_seg[i], op_seg[i + 1]):
            for r in range(lo[s], lo[s + 1]):
                u = kv2u[row_kv[r]]
                if polled[u]:
                    continue
                polled[u] = True
                if unseen[u]:
                    unseen[u] = False
                    count[u_key[u]] -= 1
                    lags[nl, 0] = u_key[u]
                    lags[nl, 1] = max(0, t - since[u])
                    nl += 1
                    changed = True
        for j in range(op_send[i], op_send[i + 1]):
            u = s2u[j]
            k = u_key[u]
            if polled[u]:
                lags[nl, 0] = k
                lags[nl, 1] = 0
                nl += 1
                continue
            if key_rank[k] < 0:
                key_rank[k] = nk
                key_order[nk] = k
                nk += 1
            if not unseen[u]:
                unseen[u] = True
                count[k] += 1
            since[u] = t
            changed = True
        if changed and (t >= next_snapshot or p == len(seq) - 1):
            if ns == len(snap_pos):
                snap_pos = np.concatenate((snap_pos, np.empty(ns, dtype=np.int64)))
                snap_count = np.concatenate((snap_count, np.empty((ns, nkeys), dtype=np.int64)))
            snap_pos[ns] = p
            snap_count[ns] = count
            ns += 1
            next_snapshot = t + step
            changed = False
    return unseen, lags[:nl], snap_pos[:ns], snap_count[:ns], key_order[:nk]


def _unseen_and_lag_table(a: Analysis, series_points):
    """unseen_and_lag over a _ReadTable: the same walk, compiled (None:
    times that are not int64, for the list version)."""
    h = a.history
    ops = h.ops
    tab = a.tab
    ev = np.frombuffer(h.events, dtype=np.int64) if len(h.events) \
        else np.zeros(0, dtype=np.int64)
    comp = ev[(ev & 1) == 1] >> 1
    seq = comp[tab.okop[comp] & (tab.fcode[comp] <= _TXN)]
    times = np.array(list(map(_get_time, map(ops.__getitem__, seq.tolist()))))
    step = max(1, h.end_time // max(1, series_points))
    if (len(times) and times.dtype != np.int64) or type(step) is not int:
        return None  # float (or huge) times: the list version
    unseen_u, lag_rows, snap_pos, snap_count, key_order = _unseen_walk(
        seq, times, tab.op_seg, tab.lo, tab.row_kv, tab.kv2u, tab.op_send, tab.s2u,
        tab.u_key, len(tab.keys), step)
    keys = tab.keys
    korder = key_order.tolist()
    # values still unseen, by key (sorted: u ids follow (key, value))
    uu = np.flatnonzero(unseen_u)
    unseen = {keys[k]: [] for k in korder}
    for kid, lo, hi in tab._key_groups(tab.u_key[uu]):
        unseen[keys[kid]] = tab.u_val[uu[lo:hi]].tolist()
    lags = {}
    o = np.argsort(lag_rows[:, 0], kind="stable")
    for kid, lo, hi in tab._key_groups(lag_rows[o, 0]):
        lags[keys[kid]] = lag_rows[o[lo:hi], 1].tolist()
    series = []
    snap_times = times[snap_pos].tolist()
    for t, c in zip(snap_times, snap_count[:, korder].tolist()):
        series.append((t, {keys[k]: x for k, x in zip(korder, c) if x}))
    return _unseen_result(unseen, series, lags, series_points)


# -------------------------------------------------------------- dependencies

def graph_vertices(a: Analysis):
    """Ops taking part in the dependency graph: ok send/poll/txn ops, and
    info sends that must have committed."""
    tab = a.tab
    if tab is not None:
        v = (tab.fcode <= _TXN) & ((tab.typ == _OK) | ((tab.typ == _INFO) & tab.committed))
        return bytearray(v.view(np.uint8).tobytes())
    ops = a.history.ops
    vertex = bytearray(len(ops))
    for op in ops:
        if op.f in TXN_FS:
            if op.type == "ok" or (op.type == "info" and a.committed[op.id]):
                vertex[op.id] = 1
    return vertex


def dependency_graph(a: Analysis, ww_deps=True) -> Graph:
    """ww, wr, process and realtime edges (in this order) between the
    graph's vertices, plus realtime barriers (see _realtime_edges)."""
    h = a.history
    n = len(h.ops)
    vertex = graph_vertices(a)
    vert = np.frombuffer(vertex, dtype=np.bool_)
    tab = a.tab
    if tab is not None:
        ok, proc = tab.okop, tab.proc
    else:
        typ, _, _, _, proc = _op_columns(h.ops)
        ok = typ == _OK
    ev = np.frombuffer(h.events, dtype=np.int64) if len(h.events) \
        else np.zeros(0, dtype=np.int64)
    vids = np.flatnonzero(vert)
    # the edges go straight into arrays sized for the most there can be
    # (pages never written cost nothing)
    if tab is not None and ww_deps:
        head = None
        cap = len(tab.bi_u) + len(tab.seg_op)
    else:  # ww and wr edges from lists
        head = (_ww_wr_edges_table(a, tab, vertex, ww_deps) if tab is not None
                else _ww_wr_edges(a, vertex, ww_deps))
        cap = len(head[0])
    cap += len(vids) + 2 * len(ev)
    src = np.empty(cap, dtype=np.int64)
    dst = np.empty(cap, dtype=np.int64)
    rel = np.empty(cap, dtype=np.int8)
    if head is None:
        m = _ww_edges(np.array(tab.vo_keys, dtype=np.int64), tab.bi_lo, tab.bi_u,
                      tab.u_writer, vert, src, dst, rel, 0)
        m = _wr_edges(tab.seg_op, tab.lo, tab.off, tab.tail_off, tab.row_kv, tab.kv2u,
                      tab.u_writer, vert, src, dst, rel, m)
    else:
        m = len(head[0])
        src[:m], dst[:m], rel[:m] = head
    m = _process_edges(vids, proc, int(proc.max()) + 1 if n else 0, src, dst, rel, m)
    m, nbar = _realtime_edges(ev, vert, ok, n, src, dst, rel, m)
    return Graph(n, n + nbar, src[:m], dst[:m], rel[:m])


def _ww_wr_edges(a: Analysis, vertex, ww_deps):
    """ww and wr edges as lists (src, dst, rel)."""
    src, dst, rel = [], [], []
    # ww: consecutive values in each key's version order, distinct writers
    if ww_deps:
        for k, vo in a.orders.items():
            wk = a.writer_of.get(k)
            if not wk:
                continue
            prev = None
            for v in vo.by_index:
                w = wk.get(v)
                if w is None or not vertex[w]:
                    prev = None  # an unknown writer breaks the chain
                    continue
                if prev is not None and prev != w:
                    src.append(prev); dst.append(w); rel.append(WW)
                prev = w
    # wr: writer -> reader. With ww edges, an edge from the writer of the
    # highest value read per key suffices (earlier writers reach it via ww);
    # without them every read value needs its own edge.
    for i, r in enumerate(a.reads):
        if r is None or not vertex[i]:
            continue
        for k, pairs in r.items():
            wk = a.writer_of.get(k)
            if not wk or not pairs:
                continue
            if ww_deps:
                try:  # the value at the highest offset has the highest index
                    candidates = (max(pairs, key=_first)[1],)
                except TypeError:  # some offsets unknown
                    bv = a.orders[k].by_value
                    best, best_i = None, -1
                    for _, v in pairs:
                        iv = bv.get(v, -1)
                        if iv > best_i:
                            best, best_i = v, iv
                    candidates = (best,) if best is not None else ()
            else:
                candidates = {v for _, v in pairs}
            for v in candidates:
                w = wk.get(v)
                if w is not None and w != i and vertex[w]:
                    src.append(w); dst.append(i); rel.append(WR)
    return src, dst, rel


@njit(cache=True)
def _ww_edges(vo_keys, bi_lo, bi_u, u_writer, vertex, src, dst, rel, m):
    """ww edges (_ww_wr_edges' with arrays) written from edge m on; returns
    the new m: along each key's by_index (universe ids), consecutive values
    with distinct vertex writers."""
    for k in vo_keys:
        prev = -1
        for j in range(bi_lo[k], bi_lo[k + 1]):
            w = u_writer[bi_u[j]]
            if w < 0 or not vertex[w]:
                prev = -1  # an unknown writer breaks the chain
                continue
            if prev >= 0 and prev != w:
                src[m], dst[m], rel[m] = prev, w, WW
                m += 1
            prev = w
    return m


@njit(cache=True)
def _top_row(off, shift, r0, r1):
    """The first of the rows r0:r1 (stored in off from row shift on) with
    the highest offset."""
    best = r0
    for r in range(r0 + 1, r1):
        if off[r - shift] > off[best - shift]:
            best = r
    return best


@njit(cache=True)
def _wr_edges(seg_op, lo, off, tail_off, row_kv, kv2u, u_writer, vertex, src, dst, rel, m):
    """wr edges with ww edges (_ww_wr_edges' with arrays) written from edge
    m on; returns the new m: per segment of a vertex, from the writer of the
    value at its highest offset (the first such row)."""
    n = len(off)
    for s in range(len(seg_op)):
        i = seg_op[s]
        if lo[s] == lo[s + 1] or not vertex[i]:
            continue
        if lo[s] < n:
            best = _top_row(off, 0, lo[s], lo[s + 1])
        else:
            best = _top_row(tail_off, n, lo[s], lo[s + 1])
        w = u_writer[kv2u[row_kv[best]]]
        if w >= 0 and w != i and vertex[w]:
            src[m], dst[m], rel[m] = w, i, WR
            m += 1
    return m


def _ww_wr_edges_table(a, tab, vertex, ww_deps):
    """_ww_wr_edges over a _ReadTable, without ww edges (with them,
    dependency_graph runs _ww_edges and _wr_edges): every value read needs
    its wr edge, in the list version's order (a set's)."""
    assert not ww_deps
    src, dst, rel = [], [], []
    keys, writer_of = tab.keys, a.writer_of
    seg_op = tab.seg_op
    vert = np.frombuffer(vertex, dtype=np.bool_)
    keep = np.flatnonzero((np.diff(tab.lo) > 0) & vert[seg_op])
    for sg in keep.tolist():
        i = int(seg_op[sg])
        wk = writer_of.get(keys[int(tab.seg_key[sg])])
        if not wk:
            continue
        for v in set(tab.rows("val", sg)):
            w = wk.get(v)
            if w is not None and w != i and vertex[w]:
                src.append(w); dst.append(i); rel.append(WR)
    return src, dst, rel


@njit(cache=True)
def _process_edges(vids, proc, nproc, src, dst, rel, m):
    """process edges written from edge m on; returns the new m: consecutive
    vertices (vids) of each process, in the order of the later."""
    last = np.full(nproc, -1, dtype=np.int64)
    for i in vids:
        p = proc[i]
        if last[p] >= 0:
            src[m], dst[m], rel[m] = last[p], i, PROCESS
            m += 1
        last[p] = i
    return m


@njit(cache=True)
def _realtime_edges(ev, vertex, ok, n, src, dst, rel, m):
    """realtime edges written from edge m on; returns (the new m, number of
    barriers). A -> B iff A completed (ok) before B was invoked, threaded
    through barrier vertices (n, n + 1, ...) so edges stay linear in the
    history: walking the events (2 * op id, + 1 for a completion) of
    vertices, each ok completion links into the current barrier; an invoke
    links from it and seals it, so later completions open a new barrier
    chained after it."""
    nbar = 0
    prev_invoke = True  # the previous event that counts is an invoke (or none)
    for e in ev:
        i = e >> 1
        completion = (e & 1) == 1
        if not vertex[i] or (completion and not ok[i]):
            continue
        if completion:
            if prev_invoke:  # a new barrier, chained after the last one
                nbar += 1
                if nbar > 1:
                    src[m], dst[m], rel[m] = n + nbar - 2, n + nbar - 1, REALTIME
                    m += 1
            src[m], dst[m], rel[m] = i, n + nbar - 1, REALTIME
            m += 1
        elif nbar > 0:
            src[m], dst[m], rel[m] = n + nbar - 1, i, REALTIME
            m += 1
        prev_invoke = not completion
    return m, nbar


def _explain_step(a: Analysis, x, y, r):
    step = {"type": REL_NAMES[r]}
    if r == WW:
        wx, wy = a.writes[x] or (), a.writes[y] or ()
        for k, _, v2 in wy:
            vo = a.orders.get(k)
            if vo is None:
                continue
            i2 = vo.by_value.get(v2)
            if not i2:
                continue
            v1 = vo.by_index[i2 - 1]
            if any(kk == k and vv == v1 for kk, _, vv in wx):
                step.update({"key": k, "value": v1, "value'": v2})
                return step
    elif r == WR:
        wx = a.writes[x] or ()
        ry = a.reads[y] or {}
        for k, _, v in wx:
            pairs = ry.get(k)
            if pairs and any(vv == v for _, vv in pairs):
                step.update({"key": k, "value": v})
                return step
    return step


def cycle_cases(a: Analysis, options) -> dict:
    g = dependency_graph(a, options["ww_deps"])
    found = find_cycles(g, budget_s=options["cycle_budget_s"])
    out = {}
    ops = a.history.ops
    for name, cases in found.items():
        lst = []
        seen = set()
        for c in cases:
            if c["cycle"] is None:
                lst.append({"cycle": None, "scc_size": c["scc_size"],
                            "scc": [ops[i].ref() for i in c["scc"]]})
                continue
            steps = compress(c["cycle"], g.n_ops)
            key = frozenset(v for v, _ in steps)
            if key in seen:
                continue
            seen.add(key)
            lst.append({
                "cycle": [ops[v].ref() for v, _ in steps],
                "steps": [_explain_step(a, v, steps[(j + 1) % len(steps)][0], r)
                          for j, (v, r) in enumerate(steps)]})
        if lst:
            out[name] = lst
    return out, {"vertices": int(sum(graph_vertices(a))), "edges": len(g),
                 "barriers": g.n_nodes - g.n_ops}


# ---------------------------------------------------------------- the check

def allowed_types(a: Analysis, options) -> set:
    """Jepsen's allowed-error-types: int-send-skip and G0* always; poll-skip
    and nonmonotonic-poll when consumers subscribe (rebalances legitimately
    skip). G1c* with ww edges only when there are transactions, whose writes
    Kafka does not isolate (Jepsen allows it for any ww-deps run; without
    transactions a G1c-realtime is a real ordering violation)."""
    if options.get("allowed_anomalies") is not None:
        allowed = set(options["allowed_anomalies"])
    else:
        allowed = {"int-send-skip", "G0", "G0-process", "G0-realtime"}
        if a.has_subscribe:
            allowed |= {"poll-skip", "nonmonotonic-poll"}
        if options.get("ww_deps") and a.has_txn:
            allowed |= {"G1c", "G1c-process", "G1c-realtime"}
    allowed |= set(options.get("allow") or ())
    return allowed


def analyze(history: History, options=None) -> dict:
    """The full Kafka analysis. Returns {"valid", "anomalies" (all found,
    witnesses capped), "anomaly_counts", "anomaly_types", "allowed",
    "realtime_lag", "unseen_series", ...}."""
    opts = dict(DEFAULT_OPTIONS)
    if options:
        opts.update({k: v for k, v in options.items() if k in DEFAULT_OPTIONS})
    with no_gc():
        a = extract(history)
        ms = opts["max_skipped"]
        found = {}
        found["inconsistent-offsets"] = a.inconsistent
        found["duplicate"] = duplicate_cases(a)
        found["G1a"] = g1a_cases(a)
        found["garbage-read"] = garbage_read_cases(a)
        found["precommitted-read"] = precommitted_read_cases(a)
        found["lost-write"] = lost_write_cases(a)
        found["int-poll-skip"], found["int-nonmonotonic-poll"] = int_poll_cases(a, ms)
        found["int-send-skip"], found["int-nonmonotonic-send"] = int_send_cases(a, ms)
        found["poll-skip"], found["nonmonotonic-poll"] = poll_cases(a, ms)
        found["nonmonotonic-send"] = nonmonotonic_send_cases(a)
        unseen, series, lag = unseen_and_lag(a, opts["series_points"])
        if unseen:
            found["unseen"] = [unseen]
        graph_stats = None
        if opts["cycles"]:
            cycles, graph_stats = cycle_cases(a, opts)
            found.update(cycles)
    found = {t: cs for t, cs in found.items() if cs}
    allowed = allowed_types(a, opts)
    types = sorted(found)
    bad = [t for t in types if t not in allowed]
    cap = opts["max_witnesses"]
    result = {
        "valid": not bad,
        "anomaly_types": types,
        "bad_anomaly_types": bad,
        "allowed": [t for t in types if t in allowed],
        "anomalies": {t: found[t][:cap] for t in types},
        "anomaly_counts": {t: len(found[t]) for t in types},
        "keys": len(a.orders),
        "realtime_lag": lag,
        "unseen_series": [{"time": t, "unseen": u} for t, u in series],
    }
    if graph_stats is not None:
        result["graph"] = graph_stats
    return result


class KafkaChecker:
    name = "kafka"

    def check(self, history: History, options=None) -> dict:
        return analyze(history, options)
