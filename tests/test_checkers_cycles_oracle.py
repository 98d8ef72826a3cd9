"""checkers.cycles.find_cycles against networkx as the oracle: on small
random graphs, every cycle it reports is real (its steps are edges of the
allowed relations and it holds every required one), and whenever networkx
enumerates a simple cycle that has the required relations, a cycle of that
type is reported."""
from __future__ import annotations

import networkx as nx
from hypothesis import given, settings, strategies as st

from checkers.cycles import CYCLE_SPECS, PROCESS, REALTIME, WR, WW, Graph, find_cycles
import pytest

# (a fresh clone compiles the checkers' kernels during its first tests)
pytestmark = pytest.mark.timeout(900)

RELS = (WW, WR, PROCESS, REALTIME)


@st.composite
def graphs(draw):
    n_ops = draw(st.integers(2, 7))
    n_nodes = n_ops + draw(st.integers(0, 2))  # barriers: ids >= n_ops
    pairs = draw(st.lists(st.tuples(st.integers(0, n_nodes - 1), st.integers(0, n_nodes - 1),
                                    st.sampled_from(RELS)),
                          max_size=18, unique_by=lambda e: (e[0], e[1])))
    pairs = [(a, b, r) for a, b, r in pairs if a != b]
    return Graph(n_ops, n_nodes, [a for a, _, _ in pairs], [b for _, b, _ in pairs],
                 [r for _, _, r in pairs])


def _edges(g):
    return {(s, d): r for s, d, r in zip(g.src.tolist(), g.dst.tolist(), g.rel.tolist())}


@settings(max_examples=400, deadline=None)
@given(g=graphs())
def test_reported_cycles_are_real_and_none_is_missed(g):
    edges = _edges(g)
    found = find_cycles(g, max_per_type=100, candidates=100)
    for name, allowed, required in CYCLE_SPECS:
        for res in found.get(name, []):
            cyc = res["cycle"]
            assert cyc is not None
            seen = 0
            for i, (v, r) in enumerate(cyc):
                nxt = cyc[(i + 1) % len(cyc)][0]
                assert edges.get((v, nxt)) == r, (name, cyc)
                assert r & allowed
                seen |= r
            assert seen & required == required, (name, cyc)
        dg = nx.DiGraph()
        dg.add_edges_from((s, d) for (s, d), r in edges.items() if r & allowed)
        exists = False
        for c in nx.simple_cycles(dg):
            rels = 0
            for i, v in enumerate(c):
                rels |= edges[(v, c[(i + 1) % len(c)])]
            if rels & required == required:
                exists = True
                break
        if exists:
            assert name in found, (name, sorted(edges.items()))
