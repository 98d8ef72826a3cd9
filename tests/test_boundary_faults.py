"""The partition, s3-* and clock faults on a small target made of real controls:
one S3 fault proxy per node in front of SeaweedFS, a loopback network with
iptables, a libfaketime clock file per node. Each start is seen from outside
on its targets only, each stop heals exactly what it did."""
from __future__ import annotations

import os
import random
import shutil
import socket
import time

import botocore.exceptions
import pytest

from harness.s3server import s3_client
from nemeses import network as net
from nemeses.clock import NodeClock
from nemeses.clock_fault import ClockFault
from nemeses.partition import PartitionFault
from nemeses.s3_faults import (S3_FAULTS, S3AmbiguousFault, S3ErrorFault, S3HangFault, S3ResetFault,
                               S3SlowFault)
from nemeses.s3_proxy import S3FaultProxy

pytestmark = pytest.mark.timeout(120)
NODES = ["n1", "n2", "n3"]


class Controls:
    """The controls a target hands to faults (harness.db.base), and nothing else."""
    name = "controls"

    def __init__(self, tmp_path, s3_endpoint=None, with_network=False):
        self.node_names = list(NODES)
        self.proxies = ({n: S3FaultProxy.for_endpoint(s3_endpoint, seed=i, name=f"s3-{n}").start()
                         for i, n in enumerate(NODES)} if s3_endpoint else {})
        self.clocks = {n: NodeClock(tmp_path / f"{n}.faketime") for n in NODES}
        self.net = None
        if with_network:
            addrs = net.loopback_addresses(NODES, random.Random())
            self.net = net.LoopbackNetwork(net.Topology(addrs)).setup()

    def unsupported(self, control):
        offered = {"s3_proxy": self.proxies, "network": self.net, "clock": self.clocks}
        return None if offered.get(control) else f"{self.name} has no {control}"

    def s3_proxy(self, node):
        return self.proxies[node]

    def network(self):
        return self.net

    def clock(self, node):
        return self.clocks[node]

    def close(self):
        for p in self.proxies.values():
            p.stop()
        for c in self.clocks.values():
            c.close()
        if self.net:
            self.net.teardown()


@pytest.fixture
def s3_target(tmp_path, s3_bucket):
    endpoint, bucket = s3_bucket
    t = Controls(tmp_path, endpoint)
    yield t, bucket
    t.close()


def put(target, node, bucket, key, retries=0):
    return s3_client(target.s3_proxy(node).endpoint, retries=retries, timeout=2).put_object(
        Bucket=bucket, Key=key, Body=b"v")


def test_s3_error_on_its_targets_only_and_healed(s3_target):
    target, bucket = s3_target
    fault = S3ErrorFault(target, rate=1.0)
    params = fault.start(["n1"])
    assert params["kind"] == "error" and params["status"] == 503 and params["rate"] == 1.0
    with pytest.raises(botocore.exceptions.ClientError, match="SlowDown"):
        put(target, "n1", bucket, "a")
    put(target, "n2", bucket, "a")
    fault.stop(["n1"])
    fault.stop(["n1"])                          # healing twice is harmless
    put(target, "n1", bucket, "b")


def test_stopping_one_s3_fault_leaves_another_on_the_same_proxy(s3_target):
    target, bucket = s3_target
    slow, reset = S3SlowFault(target, latency="20ms"), S3ResetFault(target, rate=1.0, ops="put")
    slow.start(["n2"])
    reset.start(["n2"])
    with pytest.raises((botocore.exceptions.ConnectionClosedError, botocore.exceptions.EndpointConnectionError)):
        put(target, "n2", bucket, "x")
    reset.stop(["n2"])
    put(target, "n2", bucket, "x")
    assert [r["kind"] for r in target.s3_proxy("n2").rules()] == ["latency"]
    assert target.s3_proxy("n2").stats()["faults"] == {"latency": 2, "reset": 1}
    slow.stop(["n2"])
    assert target.s3_proxy("n2").rules() == []


def test_s3_ambiguous_targets_writes_and_hang_is_released_by_the_heal(s3_target):
    target, bucket = s3_target
    amb = S3AmbiguousFault(target, rate=1.0)
    assert amb.start(["n3"])["ops"] == ["delete", "multipart", "put", "put-if"]
    with pytest.raises((botocore.exceptions.ConnectionClosedError, ConnectionResetError)):
        put(target, "n3", bucket, "amb")
    c = s3_client(target.s3_proxy("n3").endpoint, retries=0)
    assert c.get_object(Bucket=bucket, Key="amb")["Body"].read() == b"v"     # stored; reads untouched
    amb.stop(["n3"])
    hang = S3HangFault(target, rate=1.0)
    hang.start(["n3"])
    s = socket.create_connection(("127.0.0.1", target.s3_proxy("n3").port), timeout=20)
    s.sendall(f"GET /{bucket}/amb HTTP/1.1\r\nHost: x\r\n\r\n".encode())
    deadline = time.monotonic() + 10
    while target.s3_proxy("n3").stats()["hanging"] == 0 and time.monotonic() < deadline:
        time.sleep(0.01)
    assert target.s3_proxy("n3").stats()["hanging"] == 1
    hang.stop(["n3"])
    with pytest.raises(ConnectionResetError):
        s.recv(10)
    s.close()


def test_s3_fault_options_are_checked_when_built(tmp_path):
    t = Controls(tmp_path)
    with pytest.raises(ValueError):
        S3ErrorFault(t, status=404)
    with pytest.raises(ValueError):
        S3SlowFault(t, latency="quick")
    with pytest.raises(ValueError):
        S3ResetFault(t, ops="copy")
    with pytest.raises(ValueError):
        S3HangFault(t, rate=1.5)
    assert set(S3_FAULTS) == {"s3-slow", "s3-error", "s3-reset", "s3-hang", "s3-ambiguous"}
    assert all(f.requires == "s3_proxy" for f in S3_FAULTS.values())
    assert t.unsupported("s3_proxy")             # a target without proxies says why


@pytest.mark.skipif(os.geteuid() != 0 or shutil.which("iptables") is None, reason="needs root and iptables")
def test_partition_fault_isolates_its_targets_and_heals(tmp_path):
    target = Controls(tmp_path, with_network=True)
    try:
        addrs = target.net.topology.nodes
        server = socket.socket()
        server.bind((addrs["n2"], 0))
        server.listen(8)

        def n1_reaches_n2():
            s = socket.socket()
            s.settimeout(0.7)
            try:
                s.bind((addrs["n1"], 0))
                s.connect(server.getsockname())
                return True
            except OSError:
                return False
            finally:
                s.close()

        fault = PartitionFault(target, rng=random.Random(3))
        assert n1_reaches_n2()
        params = fault.start(["n1"])
        assert params["shape"] == "isolate" and params["cut"] == [["n1", "n2"], ["n1", "n3"]]
        assert not n1_reaches_n2()
        fault.stop(["n1"])
        assert n1_reaches_n2() and target.net.cut_links == frozenset()
        server.close()
    finally:
        target.close()


def test_partition_shapes_chosen_by_the_fault(tmp_path):
    class Recording(Controls):
        """Records the links asked for (the real cut is tested above)."""
        def __init__(self, tmp):
            super().__init__(tmp)
            self.cuts = []

        def network(self):
            outer = self

            class N:
                def cut(self, links):
                    outer.cuts.append(frozenset(links))
                    return len(outer.cuts)

                def heal(self, handle=None):
                    outer.cuts.append(("heal", handle))
            return N()

    t = Recording(tmp_path)
    whole = PartitionFault(t, shape="targets", rng=random.Random(1)).start(NODES)
    assert whole["shape"] == "random-halves" and whole["instead_of"] == "targets"
    assert PartitionFault(t, shape="client").start(["n2"])["cut"] == [["client", "n2"]]
    assert PartitionFault(t, shape="s3").start(["n1", "n3"])["cut"] == [["n1", "s3"], ["n3", "s3"]]
    bridged = PartitionFault(t, shape="bridge", rng=random.Random(2)).start(["n1"])
    assert bridged["bridge"] in NODES and len(bridged["cut"]) == 1
    mixed = PartitionFault(t, shape="mixed", rng=random.Random(4))
    assert {mixed.start([])["shape"] for _ in range(30)} <= {"isolate-one", "halves", "random-halves", "bridge"}
    with pytest.raises(ValueError):
        PartitionFault(t, shape="star")


def test_clock_fault_skews_and_strobes_its_targets_and_heals(tmp_path):
    t = Controls(tmp_path)
    skew = ClockFault(t, mode="skew", max_skew=60, min_skew=10, rng=random.Random(5))
    params = skew.start(["n1", "n3"])
    assert params["mode"] == "skew" and set(params["offsets"]) == {"n1", "n3"}
    for n in ("n1", "n3"):
        assert 10 <= abs(t.clock(n).offset) <= 60
        assert float((tmp_path / f"{n}.faketime").read_text()) == pytest.approx(params["offsets"][n], abs=1e-3)
    assert t.clock("n2").offset == 0
    skew.stop(["n1", "n3"])
    assert all(t.clock(n).offset == 0 for n in NODES)
    strobe = ClockFault(t, mode="strobe", strobe_interval=1.0, rng=random.Random(6))
    params = strobe.start(["n2"])
    assert params["mode"] == "strobe" and params["interval"] == 1.0
    seen = set()
    for _ in range(300):
        seen.add(t.clock("n2").offset)
        if len(seen) == 2:
            break
        time.sleep(0.01)
    assert seen == {0.0, params["offsets"]["n2"]}
    strobe.stop(["n2"])
    assert t.clock("n2").offset == 0 and t.clock("n2")._strobe is None
    t.close()
    with pytest.raises(ValueError):
        ClockFault(t, mode="wobble")
