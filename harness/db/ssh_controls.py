"""The fault controls of a reference cluster whose nodes are reached over SSH
(paramiko): remote machines from an inventory (`--nodes inventory:FILE`),
and the network namespaces of `--nodes netns:N` (`netns_controls.py`, an
inventory the harness makes itself). Processes are started, killed and
paused over SSH; each node's S3 fault proxy and the embedded S3 listen on
`service_address`, the address of this machine the nodes reach it at.

What an inventory node cannot take is said by `unsupported`: its WAL is a
plain directory on its own host (the FUSE volumes and their faults live on
this machine), and partitions and clocks are wired for namespaces only."""
from __future__ import annotations

import logging
from pathlib import Path

from harness.remote.inventory import Inventory
from harness.remote.process import RemoteProcess
from harness.remote.ssh import RemoteError, SshNode, local_address_for, open_nodes
from nemeses.s3_proxy import S3FaultProxy

log = logging.getLogger(__name__)

BROKER_LOG = "broker.log"   # the local copy of a node's process output, in the store's nodes/NAME/


def unsupported(inventory: Inventory, control: str) -> str | None:
    """None if reference nodes from `inventory` can take `control`, else why
    not; asked before anything connects."""
    where = f"inventory {inventory.source}"
    reasons = {
        "network": f"{where}: partitions on inventory nodes are not wired yet (the iptables rules over SSH "
                   f"run for --nodes netns:N, whose addresses the harness chose); use netns:N",
        "clock": f"{where}: clock skew on inventory nodes is not wired yet (libfaketime over SSH runs for "
                 f"--nodes netns:N); use netns:N",
        "volume": f"{where}: an inventory node keeps its WAL in a plain directory on its own host "
                  f"(workdir/volume); the FUSE volumes the volume faults act on live on this machine",
        "lose_unsynced": f"{where}: dropping unsynced writes needs the node's WAL on a FUSE volume of "
                         f"this machine; an inventory node's is a plain directory on its host",
    }
    if control == "s3_proxy":
        own = [n for n, spec in inventory.nodes.items() if spec.s3_endpoint]
        if own:
            return (f"{where}: node(s) {', '.join(own)} reach S3 at their own s3_endpoint, so an S3 fault "
                    f"proxy on this machine would not be on their path; drop s3_endpoint to use the "
                    f"harness's S3 through a proxy")
    return reasons.get(control)


class SshFaultControls:
    """Open SSH connections to every node of `inventory` (logging to
    log_root/NAME/ssh.log) and the controls a reference cluster asks of them."""

    def __init__(self, inventory: Inventory, log_root: Path, service_address: str | None = None,
                 ssh: dict[str, SshNode] | None = None):
        self.inventory = inventory
        self.names = list(inventory.nodes)
        self.log_root = Path(log_root)
        self.addresses = {n: spec.host for n, spec in inventory.nodes.items()}
        # every node must reach the services of this machine at one address
        self.service_address = service_address or local_address_for(next(iter(inventory.nodes.values())))
        self.ssh = ssh if ssh is not None else open_nodes(inventory, self.log_root)
        self.proxies: dict[str, S3FaultProxy] = {}
        self._stopped = False

    # --- what each node is ----------------------------------------------------------
    def ports(self, name: str) -> tuple[int, int]:
        """The node's Kafka and RPC ports on its host."""
        spec = self.inventory.nodes[name]
        return spec.broker_port, spec.rpc_port

    def python(self, name: str) -> str:
        return self.inventory.nodes[name].python

    def volume_dir(self, name: str) -> str:
        """The node's WAL directory on its host (made now)."""
        node = self.ssh[name]
        path = node.path("volume")
        node.run(["mkdir", "-p", path], check=True)
        return path

    def process(self, name: str) -> RemoteProcess:
        return RemoteProcess(name, self.ssh[name], [])

    def log_copy(self, name: str) -> Path | None:
        """Where the store keeps the node's log, when the host's file is not
        readable here as it is (None: it is, the host is this machine)."""
        return self.log_root / name / BROKER_LOG

    def fetch_logs(self) -> None:
        """Each node's process output from its host into its log copy (the
        last copy stays once the controls are stopped)."""
        if self._stopped:
            return
        for name, node in self.ssh.items():
            copy = self.log_copy(name)
            if copy is None:
                continue
            try:
                copy.write_bytes(node.read_bytes(self.process(name).log_path))
            except RemoteError as e:
                log.warning("fetching the log of %s: %s", name, e)

    # --- faults ----------------------------------------------------------------------
    def start_proxies(self, s3_endpoint: str, seed: int | None = None) -> None:
        for i, name in enumerate(self.names):
            self.proxies[name] = S3FaultProxy.for_endpoint(
                s3_endpoint, listen_host=self.service_address, name=f"s3-proxy-{name}",
                seed=None if seed is None else seed * 1000 + i).start()

    def node_s3_endpoint(self, name: str) -> str | None:
        """The S3 the node reaches by itself (its inventory s3_endpoint), or None."""
        return self.inventory.nodes[name].s3_endpoint

    def node_environment(self, name: str, inherited: dict) -> dict:
        return {}

    def stats(self) -> dict:
        return {"ssh": {"inventory": self.inventory.source, "service_address": self.service_address,
                        "nodes": {n: f"{s.user}@{s.address}" for n, s in self.inventory.nodes.items()}},
                **({"s3_proxies": {n: p.stats() for n, p in self.proxies.items()}} if self.proxies else {})}

    def stop(self) -> None:
        self.fetch_logs()
        self._stopped = True
        self._stop_steps([(f"proxy {n}", p.stop) for n, p in self.proxies.items()]
                         + [(f"ssh {n}", node.close) for n, node in self.ssh.items()])

    @staticmethod
    def _stop_steps(steps) -> None:
        for what, stop in steps:
            try:
                stop()
            except Exception:
                log.exception("stopping %s", what)
