"""Version orders: per key, the log as the history shows it, offset ->
values, from the sends that must have committed (ok, or info and seen by
an ok read) and from every read, compacted into a gap-free *index*
(transaction markers take offsets). Values found at one offset are
``inconsistent-offsets``. Over lists (the reference) and over a
ReadTable."""
from __future__ import annotations

import numpy as np

from ..util import sort_key
from .extract import Analysis


class VersionOrder:
    """One key's log. ``by_index[i]`` is the value at dense index i (the
    smallest, if an offset holds several); ``by_value[v]`` its index (the
    last, if v is at several); ``offsets[i]`` the Kafka offset of index i;
    ``values[i]`` the sorted values seen at that offset."""

    __slots__ = ("offsets", "values", "by_index", "by_value", "first_index",
                 "last_index")


def version_orders(a: Analysis):
    """a.orders ({key: VersionOrder}) and a.inconsistent, the reference way."""
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


def version_orders_table(a: Analysis):
    """version_orders over a ReadTable: the log entries (committed sends
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
