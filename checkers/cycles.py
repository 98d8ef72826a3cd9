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
edges); the per-component searches are BFS over (vertex, relations-seen)
states, so that the cycle found is the shortest through its first edge that
has every required relation.

numba compiles the loops over edges and states (``cache=True`` keeps the
machine code next to this file): a component of a million-operation history
has millions of edges, which a BFS in Python walks in seconds, and numpy can
group or project them only with whole-array sorts.
"""
from __future__ import annotations

import time
from collections import deque

import numpy as np
from numba import njit
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
        self._rows = None

    def __len__(self):
        return len(self.src)

    def rows(self):
        """(indptr, dst, rel): the edges grouped by source, each source's by
        destination. Built once: every projection's CSR is a walk over it."""
        if self._rows is None:
            m, n = len(self.src), self.n_nodes
            idx = np.int32 if n < 2**31 else np.int64
            indptr = np.empty(n + 1, dtype=np.int64)
            rdst, rrel = np.empty(m, dtype=idx), np.empty(m, dtype=np.int8)
            _rows_by_source(self.src, self.dst, self.rel, indptr, rdst, rrel,
                            np.empty(m, dtype=idx), np.empty(m, dtype=np.int8))
            self._rows = indptr, rdst, rrel
        return self._rows


@njit(cache=True)
def _rows_by_source(src, dst, rel, indptr, rdst, rrel, bsrc, brel):
    m, n = len(src), len(indptr) - 1
    # Two counting sorts, by destination then by source: O(edges), where a
    # comparison sort of millions of edges costs most of a second. Each pass
    # reads in order (random reads are what make such passes slow).
    at = np.zeros(n + 1, np.int64)
    for i in range(m):
        at[dst[i] + 1] += 1
    for v in range(n):
        at[v + 1] += at[v]
    dptr = at.copy()
    for i in range(m):
        p = at[dst[i]]
        bsrc[p] = src[i]
        brel[p] = rel[i]
        at[dst[i]] = p + 1
    indptr[:] = 0
    for i in range(m):
        indptr[src[i] + 1] += 1
    for v in range(n):
        indptr[v + 1] += indptr[v]
    at = indptr[:-1].copy()
    for d in range(n):
        for q in range(dptr[d], dptr[d + 1]):
            p = at[bsrc[q]]
            rdst[p] = d
            rrel[p] = brel[q]
            at[bsrc[q]] = p + 1


@njit(cache=True)
def _projection_csr(indptr, rdst, rrel, rels, out_indptr, out_indices):
    """Fills the CSR of the edges with a bit in rels, each row's indices
    sorted and without repeats; returns its number of entries."""
    k = 0
    out_indptr[0] = 0
    for v in range(len(indptr) - 1):
        last = -1
        for e in range(indptr[v], indptr[v + 1]):
            if rrel[e] & rels and rdst[e] != last:
                last = rdst[e]
                out_indices[k] = last
                k += 1
        out_indptr[v + 1] = k
    return k


def sccs(graph: Graph, rels: int):
    """Non-trivial strongly connected components of the projection onto rels.

    Returns (labels array, list of component labels with > 1 vertex, edge mask)."""
    mask = (graph.rel & rels) != 0
    # An edge with several relations, some outside rels, must go: projecting
    # is about which edges exist, and ours carry exactly one bit each.
    if not mask.any():
        return None, [], mask
    indptr, rdst, rrel = graph.rows()
    n = graph.n_nodes
    # The arrays csr_matrix((ones, (src, dst))) would hold (canonical: rows
    # sorted, repeats summed), without its sorts. The labels depend on the
    # order the search meets vertices in, so the same arrays keep the same
    # labels, hence the same order of equal-sized components. (Repeats must
    # go anyway: scipy's search never ends on a row with one.)
    idx = np.int32 if max(n, len(rdst)) < 2**31 else np.int64
    pindptr = np.empty(n + 1, dtype=idx)
    pindices = np.empty(len(rdst), dtype=idx)
    k = _projection_csr(indptr, rdst, rrel, rels, pindptr, pindices)
    m = csr_matrix((np.ones(k), pindices[:k], pindptr), shape=(n, n))
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
    """The edges inside one component as CSR arrays over local vertex ids
    (indexes into verts, the sorted global ids), each vertex's edges in the
    given (graph) order: what a dict of adjacency lists built edge by edge
    holds. edge[p] is entry p's position in that order; sources are the
    dict's keys in order (first appearance)."""

    __slots__ = ("verts", "indptr", "dst", "rel", "edge", "sources")

    def __init__(self, verts, ls, ld, rel):
        """ls, ld: the edges' local source and destination, in graph order."""
        self.verts = verts
        self.dst = np.empty(len(ls), dtype=np.int32 if len(verts) < 2**31 else np.int64)
        self.indptr, self.rel, self.edge, self.sources = \
            _local_csr(ls, ld, rel, len(verts), self.dst)

    def starts(self, bit, candidates, src, dst, rel):
        """The first candidates edges with bit, in the dict's order, as
        (src, dst, rel) from the component's edge arrays."""
        e = _first_with_bit(self.indptr, self.rel, self.edge, self.sources,
                            bit, candidates)
        return list(zip(src[e].tolist(), dst[e].tolist(), rel[e].tolist()))


@njit(cache=True)
def _local_csr(ls, ld, rel, nv, cdst):
    m = len(ls)
    indptr = np.zeros(nv + 1, np.int64)
    for i in range(m):
        indptr[ls[i] + 1] += 1
    for v in range(nv):
        indptr[v + 1] += indptr[v]
    at = indptr[:-1].copy()
    crel = np.empty(m, np.int8)
    edge = np.empty(m, np.int64)
    sources = np.empty(nv, np.int64)
    n_sources = 0
    for i in range(m):
        s = ls[i]
        p = at[s]
        if p == indptr[s]:  # s's first edge
            sources[n_sources] = s
            n_sources += 1
        cdst[p] = ld[i]
        crel[p] = rel[i]
        edge[p] = i
        at[s] = p + 1
    return indptr, crel, edge, sources[:n_sources]


@njit(cache=True)
def _first_with_bit(indptr, rel, edge, sources, bit, k):
    # the first k in the dict's order are near its start: no sort of all
    out = np.empty(max(k, 0), np.int64)
    n = 0
    for s in sources:
        for p in range(indptr[s], indptr[s + 1]):
            if n == k:
                return out
            if rel[p] & bit:
                out[n] = edge[p]
                n += 1
    return out[:n]


@njit(cache=True)
def _edge_components(src, dst, mask, labels, slot):
    """Per edge: slot[component] if it is in the projection (mask) and
    inside a component with a slot, else -1."""
    out = np.full(len(src), -1, np.int64)
    for i in range(len(src)):
        if mask[i]:
            c = labels[src[i]]
            if c == labels[dst[i]]:
                out[i] = slot[c]
    return out


@njit(cache=True)
def _group(keys, k):
    """Positions with key 0..k-1 grouped by key, each group in order
    (a stable counting sort); -1 keys are left out. (bounds, positions)."""
    bounds = np.zeros(k + 1, np.int64)
    for x in keys:
        if x >= 0:
            bounds[x + 1] += 1
    for i in range(k):
        bounds[i + 1] += bounds[i]
    at = bounds[:-1].copy()
    out = np.empty(bounds[k], np.int64)
    for i in range(len(keys)):
        x = keys[i]
        if x >= 0:
            out[at[x]] = i
            at[x] += 1
    return bounds, out


def _component_arrays(graph, labels, comps, mask):
    """{component: (_Component, src, dst, rel)} for edges inside components,
    the edge arrays in graph order."""
    slot = np.full(labels.max() + 1, -1, dtype=np.int64)
    slot[comps] = np.arange(len(comps))
    vb, verts = _group(slot[labels], len(comps))
    eb, edges = _group(_edge_components(graph.src, graph.dst, mask, labels, slot),
                       len(comps))
    local = np.empty(graph.n_nodes, dtype=np.int64)  # read only at members
    out = {}
    for i, c in enumerate(comps):
        cverts = verts[vb[i]:vb[i + 1]]
        local[cverts] = np.arange(len(cverts))
        e = edges[eb[i]:eb[i + 1]]
        src, dst, rel = graph.src[e], graph.dst[e], graph.rel[e].astype(np.int64)
        out[c] = (_Component(cverts, local[src], local[dst], rel), src, dst, rel)
    return out


@njit(cache=True)
def _rel_values_inside(src, dst, rel, labels, big):
    """Which rel values (as uint8) edges inside big components carry."""
    out = np.zeros(256, np.bool_)
    for i in range(len(src)):
        c = labels[src[i]]
        if big[c] and c == labels[dst[i]]:
            out[rel[i] & 255] = True
    return out


# _bfs_steps outcomes
_FOUND, _EXHAUSTED, _PAUSED = 0, 1, 2
_BFS_CHUNK = 1 << 18  # state expansions between deadline checks


@njit(cache=True)
def _bfs_steps(indptr, dst, rel, required, goal, queue, span, visited, parent,
               prel, budget):
    """Pops states from queue[span[0]:span[1]] until goal is reached, the
    queue is empty or budget states have been expanded; span keeps the queue
    between calls."""
    head, tail = span[0], span[1]
    while head < tail:
        if budget == 0:
            span[0], span[1] = head, tail
            return _PAUSED
        budget -= 1
        st = queue[head]
        head += 1
        v = st >> 4
        seen = st & 15
        for e in range(indptr[v], indptr[v + 1]):
            r = rel[e]
            ns = (dst[e] << 4) | seen | (r & required)
            if not visited[ns]:
                visited[ns] = True
                parent[ns] = st
                prel[ns] = r
                # its parent is final: returning now is popping it later
                if ns == goal:
                    return _FOUND
                queue[tail] = ns
                tail += 1
    return _EXHAUSTED


def _bfs_cycle_arrays(comp, first_edge, required, deadline, chunk=_BFS_CHUNK):
    """_bfs_cycle over a _Component, with the same FIFO queue (so the same
    parents, the same cycle). States are local vertex * 16 + relation bits
    seen. The compiled loop does not read the clock: it pauses every chunk
    expansions for the deadline check, then goes on from its queue."""
    a, b, r0 = first_edge
    verts = comp.verts
    la = int(np.searchsorted(verts, a))
    lb = int(np.searchsorted(verts, b))
    start = lb * 16 + (r0 & required)
    goal = la * 16 + required
    if start == goal:
        return [(a, r0)]
    nstates = len(verts) * 16
    idx = np.int32 if nstates < 2**31 else np.int64
    visited = np.zeros(nstates, dtype=np.bool_)
    parent = np.empty(nstates, dtype=idx)  # read only where visited
    prel = np.empty(nstates, dtype=np.int8)
    queue = np.empty(nstates, dtype=idx)  # each state enters once
    queue[0] = start
    visited[start] = True
    span = np.array([0, 1], dtype=np.int64)
    while True:
        status = _bfs_steps(comp.indptr, comp.dst, comp.rel, required, goal,
                            queue, span, visited, parent, prel, chunk)
        if status == _FOUND:
            break
        if status == _EXHAUSTED or time.monotonic() > deadline:
            return None
    # path[i] = state i steps after start; the cycle is a, then each
    # state's vertex with the rel of the edge out of it
    path = _trace(parent, start, goal)
    return [(a, r0)] + list(zip(verts[path[:-1] >> 4].tolist(),
                                prel[path[1:]].tolist()))


@njit(cache=True)
def _trace(parent, start, goal):
    n = 1
    state = goal
    while state != start:
        state = parent[state]
        n += 1
    path = np.empty(n, np.int64)
    state = goal
    for i in range(n - 1, -1, -1):
        path[i] = state
        if i:
            state = parent[state]
    return path


def find_cycles(graph: Graph, specs=CYCLE_SPECS, max_per_type: int = 8,
                candidates: int = 4, budget_s: float = 30.0):
    """{anomaly name: [cycle, ...]} where a cycle is a list of
    (vertex, rel of the edge to the next vertex), barriers included.

    When the search budget runs out, a component that surely holds a cycle
    of the type is still reported, as {"scc": vertices (ops only), "cycle": None}.
    """
    deadline = time.monotonic() + budget_s
    if not specs:
        return {}
    # Every projection's components lie inside the components of the
    # projection onto all the specs' relations. So when that one has none
    # (a valid history), one SCC pass answers for all specs; else a spec
    # none of whose candidate first edges is inside one of them has no
    # start edge, hence nothing to report, and needs no SCC pass.
    union = 0
    for _, rels, _ in specs:
        union |= rels
    done = {union: sccs(graph, union)}
    labels, comps, _ = done[union]
    if not comps:
        return {}
    big = np.zeros(labels.max() + 1, dtype=np.bool_)
    big[comps] = True
    rel_inside = _rel_values_inside(graph.src, graph.dst, graph.rel, labels, big)
    found = {}
    for name, rels, required in specs:
        # Candidate first edges carry the rarest required relation.
        first_bit = required & -required
        for bit in (WR, PROCESS, REALTIME, WW):
            if required & bit:
                first_bit = bit
                break
        if not any(rel_inside[r] for r in range(256) if r & first_bit and r & rels):
            continue
        labels, comps, mask = done.pop(rels, None) or sccs(graph, rels)
        if not comps:
            continue
        adj = _component_arrays(graph, labels, comps[:max_per_type * 4], mask)
        results = []
        for c in comps[:max_per_type * 4]:
            if len(results) >= max_per_type:
                break
            comp, csrc, cdst, crel = adj[c]
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
