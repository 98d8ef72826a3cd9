"""The array versions of hot loops (cycles BFS, perf) give exactly what the
plain Python versions give."""
from __future__ import annotations

import random

import numpy as np
import pytest

from checkers import cycles, perf
from checkers.cycles import (CYCLE_SPECS, PROCESS, REALTIME, WR, WW, Graph,
                             _bfs_cycle, _component_adjacency, _component_arrays,
                             _bfs_cycle_arrays, sccs)
from checkers.history import parse_events
from checkers.synth import generate

# (a fresh clone compiles the checkers' kernels during its first tests)
pytestmark = pytest.mark.timeout(900)


def _random_graph(rng, n, m):
    src = [rng.randrange(n) for _ in range(m)]
    dst = [rng.randrange(n) for _ in range(m)]
    rel = [rng.choice((WW, WR, PROCESS, REALTIME)) for _ in range(m)]
    return Graph(n, n, src, dst, rel)


@pytest.mark.parametrize("seed", range(40))
def test_array_bfs_equals_dict_bfs(seed):
    rng = random.Random(seed)
    g = _random_graph(rng, rng.randrange(3, 40), rng.randrange(5, 120))
    for name, rels, required in CYCLE_SPECS:
        labels, comps, mask = sccs(g, rels)
        if not comps:
            continue
        adj = _component_adjacency(g, labels, comps, mask)
        arr = _component_arrays(g, labels, comps, mask)
        for c in comps:
            cadj = adj[c]
            comp, csrc, cdst, crel = arr[c]
            for bit in (WW, WR, PROCESS, REALTIME):
                starts = []
                for s, edges in cadj.items():
                    for d, r in edges:
                        if r & bit:
                            starts.append((s, d, r))
                assert comp.starts(bit, 4, csrc, cdst, crel) == starts[:4]
                for e in starts[:6]:
                    assert _bfs_cycle_arrays(comp, e, required, float("inf")) == \
                        _bfs_cycle(cadj, e, required, float("inf"))


def test_perf_arrays_equal_loop(monkeypatch):
    h = parse_events(generate(2000, processes=4, keys=5, seed=4, nemesis_every=300, batch=2))
    # an op that never completed, too
    h.ops[-1].time = None
    fast = perf.perf(h, {"rate_buckets": 7})
    monkeypatch.setattr(perf, "_perf_arrays", lambda *a: None)
    assert perf.perf(h, {"rate_buckets": 7}) == fast
    monkeypatch.undo()
    assert perf.perf(h) == perf.perf(h)


@pytest.mark.parametrize("seed", range(3))
def test_array_bfs_equals_dict_bfs_wide(seed):
    """Levels wide enough for the vectorised steps."""
    rng = random.Random(seed)
    g = _random_graph(rng, 1500, 15000)
    for name, rels, required in CYCLE_SPECS:
        labels, comps, mask = sccs(g, rels)
        adj = _component_adjacency(g, labels, comps, mask)
        arr = _component_arrays(g, labels, comps, mask)
        for c in comps[:2]:
            comp, csrc, cdst, crel = arr[c]
            for e in comp.starts(required & -required, 4, csrc, cdst, crel):
                assert _bfs_cycle_arrays(comp, e, required, float("inf")) == \
                    _bfs_cycle(adj[c], e, required, float("inf"))


def _strip_elapsed(x):
    if isinstance(x, dict):
        return {k: _strip_elapsed(v) for k, v in x.items() if k != "elapsed_s"}
    if isinstance(x, list):
        return [_strip_elapsed(v) for v in x]
    return x


def test_parallel_checkers_same_result(monkeypatch):
    from checkers import core
    h = parse_events(generate(1500, processes=4, keys=4, seed=5, nemesis_every=300, batch=2))
    serial = core.check_history(h, options={"parallel": False, "recovery_bound_s": 1.0})
    monkeypatch.setattr(core, "PARALLEL_MIN_OPS", 0)
    par = core.check_history(h, options={"recovery_bound_s": 1.0})
    assert _strip_elapsed(par) == _strip_elapsed(serial)
    assert list(par["checkers"]) == list(serial["checkers"])
    # a child that dies: the checkers run here instead
    def dead(child):
        core.os.close(child[1])
        core.os.waitpid(child[0], 0)
        return None
    monkeypatch.setattr(core, "_join_checks", dead)
    again = core.check_history(h, options={"recovery_bound_s": 1.0})
    assert _strip_elapsed(again) == _strip_elapsed(serial)
