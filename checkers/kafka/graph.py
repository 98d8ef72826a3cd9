"""The dependency graph (Elle's, over Kafka ops): ww edges between
consecutive writers in each key's version order (Jepsen's --ww-deps), wr
edges from writer to reader, process and realtime edges, between the ops
that took effect; then ``cycles.find_cycles`` for G0 / G1c and their
-process / -realtime variants, each cycle explained step by step.

The vertices and the ww / wr edges come from the backend (lists, the
reference, or a ReadTable's kernels); process and realtime edges are
kernels over per-op columns for both."""
from __future__ import annotations

from operator import itemgetter

import numpy as np
from numba import njit

from ..cycles import PROCESS, REALTIME, REL_NAMES, WR, WW, Graph, compress, find_cycles
from .extract import TXN_FS, Analysis
from .tables import INFO, OK, TXN, op_columns

_first = itemgetter(0)


def vertices(a: Analysis):
    """Ops taking part in the dependency graph: ok send/poll/txn ops, and
    info sends that must have committed."""
    ops = a.history.ops
    vertex = bytearray(len(ops))
    for op in ops:
        if op.f in TXN_FS:
            if op.type == "ok" or (op.type == "info" and a.committed[op.id]):
                vertex[op.id] = 1
    return vertex


def vertices_table(a: Analysis):
    """Ops taking part in the dependency graph (see vertices), from the
    table's columns."""
    tab = a.tab
    v = (tab.fcode <= TXN) & ((tab.typ == OK) | ((tab.typ == INFO) & tab.committed))
    return bytearray(v.view(np.uint8).tobytes())


def columns(a: Analysis):
    """(ok, process number) of every op, for the process and realtime edges."""
    typ, _, _, _, proc = op_columns(a.history.ops)
    return typ == OK, proc


def columns_table(a: Analysis):
    return a.tab.okop, a.tab.proc


def dependency_graph(a: Analysis, ww_deps=True) -> Graph:
    """ww, wr, process and realtime edges (in this order) between the
    graph's vertices, plus realtime barriers (see _realtime_edges)."""
    h = a.history
    n = len(h.ops)
    b = a.backend
    vertex = b.vertices(a)
    vert = np.frombuffer(vertex, dtype=np.bool_)
    ok, proc = b.columns(a)
    ev = np.frombuffer(h.events, dtype=np.int64) if len(h.events) \
        else np.zeros(0, dtype=np.int64)
    vids = np.flatnonzero(vert)
    # the edges go straight into arrays sized for the most there can be
    # (pages never written cost nothing)
    cap, fill = b.ww_wr_edges(a, vertex, ww_deps)
    cap += len(vids) + 2 * len(ev)
    src = np.empty(cap, dtype=np.int64)
    dst = np.empty(cap, dtype=np.int64)
    rel = np.empty(cap, dtype=np.int8)
    m = fill(src, dst, rel)
    m = _process_edges(vids, proc, int(proc.max()) + 1 if n else 0, src, dst, rel, m)
    m, nbar = _realtime_edges(ev, vert, ok, n, src, dst, rel, m)
    return Graph(n, n + nbar, src[:m], dst[:m], rel[:m])


def _from_lists(edges):
    """(cap, fill) of edges given as lists (src, dst, rel)."""
    def fill(src, dst, rel):
        m = len(edges[0])
        src[:m], dst[:m], rel[:m] = edges
        return m
    return len(edges[0]), fill


def ww_wr_edges(a: Analysis, vertex, ww_deps):
    """(most edges, fill(src, dst, rel) -> edges written) of the ww and wr
    edges, the reference way (_ww_wr_edges)."""
    return _from_lists(_ww_wr_edges(a, vertex, ww_deps))


def ww_wr_edges_table(a: Analysis, vertex, ww_deps):
    """ww_wr_edges over the table: with ww edges, kernels (_ww_edges,
    _wr_edges) writing straight into the arrays; without, every value read
    needs its wr edge (_wr_edges_table)."""
    tab = a.tab
    if not ww_deps:
        return _from_lists(_wr_edges_table(a, tab, vertex))
    vert = np.frombuffer(vertex, dtype=np.bool_)

    def fill(src, dst, rel):
        m = _ww_edges(np.array(tab.vo_keys, dtype=np.int64), tab.bi_lo, tab.bi_u,
                      tab.u_writer, vert, src, dst, rel, 0)
        return _wr_edges(tab.seg_op, tab.lo, tab.off, tab.tail_off, tab.row_kv, tab.kv2u,
                         tab.u_writer, vert, src, dst, rel, m)
    return len(tab.bi_u) + len(tab.seg_op), fill


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


def _wr_edges_table(a, tab, vertex):
    """_ww_wr_edges over a ReadTable without ww edges: every value read
    needs its wr edge, in the list version's order (a set's)."""
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
    """({type: witnesses} of the cycles, graph statistics)."""
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
    return out, {"vertices": int(sum(a.backend.vertices(a))), "edges": len(g),
                 "barriers": g.n_nodes - g.n_ops}
