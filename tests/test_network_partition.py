"""Partitions with real iptables rules: on this host's loopback (every node on
its own 127.x address) and inside network namespaces. A cut link refuses
traffic, other links still carry it, and the heal restores it."""
from __future__ import annotations

import os
import random
import shutil
import signal
import socket
import subprocess
import sys
import textwrap
import threading

import pytest

from nemeses import network as net
from nemeses.network import Endpoint, HostNetwork, LocalRunner, LoopbackNetwork, Topology

pytestmark = [pytest.mark.timeout(120),
              pytest.mark.skipif(os.geteuid() != 0 or shutil.which("iptables") is None,
                                 reason="partitions need root and iptables")]


class Listener:
    """A TCP server on one address that echoes what it gets."""

    def __init__(self, address: str, port: int = 0):
        self.sock = socket.socket()
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.sock.bind((address, port))
        self.sock.listen(16)
        self.address, self.port = self.sock.getsockname()
        self._stop = False
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self):
        while not self._stop:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            threading.Thread(target=self._echo, args=(conn,), daemon=True).start()

    @staticmethod
    def _echo(conn):
        with conn:
            try:
                while data := conn.recv(4096):
                    conn.sendall(data)
            except OSError:
                pass

    def close(self):
        self._stop = True
        self.sock.close()


def reaches(src: str | None, dst: tuple[str, int], timeout: float = 3.0) -> bool:
    """A TCP connect from `src` (bound) to `dst` and one echoed round trip
    (a generous timeout: a busy machine must not fake a partition)."""
    s = socket.socket()
    s.settimeout(timeout)
    try:
        if src:
            s.bind((src, 0))
        s.connect(dst)
        s.sendall(b"ping")
        return s.recv(4) == b"ping"
    except OSError:
        return False
    finally:
        s.close()


def blocked(src: str | None, dst: tuple[str, int]) -> bool:
    """No round trip within 0.7 s (a dropped SYN is retried only after 1 s)."""
    return not reaches(src, dst, timeout=0.7)


def chains() -> str:
    return subprocess.run(["iptables", "-w", "10", "-S"], capture_output=True, text=True, check=True).stdout


@pytest.fixture
def cluster():
    """Three nodes and an S3 proxy address on a loopback /24 of their own."""
    rng = random.Random()
    addrs = net.loopback_addresses(["n1", "n2", "n3", "s3"], rng)
    s3_addr = addrs.pop("s3")
    listeners = {n: Listener(a) for n, a in addrs.items()}
    proxies = {n: Listener(s3_addr) for n in addrs}          # each node's own S3 proxy port
    topo = Topology(addrs, client="127.0.0.1",
                    s3={n: Endpoint(s3_addr, (p.port,)) for n, p in proxies.items()})
    network = LoopbackNetwork(topo).setup()
    yield network, addrs, listeners, proxies
    network.teardown()
    for lst in list(listeners.values()) + list(proxies.values()):
        lst.close()


def test_cut_link_refuses_traffic_others_flow_heal_restores(cluster):
    network, addrs, listeners, _ = cluster
    n1, n2, n3 = (addrs[n] for n in ("n1", "n2", "n3"))
    to = {n: (lst.address, lst.port) for n, lst in listeners.items()}
    assert reaches(n1, to["n2"]) and reaches(n2, to["n1"])
    cut = network.cut([("n1", "n2")])
    assert blocked(n1, to["n2"]) and blocked(n2, to["n1"])
    assert reaches(n1, to["n3"]) and reaches(n3, to["n2"]) and reaches(None, to["n2"])   # client too
    assert network.cut_links == {("n1", "n2")}
    network.heal(cut)
    assert reaches(n1, to["n2"]) and reaches(n2, to["n1"])
    network.heal(cut)                                               # healing twice is harmless


def test_established_connection_stalls_during_a_cut_and_resumes_after(cluster):
    network, addrs, listeners, _ = cluster
    s = socket.create_connection((listeners["n2"].address, listeners["n2"].port), timeout=5,
                                 source_address=(addrs["n1"], 0))
    s.sendall(b"a")
    assert s.recv(1) == b"a"
    network.cut([("n1", "n2")])
    s.settimeout(1.0)
    s.sendall(b"b")                      # accepted by the kernel, never delivered
    with pytest.raises(socket.timeout):
        s.recv(1)
    network.heal()
    s.settimeout(30)                     # TCP retransmits once the link is back
    assert s.recv(1) == b"b"
    s.close()


def test_client_and_s3_links(cluster):
    network, addrs, listeners, proxies = cluster
    to = {n: (lst.address, lst.port) for n, lst in listeners.items()}
    s3 = {n: (p.address, p.port) for n, p in proxies.items()}
    network.cut([("client", "n1"), ("n2", "s3")])
    assert blocked(None, to["n1"])                      # client (127.0.0.1) -> n1
    assert reaches(None, to["n2"]) and reaches(addrs["n3"], to["n1"])
    assert blocked(addrs["n2"], s3["n2"]) and blocked(None, s3["n2"])   # n2's S3 path, any source
    assert reaches(addrs["n1"], s3["n1"]) and reaches(addrs["n3"], s3["n3"])    # the others' S3 paths
    network.heal()
    assert reaches(None, to["n1"]) and reaches(addrs["n2"], s3["n2"])


def test_two_cuts_heal_independently(cluster):
    network, addrs, listeners, _ = cluster
    to = {n: (lst.address, lst.port) for n, lst in listeners.items()}
    first = network.cut(net.isolate(["n1", "n2", "n3"], ["n1"]).cut)
    second = network.cut([("n1", "n2"), ("n2", "n3")])              # overlaps the first on n1-n2
    network.heal(first)
    assert blocked(addrs["n1"], to["n2"]) and blocked(addrs["n3"], to["n2"])
    assert reaches(addrs["n1"], to["n3"])
    network.heal(second)
    assert reaches(addrs["n1"], to["n2"])


def test_teardown_removes_the_chain_with_cuts_active(cluster):
    network, *_ = cluster
    network.cut([("n1", "n2"), ("n2", "n3")])
    assert network.chain in chains()
    network.teardown()
    assert network.chain not in chains()


def test_a_crashed_harness_leaves_a_chain_the_next_run_removes():
    code = textwrap.dedent("""
        import sys, time
        from nemeses.network import LoopbackNetwork, Topology
        n = LoopbackNetwork(Topology({"a": "127.3.3.1", "b": "127.3.3.2"})).setup()
        n.cut([("a", "b")])
        print(n.chain, flush=True)
        time.sleep(60)
    """)
    child = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True,
                             cwd=os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    try:
        chain = child.stdout.readline().strip()
        assert chain.startswith(f"HWNET-{child.pid}-")
    finally:
        child.send_signal(signal.SIGKILL)
        child.wait()
    assert chain in chains()
    mine = LoopbackNetwork(Topology({"a": "127.3.3.1"})).setup()       # a later run
    try:
        listing = chains()
        assert chain not in listing                                        # the dead run's chain is gone
        assert mine.chain in listing
        assert f"-j {chain}" not in subprocess.run(["iptables", "-w", "10", "-S", "INPUT"],
                                                   capture_output=True, text=True).stdout
    finally:
        mine.teardown()


# --- the namespace form -------------------------------------------------------------------

class Namespaces:
    """n namespaces, a veth pair between each two, each node's 127.77.X.i on
    its own lo (route_localnet lets 127/8 cross the veths)."""

    def __init__(self, n: int):
        self.tag = f"{os.getpid() % 100000}{random.randrange(100):02d}"
        x = random.randrange(1, 255)
        self.names = [f"n{i + 1}" for i in range(n)]
        self.ns = {name: f"hw{self.tag}{name}" for name in self.names}
        self.addr = {name: f"127.77.{x}.{i + 1}" for i, name in enumerate(self.names)}
        self.procs = []
        try:
            self._build()
        except BaseException:
            self.close()
            raise

    def sh(self, *argv):
        subprocess.run(argv, check=True, capture_output=True, timeout=30)

    def exec(self, name, *argv):
        self.sh("ip", "netns", "exec", self.ns[name], *argv)

    def _build(self):
        for name in self.names:
            self.sh("ip", "netns", "add", self.ns[name])
            self.exec(name, "ip", "link", "set", "lo", "up")
            self.exec(name, "sysctl", "-qw", "net.ipv4.conf.all.route_localnet=1")
            self.exec(name, "ip", "addr", "add", f"{self.addr[name]}/32", "dev", "lo")
        for i, a in enumerate(self.names):
            for b in self.names[i + 1:]:
                va, vb = f"v{self.tag}{a}{b}", f"v{self.tag}{b}{a}"
                self.sh("ip", "link", "add", va, "type", "veth", "peer", "name", vb)
                for me, other, dev in ((a, b, va), (b, a, vb)):
                    self.sh("ip", "link", "set", dev, "netns", self.ns[me])
                    self.exec(me, "sysctl", "-qw", f"net.ipv4.conf.{dev}.route_localnet=1")
                    self.exec(me, "ip", "link", "set", dev, "up")
                    self.exec(me, "ip", "route", "add", f"{self.addr[other]}/32", "dev", dev,
                              "src", self.addr[me])

    def serve(self, name, port):
        code = ("import socket\ns=socket.socket();s.setsockopt(socket.SOL_SOCKET,socket.SO_REUSEADDR,1)\n"
                f"s.bind(('{self.addr[name]}',{port}));s.listen(16);print('up',flush=True)\n"
                "while True:\n c,_=s.accept();c.sendall(c.recv(4));c.close()\n")
        p = subprocess.Popen(["ip", "netns", "exec", self.ns[name], sys.executable, "-c", code],
                             stdout=subprocess.PIPE, text=True)
        self.procs.append(p)
        assert p.stdout.readline().strip() == "up"

    def reaches(self, src, dst, port, timeout=3.0) -> bool:
        code = (f"import socket,sys\ntry:\n c=socket.create_connection(('{self.addr[dst]}',{port}),timeout={timeout})\n"
                " c.sendall(b'ping');sys.exit(0 if c.recv(4)==b'ping' else 1)\nexcept OSError:\n sys.exit(1)\n")
        return subprocess.run(["ip", "netns", "exec", self.ns[src], sys.executable, "-c", code],
                              timeout=30).returncode == 0

    def blocked(self, src, dst, port) -> bool:
        return not self.reaches(src, dst, port, timeout=0.7)

    def close(self):
        for p in self.procs:
            p.kill()
            p.wait()
        for ns in self.ns.values():
            subprocess.run(["ip", "netns", "del", ns], capture_output=True)


@pytest.mark.skipif(shutil.which("ip") is None, reason="needs iproute2")
def test_host_rules_partition_network_namespaces():
    spaces = Namespaces(3)
    try:
        port = 7000 + random.randrange(1000)
        for name in spaces.names:
            spaces.serve(name, port)
        assert spaces.reaches("n1", "n2", port) and spaces.reaches("n2", "n3", port)
        topo = Topology(spaces.addr, client=None)
        runners = {n: LocalRunner(("ip", "netns", "exec", spaces.ns[n])) for n in spaces.names}
        network = HostNetwork(topo, runners).setup()
        try:
            cut = network.cut(net.isolate(spaces.names, ["n1"]).cut)
            assert spaces.blocked("n1", "n2", port) and spaces.blocked("n3", "n1", port)
            assert spaces.reaches("n2", "n3", port) and spaces.reaches("n3", "n2", port)
            network.heal(cut)
            assert spaces.reaches("n1", "n2", port) and spaces.reaches("n3", "n1", port)
        finally:
            network.teardown()
        for n, r in runners.items():
            assert network.chain not in net.iptables(r, ["-S"]).stdout
    finally:
        spaces.close()
