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
``extract`` builds a ``_ReadTable`` and the stages that walk every read
(first readers, version orders, int-poll, poll-skip, unseen/lag, wr edges)
run on arrays (``*_table`` variants); the list-based code below them is the
reference and still runs for histories built from decoded events. Both give
identical results (tests/test_checkers_fastpath.py).
"""
from __future__ import annotations

from .cycles import (PROCESS, REALTIME, WR, WW, REL_NAMES, Graph, compress,
                     find_cycles)
from .history import History, LazyPoll, no_gc
from .util import distribution, downsample, ns_to_s, sort_key

from operator import itemgetter

import numpy as np

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


def extract(history: History) -> Analysis:
    a = Analysis(history)
    ops = history.ops
    n = len(ops)
    tab = None
    if history.polls is not None:
        tab = _ReadTable.build(history)
        if tab is None:  # not representable as arrays: decode lazy values
            for op in ops:
                op.value
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
        if op._value.__class__ is LazyPoll:  # reads are in history.polls
            if op.extra and op.extra.get("rebalance_log"):
                ks = set()
                for ev in op.extra["rebalance_log"]:
                    if isinstance(ev, dict):
                        ks.update(ev.get("keys") or ())
                rebalanced[op.id] = ks
            continue
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
            ks = set()
            for ev in op.extra["rebalance_log"]:
                if isinstance(ev, dict):
                    ks.update(ev.get("keys") or ())
            rebalanced[op.id] = ks
    a.tab = None
    if tab is not None:
        a.tab = tab
        reads = tab.reads_view()
        first_reader, ok_reads = tab.first_reader_ok_reads(ops)
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


# ------------------------------------------------------------- read tables

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
            lo, hi = t.lo[s], t.lo[s + 1]
            out[t.keys[t.seg_key_l[s]]] = [[o, v] for o, v in
                                           zip(t.off[lo:hi].tolist(), t.val[lo:hi].tolist())]
        return out

    def __iter__(self):
        for i in range(self.n):
            yield self[i]


class _ReadTable:
    """Every op's reads as flat arrays (history.PollTable's layout, plus the
    reads of ops whose value was decoded), with the per-(key, value) and
    per-(key, offset, value) groups the anomaly functions need."""

    @classmethod
    def build(cls, history):
        P = history.polls
        ops = history.ops
        n = len(ops)
        keys = list(P.keys)
        key_id = {k: i for i, k in enumerate(keys)}
        x_op, x_key, x_cnt, x_off, x_val = [], [], [], [], []
        for op in ops:
            # (a send's value holds no poll: the reader checked that)
            if (op.f != "poll" and op.f != "txn") or op._value.__class__ is LazyPoll:
                continue
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
        if x_op:
            cnt = np.concatenate((np.diff(lo), np.array(x_cnt, dtype=np.int64)))
            starts = np.concatenate((lo[:-1], len(off) + np.concatenate(
                ([0], np.cumsum(x_cnt[:-1], dtype=np.int64))).astype(np.int64)))
            seg_op = np.concatenate((seg_op, np.array(x_op, dtype=np.int64)))
            seg_key = np.concatenate((seg_key, np.array(x_key, dtype=np.int32)))
            o = np.argsort(seg_op, kind="stable")
            seg_op, seg_key, cnt, starts = seg_op[o], seg_key[o], cnt[o], starts[o]
            lo = np.zeros(len(cnt) + 1, dtype=np.int64)
            np.cumsum(cnt, out=lo[1:])
            allo = np.concatenate((off, np.array(x_off, dtype=np.int64)))
            allv = np.concatenate((val, np.array(x_val, dtype=np.int64)))
            idx = np.repeat(starts - lo[:-1], cnt) + np.arange(int(lo[-1]), dtype=np.int64)
            off, val = allo[idx], allv[idx]
        t = cls()
        t.keys = keys
        t.n = n
        t.seg_op, t.seg_key, t.lo, t.off, t.val = seg_op, seg_key, lo, off, val
        nseg = len(seg_op)
        nrows = len(off)
        t.cnt = np.diff(lo)
        # int32 row arrays: tens of millions of rows
        row_seg = np.repeat(np.arange(nseg, dtype=np.int32), t.cnt)
        if nrows:
            vmin, vmax = int(val.min()), int(val.max())
        else:
            vmin = vmax = 0
        vspan = vmax - vmin + 1
        nkeys = len(keys)
        if nkeys * vspan > 1 << 24:  # too sparse for dense (key, value) arrays
            return None
        # (key, value) groups through dense arrays (numpy's unique sorts or
        # hashes tens of millions of rows: seconds)
        kvcode = (val - vmin).astype(np.int32)
        kvcode += seg_key[row_seg] * np.int32(vspan)
        present = np.zeros(nkeys * vspan, dtype=bool)
        present[kvcode] = True
        ukv = np.flatnonzero(present)
        rank = np.cumsum(present, dtype=np.int32) - 1
        row_kv = rank[kvcode]
        del rank, present, kvcode
        nkv = len(ukv)
        # rows are in op order, so a group's first row is its first reader's
        first_row = np.full(nkv, nrows, dtype=np.int64)
        np.minimum.at(first_row, row_kv, np.arange(nrows, dtype=np.int32))
        omin = off[first_row]
        multi = np.flatnonzero(np.bincount(row_kv[off != omin[row_kv]], minlength=nkv))
        t_kv, t_off = np.arange(nkv, dtype=np.int64), omin
        if len(multi):  # values read at several offsets: all their offsets
            mm = np.zeros(nkv, dtype=bool)
            mm[multi] = True
            rows = np.flatnonzero(mm[row_kv])
            ck, co = row_kv[rows].astype(np.int64), off[rows]
            o = np.lexsort((co, ck))
            ck, co = ck[o], co[o]
            new = np.ones(len(ck), dtype=bool)
            new[1:] = (ck[1:] != ck[:-1]) | (co[1:] != co[:-1])
            t_kv = np.concatenate((t_kv[~mm], ck[new]))
            t_off = np.concatenate((t_off[~mm], co[new]))
            o = np.lexsort((t_off, t_kv))
            t_kv, t_off = t_kv[o], t_off[o]
        t.t_key = ukv[t_kv] // vspan
        t.t_val = ukv[t_kv] % vspan + vmin
        t.t_off = t_off
        t.kv_key = ukv // vspan
        t.kv_val = ukv % vspan + vmin
        row_op = seg_op.astype(np.int32)[row_seg]
        first = seg_op[row_seg[first_row]]
        okop = t.okop = np.fromiter((op.type == "ok" for op in ops), dtype=bool, count=n)
        kv_ok = np.zeros(nkv, dtype=bool)
        kv_ok[row_kv[okop[row_op]]] = True
        t.kv_first, t.kv_ok = first, kv_ok
        t.row_seg, t.row_kv = row_seg, row_kv
        t.op_lo = np.searchsorted(seg_op, np.arange(n + 1)).tolist()
        t.seg_key_l = seg_key.tolist()
        return t

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

    def first_reader_ok_reads(self, ops):
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
        """Key names in order of first appearance in the reads."""
        if not len(self.seg_key):
            return []
        m = len(self.seg_key)
        if len(self.keys) <= 64:  # a pass per key beats ufunc.at's scatter
            first = np.array([int(np.argmax(self.seg_key == k)) if (self.seg_key == k).any()
                              else m for k in range(len(self.keys))], dtype=np.int64)
        else:
            first = np.full(len(self.keys), m, dtype=np.int64)
            np.minimum.at(first, self.seg_key, np.arange(m, dtype=np.int64))
        u = np.flatnonzero(first < m)
        return [self.keys[k] for k in u[np.argsort(first[u])].tolist()]

    def kv_index(self, orders):
        """by_value index (-1: none) of every (key, value) group."""
        out = np.full(len(self.kv_key), -1, dtype=np.int64)
        keys = self.keys
        for kid, lo, hi in self._key_groups(self.kv_key):
            vo = orders.get(keys[kid])
            if vo is None:
                continue
            g = vo.by_value.get
            out[lo:hi] = [g(v, -1) for v in self.kv_val[lo:hi].tolist()]
        return out

    def kv_writer(self, writer_of):
        """writer_of's op (-1: none) of every (key, value) group."""
        out = np.full(len(self.kv_key), -1, dtype=np.int64)
        keys = self.keys
        for kid, lo, hi in self._key_groups(self.kv_key):
            wk = writer_of.get(keys[kid])
            if not wk:
                continue
            g = wk.get
            out[lo:hi] = [g(v, -1) for v in self.kv_val[lo:hi].tolist()]
        return out

    def pairs(self, s):
        lo, hi = self.lo[s], self.lo[s + 1]
        return [[o, v] for o, v in zip(self.off[lo:hi].tolist(), self.val[lo:hi].tolist())]


# ----------------------------------------------------------- version orders

class VersionOrder:
    """One key's log. ``by_index[i]`` is the value at dense index i (the
    smallest, if an offset holds several); ``by_value[v]`` its index (the
    last, if v is at several); ``offsets[i]`` the Kafka offset of index i;
    ``values[i]`` the sorted values seen at that offset."""

    __slots__ = ("offsets", "values", "by_index", "by_value", "first_index",
                 "last_index")


def _kid(tab, k):
    d = getattr(tab, "_kid", None)
    if d is None:
        d = tab._kid = {name: i for i, name in enumerate(tab.keys)}
    return d[k]


def version_orders(a: Analysis):
    ops = a.history.ops
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
    tab = a.tab
    if tab is not None:
        groups = {kid: (lo, hi) for kid, lo, hi in tab._key_groups(tab.t_key)}
        for k in tab.key_order():
            lo, hi = groups.get(_kid(tab, k), (0, 0))
            read_pairs[k] = zip(tab.t_off[lo:hi].tolist(), tab.t_val[lo:hi].tolist())
    else:
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


# ---------------------------------------------------------------- anomalies

def _ref(a, i):
    return a.history.ops[i].ref()


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


def garbage_read_cases(a: Analysis):
    """An ok read of a value nobody sent (Elle's garbage read)."""
    out = []
    ops = a.history.ops
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
    for i, w in enumerate(a.writes):
        if w is None:
            continue
        r = a.reads[i]
        if r is None:
            continue
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
    ops = a.history.ops
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


def int_poll_cases(a: Analysis, max_skipped=32):
    """Skips and backward steps between consecutive reads of a key inside
    one op (keys in the op's rebalance log are exempt)."""
    skips, nonmono = [], []
    orders = a.orders
    tab = a.tab
    if tab is not None:
        # only segments with a consecutive pair of known indices not 1 apart
        # can hold a case: find them vectorised, then walk just those
        idx = tab.kv_index(orders)[tab.row_kv]
        rs = tab.row_seg
        d = idx[1:] - idx[:-1]
        bad = (rs[1:] == rs[:-1]) & (idx[1:] >= 0) & (idx[:-1] >= 0) & (d != 1)
        flagged = rs[1:][bad]  # sorted: rows are in segment order
        if len(flagged):
            flagged = flagged[np.concatenate(([True], flagged[1:] != flagged[:-1]))]
        for sg in flagged.tolist():
            i = int(tab.seg_op[sg])
            k = tab.keys[tab.seg_key_l[sg]]
            if k in a.rebalanced.get(i, ()):
                continue
            vo = orders.get(k)
            if vo is None:
                continue
            _int_poll_steps(a, i, k, (v for _, v in tab.pairs(sg)), vo, max_skipped, skips, nonmono)
        return _strip(skips), _strip(nonmono)
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
    ops = a.history.ops
    for i, w in enumerate(a.writes):
        if w is None or len(w) < 2:
            continue
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


def _poll_cases_table(a: Analysis, max_skipped=32):
    """poll_cases over a _ReadTable: for every read segment, the previous ok
    read of its key by its process, unless an assign/subscribe/crash in
    between dropped the key, found with sorts; witnesses as poll_cases."""
    skips, nonmono = [], []
    ops = a.history.ops
    n = len(ops)
    tab = a.tab
    keys = tab.keys
    nk = max(1, len(keys))
    pid = {}
    proc = np.fromiter((pid.setdefault(op.process, len(pid)) for op in ops),
                       dtype=np.int64, count=n)
    okop = tab.okop
    # resets: (process, key, op) for each key an op drops from `last`
    kid = {k: j for j, k in enumerate(keys)}
    rp, rk, ro = [], [], []
    allk = list(range(len(keys)))
    for op in ops:
        f = op.f
        if f in ("assign", "subscribe"):
            if op.type == "fail" or not isinstance(op.value, list):
                continue
            if op.extra and op.extra.get("seek_to_beginning"):
                drop = allk
            else:
                keep = set(op.value)
                drop = [j for j, k in enumerate(keys) if k not in keep]
        elif f == "crash":
            drop = allk
        else:
            continue
        p = pid[op.process]
        rp.extend([p] * len(drop)); rk.extend(drop); ro.extend([op.id] * len(drop))
    rcode = np.sort((np.array(rp, dtype=np.int64) * nk + np.array(rk, dtype=np.int64)) * n +
                    np.array(ro, dtype=np.int64))
    # nonempty segments by (process, key, op)
    sg = np.flatnonzero(tab.cnt > 0)
    if not len(sg):
        return skips, nonmono
    sop = tab.seg_op[sg]
    code = (proc[sop] * nk + tab.seg_key[sg].astype(np.int64)) * n + sop
    o = np.argsort(code, kind="stable")
    code, sg, sop = code[o], sg[o], sop[o]
    grp = code // n
    m = len(sg)
    idx = np.arange(m, dtype=np.int64)
    lastok = np.maximum.accumulate(np.where(okop[sop], idx, -1))
    prev = np.full(m, -1, dtype=np.int64)
    prev[1:] = lastok[:-1]
    has = prev >= 0
    has[has] = grp[prev[has]] == grp[has]
    j = np.flatnonzero(has)
    pj = prev[j]
    # a reset of the key strictly between the two ops
    between = np.searchsorted(rcode, code[j]) - np.searchsorted(rcode, code[pj], "right")
    j, pj = j[between == 0], pj[between == 0]
    kvi = tab.kv_index(a.orders)
    i2 = kvi[tab.row_kv[tab.lo[sg[j]]]]
    i1 = kvi[tab.row_kv[tab.lo[sg[pj] + 1] - 1]]
    bad = (i1 >= 0) & (i2 >= 0) & (i2 - i1 != 1)
    j, pj = j[bad], pj[bad]
    # in poll_cases' order: processes by first op, then segment order
    first_op = {}
    for op in ops:
        first_op.setdefault(op.process, op.id)
    prank = np.zeros(len(pid), dtype=np.int64)
    for p, r in pid.items():
        prank[r] = first_op[p]
    sj = sg[j]
    o = np.lexsort((sj, prank[proc[tab.seg_op[sj]]]))
    orders = a.orders
    for x, y in zip(sj[o].tolist(), sg[pj[o]].tolist()):
        k = keys[tab.seg_key_l[x]]
        vo = orders.get(k)
        v1 = int(tab.val[tab.lo[y + 1] - 1])
        v2 = int(tab.val[tab.lo[x]])
        c = _pair_case("poll", k, v1, v2, vo, max_skipped,
                       {"ops": [_ref(a, int(tab.seg_op[y])), ops[int(tab.seg_op[x])].ref()]})
        (skips if c["type"] == "skip" else nonmono).append(c)
    return _strip(skips), _strip(nonmono)


def nonmonotonic_send_cases(a: Analysis):
    """Per process: an op's first send to k lands at or before the previous
    (ok or info) op's last send to k."""
    out = []
    ops = a.history.ops
    orders = a.orders
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
        return _unseen_and_lag_table(a, series_points)
    ops = a.history.ops
    writes, reads = a.writes, a.reads
    tab = None
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


def _unseen_and_lag_table(a: Analysis, series_points):
    """unseen_and_lag over a _ReadTable: the same walk, with each (key,
    value)'s first ok read found with arrays instead of sets per poll."""
    h = a.history
    ops = h.ops
    n = len(ops)
    tab = a.tab
    writes = a.writes
    # ok send/poll/txn completions in realtime order: position p
    okf = tab.okop & np.fromiter((op.f in TXN_FS for op in ops), dtype=bool, count=n)
    ev = np.frombuffer(h.events, dtype=np.int64) if len(h.events) \
        else np.zeros(0, dtype=np.int64)
    comp = ev[(ev & 1) == 1] >> 1
    seq = comp[okf[comp]]
    pos = np.full(n, -1, dtype=np.int64)
    pos[seq] = np.arange(len(seq), dtype=np.int64)
    seq_l = seq.tolist()
    times = [ops[i].time for i in seq_l]
    # first ok read position of each (key, value) group
    big = len(seq) + 1
    row_op = tab.seg_op[tab.row_seg]
    rp = pos[row_op]
    m = rp >= 0
    frp = np.full(len(tab.kv_key), big, dtype=np.int64)
    np.minimum.at(frp, tab.row_kv[m], rp[m])
    del row_op, rp, m
    first_pos = {}
    keys = tab.keys
    for kid, lo, hi in tab._key_groups(tab.kv_key):
        f = frp[lo:hi]
        sel = f < big
        if sel.any():
            first_pos[keys[kid]] = dict(zip(tab.kv_val[lo:hi][sel].tolist(), f[sel].tolist()))
    # walk the ok writes: a write before the value's first read waits in
    # unseen (a later write of it restarts its clock), one after it lags 0
    unseen = {}   # k -> {v: ack time}
    wait = {}     # k -> {v: position it became unseen}
    lags = {}
    changed_at = bytearray(len(seq) + 1)
    for p, i in enumerate(seq_l):
        w = writes[i]
        if w is None:
            continue
        t = times[p]
        for k, _, v in w:
            fp = first_pos.get(k)
            fp = fp.get(v, big) if fp is not None else big
            if fp <= p:
                lags.setdefault(k, []).append(0)
                continue
            uk = unseen.get(k)
            if uk is None:
                uk = unseen[k] = {}
                wait[k] = {}
            if v not in uk:
                wait[k][v] = p
            uk[v] = t
            changed_at[p] = 1
    # the first read of a waiting value ends its wait
    ends = {}     # k -> [(position, v)]
    for k, uk in unseen.items():
        fk = first_pos.get(k, {})
        lk = None
        gone = []
        for v, t0 in uk.items():
            fp = fk.get(v, big)
            if fp < big:
                if lk is None:
                    lk = lags.setdefault(k, [])
                lk.append(max(0, times[fp] - t0))
                changed_at[fp] = 1
                gone.append((fp, v))
        ends[k] = gone
        for _, v in gone:
            del uk[v]
    # snapshots, as the walk takes them
    step = max(1, h.end_time // max(1, series_points))
    snaps = []
    next_snapshot = 0
    changed = False
    t = 0
    for p in range(len(seq_l)):
        t = times[p]
        if changed_at[p]:
            changed = True
        if changed and t >= next_snapshot:
            snaps.append(p)
            next_snapshot = t + step
            changed = False
    if changed:
        snaps.append(len(seq_l) - 1)
    series = []
    if snaps:
        sp = np.array(snaps, dtype=np.int64)
        counts = {}
        for k in unseen:  # keys in the order they first held an unseen value
            starts = np.sort(np.fromiter(wait[k].values(), dtype=np.int64))
            stops = np.sort(np.array([fp for fp, _ in ends[k]], dtype=np.int64))
            counts[k] = (np.searchsorted(starts, sp, "right") -
                         np.searchsorted(stops, sp, "right")).tolist()
        for j, p in enumerate(snaps):
            series.append((times[p], {k: c[j] for k, c in counts.items() if c[j]}))
    return _unseen_result(unseen, series, lags, series_points)


# -------------------------------------------------------------- dependencies

def graph_vertices(a: Analysis):
    """Ops taking part in the dependency graph: ok send/poll/txn ops, and
    info sends that must have committed."""
    ops = a.history.ops
    vertex = bytearray(len(ops))
    for op in ops:
        if op.f in TXN_FS:
            if op.type == "ok" or (op.type == "info" and a.committed[op.id]):
                vertex[op.id] = 1
    return vertex


def dependency_graph(a: Analysis, ww_deps=True) -> Graph:
    ops = a.history.ops
    n = len(ops)
    vertex = graph_vertices(a)
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
    tab = a.tab
    if tab is not None:
        _wr_edges_table(a, tab, vertex, ww_deps, src, dst, rel)
    for i, r in enumerate(a.reads if tab is None else ()):
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
    # process and realtime edges, vectorised (same edges, same order as the
    # event-by-event walk described in _process_realtime_edges)
    ps, pd, rs, rd, n_nodes = _process_realtime_edges(a, vertex)
    src = np.concatenate((np.asarray(src, dtype=np.int64), ps, rs))
    dst = np.concatenate((np.asarray(dst, dtype=np.int64), pd, rd))
    rel = np.concatenate((np.asarray(rel, dtype=np.int8),
                          np.full(len(ps), PROCESS, dtype=np.int8),
                          np.full(len(rs), REALTIME, dtype=np.int8)))
    return Graph(n, n_nodes, src, dst, rel)


def _wr_edges_table(a, tab, vertex, ww_deps, src, dst, rel):
    """dependency_graph's wr edges over a _ReadTable (same edges, same order)."""
    cnt = tab.cnt
    ne = cnt > 0
    nseg = len(cnt)
    starts = tab.lo[:-1]
    if ww_deps:
        # the first pair with the highest offset of each segment
        cand_row = np.zeros(nseg, dtype=np.int64)
        if ne.any():
            nz = np.flatnonzero(ne)
            mx = np.maximum.reduceat(tab.off, starts[nz])
            segmax = np.zeros(nseg, dtype=np.int64)
            segmax[nz] = mx
            hits = np.flatnonzero(tab.off == segmax[tab.row_seg])
            cand_row[nz] = hits[np.searchsorted(hits, starts[nz])]
    vert = np.frombuffer(bytes(vertex), dtype=np.uint8).astype(bool)
    keep = ne & vert[tab.seg_op] if nseg else ne
    keys, seg_key_l = tab.keys, tab.seg_key_l
    writer_of = a.writer_of
    if ww_deps:
        # writer of each (key, value) group, then one lookup per segment
        wkv = tab.kv_writer(writer_of)
        sg = np.flatnonzero(keep)
        if len(sg):
            cand_kv = tab.row_kv[cand_row[sg]]
            w = wkv[cand_kv]
            i = tab.seg_op[sg]
            ok = (w >= 0) & (w != i)
            ok[ok] = vert[w[ok]]
            src.extend(w[ok].tolist())
            dst.extend(i[ok].tolist())
            rel.extend([WR] * int(ok.sum()))
        return
    seg_op = tab.seg_op.tolist()
    for sg in np.flatnonzero(keep).tolist():
        i = seg_op[sg]
        wk = writer_of.get(keys[seg_key_l[sg]])
        if not wk:
            continue
        for v in set(tab.val[tab.lo[sg]:tab.lo[sg + 1]].tolist()):
            w = wk.get(v)
            if w is not None and w != i and vertex[w]:
                src.append(w); dst.append(i); rel.append(WR)


def _process_realtime_edges(a: Analysis, vertex):
    """process: consecutive vertex ops of each process, in op order.
    realtime: A -> B iff A completed (ok) before B was invoked, threaded
    through barrier vertices so edges stay linear in the history: each ok
    completion links into the current barrier; an invoke links from it and
    seals it, so later completions open a new barrier chained after it.
    Returns (process src, dst, realtime src, dst, number of nodes)."""
    ops = a.history.ops
    n = len(ops)
    vert = np.frombuffer(bytes(vertex), dtype=np.uint8).astype(bool)
    vids = np.flatnonzero(vert)
    # process edges, emitted in the order of their destination op
    pid = {}
    procs = np.fromiter((pid.setdefault(ops[i].process, len(pid)) for i in vids.tolist()),
                        dtype=np.int64, count=len(vids))
    order = np.argsort(procs, kind="stable")
    sp, sv = procs[order], vids[order]
    same = sp[1:] == sp[:-1]
    psrc, pdst = sv[:-1][same], sv[1:][same]
    o = np.argsort(pdst, kind="stable")
    psrc, pdst = psrc[o], pdst[o]
    # realtime edges through barriers
    ok = np.fromiter((op.type == "ok" for op in ops), dtype=bool, count=n)
    ev = np.frombuffer(a.history.events, dtype=np.int64) if len(a.history.events) \
        else np.zeros(0, dtype=np.int64)
    oi = ev >> 1
    comp = (ev & 1).astype(bool)
    keep = vert[oi] & (~comp | ok[oi])
    oi, comp = oi[keep], comp[keep]
    m = len(oi)
    if m == 0:
        z = np.zeros(0, dtype=np.int64)
        return psrc, pdst, z, z, n
    prev_inv = np.ones(m, dtype=bool)      # previous relevant event is an invoke (or none)
    prev_inv[1:] = ~comp[:-1]
    newb = comp & prev_inv
    nbar = np.cumsum(newb)                  # barriers opened so far (inclusive)
    cur = n + nbar - 1                      # current barrier id (if nbar > 0)
    # first edge of each event: barrier chain (new barrier) or barrier -> invoke
    m1 = (newb & (nbar > 1)) | (~comp & (nbar > 0))
    s1 = np.where(comp, cur - 1, cur)
    d1 = np.where(comp, cur, oi)
    # second edge: completion -> current barrier
    m2 = comp
    s2, d2 = oi, cur
    mask = np.stack((m1, m2), 1).ravel()
    rsrc = np.stack((s1, s2), 1).ravel()[mask]
    rdst = np.stack((d1, d2), 1).ravel()[mask]
    return psrc, pdst, rsrc, rdst, n + int(nbar[-1])


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
