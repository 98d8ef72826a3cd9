"""Partition shapes (properties over any node set) and the iptables rules they become (pure)."""
from __future__ import annotations

import random

import networkx as nx
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from nemeses import network as net
from nemeses.network import Endpoint, Topology

pytestmark = pytest.mark.timeout(60)

names = st.lists(st.from_regex(r"n[0-9]{1,3}", fullmatch=True), min_size=1, max_size=14, unique=True)
seeds = st.integers(0, 2**32 - 1)


def check_common(nodes, p):
    for a, b in p.cut:
        assert a in nodes and b in nodes and a < b
    g = net.connectivity(nodes, p.cut)
    assert set(g.edges) | {tuple(sorted(e)) for e in p.cut} >= set(nx.complete_graph(sorted(nodes)).edges)
    assert not (set(map(frozenset, g.edges)) & set(map(frozenset, p.cut)))
    return g


@settings(max_examples=80, deadline=None)
@given(names.filter(lambda n: len(n) >= 2), seeds)
def test_isolate_one_cuts_one_node_from_all_others(nodes, seed):
    p = net.isolate_one(nodes, random.Random(seed))
    g = check_common(nodes, p)
    comps = sorted(nx.connected_components(g), key=len)
    assert len(comps) == 2 and len(comps[0]) == 1
    [lonely] = comps[0]
    assert p.cut == {net.link(lonely, other) for other in nodes if other != lonely}


@settings(max_examples=80, deadline=None)
@given(names.filter(lambda n: len(n) >= 2), seeds, st.booleans())
def test_halves_are_a_minority_and_a_majority_of_complete_components(nodes, seed, randomly):
    p = net.halves(nodes, random.Random(seed) if randomly else None)
    g = check_common(nodes, p)
    comps = sorted((sorted(c) for c in nx.connected_components(g)), key=len)
    assert [len(c) for c in comps] == [len(nodes) // 2, len(nodes) - len(nodes) // 2]
    for c in comps:
        assert g.subgraph(c).number_of_edges() == len(c) * (len(c) - 1) // 2
    assert len(p.cut) == len(comps[0]) * len(comps[1])


@settings(max_examples=80, deadline=None)
@given(names.filter(lambda n: len(n) >= 3), seeds)
def test_bridge_keeps_one_node_linked_to_two_cut_halves(nodes, seed):
    p = net.bridge(nodes, random.Random(seed))
    g = check_common(nodes, p)
    hub = p.detail["bridge"]
    assert g.degree(hub) == len(nodes) - 1
    rest = g.subgraph(set(nodes) - {hub})
    comps = sorted((len(c) for c in nx.connected_components(rest)))
    assert sum(comps) == len(nodes) - 1
    assert (len(comps) == 2 and comps[1] - comps[0] <= 1) or len(nodes) == 3 and comps == [1, 1]
    assert p.cut


@settings(max_examples=80, deadline=None)
@given(names.filter(lambda n: len(n) >= 4), seeds)
def test_majorities_ring_every_node_sees_a_distinct_majority(nodes, seed):
    p = net.majorities_ring(nodes, random.Random(seed))
    g = check_common(nodes, p)
    views = [frozenset(g[n]) | {n} for n in nodes]
    assert all(len(v) >= len(nodes) // 2 + 1 for v in views)
    assert len(set(views)) == len(nodes)
    assert p.cut and nx.is_connected(g)


@pytest.mark.parametrize("shape,n", [("bridge", 2), ("majorities-ring", 3)])
def test_impossible_shapes_are_refused(shape, n):
    with pytest.raises(ValueError):
        net.build(shape, [f"n{i}" for i in range(n)], random.Random(1))


def test_unknown_shape_and_bad_links():
    with pytest.raises(ValueError):
        net.build("triangle", ["n1", "n2"], random.Random(1))
    with pytest.raises(ValueError):
        net.link("n1", "n1")
    with pytest.raises(ValueError):
        net.isolate(["n1", "n2"], ["n9"])


TOPO = Topology({"n1": "127.9.9.1", "n2": "127.9.9.2"}, client="127.0.0.1",
                s3={"n1": Endpoint("127.9.9.200", (4001,)), "n2": Endpoint("127.9.9.200", (4002,))})


def test_loopback_rules_drop_both_directions_of_each_link():
    rules = net.loopback_rules("HWNET-1-x", [("n2", "n1"), ("client", "n1"), ("n2", "s3")], TOPO)
    flat = [" ".join(r) for r in rules]
    assert len(rules) == 6
    assert all(r[:2] == ["-A", "HWNET-1-x"] and r[-2:] == ["-j", "DROP"] for r in rules)
    assert any("-s 127.9.9.1/32 -d 127.9.9.2/32" in f for f in flat)
    assert any("-s 127.9.9.2/32 -d 127.9.9.1/32" in f for f in flat)
    assert any("-s 127.0.0.1/32 -d 127.9.9.1/32" in f for f in flat)
    # a node's path to S3 is its own proxy port, whatever address it sends from
    s3 = [f for f in flat if "127.9.9.200" in f]
    assert len(s3) == 2 and all("4002" in f and "127.9.9.2/32" not in f for f in s3)
    assert any("-d 127.9.9.200/32 -p tcp -m multiport --dports 4002" in f for f in s3)
    assert any("-s 127.9.9.200/32 -p tcp -m multiport --sports 4002" in f for f in s3)


def test_host_rules_drop_only_inbound_on_the_cut_host():
    links = [("n1", "n2"), ("n1", "s3"), ("client", "n2")]
    n1 = [" ".join(r) for r in net.host_rules("C", links, TOPO, "n1")]
    n2 = [" ".join(r) for r in net.host_rules("C", links, TOPO, "n2")]
    assert len(n1) == 2 and len(n2) == 2
    assert any(f.startswith("-A C -s 127.9.9.2/32 -m comment") for f in n1)
    assert any("-s 127.9.9.200/32 -p tcp -m multiport --sports 4001" in f for f in n1)
    assert any(f.startswith("-A C -s 127.0.0.1/32 ") for f in n2)
    assert not any("-d " in f for f in n1 + n2)


def test_rules_refuse_unknown_endpoints():
    with pytest.raises(ValueError, match="unknown endpoint"):
        net.loopback_rules("C", [("n1", "n7")], TOPO)
    with pytest.raises(ValueError, match="S3"):
        net.loopback_rules("C", [("n3", "s3")], Topology({"n3": "127.0.0.3"}))


def test_chain_names_carry_the_pid_and_fit_iptables():
    name = net.chain_name(4194304)
    assert name.startswith("HWNET-4194304-") and len(name) <= 28
    assert net.loopback_addresses(["a", "b"]) == {"a": "127.0.0.2", "b": "127.0.0.3"}
    addrs = net.loopback_addresses(["a", "b", "c"], random.Random(5))
    assert len(set(addrs.values())) == 3 and all(a.startswith("127.") for a in addrs.values())
