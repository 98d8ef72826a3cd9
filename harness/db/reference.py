"""The embedded default system under test: a local reference cluster of N
nodes, each a real OS process on its own loopback address with its own
volume, all sharing one S3 (SeaweedFS started here unless an endpoint is
given). Every node is a controller candidate. Volumes are FUSE file systems
of the local volume service (`reference/volumes/local.py`), which the
controller also drives for failover and the volume faults drive to detach,
drop unsynced writes, slow down or fail (`--volumes directory`: plain
directories without I/O fencing, for machines without FUSE; failovers then
wait for the dead node's session to expire). With the s3-* or partition
faults each node reaches S3 through its own fault proxy; with the clock
fault each node's wall clock is under libfaketime (harness/db/local_faults.py).

Nodes over SSH (`harness/db/ssh_controls.py`): `--nodes netns:N` puts each
node in a network namespace of this machine with its own sshd;
`--nodes inventory:FILE` runs each node of a TOML inventory
(`harness/remote/inventory.py`) on its host, listening on the host's address
at its broker_port / rpc_port, its WAL in a plain directory of its workdir
there (no volume provider: a dead node's partitions wait for its restart),
S3 and the S3 fault proxies on the address of this machine the nodes reach."""
from __future__ import annotations

import json
import logging
import os
import random
import re
import shlex
import socket
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

from harness.db.base import Target, TargetUnavailable
from harness.db.local_faults import LocalFaultControls
from harness.db.local_process import LocalProcess
from harness.ports import free_port
from harness.s3server import DEFAULT_BUCKET, SeaweedS3
from harness.workloads.queue import PARTITIONS_PER_TOPIC

log = logging.getLogger(__name__)
REPO_ROOT = Path(__file__).resolve().parents[2]


class NodeFailedToStart(TargetUnavailable):
    pass


def load_brokers(path):
    """The inventory of `--nodes inventory:FILE`: its nodes with the broker
    role (every reference node is also a controller candidate)."""
    from harness.remote.inventory import Inventory, InventoryError, load_inventory
    try:
        inventory = load_inventory(path)
    except InventoryError as e:
        raise TargetUnavailable(f"--nodes inventory:{path}: {e}") from None
    brokers = {spec.name: spec for spec in inventory.with_role("broker")}
    if not brokers:
        raise TargetUnavailable(f"--nodes inventory:{path}: no node has the role \"broker\"")
    taken, workdirs = {}, {}
    for spec in brokers.values():
        other = workdirs.setdefault((spec.host, spec.port, spec.workdir), spec.name)
        if other != spec.name:
            raise TargetUnavailable(f"--nodes inventory:{path}: nodes {other} and {spec.name} share the workdir "
                                    f"{spec.workdir} on {spec.address} (their pid files and WAL would collide); "
                                    f"give each its own workdir")
        for port in (spec.broker_port, spec.rpc_port):
            other = taken.setdefault((spec.host, port), spec.name)
            if other != spec.name or spec.broker_port == spec.rpc_port:
                raise TargetUnavailable(f"--nodes inventory:{path}: nodes {other} and {spec.name} both listen on "
                                        f"{spec.host}:{port}; give each node of a host its own broker_port "
                                        f"and rpc_port")
    return Inventory(brokers, inventory.source)


FAILOVER_LINE = re.compile(r"highwater-failover (\{.*\})\s*$")
COUNTERS_LINE = re.compile(r"highwater-counters (\{.*\})\s*$")
RECOVERED_LINE = re.compile(r"recovered (\d+) records from WAL .*?: (\d+) replayed")
# Settings for chaos runs (a user's --broker-args come after and win): uploads
# by size and time, a small log cache and block cache, so that uploads,
# commits, trims and reads that miss the caches run many times per fault
# window instead of once at recovery; compaction every 2 s, so objects are
# rewritten (and readers meet the rewrites) while faults land; a small WAL
# (FUSE keeps the unsynced part of a volume in memory).
CHAOS_BROKER_ARGS = ["--upload-interval", "1s", "--upload-bytes", "256KiB", "--cache-size", "2MiB",
                     "--block-cache-size", "512KiB", "--wal-capacity", "64MiB", "--compaction-interval", "2s"]
REASSIGN_LINE = re.compile(r"highwater-reassignment (\{.*\})\s*$")


@dataclass
class BrokerNode:
    name: str
    node_id: int
    host: str
    port: int
    dir: Path
    rpc_port: int = 0
    volume_path: Path | None = None
    process: object = None     # harness.db.local_process.LocalProcess or harness.remote.process.RemoteProcess
    log_copy: Path | None = None   # a remote host's log, fetched into the store (None: read where it is)

    @property
    def address(self) -> str:
        return f"{self.host}:{self.port}"

    @property
    def rpc_address(self) -> str:
        return f"{self.host}:{self.rpc_port}"

    @property
    def volume_id(self) -> str:
        return f"vol-{self.name}"

    @property
    def volume(self) -> Path:
        """Where the node reaches its volume (its home attachment)."""
        return self.volume_path if self.volume_path is not None else self.dir / "volume"

    @property
    def log_path(self) -> Path:
        if self.log_copy is not None:
            return self.log_copy
        return self.process.log_path if self.process is not None else self.dir / "broker.log"

    @property
    def pid(self) -> int | None:
        return self.process.pid if self.process is not None else None

    @property
    def starts(self) -> int:
        return self.process.starts if self.process is not None else 0


@dataclass
class ReferenceCluster(Target):
    run_dir: Path
    nodes_count: int = 1
    s3_endpoint: str | None = None
    bucket: str = DEFAULT_BUCKET
    broker_args: list[str] = field(default_factory=list)
    start_timeout: float = 60.0
    session_timeout: str = "3s"
    heartbeat_interval: str = "500ms"
    nodes: dict[str, BrokerNode] = field(default_factory=dict)
    s3: SeaweedS3 | None = None
    volumes: object = None          # the volume provider (LocalVolumes or DirectoryVolumeProvider)
    volume_kind: str = "local"      # local (FUSE, fences I/O) or directory
    faults: tuple = ()              # the run's --nemesis: which fault controls to set up
    seed: int | None = None
    controls: LocalFaultControls | None = None
    chaos_settings: bool = False    # CHAOS_BROKER_ARGS before the user's (runs do; tools and benchmarks do not)
    netns_count: int = 0            # --nodes netns:N: nodes in network namespaces, driven over SSH
    netns: object = None            # the NetnsCluster
    inventory: object = None        # --nodes inventory:FILE: the Inventory whose hosts run the nodes, over SSH
    _volume_service: object = None

    name = "reference"
    OFFERS = ("process", "pause", "bug", "reassign")
    VOLUME_FAULTS = ("detach", "lose-unsynced", "disk-slow", "disk-error", "bad-sector")

    @classmethod
    def from_options(cls, options: dict, run_dir):
        bugs = [arg for b in options.get("bug") or () for arg in ("--bug", b)]
        nodes = str(options["nodes"])
        netns = int(nodes.split(":", 1)[1]) if nodes.startswith("netns:") else 0
        inventory = None
        if nodes.startswith("inventory:"):
            inventory = load_brokers(nodes.split(":", 1)[1])
        count = netns or (len(inventory.nodes) if inventory else int(nodes))
        return cls(run_dir, nodes_count=count, netns_count=netns, inventory=inventory,
                   s3_endpoint=options["s3_endpoint"],
                   bucket=options["bucket"], broker_args=shlex.split(options["broker_args"]) + bugs,
                   faults=tuple(options.get("nemesis") or ()), seed=options.get("seed"),
                   volume_kind=options.get("volumes") or "local", chaos_settings=True)

    @property
    def over_ssh(self) -> bool:
        """The nodes are driven over SSH (namespaces or an inventory's hosts)."""
        return bool(self.netns_count or self.inventory)

    @property
    def bootstrap_servers(self) -> str:
        return ",".join(n.address for n in self.nodes.values())

    @property
    def node_names(self) -> list[str]:
        if self.nodes:
            return list(self.nodes)
        return list(self.inventory.nodes) if self.inventory else [f"n{i}" for i in range(1, self.nodes_count + 1)]

    def node_logs(self) -> dict[str, Path]:
        return {n.name: n.log_path for n in self.nodes.values()}

    def unsupported(self, control: str) -> str | None:
        if self.netns_count:
            from harness.remote import netns
            why = netns.unsupported()
            if why:
                return f"--nodes netns:{self.netns_count}: {why}"
            if control == "clock":
                from nemeses.clock import ClockUnsupported, find_libfaketime
                try:
                    find_libfaketime()
                except ClockUnsupported as e:
                    return str(e)
                return None
            if control == "network":
                return None  # iptables inside each namespace, over SSH
        if self.inventory:
            from harness.db import ssh_controls
            why = ssh_controls.unsupported(self.inventory, control)
            if why:
                return why
            if control == "s3_proxy":
                return None
        if control == "volume":
            if self.volume_kind != "local":
                return "--volumes directory has no volume faults (FUSE volumes do: --volumes local)"
            if not Path("/dev/fuse").exists():
                return "FUSE volumes need /dev/fuse (apt-get install fuse3; in a container, --device /dev/fuse)"
            return None
        if control == "reassign" and self.nodes_count < 2:
            return "reassign moves partitions between brokers: it needs --nodes 2 or more"
        if control in self.OFFERS:
            return None
        if control in ("s3_proxy", "network", "clock"):
            return LocalFaultControls(self.node_names).unsupported(control)
        return f"the local reference target does not offer {control}"

    # --- fault controls ------------------------------------------------------------------
    def _wants(self, *faults: str) -> bool:
        return any(f in self.faults or any(f.endswith("*") and g.startswith(f[:-1]) for g in self.faults)
                   for f in faults)

    def volume(self, name: str):
        """The node's volume control (reference.volumes.base.VolumeControl)."""
        from reference.volumes.local import LocalVolumes
        provider = self.volumes if self.volumes is not None else LocalVolumes(socket_path="/nonexistent")
        return provider.control(f"vol-{name}", name)

    def s3_proxy(self, name: str):
        return self.controls.proxies[name]

    def network(self):
        return self.controls.network()

    def clock(self, name: str):
        return self.controls.clock(name)

    def node_s3_endpoint(self, name: str) -> str:
        proxy = self.controls.proxies.get(name) if self.controls else None
        if proxy is not None:
            return proxy.endpoint
        own = self.controls.node_s3_endpoint(name) if self.inventory else None
        return own or self.s3_endpoint

    def partition_owners(self) -> dict[tuple[str, int], str | None]:
        """Which node holds each partition's stream open now (None: closed)."""
        info = self.controller_call("cluster", timeout=10.0)
        names = {n.node_id: n.name for n in self.nodes.values()}
        return {(topic, partition): names.get(owner) for topic, partition, owner, _epoch in info["streams"]}

    def live_brokers(self) -> dict[str, int]:
        """Registered, unfenced nodes whose process runs: name -> node id."""
        info = self.controller_call("cluster", timeout=10.0)
        alive = {n.node_id: n.name for n in self.nodes.values() if n.pid is not None}
        return {alive[int(nid)]: int(nid) for nid, v in info["nodes"].items()
                if not v["fenced"] and int(nid) in alive}

    def reassign(self, moves: list[tuple[str, int, int]]) -> dict:
        """Move partitions ([topic, partition, target node id], ...) between
        live brokers; returns the controller's {"moved", "errors"}."""
        return self.controller_call("reassign", {"moves": [list(m) for m in moves]}, timeout=30.0)

    @property
    def s3_prefix(self) -> str:
        """A shared, given S3: each run keeps to its own key prefix, so what
        an earlier run left in the bucket is never read as this run's data."""
        if self.s3 is not None or self.run_dir is None:
            return ""
        given = self.broker_args[self.broker_args.index("--s3-prefix") + 1] if "--s3-prefix" in self.broker_args \
            else None
        return given if given is not None else f"{Path(self.run_dir).parent.name}/{Path(self.run_dir).name}"

    def setup(self) -> None:
        from harness.remote.ssh import RemoteError
        try:
            self._setup()
        except RemoteError as e:  # a host that refused us, a command that failed on it: named, exit 2
            raise TargetUnavailable(f"--nodes {self._nodes_option}: {e}") from None

    @property
    def _nodes_option(self) -> str:
        if self.inventory:
            return f"inventory:{self.inventory.source}"
        return f"netns:{self.netns_count}" if self.netns_count else str(self.nodes_count)

    def _setup(self) -> None:
        self.run_dir = Path(self.run_dir)
        names = self.node_names
        s3_host = "127.0.0.1"
        if self.inventory:
            from harness.db.ssh_controls import SshFaultControls
            self.controls = SshFaultControls(self.inventory, self.run_dir / "nodes")
            s3_host = self.controls.service_address
        elif self.netns_count:
            from harness.db.netns_controls import NetnsFaultControls
            from harness.remote.netns import NetnsCluster, NetnsUnavailable
            try:
                self.netns = NetnsCluster(self.run_dir, self.netns_count).setup()
            except NetnsUnavailable as e:
                raise TargetUnavailable(f"--nodes netns:{self.netns_count}: {e}") from None
            self.controls = NetnsFaultControls(self.netns)
            s3_host = self.controls.service_address
        else:
            # Each node on its own loopback address (a partition cuts by address).
            # addresses drawn per harness process: two runs of one seed on one
            # machine (parallel tests, a replay beside its original) must not share them
            self.controls = LocalFaultControls(names, random.Random(hash((self.seed, os.getpid()))))
        if self.s3_endpoint is None:
            self.s3 = SeaweedS3(self.run_dir / "s3", bucket=self.bucket, host=s3_host).start()
            self.s3_endpoint = self.s3.endpoint
        if not self.inventory:  # an inventory node's WAL is a directory on its host
            self._start_volumes()
        for i, name in enumerate(names, 1):
            node_dir = self.run_dir / "nodes" / name
            node_dir.mkdir(parents=True, exist_ok=True)
            if self.over_ssh:
                port, rpc_port = self.controls.ports(name)
                node = BrokerNode(name, i, self.controls.addresses[name], port, node_dir, rpc_port=rpc_port)
                node.process = self.controls.process(name)
                node.log_copy = self.controls.log_copy(name)
            else:
                node = BrokerNode(name, i, self.controls.addresses[name], free_port(), node_dir, rpc_port=free_port())
                node.process = LocalProcess(name, [], node_dir / "broker.log")
            if self.inventory:
                node.volume_path = Path(self.controls.volume_dir(name))
            else:
                self.volumes.create(node.volume_id)
                node.volume_path = Path(self.volumes.attach(node.volume_id, name).path)
            self.nodes[name] = node
        if self._wants("s3-*", "partition") or self.netns_count:  # a node's S3 path degraded or cut alone
            self.controls.start_proxies(self.s3_endpoint, self.seed)
        if self._wants("clock"):
            self.controls.start_clocks({n: node.dir for n, node in self.nodes.items()})
        # all at once: the first to take the lease is the controller, the others register with it
        for node in self.nodes.values():
            self.start_node(node.name, wait=False)
        for node in self.nodes.values():
            self.wait_ready(node.name)

    def _start_volumes(self) -> None:
        """The volume provider: FUSE volumes of a volume service of this run
        (lazy: what is not fsynced can be lost), or plain directories."""
        root = self.run_dir / "volumes"
        if self.volume_kind == "directory":
            from reference.volumes.directory import DirectoryVolumeProvider
            self.volumes = DirectoryVolumeProvider(root)
            self._provider_spec = f"directory:{root}"
            return
        why = self.unsupported("volume")
        if why:
            raise TargetUnavailable(f"{why}; or run with --volumes directory (no I/O fencing)")
        from reference.volumes.local import start_service
        self._volume_service = start_service(root)
        self.volumes = self._volume_service.client
        self._provider_spec = f"local:{root}"

    def broker_command(self, node: BrokerNode) -> list[str]:
        prefix = ["--s3-prefix", self.s3_prefix] if self.s3_prefix and "--s3-prefix" not in self.broker_args else []
        # an inventory's nodes have no volume provider: a dead node's partitions wait for its restart
        provider = [] if self.inventory else ["--volume-provider", self._provider_spec, "--volume-id", node.volume_id]
        python = self.controls.python(node.name) if self.inventory else sys.executable
        return [python, "-m", "reference.broker",
                "--node-id", str(node.node_id), "--listen", node.address,
                "--volume", str(node.volume), "--s3-endpoint", self.node_s3_endpoint(node.name),
                "--bucket", self.bucket, *prefix, "--rpc-listen", node.rpc_address, *provider,
                "--node-name", node.name, "--session-timeout", self.session_timeout,
                "--heartbeat-interval", self.heartbeat_interval,
                # the workload creates its topics; should a client's Metadata auto-create one first
                # (the broker's default, as Kafka's), it gets the workload's partition count
                "--default-partitions", str(PARTITIONS_PER_TOPIC),
                *(CHAOS_BROKER_ARGS if self.chaos_settings else ()), *self.broker_args]

    def _node_env(self, name: str) -> dict:
        """What a node's process starts with, beyond its host's environment."""
        extra = {"PYTHONUNBUFFERED": "1",
                 # the brokers run this checkout's reference/, wherever we run from
                 "PYTHONPATH": os.pathsep.join([str(REPO_ROOT)] + ([os.environ["PYTHONPATH"]]
                                                                   if os.environ.get("PYTHONPATH") else []))}
        if self.controls is not None:
            base = {**os.environ, **extra} if not self.over_ssh else extra
            extra.update(self.controls.node_environment(name, base))
        return extra

    def start_node(self, name: str, wait: bool = True) -> None:
        node = self.nodes[name]
        if node.pid is not None:
            return
        if node.volume_path is None:
            node.volume.mkdir(parents=True, exist_ok=True)
        node.process.argv = self.broker_command(node)
        env = self._node_env(name)
        node.process.env = env if self.over_ssh else {**os.environ, **env}
        node.process.start()
        if wait:
            self.wait_ready(name)

    def wait_ready(self, name: str) -> None:
        node = self.nodes[name]
        deadline = time.monotonic() + self.start_timeout
        while time.monotonic() < deadline:
            if node.pid is None:
                code = node.process.exited_by_itself()
                self._fetch_logs()
                raise NodeFailedToStart(f"broker {name} exited with {code} during start; see {node.log_path}")
            try:
                with socket.create_connection((node.host, node.port), timeout=0.5):
                    return
            except OSError:
                time.sleep(0.05)
        self._fetch_logs()
        raise NodeFailedToStart(f"broker {name} did not listen on {node.address} within "
                                f"{self.start_timeout:.0f}s; see {node.log_path}")

    def signal_node(self, name: str, sig: int) -> bool:
        return self.nodes[name].process.signal(sig)

    def pause_node(self, name: str) -> None:
        """SIGSTOP, and back once it is stopped: the node holds its sockets and answers nothing."""
        self.nodes[name].process.pause()

    def resume_node(self, name: str) -> None:
        self.nodes[name].process.resume()

    def kill_node(self, name: str) -> None:
        """SIGKILL: no flush, no goodbye; what was not fsynced is the node's loss."""
        self.nodes[name].process.kill()

    def died_on_their_own(self) -> dict[str, int]:
        """Nodes whose process exited without the harness stopping it: a
        broker that crashes by itself is a finding, never a silent outage."""
        out = {}
        for n in self.nodes.values():
            code = n.process.exited_by_itself() if n.process is not None else None
            if code is not None:
                out[n.name] = code
        return out

    def stop_node(self, name: str, grace: float = 5.0) -> None:
        self.nodes[name].process.stop(grace)

    # --- cluster knowledge -------------------------------------------------------
    def by_id(self, node_id: int) -> BrokerNode | None:
        return next((n for n in self.nodes.values() if n.node_id == node_id), None)

    def controller_call(self, method: str, params: dict | None = None, timeout: float = 10.0,
                        patience: float = 15.0):
        """Ask the controller (found from the lease in S3, else by trying each
        node). Under faults the role can be changing hands (every node answers
        not_controller for a moment): ask again until `patience` runs out."""
        from reference.cluster.rpc import RpcError, call_sync
        give_up = time.monotonic() + patience
        while True:
            tried = []
            lease = self.lease()
            order = [lease["rpc"]] if lease and lease.get("rpc") else []
            order += [n.rpc_address for n in self.nodes.values() if n.pid is not None and n.rpc_address not in order]
            for addr in order:
                try:
                    return call_sync(addr, method, params, timeout)
                except (RpcError, OSError, TimeoutError) as e:
                    tried.append(f"{addr}: {e!r}")
            if time.monotonic() >= give_up:
                raise RuntimeError(f"no controller answered {method}: {'; '.join(tried)}")
            time.sleep(0.3)

    def lease(self) -> dict | None:
        from reference.cluster.lease import LeaseStore
        from reference.storage.s3io import ObjectStore
        try:
            lease = LeaseStore(ObjectStore(self.s3_endpoint, self.bucket, timeout=5.0, prefix=self.s3_prefix)).read()
        except Exception:
            return None
        return None if lease is None else {"node": lease.node, "epoch": lease.epoch, "rpc": lease.rpc}

    def controller(self) -> str | None:
        lease = self.lease()
        node = self.by_id(lease["node"]) if lease else None
        return node.name if node else None

    def primaries(self) -> list[str]:
        """The controller and the node(s) leading the most partitions."""
        out = []
        ctl = self.controller()
        if ctl:
            out.append(ctl)
        try:
            info = self.controller_call("cluster", timeout=5.0, patience=2.0)
            led = {int(n): v["led"] for n, v in info["nodes"].items() if not v["fenced"]}
            if led and max(led.values()) > 0:
                top = max(led.values())
                for nid in sorted(n for n, v in led.items() if v == top):
                    node = self.by_id(nid)
                    if node and node.name not in out:
                        out.append(node.name)
        except Exception as e:
            log.warning("primaries: could not ask the controller (%s)", e)
        return out or self.node_names[:1]

    def failovers(self) -> list[dict]:
        """Every failover the controllers logged (one JSON line each), oldest first."""
        return self._logged(FAILOVER_LINE)

    def reassignments(self) -> list[dict]:
        return self._logged(REASSIGN_LINE)

    def _logged(self, pattern) -> list[dict]:
        out = []
        for node in self.nodes.values():
            if not node.log_path.exists():
                continue
            with open(node.log_path, errors="replace") as f:
                for line in f:
                    m = pattern.search(line)
                    if m:
                        try:
                            rec = json.loads(m.group(1))
                        except ValueError:
                            continue
                        rec["logged_by"] = node.name
                        rec["at"] = line[:23]
                        victim = self.by_id(rec.get("node", -1))
                        if victim:
                            rec["node_name"] = victim.name
                        out.append(rec)
        out.sort(key=lambda r: r["at"])
        return out

    def storage_paths(self) -> dict:
        """How often each storage path ran over the whole run: the nodes log
        their engine's cumulative counters now and then; a counter that goes
        down starts a new incarnation (a restart, a re-registration), so the
        last line of each incarnation is summed."""
        totals: dict[str, int] = {}

        def add(counts):
            for k, v in (counts or {}).items():
                totals[k] = totals.get(k, 0) + v
        for node in self.nodes.values():
            if not node.log_path.exists():
                continue
            last = None
            with open(node.log_path, errors="replace") as f:
                for line in f:
                    m = COUNTERS_LINE.search(line)
                    if not m:
                        continue
                    try:
                        now = json.loads(m.group(1))
                    except ValueError:
                        continue
                    if last and any(now.get(k, 0) < v for k, v in last.items()):
                        add(last)
                    last = now
            add(last)
        return totals

    def _recoveries(self) -> tuple[int, int]:
        """WAL recoveries (own restarts and failovers) and the records they replayed."""
        count = records = 0
        for node in self.nodes.values():
            if node.log_path.exists():
                for m in RECOVERED_LINE.finditer(node.log_path.read_text(errors="replace")):
                    count += 1
                    records += int(m.group(2))
        return count, records

    def _fetch_logs(self) -> None:
        """Nodes on other hosts: their logs into the store, where the run's
        knowledge (failovers, storage paths) is read from."""
        if self.inventory and self.controls is not None:
            self.controls.fetch_logs()

    def run_info(self) -> dict:
        self._fetch_logs()
        fo = self.failovers()
        totals = sorted(f["steps"]["total_ms"] for f in fo if "total_ms" in f.get("steps", {}))
        paths = self.storage_paths()
        paths["recoveries"], paths["recovered_records"] = self._recoveries()
        info = {"failovers": fo, "reassignments": self.reassignments(),
                "failover_total_ms": {"count": len(totals),
                                      "median": totals[len(totals) // 2] if totals else None,
                                      "max": totals[-1] if totals else None},
                "volumes": self.volume_kind, "storage_paths": paths}
        if self.controls is not None:
            info.update(self.controls.stats())
        return info

    def teardown(self) -> None:
        for name in list(self.nodes):
            try:
                self.stop_node(name, grace=3.0)   # (SIGCONT first: a paused node cannot act on SIGTERM)
            except Exception:
                log.exception("stopping %s", name)
                try:
                    self.kill_node(name)
                except Exception:
                    log.exception("killing %s", name)
        if self.controls is not None:
            self.controls.stop()
        if self._volume_service is not None:
            try:
                self._volume_service.stop()
            except Exception:
                log.exception("stopping the volume service")
        if self.s3 is not None:
            self.s3.stop()
        if self.netns is not None:
            self.netns.teardown()
