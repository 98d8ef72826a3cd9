"""The fault controls of a target whose nodes run as local processes: each
node on its own loopback address, reaching S3 through its own S3 fault
proxy, partitions by iptables on `lo`, wall clocks skewed by libfaketime.
A target composes this and forwards `network()`, `s3_proxy(node)`,
`clock(node)` and the environment and addresses its nodes start with."""
from __future__ import annotations

import logging
import random
import sys
from pathlib import Path

from nemeses import clock as clock_mod
from nemeses import network
from nemeses.faketime import PYTHON_SITE as FAKETIME_SITE
from nemeses.s3_proxy import S3FaultProxy

log = logging.getLogger(__name__)


class LocalFaultControls:
    def __init__(self, names: list[str], rng: random.Random | None = None, clock_program: str = sys.executable):
        self.names = list(names)
        self.addresses = network.loopback_addresses(self.names, rng)
        self.clock_program = clock_program
        self.proxies: dict[str, S3FaultProxy] = {}
        self.clocks: dict[str, clock_mod.NodeClock] = {}
        self._network: network.LoopbackNetwork | None = None

    # --- what a target declares ---------------------------------------------------------------
    def unsupported(self, control: str) -> str | None:
        if control == "s3_proxy":
            return None
        if control == "network":
            return network.iptables_available()
        if control == "clock":
            try:
                clock_mod.find_libfaketime()
            except clock_mod.ClockUnsupported as e:
                return str(e)
            return clock_mod.unsupported_reason(self.clock_program)
        return f"no local {control} control"

    # --- lifecycle ------------------------------------------------------------------------
    def start_proxies(self, s3_endpoint: str, seed: int | None = None) -> None:
        """One S3 fault proxy per node, on the node's own address (so that a
        client-node cut never touches another node's S3 path)."""
        for name in self.names:
            self.proxies[name] = S3FaultProxy.for_endpoint(s3_endpoint, listen_host=self.addresses[name],
                                                           name=f"s3-proxy-{name}",
                                                           seed=None if seed is None else seed * 1000 + len(self.proxies)
                                                           ).start()

    def start_clocks(self, node_dirs: dict[str, Path]) -> None:
        for name in self.names:
            self.clocks[name] = clock_mod.NodeClock(Path(node_dirs[name]) / "faketime")

    def clock(self, name: str) -> clock_mod.NodeClock:
        return self.clocks[name]

    def node_environment(self, name: str, inherited: dict) -> dict:
        """What node `name` starts with: libfaketime when its clock is
        controlled (plus the sleep work-around for Python nodes)."""
        c = self.clocks.get(name)
        if c is None:
            return {}
        env = c.environment(inherited)
        env["PYTHONPATH"] = ":".join(p for p in (FAKETIME_SITE, inherited.get("PYTHONPATH", "")) if p)
        return env

    def network(self) -> network.LoopbackNetwork:
        if self._network is None:
            topo = network.Topology(
                nodes=self.addresses, client="127.0.0.1",
                s3={n: network.Endpoint(p.listen[0], (p.port,)) for n, p in self.proxies.items()})
            self._network = network.LoopbackNetwork(topo).setup()
        return self._network

    def stats(self) -> dict:
        return {"s3_proxies": {n: p.stats() for n, p in self.proxies.items()}} if self.proxies else {}

    def stop(self) -> None:
        for what, stop in ([("network", self._network.teardown)] if self._network else []) + \
                [(f"clock {n}", c.close) for n, c in self.clocks.items()] + \
                [(f"proxy {n}", p.stop) for n, p in self.proxies.items()]:
            try:
                stop()
            except Exception:
                log.exception("stopping %s", what)
        self._network = None
