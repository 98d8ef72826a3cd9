"""The embedded default system under test: local reference brokers, each a
real OS process with its own volume directory, all sharing one S3 (SeaweedFS
started here unless an endpoint is given)."""
from __future__ import annotations

import logging
import os
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

from harness.ports import free_port
from harness.s3server import DEFAULT_BUCKET, SeaweedS3
from harness.workloads.queue import PARTITIONS_PER_TOPIC

log = logging.getLogger(__name__)


class NodeFailedToStart(RuntimeError):
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

    @property
    def volume(self) -> Path:
        return self.dir / "volume"

    @property
    def log_path(self) -> Path:
        return self.dir / "broker.log"

    @property
    def pid(self) -> int | None:
        return self.process.pid if self.process is not None and self.process.poll() is None else None


@dataclass
class ReferenceCluster:
    run_dir: Path
    nodes_count: int = 1
    s3_endpoint: str | None = None
    bucket: str = DEFAULT_BUCKET
    broker_args: list[str] = field(default_factory=list)
    start_timeout: float = 60.0
    nodes: dict[str, BrokerNode] = field(default_factory=dict)
    s3: SeaweedS3 | None = None

    name = "reference"

    @property
    def bootstrap_servers(self) -> str:
        return ",".join(n.address for n in self.nodes.values())

    def setup(self) -> None:
        self.run_dir = Path(self.run_dir)
        if self.s3_endpoint is None:
            self.s3 = SeaweedS3(self.run_dir / "s3", bucket=self.bucket).start()
            self.s3_endpoint = self.s3.endpoint
        for i in range(1, self.nodes_count + 1):
            name = f"n{i}"
            node_dir = self.run_dir / "nodes" / name
            node_dir.mkdir(parents=True, exist_ok=True)
            self.nodes[name] = BrokerNode(name, i, "127.0.0.1", free_port(), node_dir)
        for node in self.nodes.values():
            self.start_node(node.name)

    def broker_command(self, node: BrokerNode) -> list[str]:
        return [sys.executable, "-m", "reference.broker",
                "--node-id", str(node.node_id), "--listen", node.address,
                "--volume", str(node.volume), "--s3-endpoint", self.s3_endpoint,
                "--bucket", self.bucket,
                # the workload creates its topics; should a client's Metadata auto-create one first
                # (the broker's default, as Kafka's), it gets the workload's partition count
                "--default-partitions", str(PARTITIONS_PER_TOPIC), *self.broker_args]

    def start_node(self, name: str, wait: bool = True) -> None:
        node = self.nodes[name]
        if node.pid is not None:
            return
        node.volume.mkdir(parents=True, exist_ok=True)
        node.killed_by_us = False
        with open(node.log_path, "ab") as out:
            out.write(f"\n=== highwater: starting {name} (start #{node.starts + 1}) ===\n".encode())
            out.flush()
            node.process = subprocess.Popen(self.broker_command(node), stdout=out, stderr=subprocess.STDOUT,
                                            stdin=subprocess.DEVNULL, start_new_session=True,
                                            env={**os.environ, "PYTHONUNBUFFERED": "1"})
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
        if self.s3 is not None:
            self.s3.stop()
