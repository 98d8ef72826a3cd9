"""The embedded default system under test: local reference brokers, each a
real OS process with its own volume directory, all sharing one S3 (SeaweedFS
started here unless an endpoint is given)."""
from __future__ import annotations

import logging
import os
import random
import shlex
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

from harness.db.base import Target, TargetUnavailable
from harness.db.local_faults import LocalFaultControls
from harness.ports import free_port
from harness.s3server import DEFAULT_BUCKET, SeaweedS3

log = logging.getLogger(__name__)


class NodeFailedToStart(TargetUnavailable):
    pass


@dataclass
class BrokerNode:
    name: str
    node_id: int
    host: str
    port: int
    dir: Path
    process: subprocess.Popen | None = None
    starts: int = 0
    killed_by_us: bool = False

    @property
    def address(self) -> str:
        return f"{self.host}:{self.port}"

    volume_path: Path | None = None  # where the node reaches its volume (a FUSE mount when volumes are local)

    @property
    def volume(self) -> Path:
        return self.volume_path or self.dir / "volume"

    @property
    def log_path(self) -> Path:
        return self.dir / "broker.log"

    @property
    def pid(self) -> int | None:
        return self.process.pid if self.process is not None and self.process.poll() is None else None


@dataclass
class ReferenceCluster(Target):
    run_dir: Path
    nodes_count: int = 1
    s3_endpoint: str | None = None
    bucket: str = DEFAULT_BUCKET
    broker_args: list[str] = field(default_factory=list)
    start_timeout: float = 60.0
    nodes: dict[str, BrokerNode] = field(default_factory=dict)
    s3: SeaweedS3 | None = None
    faults: tuple = ()              # the run's --nemesis: which fault controls to set up
    seed: int | None = None
    controls: LocalFaultControls | None = None
    volumes: object | None = None   # the local volume service (reference.volumes.local), when FUSE-backed

    name = "reference"

    @classmethod
    def from_options(cls, options: dict, run_dir):
        bugs = [arg for b in options.get("bug") or () for arg in ("--bug", b)]
        return cls(run_dir, nodes_count=options["nodes"], s3_endpoint=options["s3_endpoint"],
                   bucket=options["bucket"], broker_args=shlex.split(options["broker_args"]) + bugs,
                   faults=tuple(options.get("nemesis") or ()), seed=options.get("seed"))

    @property
    def bootstrap_servers(self) -> str:
        return ",".join(n.address for n in self.nodes.values())

    @property
    def node_names(self) -> list[str]:
        return list(self.nodes) or [f"n{i}" for i in range(1, self.nodes_count + 1)]

    def node_logs(self):
        return {name: node.log_path for name, node in self.nodes.items()}

    OFFERS = ("process", "pause", "bug", "volume")
    VOLUME_FAULTS = ("detach", "lose-unsynced", "disk-slow", "disk-error")

    def unsupported(self, control: str) -> str | None:
        if control == "volume" and not Path("/dev/fuse").exists():
            return "FUSE volumes need /dev/fuse (apt-get install fuse3; in a container, --device /dev/fuse)"
        if control in self.OFFERS:
            return None
        if control in ("s3_proxy", "network", "clock"):
            return LocalFaultControls(self.node_names).unsupported(control)
        return (f"the local reference target does not offer {control} in this version "
                f"(it offers {', '.join(self.OFFERS)}, s3_proxy, network, clock)")

    # --- fault controls (harness/db/local_faults.py) -------------------------------------
    def _wants(self, *faults: str) -> bool:
        return any(f in self.faults or any(f.endswith("*") and g.startswith(f[:-1]) for g in self.faults)
                   for f in faults)

    def volume(self, name: str):
        """The node's volume control (reference.volumes.base.VolumeControl)."""
        from reference.volumes.local import LocalVolumes
        client = self.volumes.client if self.volumes is not None else LocalVolumes(socket_path="/nonexistent")
        return client.control(f"vol-{name}", name)

    def s3_proxy(self, name: str):
        return self.controls.proxies[name]

    def network(self):
        return self.controls.network()

    def clock(self, name: str):
        return self.controls.clocks[name]

    def node_s3_endpoint(self, name: str) -> str:
        proxy = self.controls.proxies.get(name) if self.controls else None
        return proxy.endpoint if proxy is not None else self.s3_endpoint

    def run_info(self) -> dict:
        return self.controls.stats() if self.controls else {}

    def pause_node(self, name: str) -> None:
        self.signal_node(name, signal.SIGSTOP)

    def resume_node(self, name: str) -> None:
        self.signal_node(name, signal.SIGCONT)

    def setup(self) -> None:
        self.run_dir = Path(self.run_dir)
        if self.s3_endpoint is None:
            self.s3 = SeaweedS3(self.run_dir / "s3", bucket=self.bucket).start()
            self.s3_endpoint = self.s3.endpoint
        names = [f"n{i}" for i in range(1, self.nodes_count + 1)]
        # Each node on its own loopback address (a partition cuts by address).
        self.controls = LocalFaultControls(names, random.Random(self.seed))
        for i, name in enumerate(names, 1):
            node_dir = self.run_dir / "nodes" / name
            node_dir.mkdir(parents=True, exist_ok=True)
            self.nodes[name] = BrokerNode(name, i, self.controls.addresses[name], free_port(), node_dir)
        if self._wants("s3-*", "partition"):  # a node's S3 path degraded or cut alone: one proxy each
            self.controls.start_proxies(self.s3_endpoint, self.seed)
        if self._wants("clock"):
            self.controls.start_clocks({n: node.dir for n, node in self.nodes.items()})
        if self._wants(*self.VOLUME_FAULTS):
            self._start_volumes()
        for node in self.nodes.values():
            self.start_node(node.name)

    def broker_command(self, node: BrokerNode) -> list[str]:
        prefix = []
        if self.s3 is None and "--s3-prefix" not in self.broker_args:
            # A shared, given S3: each run keeps to its own prefix, so what an
            # earlier run left in the bucket is never read as this run's data.
            prefix = ["--s3-prefix", f"{self.run_dir.parent.name}/{self.run_dir.name}"]
        return [sys.executable, "-m", "reference.broker",
                "--node-id", str(node.node_id), "--listen", node.address,
                "--volume", str(node.volume), "--s3-endpoint", self.node_s3_endpoint(node.name),
                "--bucket", self.bucket, *prefix, *self.broker_args]

    def _start_volumes(self) -> None:
        """Each node's volume a FUSE file system over a backing directory of
        the run (lazy: unsynced writes can be lost), attached to its node."""
        from reference.volumes.local import start_service
        self.volumes = start_service(self.run_dir / "volumes")
        for name, node in self.nodes.items():
            self.volumes.client.create(f"vol-{name}")
            node.volume_path = Path(self.volumes.client.attach(f"vol-{name}", name).path)

    def start_node(self, name: str, wait: bool = True) -> None:
        node = self.nodes[name]
        if node.pid is not None:
            return
        if node.volume_path is None:
            node.volume.mkdir(parents=True, exist_ok=True)
        node.killed_by_us = False
        with open(node.log_path, "ab") as out:
            out.write(f"\n=== highwater: starting {name} (start #{node.starts + 1}) ===\n".encode())
            out.flush()
            env = {**os.environ, "PYTHONUNBUFFERED": "1"}
            if self.controls is not None:
                env.update(self.controls.node_environment(name, env))
            node.process = subprocess.Popen(self.broker_command(node), stdout=out, stderr=subprocess.STDOUT,
                                            stdin=subprocess.DEVNULL, start_new_session=True, env=env)
        node.starts += 1
        if wait:
            self.wait_ready(name)

    def wait_ready(self, name: str) -> None:
        node = self.nodes[name]
        deadline = time.monotonic() + self.start_timeout
        while time.monotonic() < deadline:
            if node.process.poll() is not None:
                raise NodeFailedToStart(f"broker {name} exited with {node.process.returncode} during start; "
                                        f"see {node.log_path}")
            try:
                with socket.create_connection((node.host, node.port), timeout=0.5):
                    return
            except OSError:
                time.sleep(0.05)
        raise NodeFailedToStart(f"broker {name} did not listen on {node.address} within "
                                f"{self.start_timeout:.0f}s; see {node.log_path}")

    def signal_node(self, name: str, sig: int) -> bool:
        node = self.nodes[name]
        if node.pid is None:
            return False
        try:
            os.killpg(node.process.pid, sig)
        except ProcessLookupError:
            return False
        return True

    def kill_node(self, name: str) -> None:
        """SIGKILL: no flush, no goodbye; what was not fsynced is the node's loss."""
        node = self.nodes[name]
        node.killed_by_us = True
        if self.signal_node(name, signal.SIGKILL):
            node.process.wait(10)

    def died_on_their_own(self) -> dict[str, int]:
        """Nodes whose process exited without the harness stopping it: a
        broker that crashes by itself is a finding, never a silent outage."""
        return {n.name: n.process.returncode for n in self.nodes.values()
                if n.process is not None and n.process.poll() is not None and not n.killed_by_us}

    def stop_node(self, name: str, grace: float = 5.0) -> None:
        node = self.nodes[name]
        node.killed_by_us = True
        if not self.signal_node(name, signal.SIGTERM):
            return
        try:
            node.process.wait(grace)
        except subprocess.TimeoutExpired:
            self.kill_node(name)

    def teardown(self) -> None:
        for name in list(self.nodes):
            try:
                self.signal_node(name, signal.SIGCONT)  # a paused node cannot act on SIGTERM
                self.stop_node(name, grace=3.0)
            except Exception:
                log.exception("stopping %s", name)
                self.kill_node(name)
        if self.controls is not None:
            self.controls.stop()
        if self.volumes is not None:
            try:
                self.volumes.stop()
            except Exception:
                log.exception("stopping the volume service")
        if self.s3 is not None:
            self.s3.stop()
