"""The fault controls of a reference cluster whose nodes live in network
namespaces of this machine (`--nodes netns:N`), driven over real SSH by the
code that drives remote machines (`ssh_controls.py`): processes started, killed and paused
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

from harness.db.ssh_controls import SshFaultControls
from harness.remote.clock import RemoteClock
from harness.remote.netns import NETWORK, NetnsCluster
from nemeses import network
from nemeses.faketime import PYTHON_SITE

log = logging.getLogger(__name__)


class NetnsFaultControls(SshFaultControls):
    """SshFaultControls on the namespaces' own inventory, plus what the
    harness knows because it made the network itself: partitions and clocks."""

    def __init__(self, cluster: NetnsCluster):
        self.cluster = cluster
        service_address = f"{NETWORK}.{cluster.subnet_index}.253"
        subprocess.run(["ip", "addr", "add", f"{service_address}/24", "dev", cluster.bridge],
                       check=True, capture_output=True, timeout=30)
        super().__init__(cluster.inventory, cluster.run_dir / "nodes", service_address, ssh=cluster.open_nodes())
        self.clocks: dict[str, RemoteClock] = {}
        self._network: network.HostNetwork | None = None

    def ports(self, name: str) -> tuple[int, int]:
        return 9092, 9093   # each namespace has its own ports: the usual ones

    def log_copy(self, name: str) -> None:
        return None   # a namespace shares this machine's files: its log is read where it is

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
        if self._network is not None:
            self._stop_steps([("network", self._network.teardown)])
            self._network = None
        super().stop()
