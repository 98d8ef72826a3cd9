"""`--nodes netns:N`: N network namespaces on this machine, each a node with
its own address and its own sshd, driven over real SSH by the same code as
remote nodes (`harness.remote.ssh`).

Topology: a bridge in the root namespace holds 10.231.X.1/24 (X is claimed
per run, so concurrent runs never share a subnet) and 10.231.X.254, the
address SSH connects from (`control_address`); node i lives in namespace
`hwn-<run id>-<name>` with `eth0` = 10.231.X.(i+1)/24, a veth whose other end
is a port of the bridge. The root namespace reaches every node; every node
reaches services bound on the bridge address (`bridge_address`: put S3 and
its fault proxies there); nodes reach each other through the bridge, so
iptables rules inside a namespace cut exactly that node's links.

Each node's sshd listens on its address with a host key made for the run;
one client key made for the run is the only authorized key. Keys live in
`<run_dir>/netns/` (0600); teardown deletes the private ones.

Names begin with `hwn` and embed the run id, whose first byte is the
subnet; the subnet is held with a flock in /run/highwater-netns for the
run's life, so a crashed run's leftovers are recognisable (their lock is
free) and `cleanup_leftovers()` removes them without touching a live run's.
"""
from __future__ import annotations

import dataclasses
import fcntl
import logging
import os
import re
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from harness.remote.inventory import Inventory, NodeSpec
from harness.remote.ssh import SshNode, open_nodes

log = logging.getLogger(__name__)

PREFIX = "hwn"
LOCK_DIR = Path("/run/highwater-netns")
SSHD = "/usr/sbin/sshd"
NETWORK = "10.231"  # 10.231.X.0/24, X claimed per run
MAX_NODES = 250
_NS_RE = re.compile(rf"^{PREFIX}-([0-9a-f]{{6}})-")
_LINK_RE = re.compile(rf"^{PREFIX}([0-9a-f]{{6}})")


class NetnsUnavailable(RuntimeError):
    """Network namespaces cannot be used here; the message says why and what to do."""


def unsupported() -> str | None:
    """None if `--nodes netns:N` can run on this machine, else the reason."""
    if os.geteuid() != 0:
        return "network namespaces need root (CAP_NET_ADMIN and CAP_SYS_ADMIN); run as root or use --nodes N"
    for tool in ("ip", "nsenter"):
        if shutil.which(tool) is None:
            return f"`{tool}` is not installed (Debian: apt-get install iproute2 util-linux)"
    if not os.access(SSHD, os.X_OK):
        return f"{SSHD} is not installed (Debian: apt-get install openssh-server)"
    if not Path("/proc/self/ns/net").exists():
        return "this kernel has no network namespaces"
    return None


@dataclass
class NetnsNode:
    name: str
    namespace: str
    address: str
    host_veth: str
    node_dir: Path
    key_dir: Path
    sshd: subprocess.Popen | None = None

    @property
    def host_key(self) -> Path:
        return self.key_dir / "ssh_host_ed25519_key"


class NetnsCluster:
    """N namespaces with sshd. `setup()` creates everything (or raises with
    the reason, having removed what it made); `teardown()` removes it all,
    never raises. Use `inventory` / `open_nodes()` to drive the nodes."""

    def __init__(self, run_dir, count: int, *, names: list[str] | None = None, ssh_port: int = 22,
                 start_timeout: float = 10.0, command_timeout: float = 60.0):
        names = list(names) if names is not None else [f"n{i}" for i in range(1, count + 1)]
        if len(names) != count or count < 1 or count > MAX_NODES:
            raise ValueError(f"netns: node count must be 1..{MAX_NODES} (and match the names), not {count}")
        self.run_dir = Path(run_dir).resolve()
        self.names = names
        self.ssh_port = ssh_port
        self.start_timeout = start_timeout
        self.command_timeout = command_timeout
        self.subnet_index: int | None = None
        self.run_id: str | None = None
        self.nodes: dict[str, NetnsNode] = {}
        self._lock_fd: int | None = None
        self.timings: dict[str, float] = {}

    # --- public view ----------------------------------------------------------------
    @property
    def bridge(self) -> str:
        return f"{PREFIX}{self.run_id}br"

    @property
    def bridge_address(self) -> str:
        """Where the root namespace's services must listen to be reached by the nodes."""
        return f"{NETWORK}.{self.subnet_index}.1"

    @property
    def control_address(self) -> str:
        """A second address of the bridge, the one SSH connects from: partition
        rules that cut the bridge address (S3, clients) leave the harness's
        control of the nodes alone as long as they spare this one."""
        return f"{NETWORK}.{self.subnet_index}.254"

    @property
    def key_dir(self) -> Path:
        return self.run_dir / "netns"

    @property
    def client_key(self) -> Path:
        return self.key_dir / "client_key"

    @property
    def known_hosts(self) -> Path:
        return self.key_dir / "known_hosts"

    @property
    def inventory(self) -> Inventory:
        """The nodes as an inventory: the same NodeSpec a remote node has."""
        return Inventory({n.name: NodeSpec(name=n.name, host=n.address, port=self.ssh_port, user="root",
                                           key_file=self.client_key, known_hosts=self.known_hosts,
                                           workdir=str(n.node_dir), python=sys.executable,
                                           source_address=self.control_address,
                                           connect_timeout=5.0, command_timeout=self.command_timeout)
                          for n in self.nodes.values()}, source=f"netns:{len(self.nodes)}")

    def open_nodes(self, log_root=None, **spec_changes) -> dict[str, SshNode]:
        """Connected SshNodes, logging to <log_root or run_dir/nodes>/<name>/ssh.log.
        `spec_changes` (e.g. s3_endpoint=...) apply to every node's spec."""
        inv = self.inventory
        if spec_changes:
            inv = Inventory({k: dataclasses.replace(v, **spec_changes) for k, v in inv.nodes.items()}, inv.source)
        return open_nodes(inv, Path(log_root) if log_root else self.run_dir / "nodes")

    def __enter__(self):
        return self.setup()

    def __exit__(self, *exc):
        self.teardown()

    # --- setup ------------------------------------------------------------------------
    def setup(self) -> "NetnsCluster":
        reason = unsupported()
        if reason:
            raise NetnsUnavailable(f"--nodes netns: {reason}")
        started = time.monotonic()
        try:
            self._claim_subnet()
            cleanup_leftovers(own_subnet=self.subnet_index)
            self.run_id = f"{self.subnet_index:02x}{secrets.token_hex(2)}"
            for i, name in enumerate(self.names, start=1):
                self.nodes[name] = NetnsNode(name=name, namespace=f"{PREFIX}-{self.run_id}-{name}",
                                             address=f"{NETWORK}.{self.subnet_index}.{i + 1}",
                                             host_veth=f"{PREFIX}{self.run_id}h{i}",
                                             node_dir=self.run_dir / "nodes" / name, key_dir=self.key_dir / name)
            t = time.monotonic()
            self._write_keys()
            self.timings["keys"] = time.monotonic() - t
            t = time.monotonic()
            self._create_network()
            self.timings["network"] = time.monotonic() - t
            t = time.monotonic()
            self._start_sshds()
            self.timings["sshd"] = time.monotonic() - t
        except BaseException as e:
            self.teardown()
            if isinstance(e, (NetnsUnavailable, KeyboardInterrupt)):
                raise
            raise NetnsUnavailable(f"--nodes netns: setting up {len(self.names)} namespaces failed: {e}") from e
        self.timings["total"] = time.monotonic() - started
        log.info("netns: %d nodes on %s.%d.0/24 (run %s) in %.3f s", len(self.nodes), NETWORK,
                 self.subnet_index, self.run_id, self.timings["total"])
        return self

    def _claim_subnet(self) -> None:
        LOCK_DIR.mkdir(mode=0o755, parents=True, exist_ok=True)
        in_use = _routed_subnets()
        for x in range(256):
            fd = _try_lock(x)
            if fd is None:
                continue
            if x in in_use and not _ours_by_name(x):
                os.close(fd)  # someone else's network (not a Highwater run) uses it
                continue
            self.subnet_index, self._lock_fd = x, fd
            return
        raise NetnsUnavailable(f"no free subnet in {NETWORK}.0.0/16 (256 runs at once?)")

    def _write_keys(self) -> None:
        self.key_dir.mkdir(parents=True, exist_ok=True)
        client_pub = new_key(self.client_key)
        _write_file(self.key_dir / "authorized_keys", client_pub + "\n", 0o600)
        known = []
        for node in self.nodes.values():
            node.key_dir.mkdir(parents=True, exist_ok=True)
            node.node_dir.mkdir(parents=True, exist_ok=True)
            host_pub = new_key(node.host_key)
            host = node.address if self.ssh_port == 22 else f"[{node.address}]:{self.ssh_port}"
            known.append(f"{host} {host_pub}\n")
            _write_file(node.key_dir / "sshd_config",
                        sshd_config(node.address, self.ssh_port, node.host_key, self.key_dir / "authorized_keys"),
                        0o600)
        _write_file(self.known_hosts, "".join(known), 0o644)

    def _create_network(self) -> None:
        root = [f"link add {self.bridge} type bridge",
                f"addr add {self.bridge_address}/24 dev {self.bridge}",
                f"addr add {self.control_address}/24 dev {self.bridge}",
                f"link set {self.bridge} up"]
        for n in self.nodes.values():
            root += [f"netns add {n.namespace}",
                     f"link add {n.host_veth} type veth peer name eth0 netns {n.namespace}",
                     f"link set {n.host_veth} master {self.bridge}",
                     f"link set {n.host_veth} up"]
        _ip_batch(root)
        for n in self.nodes.values():
            _ip_batch([f"addr add {n.address}/24 dev eth0", "link set eth0 up", "link set lo up"],
                      namespace=n.namespace)

    def _start_sshds(self) -> None:
        Path("/run/sshd").mkdir(mode=0o755, exist_ok=True)  # sshd's privilege-separation directory
        for n in self.nodes.values():
            with open(n.node_dir / "sshd.log", "ab") as out:
                n.sshd = subprocess.Popen(
                    ["nsenter", f"--net=/run/netns/{n.namespace}", SSHD, "-D", "-e", "-f",
                     str(n.key_dir / "sshd_config")],
                    stdin=subprocess.DEVNULL, stdout=out, stderr=out, start_new_session=True)
        deadline = time.monotonic() + self.start_timeout
        for n in self.nodes.values():
            _wait_listening(n, self.ssh_port, deadline)

    # --- teardown ---------------------------------------------------------------------
    def teardown(self) -> None:
        """Kill every process in the namespaces (sshd, sessions, whatever was
        started over SSH), delete the namespaces, veths and bridge, the
        private keys, and release the subnet. Never raises."""
        try:
            if self.run_id is not None:
                _remove_run(self.run_id, [n.namespace for n in self.nodes.values()],
                            [n.host_veth for n in self.nodes.values()] + [self.bridge])
            for n in self.nodes.values():
                if n.sshd is not None:
                    _reap(n.sshd)
                n.host_key.unlink(missing_ok=True)
            self.client_key.unlink(missing_ok=True)
        except Exception:  # noqa: BLE001 - teardown must finish; leftovers are found by name later
            log.exception("netns teardown")
        finally:
            if self._lock_fd is not None:
                os.close(self._lock_fd)
                self._lock_fd = None


# --- leftovers --------------------------------------------------------------------------

def cleanup_leftovers(own_subnet: int | None = None) -> list[str]:
    """Remove the namespaces, links and processes of Highwater runs that
    died without their teardown (their subnet lock is free). Returns the run
    ids removed. A run in progress, in this process or another, is left alone."""
    if os.geteuid() != 0 or shutil.which("ip") is None:
        return []
    runs: dict[str, tuple[list[str], list[str]]] = {}
    for ns in _namespaces():
        m = _NS_RE.match(ns)
        if m:
            runs.setdefault(m.group(1), ([], []))[0].append(ns)
    for link in _links():
        m = _LINK_RE.match(link)
        if m:
            runs.setdefault(m.group(1), ([], []))[1].append(link)
    removed = []
    for run_id, (namespaces, links) in runs.items():
        subnet = int(run_id[:2], 16)
        if subnet == own_subnet:
            fd = None  # we hold that lock: whatever is named after it is a dead run's
        else:
            LOCK_DIR.mkdir(mode=0o755, parents=True, exist_ok=True)
            fd = _try_lock(subnet)
            if fd is None:
                continue  # a live run owns it
        try:
            _remove_run(run_id, namespaces, links)
            removed.append(run_id)
            log.warning("netns: removed leftovers of run %s: %s", run_id, ", ".join(namespaces + links))
        finally:
            if fd is not None:
                os.close(fd)
    return removed


def _remove_run(run_id: str, namespaces: list[str], links: list[str]) -> None:
    existing = set(_namespaces())
    namespaces = [ns for ns in namespaces if ns in existing]
    for ns in namespaces:
        pids = subprocess.run(["ip", "netns", "pids", ns], capture_output=True, text=True).stdout.split()
        for pid in pids:
            try:
                os.kill(int(pid), signal.SIGKILL)
            except (ProcessLookupError, ValueError):
                pass
    existing_links = set(_links())
    cmds = [f"link del {link}" for link in links if link in existing_links]
    cmds += [f"netns del {ns}" for ns in namespaces]
    if cmds:
        _ip_batch(cmds, force=True)


# --- small helpers ------------------------------------------------------------------------

def _ip_batch(commands: list[str], namespace: str | None = None, force: bool = False) -> None:
    argv = ["ip"] + (["-n", namespace] if namespace else []) + (["-force"] if force else []) + ["-batch", "-"]
    r = subprocess.run(argv, input="\n".join(commands) + "\n", capture_output=True, text=True, timeout=30)
    if r.returncode != 0 and not force:
        raise RuntimeError(f"`{' '.join(argv)}` failed ({r.returncode}): {r.stderr.strip()}")


def _namespaces() -> list[str]:
    try:
        return os.listdir("/run/netns")
    except FileNotFoundError:
        return []


def _links() -> list[str]:
    return [p.name for p in Path("/sys/class/net").iterdir()]


def _routed_subnets() -> set[int]:
    r = subprocess.run(["ip", "-4", "-o", "route", "show"], capture_output=True, text=True)
    found = set()
    for m in re.finditer(rf"^{re.escape(NETWORK)}\.(\d+)\.", r.stdout, re.M):
        found.add(int(m.group(1)))
    return found


def _ours_by_name(subnet: int) -> bool:
    """A route on that subnet belongs to a (dead) Highwater run's bridge."""
    prefix = f"{PREFIX}{subnet:02x}"
    return any(link.startswith(prefix) and link.endswith("br") for link in _links())


def _try_lock(subnet: int) -> int | None:
    fd = os.open(LOCK_DIR / f"subnet-{subnet}.lock", os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        os.close(fd)
        return None
    return fd


def new_key(path: Path) -> str:
    """Write a fresh Ed25519 private key (OpenSSH format, 0600) and its .pub;
    return the public line. (Also the tests' loopback sshd's keys.)"""
    key = Ed25519PrivateKey.generate()
    private = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.OpenSSH,
                                serialization.NoEncryption())
    public = key.public_key().public_bytes(serialization.Encoding.OpenSSH,
                                           serialization.PublicFormat.OpenSSH).decode()
    _write_file(path, private, 0o600)
    _write_file(path.with_name(path.name + ".pub"), public + "\n", 0o644)
    return public


def _write_file(path: Path, data, mode: int) -> None:
    path.unlink(missing_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, mode)
    with os.fdopen(fd, "wb") as f:
        f.write(data.encode() if isinstance(data, str) else data)


def sshd_config(address: str, port: int, host_key: Path, authorized_keys: Path) -> str:
    """An sshd of the harness's own: one listen address, one host key, one
    authorized keys file, keys only, no PAM. (Also the tests' loopback sshd.)"""
    return "\n".join([
        f"ListenAddress {address}:{port}",
        f"HostKey {host_key}",
        f"AuthorizedKeysFile {authorized_keys}",
        "PidFile none",
        "PermitRootLogin prohibit-password",
        "PubkeyAuthentication yes",
        "PasswordAuthentication no",
        "KbdInteractiveAuthentication no",
        "UsePAM no",
        # The run directory may sit under a world-writable /tmp.
        "StrictModes no",
        "Subsystem sftp internal-sftp",
        "PrintMotd no",
        "PrintLastLog no",
        "X11Forwarding no",
        "AllowTcpForwarding no",
        "MaxSessions 100",
        "MaxStartups 100:30:200",
        "LoginGraceTime 30",
        "LogLevel INFO",
        # bash sources ~/.bashrc for ssh commands only at shell level 1; an
        # interactive rc file (pyenv init here: 0.3 s) has no business in a node.
        "SetEnv SHLVL=1",
        "",
    ])


def _wait_listening(node: NetnsNode, port: int, deadline: float) -> None:
    delay = 0.002
    while True:
        if node.sshd.poll() is not None:
            tail = (node.node_dir / "sshd.log").read_text(errors="replace").strip().splitlines()[-5:]
            raise RuntimeError(f"sshd of {node.name} in {node.namespace} exited {node.sshd.returncode}: "
                               + " / ".join(tail))
        try:
            with socket.create_connection((node.address, port), timeout=1.0):
                return
        except OSError:
            if time.monotonic() > deadline:
                raise RuntimeError(f"sshd of {node.name} does not listen on {node.address}:{port}") from None
            time.sleep(delay)
            delay = min(delay * 2, 0.05)


def _reap(proc: subprocess.Popen) -> None:
    if proc.poll() is None:
        proc.kill()
    try:
        proc.wait(timeout=5)
    except subprocess.TimeoutExpired:
        log.warning("netns: sshd %d did not exit after SIGKILL", proc.pid)
