"""The compiled cycle search (checkers.cycles) against the plain one it
replaced: scipy fed from edge lists, dict adjacency, the list-based BFS."""
from __future__ import annotations

import random

import numpy as np
import pytest
from scipy.sparse import csr_matrix
from scipy.sparse.csgraph import connected_components

from checkers.cycles import (CYCLE_SPECS, PROCESS, REALTIME, WR, WW, Graph,
                             _bfs_cycle, _bfs_cycle_arrays, _component_adjacency,
                             _component_arrays, find_cycles, sccs)

# (a fresh clone compiles the checkers' kernels during its first tests)
pytestmark = pytest.mark.timeout(900)

RELS = (WW, WR, PROCESS, REALTIME)


def _clustered_graph(rng):
    """Small dense clusters (many equal-sized components), a few edges
    between them, repeated edges and self-loops, and often only some of the
    relations (so that some projections have no cycle)."""
    rels = rng.sample(RELS, rng.randrange(1, 5))
    n = rng.randrange(4, 80)
    src, dst = [], []
    lo = 0
    while lo < n:
        size = rng.choice((2, 2, 3, 3, 5, 8))
        hi = min(n, lo + size)
        for _ in range(rng.randrange(1, 3 * (hi - lo) + 1)):
            src.append(rng.randrange(lo, hi))
            dst.append(rng.randrange(lo, hi))
        lo = hi
    for _ in range(rng.randrange(n // 2 + 1)):
        src.append(rng.randrange(n))
        dst.append(rng.randrange(n))
    for _ in range(rng.randrange(5)):
        i = rng.randrange(len(src))
        src.append(src[i])
        dst.append(dst[i])
    rel = [rng.choice(rels) for _ in src]
    n_nodes = n + rng.randrange(3)  # and vertices without edges
    return Graph(n_nodes - rng.randrange(3), n_nodes, src, dst, rel)


def _reference_find_cycles(g, max_per_type=8, candidates=4):
    """find_cycles as it was before numba, deadline aside."""
    found = {}
    for name, rels, required in CYCLE_SPECS:
        mask = (g.rel & rels) != 0
        if not mask.any():
            continue
        m = csr_matrix((np.ones(int(mask.sum()), dtype=np.int8),
                        (g.src[mask], g.dst[mask])), shape=(g.n_nodes, g.n_nodes))
        _, labels = connected_components(m, directed=True, connection="strong")
        sizes = np.bincount(labels)
        comps = sorted(np.nonzero(sizes > 1)[0].tolist(), key=lambda c: sizes[c])
        comps = comps[:max_per_type * 4]
        if not comps:
            continue
        adj = _component_adjacency(g, labels, comps, mask)
        first_bit = next(b for b in (WR, PROCESS, REALTIME, WW) if required & b)
        results = []
        for c in comps:
            if len(results) >= max_per_type:
                break
            starts = [(s, d, r) for s, edges in adj[c].items() for d, r in edges
                      if r & first_bit][:candidates]
            best = None
            for e in starts:
                cyc = _bfs_cycle(adj[c], e, required, float("inf"))
                if cyc is not None and (best is None or len(cyc) < len(best)):
                    best = cyc
            if best is not None:
                results.append({"cycle": best})
        if results:
            found[name] = results
    return found


@pytest.mark.parametrize("seed", range(200))
def test_find_cycles_equals_reference(seed):
    g = _clustered_graph(random.Random(seed))
    assert find_cycles(g) == _reference_find_cycles(g)


@pytest.mark.parametrize("seed", range(50))
def test_scc_labels_equal_scipy_from_edge_lists(seed):
    """Same labels, so equal-sized components keep their order."""
    g = _clustered_graph(random.Random(seed))
    for rels in range(1, 16):
        labels, comps, mask = sccs(g, rels)
        if not mask.any():
            assert labels is None and comps == []
            continue
        m = csr_matrix((np.ones(int(mask.sum()), dtype=np.int8),
                        (g.src[mask], g.dst[mask])), shape=(g.n_nodes, g.n_nodes))
        _, expected = connected_components(m, directed=True, connection="strong")
        assert labels.tolist() == expected.tolist()


def _ring(n, rel_of=lambda i: WW):
    """0 -> 1 -> ... -> n-1 -> 0 plus chords, so the BFS has many levels."""
    src = list(range(n)) + list(range(0, n, 3))
    dst = [(i + 1) % n for i in range(n)] + [(i + 7) % n for i in range(0, n, 3)]
    return Graph(n, n, src, dst, [rel_of(i) for i in range(len(src))])


@pytest.mark.parametrize("chunk", [1, 2, 7, 1 << 18])
def test_bfs_resumes_after_each_chunk(chunk):
    """Pausing for the deadline check and going on finds what one run finds."""
    g = _ring(300, lambda i: (WW, WR, PROCESS)[i % 3] if i != 150 else REALTIME)
    for name, rels, required in CYCLE_SPECS:
        labels, comps, mask = sccs(g, rels)
        adj = _component_adjacency(g, labels, comps, mask)
        for c, (comp, csrc, cdst, crel) in _component_arrays(g, labels, comps, mask).items():
            for e in comp.starts(required & -required, 4, csrc, cdst, crel):
                assert _bfs_cycle_arrays(comp, e, required, float("inf"), chunk) == \
                    _bfs_cycle(adj[c], e, required, float("inf"))


def test_bfs_stops_at_the_deadline():
    g = _ring(300)
    labels, comps, mask = sccs(g, WW)
    comp, csrc, cdst, crel = _component_arrays(g, labels, comps, mask)[comps[0]]
    e = comp.starts(WW, 1, csrc, cdst, crel)[0]
    assert _bfs_cycle_arrays(comp, e, WW, float("inf"), 1) is not None
    assert _bfs_cycle_arrays(comp, e, WW, 0.0, 1) is None


def test_out_of_budget_reports_the_component():
    g = _ring(300)
    found = find_cycles(g, budget_s=-1.0)
    assert found["G0"] == [{"cycle": None, "scc": list(range(64)), "scc_size": 64}]


def test_valid_graph_has_no_cycles():
    # a DAG over every relation: one SCC pass finds nothing for any spec
    rng = random.Random(1)
    src = [rng.randrange(99) for _ in range(500)]
    dst = [s + 1 + rng.randrange(100 - s - 1) for s in src]
    g = Graph(100, 100, src, dst, [rng.choice(RELS) for _ in src])
    assert find_cycles(g) == {} == _reference_find_cycles(g)
