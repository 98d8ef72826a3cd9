"""Network partitions: shapes (networkx), iptables rules (pure), and their execution.

A partition is a set of cut *links* between named endpoints: node names
("n1", "n2", ...), "client" (where the workload's clients connect from) and
"s3" (a node's path to S3: its own S3 fault proxy port). Cutting a link drops
every packet between its two ends in both directions, so TCP connects and
sends hang as on a real partition (packets vanish: no RST, no ICMP).

Three layers, each small:

- shapes: pure functions from node names (and a random.Random) to a
  `Partition`, built with networkx as Jepsen's nemesis builds its grudges:
  isolate one node, majority/minority halves, random halves, a bridge, and
  majorities in a ring;
- rules: pure functions from links and a `Topology` (who has which address)
  to iptables argument lists. `loopback_rules` is the local form: every node
  on its own 127.0.0.N, all on one host's `lo`, one chain hooked into INPUT.
  `host_rules` is the form for a node with its own network stack (a network
  namespace, a remote machine): that host drops what comes in from the
  endpoints it is cut from. The commands are the same; only where they run
  differs;
- execution: a `CommandRunner` runs an argument vector somewhere: `LocalRunner`
  here (with a prefix, e.g. `ip netns exec NS`), an SSH runner later with the
  same `run(argv)` method. `LoopbackNetwork` and `HostNetwork` are the
  `target.network()` controls: `setup()`, `cut(links) -> Cut`,
  `heal(cut=None)`, `teardown()`.

Chains are named `HWNET-<pid>-<tag>` (pid of the harness that made them), so a
later run can find chains left by a harness that crashed and remove them
(`remove_stale_chains`), while leaving those of a harness still running.
"""
from __future__ import annotations

import ipaddress
import itertools
import logging
import os
import random
import re
import subprocess
import threading
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field

import networkx as nx

log = logging.getLogger(__name__)

Link = tuple[str, str]
CHAIN_PREFIX = "HWNET-"
CLIENT = "client"
S3 = "s3"


def link(a: str, b: str) -> Link:
    """A link's canonical form: its two ends in sorted order."""
    if a == b:
        raise ValueError(f"a link needs two different ends, got {a!r} twice")
    return (a, b) if a < b else (b, a)


def links_of(pairs: Iterable[Sequence[str]]) -> frozenset[Link]:
    return frozenset(link(a, b) for a, b in pairs)


# --- shapes -----------------------------------------------------------------------------

@dataclass(frozen=True)
class Partition:
    shape: str
    cut: frozenset[Link]
    detail: dict = field(default_factory=dict, compare=False, hash=False)

    def describe(self) -> dict:
        """For the history: the shape, the cut links, and what made them."""
        return {"shape": self.shape, "cut": [list(lk) for lk in sorted(self.cut)], **self.detail}


def connectivity(nodes: Iterable[str], cut: Iterable[Link]) -> nx.Graph:
    """Who still reaches whom: the complete graph on `nodes` less the cut links."""
    g = nx.complete_graph(sorted(nodes))
    g.remove_edges_from(cut)
    return g


def _cut_of(nodes: Sequence[str], reachable: nx.Graph) -> frozenset[Link]:
    return links_of(nx.complement(reachable.subgraph(nodes)).edges) if len(nodes) > 1 else frozenset()


def split(side: Iterable[str], other: Iterable[str]) -> frozenset[Link]:
    """Cut every link between `side` and `other` (a complete bipartite cut)."""
    side, other = sorted(set(side)), sorted(set(other))
    if set(side) & set(other):
        raise ValueError(f"the two sides share {sorted(set(side) & set(other))}")
    return links_of(nx.complete_bipartite_graph(side, other).edges) if side and other else frozenset()


def isolate(nodes: Sequence[str], isolated: Iterable[str]) -> Partition:
    """Cut `isolated` (one node, a minority, ...) from every other node."""
    isolated = sorted(set(isolated))
    unknown = set(isolated) - set(nodes)
    if unknown:
        raise ValueError(f"cannot isolate {sorted(unknown)}: not among {sorted(nodes)}")
    rest = sorted(set(nodes) - set(isolated))
    return Partition("isolate", split(isolated, rest), {"components": [isolated, rest]})


def isolate_one(nodes: Sequence[str], rng: random.Random) -> Partition:
    p = isolate(nodes, [rng.choice(sorted(nodes))])
    return Partition("isolate-one", p.cut, p.detail)


def halves(nodes: Sequence[str], rng: random.Random | None = None) -> Partition:
    """A minority (floor(n/2)) against a majority; with `rng`, random halves
    (Jepsen's partition-random-halves), else the first names sorted."""
    order = sorted(nodes)
    if rng is not None:
        rng.shuffle(order)
    minority, majority = sorted(order[:len(order) // 2]), sorted(order[len(order) // 2:])
    return Partition("random-halves" if rng is not None else "halves", split(minority, majority),
                     {"components": [minority, majority]})


def bridge(nodes: Sequence[str], rng: random.Random | None = None) -> Partition:
    """Two halves cut from each other, and one node (the bridge) that still
    reaches both (Jepsen's bridge). Needs at least 3 nodes."""
    order = sorted(nodes)
    if len(order) < 3:
        raise ValueError(f"a bridge needs at least 3 nodes, got {len(order)}")
    if rng is not None:
        rng.shuffle(order)
    middle = (len(order) - 1) // 2
    left, hub, right = sorted(order[:middle]), order[middle], sorted(order[middle + 1:])
    return Partition("bridge", split(left, right), {"components": [left, right], "bridge": hub})


def majorities_ring(nodes: Sequence[str], rng: random.Random | None = None) -> Partition:
    """Every node still reaches a majority (itself included), and no two nodes
    reach the same majority (Jepsen's majorities-ring). Nodes sit on a ring;
    each keeps its links to its nearest neighbours: a circulant graph with
    offsets 1..k (and the opposite node when the majority needs an odd
    degree and n is even). Needs at least 4 nodes (3 cannot have distinct
    symmetric majorities)."""
    order = sorted(nodes)
    n = len(order)
    if n < 4:
        raise ValueError(f"a majorities ring needs at least 4 nodes, got {n}")
    if rng is not None:
        rng.shuffle(order)
    degree = n // 2                   # majority (n // 2 + 1) less the node itself
    offsets = list(range(1, degree // 2 + 1))
    if degree % 2:
        offsets.append(n // 2 if n % 2 == 0 else degree // 2 + 1)
    ring = nx.relabel_nodes(nx.circulant_graph(n, offsets), dict(enumerate(order)))
    return Partition("majorities-ring", _cut_of(order, ring), {"ring": order})


SHAPES = {
    "isolate-one": isolate_one,
    "halves": lambda nodes, rng: halves(nodes),
    "random-halves": halves,
    "bridge": bridge,
    "majorities-ring": majorities_ring,
}


def build(shape: str, nodes: Sequence[str], rng: random.Random) -> Partition:
    try:
        builder = SHAPES[shape]
    except KeyError:
        raise ValueError(f"unknown partition shape {shape!r}; known: {', '.join(SHAPES)}") from None
    return builder(list(nodes), rng)


# --- where endpoints are ------------------------------------------------------------------

@dataclass(frozen=True)
class Endpoint:
    address: str | None          # None: any address (the other end decides)
    ports: tuple[int, ...] = ()  # empty: every port of the address

    def __post_init__(self):
        if self.address is not None:
            ipaddress.IPv4Address(self.address)


@dataclass(frozen=True)
class Topology:
    """Where each named endpoint is.

    nodes: node name -> its own address (the node binds its listeners and
        its outgoing connections to it).
    client: the address clients connect from (127.0.0.1 for a client that
        binds nothing on this host).
    s3: node name -> the endpoint through which that node reaches S3 (its own
        S3 fault proxy: address and port). The port is the node's alone, so
        the link (node, "s3") is cut on that port whatever address the node's
        S3 client sends from.
    """
    nodes: Mapping[str, str]
    client: str | None = "127.0.0.1"
    s3: Mapping[str, Endpoint] = field(default_factory=dict)

    def ends(self, lk: Link) -> tuple[Endpoint, Endpoint]:
        a, b = lk
        if S3 in lk:
            node = b if a == S3 else a
            if node not in self.s3:
                raise ValueError(f"cannot cut {node!r} from S3: no S3 endpoint known for it "
                                 f"(known: {sorted(self.s3)})")
            return Endpoint(None), self.s3[node]
        return self._endpoint(a), self._endpoint(b)

    def _endpoint(self, name: str) -> Endpoint:
        if name == CLIENT:
            if self.client is None:
                raise ValueError("cannot cut the client: no client address known")
            return Endpoint(self.client)
        try:
            return Endpoint(self.nodes[name])
        except KeyError:
            raise ValueError(f"unknown endpoint {name!r}; known: {sorted(self.nodes)}, client, s3") from None


def _match(end: Endpoint, direction: str) -> list[str]:
    """iptables match arguments for one end of a packet (`src` or `dst`)."""
    args = []
    if end.address is not None:
        args += ["-s" if direction == "src" else "-d", f"{end.address}/32"]
    if end.ports:
        args += ["-p", "tcp", "-m", "multiport",
                 "--sports" if direction == "src" else "--dports", ",".join(map(str, end.ports))]
    return args


def _drop(chain: str, src: Endpoint, dst: Endpoint, comment: str) -> list[str]:
    return (["-A", chain] + _match(src, "src") + _match(dst, "dst")
            + ["-m", "comment", "--comment", comment, "-j", "DROP"])


def loopback_rules(chain: str, links: Iterable[Link], topology: Topology) -> list[list[str]]:
    """The local form: one host, every endpoint on `lo`; for each link, drop
    its packets in both directions. Pure: returns iptables argument lists
    (append to `chain`)."""
    rules = []
    for lk in sorted(links_of(links)):
        a, b = topology.ends(lk)
        comment = f"highwater cut {lk[0]}|{lk[1]}"
        rules.append(_drop(chain, a, b, comment))
        rules.append(_drop(chain, b, a, comment))
    return rules


def host_rules(chain: str, links: Iterable[Link], topology: Topology, host: str) -> list[list[str]]:
    """The form for a node with its own network stack (namespace, machine):
    `host` drops every packet that comes in from an endpoint it is cut from.
    Dropping inbound alone breaks TCP both ways (the other side's replies
    never arrive), and needs rules on the nodes only, never on S3 or clients."""
    if host not in topology.nodes:
        raise ValueError(f"unknown host {host!r}; known: {sorted(topology.nodes)}")
    rules = []
    for lk in sorted(links_of(links)):
        if host not in lk:
            continue
        other = lk[1] if lk[0] == host else lk[0]
        if other == S3:
            src = topology.s3.get(host)
            if src is None:
                raise ValueError(f"cannot cut {host!r} from S3: no S3 endpoint known for it")
        else:
            src = topology._endpoint(other)
        rules.append(_drop(chain, src, Endpoint(None), f"highwater cut {lk[0]}|{lk[1]}"))
    return rules


def hook_rule(chain: str, interface: str | None = "lo") -> list[str]:
    """Send INPUT (on `interface`, or all) through `chain`, first in line."""
    return ["-I", "INPUT", "1"] + (["-i", interface] if interface else []) + ["-j", chain]


def chain_name(pid: int | None = None, tag: str | None = None) -> str:
    tag = tag or f"{random.getrandbits(24):06x}"
    name = f"{CHAIN_PREFIX}{pid if pid is not None else os.getpid()}-{tag}"
    if len(name) > 28:
        raise ValueError(f"iptables chain name {name!r} is longer than 28 characters")
    return name


# --- execution --------------------------------------------------------------------------------

class CommandFailed(RuntimeError):
    pass


class LocalRunner:
    """Runs a command on this host, after an optional prefix (e.g.
    `("ip", "netns", "exec", "n1")`). An SSH runner offers the same `run`."""

    def __init__(self, prefix: Sequence[str] = (), timeout: float = 30.0):
        self.prefix = tuple(prefix)
        self.timeout = timeout

    def run(self, argv: Sequence[str], check: bool = True) -> subprocess.CompletedProcess:
        cmd = [*self.prefix, *argv]
        try:
            done = subprocess.run(cmd, capture_output=True, text=True, timeout=self.timeout)
        except (OSError, subprocess.TimeoutExpired) as e:
            raise CommandFailed(f"{' '.join(cmd)}: {e}") from e
        if check and done.returncode != 0:
            raise CommandFailed(f"{' '.join(cmd)} exited {done.returncode}: {done.stderr.strip()}")
        return done

    def __repr__(self):
        return f"LocalRunner({' '.join(self.prefix) or 'here'})"


def iptables(runner, args: Sequence[str], check: bool = True):
    # -w: wait for the xtables lock; other runs may be changing rules too.
    return runner.run(["iptables", "-w", "10", *args], check=check)


def iptables_available(runner=None) -> str | None:
    """None if iptables works through `runner`, else why not."""
    runner = runner or LocalRunner()
    try:
        iptables(runner, ["-S", "INPUT"])
    except CommandFailed as e:
        return f"iptables does not work here ({e}); partitions need iptables and root"
    return None


_CHAIN_RE = re.compile(rf"^-N ({re.escape(CHAIN_PREFIX)}(\d+)-\S+)$", re.M)


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def remove_chain(runner, chain: str) -> None:
    """Unhook `chain` from INPUT (every hook), flush and delete it. Never raises."""
    try:
        listing = iptables(runner, ["-S", "INPUT"]).stdout
    except CommandFailed as e:
        log.warning("cannot list INPUT to remove %s: %s", chain, e)
        return
    for line in listing.splitlines():
        words = line.split()
        if words[:2] == ["-A", "INPUT"] and words[-2:] == ["-j", chain]:
            iptables(runner, ["-D", "INPUT", *words[2:]], check=False)
    iptables(runner, ["-F", chain], check=False)
    iptables(runner, ["-X", chain], check=False)


def remove_stale_chains(runner=None, alive=_pid_alive) -> list[str]:
    """Remove the chains of harnesses that are gone (`alive(pid)` false).
    On a namespace or remote host pass `alive=lambda pid: False` when one
    harness owns it. Returns the chains removed."""
    runner = runner or LocalRunner()
    try:
        listing = iptables(runner, ["-S"]).stdout
    except CommandFailed as e:
        log.warning("cannot list iptables chains: %s", e)
        return []
    removed = []
    for chain, pid in _CHAIN_RE.findall(listing):
        if not alive(int(pid)):
            remove_chain(runner, chain)
            removed.append(chain)
    return removed


@dataclass
class Cut:
    """One cut as applied: exactly the rules it added, per host."""
    links: frozenset[Link]
    rules: dict[str, list[list[str]]]
    id: int = 0


class _Network:
    """What LoopbackNetwork and HostNetwork share: the chain, the cuts, heal."""

    def __init__(self, topology: Topology, chain: str | None):
        self.topology = topology
        self.chain = chain or chain_name()
        self._cuts: dict[int, Cut] = {}
        self._ids = itertools.count(1)
        self._lock = threading.Lock()

    def _runners(self) -> dict[str, object]:
        raise NotImplementedError

    def _rules(self, links: frozenset[Link]) -> dict[str, list[list[str]]]:
        raise NotImplementedError

    def cut(self, links: Iterable[Sequence[str]]) -> Cut:
        """Cut these links (pairs of endpoint names); returns the handle to heal."""
        links = links_of(links)
        rules = self._rules(links)   # raises before anything is applied on a bad link
        with self._lock:
            c = Cut(links, {}, next(self._ids))
            runners = self._runners()
            try:
                for host, host_rules_ in rules.items():
                    for args in host_rules_:
                        iptables(runners[host], args)
                        c.rules.setdefault(host, []).append(args)
            except CommandFailed:
                self._delete(c)
                raise
            self._cuts[c.id] = c
        return c

    def heal(self, cut: Cut | None = None) -> None:
        """Remove exactly the rules of `cut` (or of every cut). Safe twice."""
        with self._lock:
            cuts = list(self._cuts.values()) if cut is None else [self._cuts[cut.id]] if cut.id in self._cuts else []
            for c in cuts:
                self._delete(c)
                del self._cuts[c.id]

    def _delete(self, c: Cut) -> None:
        runners = self._runners()
        for host, rules in c.rules.items():
            for args in rules:
                iptables(runners[host], ["-D", *args[1:]], check=False)

    @property
    def cut_links(self) -> frozenset[Link]:
        with self._lock:
            return frozenset().union(*(c.links for c in self._cuts.values())) if self._cuts else frozenset()


class LoopbackNetwork(_Network):
    """Partitions on this host's loopback: every node on its own 127.0.0.N,
    rules on `lo` in one chain of this run, hooked first into INPUT."""

    def __init__(self, topology: Topology, runner=None, chain: str | None = None):
        super().__init__(topology, chain)
        self.runner = runner or LocalRunner()
        for name, address in topology.nodes.items():
            if not ipaddress.IPv4Address(address).is_loopback:
                raise ValueError(f"node {name} address {address} is not in 127.0.0.0/8")

    def _runners(self):
        return {"localhost": self.runner}

    def _rules(self, links):
        return {"localhost": loopback_rules(self.chain, links, self.topology)}

    def setup(self) -> "LoopbackNetwork":
        why = iptables_available(self.runner)
        if why:
            raise CommandFailed(why)
        removed = remove_stale_chains(self.runner)
        if removed:
            log.info("removed iptables chains left by dead harnesses: %s", ", ".join(removed))
        iptables(self.runner, ["-N", self.chain])
        iptables(self.runner, hook_rule(self.chain, "lo"))
        return self

    def teardown(self) -> None:
        with self._lock:
            self._cuts.clear()
        remove_chain(self.runner, self.chain)


class HostNetwork(_Network):
    """Partitions for nodes that each have their own network stack (network
    namespaces, remote machines): each node's own INPUT drops what comes from
    the endpoints it is cut from. `runners` maps node name -> CommandRunner
    that runs a command on that node (`LocalRunner(("ip", "netns", "exec",
    ns))`, or an SSH runner)."""

    def __init__(self, topology: Topology, runners: Mapping[str, object], chain: str | None = None,
                 interface: str | None = None):
        super().__init__(topology, chain)
        missing = set(topology.nodes) - set(runners)
        if missing:
            raise ValueError(f"no command runner for node(s) {sorted(missing)}")
        self.runners = dict(runners)
        self.interface = interface

    def _runners(self):
        return self.runners

    def _rules(self, links):
        return {host: host_rules(self.chain, links, self.topology, host) for host in self.topology.nodes}

    def setup(self, stale_alive=lambda pid: False) -> "HostNetwork":
        for host, runner in self.runners.items():
            why = iptables_available(runner)
            if why:
                raise CommandFailed(f"{host}: {why}")
            remove_stale_chains(runner, alive=stale_alive)
            iptables(runner, ["-N", self.chain])
            iptables(runner, hook_rule(self.chain, self.interface))
        return self

    def teardown(self) -> None:
        with self._lock:
            self._cuts.clear()
        for runner in self.runners.values():
            remove_chain(runner, self.chain)


def loopback_addresses(names: Sequence[str], rng: random.Random | None = None) -> dict[str, str]:
    """An address in 127.0.0.0/8 for each name: 127.X.Y.1, .2, ... with X.Y
    drawn from `rng` (so two runs on one machine do not share addresses and
    one's rules never touch the other's traffic), or 127.0.0.2... without."""
    if len(names) > 250:
        raise ValueError("at most 250 loopback nodes")
    if rng is None:
        return {n: f"127.0.0.{i + 2}" for i, n in enumerate(names)}
    x, y = rng.randrange(1, 255), rng.randrange(0, 256)
    return {n: f"127.{x}.{y}.{i + 1}" for i, n in enumerate(names)}
