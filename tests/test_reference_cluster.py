"""The reference cluster adapter: real broker processes, real signals."""
from __future__ import annotations

import os
import signal
import socket
import time

import pytest

from harness.db.reference import ReferenceCluster


@pytest.fixture
def cluster(tmp_path, s3_bucket):
    endpoint, bucket = s3_bucket
    c = ReferenceCluster(tmp_path, s3_endpoint=endpoint, bucket=bucket, broker_args=["--wal-capacity", "8MiB"])
    c.setup()
    yield c
    c.teardown()


def _serves(node) -> bool:
    try:
        with socket.create_connection((node.host, node.port), timeout=1):
            return True
    except OSError:
        return False


def test_a_node_that_dies_by_itself_is_reported_not_hidden(cluster):
    node = cluster.nodes["n1"]
    assert cluster.died_on_their_own() == {}
    os.kill(node.process.pid, signal.SIGKILL)   # not the harness: "the broker crashed"
    node.process.process.wait(10)
    assert cluster.died_on_their_own() == {"n1": -signal.SIGKILL}
    cluster.start_node("n1")
    assert cluster.died_on_their_own() == {} and _serves(node)


def test_kill_and_pause_are_real_signals(cluster):
    node = cluster.nodes["n1"]
    pid = node.process.pid
    cluster.signal_node("n1", signal.SIGSTOP)
    time.sleep(0.2)
    state = open(f"/proc/{pid}/stat").read().split()[2]
    assert state == "T"                          # stopped, holding its socket
    cluster.signal_node("n1", signal.SIGCONT)
    cluster.kill_node("n1")
    assert node.process.process.returncode == -signal.SIGKILL
    assert cluster.died_on_their_own() == {}      # the harness did it: not a finding
    assert not _serves(node)
    cluster.start_node("n1")
    assert node.process.pid != pid and _serves(node)
