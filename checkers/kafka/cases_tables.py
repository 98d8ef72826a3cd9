"""The anomaly cases that walk every read, send or op, over a ReadTable:
the walks of ``cases`` compiled (the same order, so the same results),
their witnesses made only when read (``Cases``: a broken system can give
millions of cases of one type)."""
from __future__ import annotations

from itertools import chain, repeat

import numpy as np
from numba import njit

from .cases import Cases, pair_case, ref, unseen_and_lag, unseen_result
from .extract import Analysis
from .tables import ASSIGN, CRASH, FAIL, SUBSCRIBE, TXN, get_time, get_value


def ops_writing(a: Analysis, at_least=1, reading=False):
    """cases.ops_writing over the table."""
    tab = a.tab
    m = np.diff(tab.op_send) >= max(1, at_least)
    if reading:
        m &= np.diff(tab.op_seg) > 0
    for i in np.flatnonzero(m).tolist():
        yield i, a.writes[i]


def g1a_reads(a, bad):
    """cases.g1a_reads over the table: every row of an ok read of a (key, value)
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
        return {"key": k, "value": v, "writer": ref(a, a.failed[k][v]), "reader": ref(a, i)}
    return Cases(found, case)


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
    """cases.int_poll_cases over the table: the cases found by a compiled pass
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
        c = pair_case("int-poll", k, tab.value_at(r - 1), tab.value_at(r), orders[k],
                       max_skipped, {"op": ref(a, int(tab.seg_op[sg]))})
        del c["type"]
        return c
    return Cases(rows[delta > 1], case), Cases(rows[delta < 1], case)


def _resets(a: Analysis):
    """The assign/subscribe/crash ops of a ReadTable's history, for the
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
    kind[tab.fcode == CRASH] = -3
    sets = (tab.fcode == ASSIGN) | (tab.fcode == SUBSCRIBE)
    kind[sets] = -2
    sets = np.flatnonzero(sets & (tab.typ != FAIL))
    values = list(map(get_value, map(ops.__getitem__, sets.tolist())))
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


def poll_cases(a: Analysis, max_skipped=32):
    """cases.poll_cases over the table: the same walk compiled (_poll_pairs),
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
        c = pair_case("poll", k, tab.value_at(tab.lo[y + 1] - 1), tab.value_at(tab.lo[x]),
                       orders.get(k), max_skipped,
                       {"ops": [ref(a, int(tab.seg_op[y])), ref(a, int(tab.seg_op[x]))]})
        del c["type"]
        return c
    return Cases(pairs[delta > 1], case), Cases(pairs[delta < 1], case)


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
        if typ[i] == FAIL:
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
    """cases.nonmonotonic_send_cases over the table (_nonmonotonic_sends)."""
    out = []
    tab = a.tab
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
                    "ops": [ref(a, int(s_op[y])), ref(a, int(s_op[j]))]})
    return out


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


def unseen_and_lag_table(a: Analysis, series_points=1000):
    """cases.unseen_and_lag over the table: the same walk, compiled (times
    that are not int64: the list walk)."""
    h = a.history
    ops = h.ops
    tab = a.tab
    ev = np.frombuffer(h.events, dtype=np.int64) if len(h.events) \
        else np.zeros(0, dtype=np.int64)
    comp = ev[(ev & 1) == 1] >> 1
    seq = comp[tab.okop[comp] & (tab.fcode[comp] <= TXN)]
    if h.op_codes is not None:  # (the reader's completion times)
        times = h.op_codes[5][seq]
    else:
        times = np.array(list(map(get_time, map(ops.__getitem__, seq.tolist()))))
    step = max(1, h.end_time // max(1, series_points))
    if (len(times) and times.dtype != np.int64) or type(step) is not int:
        return unseen_and_lag(a, series_points)  # float (or huge) times
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
    return unseen_result(unseen, series, lags, series_points)
