"""The fault controls of a reference cluster whose nodes live in network
namespaces of this machine (`--nodes netns:N`), driven over real SSH by the
code that drives remote machines: processes started, killed and paused
through paramiko, partitions as iptables rules inside each namespace (over
SSH), clocks skewed by writing each node's libfaketime offset file (over
SFTP). S3 and the per-node S3 fault proxies listen in the root namespace on
an address of the bridge of their own, so that cutting the clients (who
connect from the bridge's first address) never cuts a node's S3, and SSH
(from the control address) is never cut at all. Volumes are the local FUSE
volumes: namespaces share this machine's file systems."""
from __future__ import annotations

import logging
import subprocess

from harness.remote.clock import RemoteClock
from harness.remote.netns import NETWORK, NetnsCluster
from harness.remote.process import RemoteProcess
from nemeses import network
from nemeses.faketime import PYTHON_SITE
from nemeses.s3_proxy import S3FaultProxy

log = logging.getLogger(__name__)


class NetnsFaultControls:
    def __init__(self, cluster: NetnsCluster):
        self.cluster = cluster
        self.names = list(cluster.names)
        self.addresses = {n: cluster.nodes[n].address for n in self.names}
        self.service_address = f"{NETWORK}.{cluster.subnet_index}.253"
        subprocess.run(["ip", "addr", "add", f"{self.service_address}/24", "dev", cluster.bridge],
                       check=True, capture_output=True, timeout=30)
        self.ssh = cluster.open_nodes()
        self.proxies: dict[str, S3FaultProxy] = {}
        self.clocks: dict[str, RemoteClock] = {}
        self._network: network.HostNetwork | None = None

    def process(self, name: str) -> RemoteProcess:
        return RemoteProcess(name, self.ssh[name], [])

    def start_proxies(self, s3_endpoint: str, seed: int | None = None) -> None:
        for i, name in enumerate(self.names):
            self.proxies[name] = S3FaultProxy.for_endpoint(
                s3_endpoint, listen_host=self.service_address, name=f"s3-proxy-{name}",
                seed=None if seed is None else seed * 1000 + i).start()

    def start_clocks(self, node_dirs=None) -> None:
        self.clocks = {name: RemoteClock(self.ssh[name]) for name in self.names}

    def clock(self, name: str) -> RemoteClock:
        return self.clocks[name]

    def node_environment(self, name: str, inherited: dict) -> dict:
        c = self.clocks.get(name)
        if c is None:
            return {}
        env = c.env()
        env["PYTHONPATH"] = ":".join(p for p in (PYTHON_SITE, inherited.get("PYTHONPATH", "")) if p)
        return env

    def network(self) -> network.HostNetwork:
        if self._network is None:
            topo = network.Topology(
                nodes=self.addresses, client=self.cluster.bridge_address,
                s3={n: network.Endpoint(p.listen[0], (p.port,)) for n, p in self.proxies.items()})
            self._network = network.HostNetwork(topo, self.ssh).setup()
        return self._network

    def stats(self) -> dict:
        return {"netns": {"bridge": self.cluster.bridge, "addresses": self.addresses,
                          "timings": self.cluster.timings},
                **({"s3_proxies": {n: p.stats() for n, p in self.proxies.items()}} if self.proxies else {})}

    def stop(self) -> None:
        steps = ([("network", self._network.teardown)] if self._network else []) + \
            [(f"proxy {n}", p.stop) for n, p in self.proxies.items()] + \
            [(f"ssh {n}", node.close) for n, node in self.ssh.items()]
        for what, stop in steps:
            try:
                stop()
            except Exception:
                log.exception("stopping %s", what)
        self._network = None
