"""`highwater cluster`: a local cluster for manual use and outside tools.
Its first stdout line is the JSON the issue specifies; a node killed from
outside is failed over (one JSON line) and stays down; SIGTERM stops all."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time

import pytest


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().split()[2] != "Z"
    except FileNotFoundError:
        return False


@pytest.mark.timeout(120)
def test_cluster_verb_prints_its_nodes_logs_failovers_and_stops_everything(tmp_path, s3_bucket):
    endpoint, bucket = s3_bucket
    proc = subprocess.Popen([sys.executable, "-m", "harness.cli", "cluster", "--nodes", "2", "--dir", str(tmp_path),
                             "--s3-endpoint", endpoint, "--bucket", bucket, "--session-timeout", "1s",
                             "--heartbeat-interval", "200ms"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        first = json.loads(proc.stdout.readline())
        assert set(first) == {"bootstrap", "s3", "controller", "nodes"}
        assert first["s3"] == {"endpoint": endpoint, "bucket": bucket}
        assert set(first["nodes"]) == {"n1", "n2"} and first["controller"] in ("n1", "n2")
        assert first["bootstrap"] == ",".join(first["nodes"][n]["listen"] for n in ("n1", "n2"))
        pids = [v["pid"] for v in first["nodes"].values()]
        from kafka.admin import KafkaAdminClient, NewTopic
        admin = KafkaAdminClient(bootstrap_servers=first["bootstrap"])
        admin.create_topics([NewTopic("c", 4, 1)])
        admin.close()
        time.sleep(1)   # both nodes lead some partitions
        victim = next(n for n in ("n1", "n2") if n != first["controller"])
        os.kill(first["nodes"][victim]["pid"], signal.SIGKILL)     # from outside: the cluster's job now
        line = json.loads(proc.stdout.readline())
        assert line["failover"]["node_name"] == victim and line["failover"]["steps"]["total_ms"] >= 0
        assert not _alive(first["nodes"][victim]["pid"])             # it stays down (no --restart-after)
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(60)
    assert proc.returncode == 130
    time.sleep(0.5)
    assert not any(_alive(p) for p in pids)


@pytest.mark.timeout(120)
def test_cluster_verb_restarts_a_dead_node_when_asked(tmp_path, s3_bucket):
    endpoint, bucket = s3_bucket
    proc = subprocess.Popen([sys.executable, "-m", "harness.cli", "cluster", "--nodes", "1", "--dir", str(tmp_path),
                             "--s3-endpoint", endpoint, "--bucket", bucket, "--restart-after", "500ms"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        first = json.loads(proc.stdout.readline())
        pid = first["nodes"]["n1"]["pid"]
        os.kill(pid, signal.SIGKILL)
        log = tmp_path / "nodes" / "n1" / "broker.log"
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline and "start #2" not in log.read_text():
            time.sleep(0.1)
        assert "start #2" in log.read_text()
        while time.monotonic() < deadline and "listening on" not in log.read_text().split("start #2")[1]:
            time.sleep(0.1)
        assert "listening on" in log.read_text().split("start #2")[1]
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(60)
    assert proc.returncode == 130
