"""Dependency-cycle search, as Elle does it: per anomaly type, project the
graph onto the relations that type may use, find strongly connected
components, then extract a short cycle that has the required relations from
each non-trivial component.

The graph is given as parallel edge lists (``src``, ``dst``, ``rel``), with a
bit per relation. Realtime order is not n^2 edges: the caller threads it
through "barrier" vertices (ids >= ``n_ops``), one per batch of completions
(see ``kafka.realtime_edges``); a path op -> barrier ... barrier -> op is one
realtime step, compressed back to a single step in the witness.

The SCC pass uses scipy's sparse-graph routine (C speed, fine for millions of
edges); the small per-component searches are plain BFS in Python over
(vertex, relations-seen) states, so that the cycle found is the shortest
through its first edge that has every required relation.
"""
from __future__ import annotations

import time
from collections import deque

import numpy as np
from scipy.sparse import csr_matrix
from scipy.sparse.csgraph import connected_components

WW, WR, PROCESS, REALTIME = 1, 2, 4, 8
REL_NAMES = {WW: "ww", WR: "wr", PROCESS: "process", REALTIME: "realtime"}

# name, relations the cycle may use, relations it must contain
CYCLE_SPECS = (
    ("G0", WW, WW),
    ("G1c", WW | WR, WR),
    ("G0-process", WW | PROCESS, PROCESS),
    ("G1c-process", WW | WR | PROCESS, WR | PROCESS),
    ("G0-realtime", WW | PROCESS | REALTIME, REALTIME),
    ("G1c-realtime", WW | WR | PROCESS | REALTIME, WR | REALTIME),
)


class Graph:
    """Edges between vertices 0..n-1 as numpy arrays; ids >= n_ops are barriers."""

    def __init__(self, n_ops: int, n_nodes: int, src, dst, rel):
        self.n_ops = n_ops
        self.n_nodes = n_nodes
        self.src = np.asarray(src, dtype=np.int64)
        self.dst = np.asarray(dst, dtype=np.int64)
        self.rel = np.asarray(rel, dtype=np.int8)

    def __len__(self):
        return len(self.src)


def sccs(graph: Graph, rels: int):
    """Non-trivial strongly connected components of the projection onto rels.

    Returns (labels array, list of component labels with > 1 vertex, edge mask)."""
    mask = (graph.rel & rels) != 0
    # An edge with several relations, some outside rels, must go: projecting
    # is about which edges exist, and ours carry exactly one bit each.
    src, dst = graph.src[mask], graph.dst[mask]
    if len(src) == 0:
        return None, [], mask
    m = csr_matrix((np.ones(len(src), dtype=np.int8), (src, dst)),
                   shape=(graph.n_nodes, graph.n_nodes))
    _, labels = connected_components(m, directed=True, connection="strong")
    sizes = np.bincount(labels)
    big = np.nonzero(sizes > 1)[0]
    # smallest components first: their cycles are the easiest to read
    big = sorted(big.tolist(), key=lambda c: sizes[c])
    return labels, big, mask


def _component_adjacency(graph, labels, comps, mask):
    """{component: {vertex: [(dst, rel), ...]}} for edges inside components."""
    wanted = np.zeros(labels.max() + 1, dtype=bool)
    wanted[comps] = True
    src, dst, rel = graph.src[mask], graph.dst[mask], graph.rel[mask]
    ls = labels[src]
    inside = (ls == labels[dst]) & wanted[ls]
    src, dst, rel, ls = src[inside], dst[inside], rel[inside], ls[inside]
    adj = {c: {} for c in comps}
    for s, d, r, c in zip(src.tolist(), dst.tolist(), rel.tolist(), ls.tolist()):
        adj[c].setdefault(s, []).append((d, r))
    return adj


def _bfs_cycle(adj, first_edge, required, deadline):
    """Shortest path closing a cycle that starts with first_edge=(a, b, rel)
    and, counting that edge, contains every relation bit in required.
    Returns [(vertex, rel_of_edge_into_next), ...] or None."""
    a, b, r0 = first_edge
    start_state = (b, r0 & required)
    goal_mask = required
    parent = {start_state: None}
    queue = deque([start_state])
    steps = 0
    while queue:
        state = queue.popleft()
        v, seen = state
        if v == a and seen == goal_mask:
            # reconstruct: states from start to here, with the edge rels
            path = []
            while state is not None:
                prev = parent[state]
                path.append((state[0], None if prev is None else prev[1]))
                state = None if prev is None else prev[0]
            path.reverse()
            # path[i] = (vertex, rel of edge that led into it)
            out = [(a, r0)]
            for i in range(len(path) - 1):
                out.append((path[i][0], path[i + 1][1]))
            return out  # ends just before returning to a
        steps += 1
        if steps & 4095 == 0 and time.monotonic() > deadline:
            return None
        for d, r in adj.get(v, ()):
            ns = (d, seen | (r & required))
            if ns not in parent:
                parent[ns] = (state, r)
                queue.append(ns)
    return None


class _Component:
    """The edges inside one component as CSR arrays over local vertex ids,
    each vertex's edges in graph edge order (what a dict of adjacency lists
    built edge by edge holds)."""

    __slots__ = ("verts", "indptr", "dst", "rel", "src_order_edges")

    def __init__(self, src, dst, rel):
        verts = np.sort(np.concatenate((src, dst)))  # (np.unique hashes: slow)
        if len(verts) > 1:
            verts = verts[np.concatenate(([True], verts[1:] != verts[:-1]))]
        ls = np.searchsorted(verts, src)
        ld = np.searchsorted(verts, dst)
        o = np.argsort(ls, kind="stable")
        self.verts = verts
        self.indptr = np.zeros(len(verts) + 1, dtype=np.int64)
        np.cumsum(np.bincount(ls, minlength=len(verts)), out=self.indptr[1:])
        self.dst = ld[o]
        self.rel = rel[o].astype(np.int64)
        # edges in dict-iteration order: sources by first appearance, then
        # each source's edges in order
        first = np.full(len(verts), len(src), dtype=np.int64)
        np.minimum.at(first, ls, np.arange(len(src), dtype=np.int64))
        self.src_order_edges = (ls, first)

    def starts(self, bit, candidates, src_global, dst_global, rel):
        ls, first = self.src_order_edges
        e = np.flatnonzero((rel & bit) != 0)
        if not len(e):
            return []
        o = np.lexsort((e, first[ls[e]]))[:candidates]
        e = e[o]
        return list(zip(src_global[e].tolist(), dst_global[e].tolist(), rel[e].tolist()))


def _component_arrays(graph, labels, comps, mask):
    """{component: _Component} for edges inside components."""
    wanted = np.zeros(labels.max() + 1, dtype=bool)
    wanted[comps] = True
    src, dst, rel = graph.src[mask], graph.dst[mask], graph.rel[mask]
    ls = labels[src]
    inside = (ls == labels[dst]) & wanted[ls]
    src, dst, rel, ls = src[inside], dst[inside], rel[inside], ls[inside]
    o = np.argsort(ls, kind="stable")
    src, dst, rel, ls = src[o], dst[o], rel[o], ls[o]
    b = np.searchsorted(ls, comps)
    e = np.searchsorted(ls, comps, "right")
    out = {}
    for c, lo, hi in zip(comps, b.tolist(), e.tolist()):
        comp = _Component(src[lo:hi], dst[lo:hi], rel[lo:hi])
        out[c] = (comp, src[lo:hi], dst[lo:hi], rel[lo:hi].astype(np.int64))
    return out


def _bfs_cycle_arrays(comp, first_edge, required, deadline):
    """_bfs_cycle over a _Component, level by level with arrays, visiting
    states in exactly the FIFO order (so the same parents, the same cycle).
    States are local vertex * 16 + relation bits seen."""
    a, b, r0 = first_edge
    verts = comp.verts
    la = int(np.searchsorted(verts, a))
    lb = int(np.searchsorted(verts, b))
    start = lb * 16 + (r0 & required)
    goal = la * 16 + required
    if start == goal:
        return [(a, r0)]
    nstates = len(verts) * 16
    visited_b = bytearray(nstates)
    visited = np.frombuffer(visited_b, dtype=bool)
    parent = np.empty(nstates, dtype=np.int64)  # read only where visited
    prel = np.empty(nstates, dtype=np.int8)
    visited_b[start] = 1
    indptr, cdst, crel = comp.indptr, comp.dst, comp.rel
    # memoryviews: element access from Python without copies
    ip_m, dst_m, rel_m = memoryview(indptr), memoryview(cdst), memoryview(crel)
    par_m, prel_m = memoryview(parent), memoryview(prel)
    frontier = [start]
    found = False
    while frontier:
        if time.monotonic() > deadline:
            return None
        if len(frontier) < 256:  # a small level: plain FIFO steps
            nxt = []
            for st in frontier:
                v = st >> 4
                sn = st & 15
                for e in range(ip_m[v], ip_m[v + 1]):
                    r = rel_m[e]
                    ns = (dst_m[e] << 4) | sn | (r & required)
                    if not visited_b[ns]:
                        visited_b[ns] = 1
                        par_m[ns] = st
                        prel_m[ns] = r
                        nxt.append(ns)
            if visited_b[goal]:
                found = True
                break
            frontier = nxt
            continue
        fr = np.array(frontier, dtype=np.int64)
        v = fr >> 4
        seen = fr & 15
        lo = indptr[v]
        cnt = indptr[v + 1] - lo
        total = int(cnt.sum())
        if not total:
            break
        base = np.repeat(lo - (np.cumsum(cnt) - cnt), cnt)
        idx = base + np.arange(total, dtype=np.int64)
        r = crel[idx]
        ns = (cdst[idx] << 4) | (np.repeat(seen, cnt) | (r & required))
        par = np.repeat(fr, cnt)
        new = ~visited[ns]
        ns, par, r = ns[new], par[new], r[new]
        if not len(ns):
            break
        # first occurrence of each new state, kept in examination order
        o = np.argsort(ns, kind="stable")
        sn_ = ns[o]
        keep = np.ones(len(sn_), dtype=bool)
        keep[1:] = sn_[1:] != sn_[:-1]
        pos = np.sort(o[keep])
        ns, par, r = ns[pos], par[pos], r[pos]
        visited[ns] = True
        parent[ns] = par
        prel[ns] = r
        if visited_b[goal]:
            found = True
            break
        frontier = ns.tolist()
    if not found:
        return None
    path = []
    state = goal
    while state != start:
        path.append((int(verts[state >> 4]), int(prel[state])))
        state = int(parent[state])
    path.append((b, None))
    path.reverse()
    out = [(a, r0)]
    for i in range(len(path) - 1):
        out.append((path[i][0], path[i + 1][1]))
    return out


def find_cycles(graph: Graph, specs=CYCLE_SPECS, max_per_type: int = 8,
                candidates: int = 4, budget_s: float = 30.0):
    """{anomaly name: [cycle, ...]} where a cycle is a list of
    (vertex, rel of the edge to the next vertex), barriers included.

    When the search budget runs out, a component that surely holds a cycle
    of the type is still reported, as {"scc": vertices (ops only), "cycle": None}.
    """
    deadline = time.monotonic() + budget_s
    found = {}
    for name, rels, required in specs:
        labels, comps, mask = sccs(graph, rels)
        if not comps:
            continue
        adj = _component_arrays(graph, labels, comps[:max_per_type * 4], mask)
        results = []
        for c in comps[:max_per_type * 4]:
            if len(results) >= max_per_type:
                break
            comp, csrc, cdst, crel = adj[c]
            # Candidate first edges carry the rarest required relation.
            first_bit = required & -required
            for bit in (WR, PROCESS, REALTIME, WW):
                if required & bit:
                    first_bit = bit
                    break
            starts = comp.starts(first_bit, candidates, csrc, cdst, crel)
            best = None
            for e in starts:
                if time.monotonic() > deadline:
                    break
                cyc = _bfs_cycle_arrays(comp, e, required, deadline)
                if cyc is not None and (best is None or len(cyc) < len(best)):
                    best = cyc
            if best is not None:
                results.append({"cycle": best})
            elif starts:
                # A component of these relations containing a required edge
                # may still have no cycle with *all* required relations
                # (e.g. wr but no process edge on any cycle); only report
                # it when the budget, not the search, gave up.
                if time.monotonic() > deadline:
                    ops = np.nonzero(labels == c)[0]
                    ops = [int(v) for v in ops if v < graph.n_ops][:64]
                    results.append({"cycle": None, "scc": ops, "scc_size": len(ops)})
        if results:
            found[name] = results
    return found


def compress(cycle, n_ops):
    """Turns a vertex cycle with barriers into op steps:
    [(op_id, rel_to_next_op), ...] where a barrier path is one REALTIME step."""
    # rotate so that we start at an op
    i0 = next(i for i, (v, _) in enumerate(cycle) if v < n_ops)
    cyc = cycle[i0:] + cycle[:i0]
    out = []
    for v, r in cyc:
        if v < n_ops:
            out.append([v, r])
        else:
            out[-1][1] = REALTIME
    return [(v, r) for v, r in out]
