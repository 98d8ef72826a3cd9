"""Nodes in network namespaces, each with its own sshd, driven over real SSH
(paramiko) exactly like remote nodes: commands, background processes and
their kill/pause/resume, iptables partitions through the command runner,
the clock offset file, host-key checking, timeouts, clear errors, no secret
in the logs, and teardown of a crashed run's leftovers."""
from __future__ import annotations

import dataclasses
import http.server
import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest
from cryptography.hazmat.primitives import serialization

from harness.ports import free_port
from harness.remote import netns
from harness.remote.clock import RemoteClock
from harness.remote.inventory import Inventory, load_inventory
from harness.remote.netns import NetnsCluster, cleanup_leftovers
from harness.remote.ssh import (AuthenticationFailed, HostKeyMismatch, HostUnreachable, RemoteCommandTimeout,
                                SshNode, UnknownHostKey, open_nodes)
from nemeses.commands import CommandRunner, LocalRunner, check_completed

REASON = netns.unsupported()
pytestmark = [pytest.mark.timeout(120), pytest.mark.skipif(REASON is not None, reason=f"netns: {REASON}")]

PROBE = """
import socket, sys
try:
    socket.create_connection((sys.argv[1], int(sys.argv[2])), timeout=float(sys.argv[3])).close()
    print("ok")
except socket.timeout:
    print("timeout")
except ConnectionRefusedError:
    print("refused")
except OSError as e:
    print("error", e)
"""


@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    c = NetnsCluster(tmp_path_factory.mktemp("netns"), 3)
    c.setup()
    try:
        yield c
    finally:
        c.teardown()


@pytest.fixture(scope="module")
def nodes(cluster):
    nodes = cluster.open_nodes()
    try:
        yield nodes
    finally:
        for node in nodes.values():
            try:
                node.kill_all_background()
            finally:
                node.close()


def wait_until(condition, timeout=10.0, what="condition"):
    deadline = time.monotonic() + timeout
    delay = 0.01
    while True:
        value = condition()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(delay)
        delay = min(delay * 2, 0.2)


def http_get(url, timeout=1.0):
    """'ok:<body>', 'timeout' or 'refused', seen from the root namespace."""
    try:
        with urllib.request.urlopen(url, timeout=timeout) as r:
            return "ok:" + r.read().decode()
    except (TimeoutError, urllib.error.URLError) as e:
        reason = getattr(e, "reason", e)
        if isinstance(reason, TimeoutError) or "timed out" in str(reason):
            return "timeout"
        if isinstance(reason, ConnectionRefusedError):
            return "refused"
        raise


def probe(node: SshNode, host: str, port: int, timeout: float = 1.0) -> str:
    return node.run([node.spec.python, "-c", PROBE, host, str(port), str(timeout)], check=True).stdout.strip()


def start_http_server(node: SshNode, name: str, port: int, directory: str = "/") -> str:
    node.start_background(name, [node.spec.python, "-m", "http.server", str(port), "--bind", node.spec.host,
                                 "--directory", directory])
    url = f"http://{node.spec.host}:{port}/"
    wait_until(lambda: _answers(url), what=f"{name} listening on {url}")
    return url


def _answers(url):
    try:
        return http_get(url, timeout=0.5).startswith("ok")
    except OSError:
        return False


# --- the namespaces and SSH ------------------------------------------------------------

def test_each_node_is_its_own_namespace_with_its_own_address(cluster, nodes):
    root_ns = os.readlink("/proc/self/ns/net")
    seen = set()
    for name, node in nodes.items():
        r = node.run("readlink /proc/self/ns/net; ip -4 -o addr show dev eth0", timeout=10)
        assert r.returncode == 0, r.stderr
        ns, addr_line = r.stdout.splitlines()[:2]
        assert ns != root_ns and ns not in seen
        seen.add(ns)
        assert f" {cluster.nodes[name].address}/24 " in addr_line
        assert node.spec.host == cluster.nodes[name].address
        assert node.spec.host.startswith(f"{netns.NETWORK}.{cluster.subnet_index}.")
    assert len(seen) == 3
    # The log of the node records the command and its output.
    log = (cluster.run_dir / "nodes" / "n1" / "ssh.log").read_text()
    assert "$ readlink /proc/self/ns/net" in log and cluster.nodes["n1"].address in log and "exit 0" in log


def test_nodes_reach_a_service_on_the_bridge_address(cluster, nodes):
    class Hello(http.server.BaseHTTPRequestHandler):
        def do_GET(self):
            body = b"from-root"
            self.send_response(200)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args):
            pass

    server = http.server.ThreadingHTTPServer((cluster.bridge_address, free_port(cluster.bridge_address)), Hello)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        url = f"http://{cluster.bridge_address}:{server.server_address[1]}/"
        fetch = "import sys, urllib.request; print(urllib.request.urlopen(sys.argv[1], timeout=5).read().decode())"
        for node in nodes.values():
            r = node.run([node.spec.python, "-c", fetch, url], timeout=20, check=True)
            assert r.stdout.strip() == "from-root"
    finally:
        server.shutdown()
        server.server_close()


def test_background_process_is_paused_resumed_and_killed_over_ssh(nodes):
    n1 = nodes["n1"]
    url = start_http_server(n1, "web", free_port())
    pid = n1.pid("web")
    assert pid is not None and n1.state("web") == "running" and n1.alive("web")
    # Its own session and process group, so signals reach everything it started.
    stat = n1.run(["ps", "-o", "pid=,pgid=,sid=", "-p", str(pid)], check=True).stdout.split()
    assert stat == [str(pid)] * 3
    with pytest.raises(Exception, match="already running"):
        n1.start_background("web", ["sleep", "60"])

    assert n1.pause("web") is True
    assert n1.state("web") == "stopped"
    assert http_get(url, timeout=1.0) == "timeout"  # the kernel accepts; nobody answers

    assert n1.resume("web") is True
    assert n1.state("web") == "running"
    assert http_get(url, timeout=5.0).startswith("ok")

    assert n1.kill("web") is True
    assert n1.state("web") == "gone" and not n1.alive("web")
    assert http_get(url, timeout=1.0) == "refused"
    assert n1.exit_status("web") is None  # killed, not exited
    assert n1.kill("web") is False  # nothing left to kill


def test_background_exit_status_and_output(nodes):
    n2 = nodes["n2"]
    n2.start_background("short", "echo hello from $0; exit 7", env={"GREETING": "x"})
    wait_until(lambda: n2.state("short") == "gone", what="short exits")
    assert n2.exit_status("short") == 7
    out = n2.read_text("procs/short.out")
    assert "hello from" in out and "start:" in out
    # A name is reused only once the previous process is gone.
    n2.start_background("short", ["true"])
    wait_until(lambda: n2.exit_status("short") == 0, what="second run exits 0")


def test_partition_between_two_namespaces_over_ssh(cluster, nodes):
    n1, n2, n3 = nodes["n1"], nodes["n2"], nodes["n3"]
    port = free_port()
    start_http_server(n1, "target", port)
    a1, a2 = n1.spec.host, n2.spec.host
    assert probe(n2, a1, port) == "ok" and probe(n3, a1, port) == "ok"

    chain = f"HW-{cluster.run_id}"
    cut = {n1: a2, n2: a1}
    for node, other in cut.items():
        assert isinstance(node, CommandRunner)
        check_completed(node, ["iptables", "-w", "-N", chain], 10)
        check_completed(node, ["iptables", "-w", "-A", chain, "-s", other, "-j", "DROP"], 10)
        check_completed(node, ["iptables", "-w", "-I", "INPUT", "-j", chain], 10)
    try:
        assert probe(n2, a1, port) == "timeout"
        assert probe(n3, a1, port) == "ok"  # the third link still works
        assert probe(n1, a2, 22) == "timeout"
    finally:
        for node in cut:
            check_completed(node, ["iptables", "-w", "-D", "INPUT", "-j", chain], 10)
            check_completed(node, ["iptables", "-w", "-F", chain], 10)
            check_completed(node, ["iptables", "-w", "-X", chain], 10)
    assert probe(n2, a1, port) == "ok"
    assert probe(n1, a2, 22) == "ok"
    n1.kill("target")


def test_ssh_survives_cutting_the_bridge_address(cluster, nodes):
    """SSH comes from the control address, so a rule that cuts everything the
    root namespace's services and clients send (the bridge address) leaves
    the harness in control of the node."""
    n2 = nodes["n2"]
    port = free_port()
    start_http_server(n2, "bridged", port)
    chain = f"HW-{cluster.run_id}-B"
    rules = [["iptables", "-w", "-N", chain],
             ["iptables", "-w", "-A", chain, "-s", cluster.bridge_address, "-j", "DROP"],
             ["iptables", "-w", "-I", "INPUT", "-j", chain]]
    for argv in rules:
        check_completed(n2, argv, 10)
    try:
        n2.close()  # a fresh connection too, not only the established one
        peer = n2.run(["sh", "-c", "echo $SSH_CONNECTION"], check=True).stdout.split()[0]
        assert peer == cluster.control_address
        with socket.create_connection((n2.spec.host, port), timeout=5, source_address=(cluster.control_address, 0)):
            pass
        with pytest.raises(OSError):
            socket.create_connection((n2.spec.host, port), timeout=1, source_address=(cluster.bridge_address, 0))
    finally:
        for argv in (["iptables", "-w", "-D", "INPUT", "-j", chain], ["iptables", "-w", "-F", chain],
                     ["iptables", "-w", "-X", chain]):
            check_completed(n2, argv, 10)
    n2.kill("bridged")


def test_clock_offset_written_over_ssh_moves_a_running_process(nodes):
    n3 = nodes["n3"]
    clock = RemoteClock(n3)
    assert clock.unsupported() is None
    # select, not time.sleep: see nemeses.faketime on libfaketime 0.9.10.
    loop = "import select, time\nwhile True:\n    print(repr(time.time()), flush=True)\n    select.select([], [], [], 0.02)\n"
    n3.start_background("clocky", [n3.spec.python, "-c", loop], env=clock.env())

    def skew():
        last = n3.read_text("procs/clocky.out").strip().splitlines()[-1]
        return float(last) - time.time() if not last.startswith("===") else None

    wait_until(lambda: skew() is not None and abs(skew()) < 2, what="clocky prints its time")
    clock.set_offset(3600)
    wait_until(lambda: abs(skew() - 3600) < 2, what="the clock skewed by +1h")
    clock.set_offset(-600.5)
    wait_until(lambda: abs(skew() + 600.5) < 2, what="the clock skewed by -600.5 s")
    clock.reset()
    wait_until(lambda: abs(skew()) < 2, what="the clock back to real time")
    clock.strobe(delta=1000, period=1.5, duration=4)   # periods past the node's 1 s re-read
    wait_until(lambda: abs(skew() - 1000) < 2, what="the strobe's +1000 s")
    wait_until(lambda: not n3.alive("clock-strobe"), timeout=10, what="the strobe ends")
    wait_until(lambda: abs(skew()) < 2, what="the strobe left the clock at +0")
    n3.kill("clocky")


def test_sftp_put_get_and_atomic_write(tmp_path, nodes):
    n2 = nodes["n2"]
    blob = os.urandom(1 << 20)
    src = tmp_path / "blob"
    src.write_bytes(blob)
    remote = n2.put(src, "files/deep/blob", mode=0o600)
    assert remote == f"{n2.workdir}/files/deep/blob"
    assert n2.run(["stat", "-c", "%a %s", remote], check=True).stdout.split() == ["600", str(len(blob))]
    back = n2.get("files/deep/blob", tmp_path / "back" / "blob")
    assert back.read_bytes() == blob
    n2.write_text("files/offset", "+1.000000\n")
    assert n2.read_text("files/offset") == "+1.000000\n"
    assert n2.run("ls files", check=True).stdout.split() == ["deep", "offset"]  # no temporary left


def test_the_inventory_path_drives_the_same_nodes(tmp_path, cluster):
    n1 = cluster.inventory.nodes["n1"]
    inv_file = tmp_path / "inventory.toml"
    inv_file.write_text(f"""
[defaults]
key_file = "{n1.key_file}"
known_hosts = "{n1.known_hosts}"
command_timeout = "20s"

[nodes.alpha]
host = "{n1.host}"
workdir = "{tmp_path / 'alpha'}"
roles = ["broker", "controller"]
""")
    nodes = open_nodes(load_inventory(inv_file), tmp_path / "logs")
    try:
        r = nodes["alpha"].run(["hostname", "-I"], check=True)
        assert n1.host in r.stdout
        assert (tmp_path / "alpha").is_dir()  # open_nodes made the workdir (the file system is shared)
        assert (tmp_path / "logs" / "alpha" / "ssh.log").is_file()
    finally:
        nodes["alpha"].close()


# --- refusals and clear errors -------------------------------------------------------

def _node(cluster, tmp_path, **changes) -> SshNode:
    spec = dataclasses.replace(cluster.inventory.nodes["n1"], **changes)
    return SshNode(spec, tmp_path / "log")


def test_host_key_mismatch_is_refused(cluster, tmp_path):
    wrong = tmp_path / "known_hosts"
    other_key = (cluster.nodes["n2"].key_dir / "ssh_host_ed25519_key.pub").read_text()
    wrong.write_text(f"{cluster.nodes['n1'].address} {other_key}")
    node = _node(cluster, tmp_path, known_hosts=wrong)
    with pytest.raises(HostKeyMismatch) as e:
        node.connect()
    msg = str(e.value)
    assert "HOST KEY MISMATCH" in msg and cluster.nodes["n1"].address in msg and "node n1" in msg
    assert node._client is None
    assert "connect failed: HOST KEY MISMATCH" in (tmp_path / "log" / "ssh.log").read_text()


def test_unknown_host_is_refused_unless_the_option_is_on(cluster, tmp_path):
    empty = tmp_path / "known_hosts"
    empty.write_text("")
    with pytest.raises(UnknownHostKey, match="not in known_hosts .*accept_unknown_host_keys"):
        _node(cluster, tmp_path, known_hosts=empty).connect()
    with pytest.raises(UnknownHostKey, match="does not exist"):
        _node(cluster, tmp_path, known_hosts=tmp_path / "missing").connect()

    node = _node(cluster, tmp_path, known_hosts=tmp_path / "missing", accept_unknown_host_keys=True)
    with node:
        assert node.run(["true"]).returncode == 0
    with node:  # a reconnect keeps the key accepted for this run
        assert node.run(["true"]).returncode == 0
    log = (tmp_path / "log" / "ssh.log").read_text()
    assert log.count("WARNING: accepting UNKNOWN host key ssh-ed25519 SHA256:") == 1
    assert not (tmp_path / "missing").exists()  # trusted for this run only, never written


def test_command_past_its_timeout_is_killed_and_reported(nodes):
    n1 = nodes["n1"]
    started = time.monotonic()
    with pytest.raises(RemoteCommandTimeout) as e:
        n1.run(["sh", "-c", "echo before; exec sleep 37.4242"], timeout=0.5)
    assert time.monotonic() - started < 5
    assert isinstance(e.value, subprocess.TimeoutExpired)  # the runner contract, as LocalRunner
    assert "timed out after 0.5 s" in str(e.value) and "sleep 37.4242" in str(e.value) and "n1" in str(e.value)
    assert e.value.stdout == "before\n"
    assert n1.run(["pgrep", "-f", "sleep 37.4242"]).returncode == 1  # its process group is gone
    with pytest.raises(subprocess.TimeoutExpired):
        LocalRunner().run(["sleep", "5"], 0.2)


def test_unreachable_host_and_closed_port_are_named(cluster, tmp_path):
    nowhere = f"{netns.NETWORK}.{cluster.subnet_index}.250"
    started = time.monotonic()
    with pytest.raises(HostUnreachable) as e:
        _node(cluster, tmp_path, host=nowhere, connect_timeout=1.0).connect()
    assert time.monotonic() - started < 10
    assert f"cannot connect to {nowhere} port 22" in str(e.value)
    with pytest.raises(HostUnreachable, match=f"cannot connect to {cluster.nodes['n1'].address} port 2 "):
        _node(cluster, tmp_path, port=2).connect()
    with pytest.raises(HostUnreachable, match=r"node n1 \(root@\[10\.231\.\d+\.2\]:2\): cannot connect .*"
                                              r"\[command: uptime\]"):
        _node(cluster, tmp_path, port=2).run(["uptime"])  # a lazy connect names the command too


def test_bad_keys_are_refused_clearly(cluster, tmp_path, monkeypatch):
    stranger = tmp_path / "stranger"
    netns.new_key(stranger)
    with pytest.raises(AuthenticationFailed, match="authentication as root failed with key .*stranger"):
        _node(cluster, tmp_path, key_file=stranger).connect()
    garbage = tmp_path / "garbage"
    garbage.write_text("-----BEGIN OPENSSH PRIVATE KEY-----\nnot a key\n-----END OPENSSH PRIVATE KEY-----\n")
    with pytest.raises(AuthenticationFailed, match="garbage"):
        _node(cluster, tmp_path, key_file=garbage).connect()
    encrypted = _encrypted_client_key(cluster, tmp_path, b"correct horse battery")
    monkeypatch.delenv("HW_TEST_PASSPHRASE", raising=False)
    with pytest.raises(AuthenticationFailed, match="encrypted"):
        _node(cluster, tmp_path, key_file=encrypted).connect()


def _encrypted_client_key(cluster, tmp_path, passphrase: bytes) -> Path:
    key = serialization.load_ssh_private_key(cluster.client_key.read_bytes(), None)
    path = tmp_path / "encrypted_key"
    path.write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.OpenSSH,
                                       serialization.BestAvailableEncryption(passphrase)))
    path.chmod(0o600)
    return path


def test_no_secret_reaches_the_logs(cluster, nodes, tmp_path, monkeypatch):
    passphrase = "correct horse battery staple"
    encrypted = _encrypted_client_key(cluster, tmp_path, passphrase.encode())
    monkeypatch.setenv("HW_TEST_PASSPHRASE", passphrase)
    token = "s3cr3t-aws-key-0123456789"
    node = _node(cluster, tmp_path, key_file=encrypted, key_passphrase_env="HW_TEST_PASSPHRASE",
                 workdir=str(cluster.run_dir / "nodes" / "n1"))
    with node:
        # A command that prints the key file and one that prints a secret it was given.
        assert "OPENSSH PRIVATE KEY" in node.run(["cat", str(cluster.client_key)], check=True).stdout
        assert node.run("echo token=$TOKEN", secret_env={"TOKEN": token}, check=True).stdout == f"token={token}\n"
        node.start_background("secretive", ["sh", "-c", 'test -n "$TOKEN" && echo has-token'],
                              secret_env={"TOKEN": token})
        wait_until(lambda: node.exit_status("secretive") == 0, what="secretive exits")
        assert "has-token" in node.read_text("procs/secretive.out")
    key_lines = [line for line in cluster.client_key.read_text().splitlines() if not line.startswith("-----")]
    key_lines += [line for line in encrypted.read_text().splitlines() if not line.startswith("-----")]
    secrets = [passphrase, token] + key_lines
    written = [p for root in (tmp_path / "log", cluster.run_dir / "nodes") for p in root.rglob("*") if p.is_file()]
    assert any("token=***" in p.read_text(errors="replace") for p in written)  # the output was logged, redacted
    for path in written:
        text = path.read_text(errors="replace")
        for secret in secrets:
            assert secret not in text, f"{path} holds a secret"


# --- teardown ----------------------------------------------------------------------------

CRASHING_RUN = """
import json, os, sys, time
from harness.remote.netns import NetnsCluster
c = NetnsCluster(sys.argv[1], 2).setup()
print(json.dumps({"run_id": c.run_id, "namespaces": [n.namespace for n in c.nodes.values()],
                  "links": [c.bridge] + [n.host_veth for n in c.nodes.values()],
                  "sshd": [n.sshd.pid for n in c.nodes.values()]}), flush=True)
time.sleep(600)
"""


def _gone(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except FileNotFoundError:
        return True
    return state == "Z"


def test_leftovers_of_a_crashed_run_are_removed_and_live_runs_kept(cluster, nodes, tmp_path):
    proc = subprocess.Popen([sys.executable, "-c", CRASHING_RUN, str(tmp_path / "crashed")],
                            stdout=subprocess.PIPE, text=True, cwd=Path(__file__).resolve().parents[1])
    try:
        made = json.loads(proc.stdout.readline())
    finally:
        proc.send_signal(signal.SIGKILL)  # the harness dies without its teardown
        proc.wait()
    assert all(Path("/run/netns", ns).exists() for ns in made["namespaces"])
    assert all(Path("/sys/class/net", link).exists() for link in made["links"])
    assert not any(_gone(pid) for pid in made["sshd"])

    removed = cleanup_leftovers()
    assert made["run_id"] in removed and cluster.run_id not in removed
    assert not any(Path("/run/netns", ns).exists() for ns in made["namespaces"])
    assert not any(Path("/sys/class/net", link).exists() for link in made["links"])
    wait_until(lambda: all(_gone(pid) for pid in made["sshd"]), what="leftover sshd gone")
    # The live cluster of this module was left alone.
    assert nodes["n1"].run(["true"]).returncode == 0


def test_teardown_removes_namespaces_links_sshd_and_private_keys(tmp_path):
    c = NetnsCluster(tmp_path / "run", 2).setup()
    made_ns = [n.namespace for n in c.nodes.values()]
    made_links = [c.bridge] + [n.host_veth for n in c.nodes.values()]
    sshd = [n.sshd.pid for n in c.nodes.values()]
    with c.open_nodes()["n1"] as n1:
        n1.start_background("orphan", ["sleep", "300"])
        orphan = n1.pid("orphan")
    assert set(c.timings) >= {"keys", "network", "sshd", "total"}
    c.teardown()
    assert not any(Path("/run/netns", ns).exists() for ns in made_ns)
    assert not any(Path("/sys/class/net", link).exists() for link in made_links)
    wait_until(lambda: all(_gone(pid) for pid in sshd + [orphan]), what="sshd and the orphan gone")
    assert not c.client_key.exists() and not any(n.host_key.exists() for n in c.nodes.values())
    assert c.known_hosts.exists()  # public, kept for the record
    c.teardown()  # idempotent


def test_inventory_of_a_netns_cluster_is_plain_node_specs(cluster):
    inv = cluster.inventory
    assert isinstance(inv, Inventory) and inv.node_names == ["n1", "n2", "n3"]
    spec = inv.nodes["n2"]
    assert spec.accept_unknown_host_keys is False and spec.known_hosts == cluster.known_hosts
    assert spec.python == sys.executable and spec.workdir == str(cluster.run_dir / "nodes" / "n2")
    assert oct(cluster.client_key.stat().st_mode & 0o777) == "0o600"
    assert oct(cluster.nodes["n2"].host_key.stat().st_mode & 0o777) == "0o600"
