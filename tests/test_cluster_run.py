"""`highwater run --nodes 3 --nemesis kill,pause --nemesis-targets primaries`:
a real chaos run on a 3-node reference cluster, valid, with the failovers
(and their step timings) in results.json."""
from __future__ import annotations

import json
import subprocess
import sys

import pytest

from harness.s3server import s3_client


@pytest.mark.timeout(240)
def test_three_node_run_with_kill_and_pause_of_primaries_is_valid_and_reports_failovers(tmp_path, s3_server):
    bucket = "run-cluster"
    s3_client(s3_server.endpoint).create_bucket(Bucket=bucket)
    store = tmp_path / "store"
    r = subprocess.run([sys.executable, "-m", "harness.cli", "run", "--nodes", "3", "--nemesis", "kill,pause",
                        "--nemesis-targets", "primaries", "--time-limit", "26s", "--nemesis-interval", "5s",
                        "--final-time-limit", "20s", "--rate", "40", "--store", str(store), "--seed", "11",
                        "--s3-endpoint", s3_server.endpoint, "--bucket", bucket,
                        "--broker-args", "--session-timeout 2s --heartbeat-interval 250ms"],
                       capture_output=True, text=True, timeout=200)
    run_dir = (store / "latest").resolve()
    results = json.loads((run_dir / "results.json").read_text())
    assert r.returncode == 0, f"exit {r.returncode}\n{r.stderr[-3000:]}\n{json.dumps(results)[:3000]}"
    assert results["valid"] is True
    nemesis = [json.loads(line) for line in (run_dir / "nemesis.jsonl").read_text().splitlines()]
    faults = {e["f"] for e in nemesis}
    assert {"start-kill", "start-pause"} <= faults
    cluster = results["run"]["cluster"]
    assert cluster["failovers"], "a killed or paused primary was failed over"
    for f in cluster["failovers"]:
        assert {"detach_ms", "attach_ms", "recover_ms", "return_ms", "reopen_ms", "total_ms"} <= set(f["steps"])
    for name in ("n1", "n2", "n3"):
        assert (run_dir / "nodes" / name / "broker.log").exists()


@pytest.mark.timeout(300)
def test_a_run_on_nodes_in_network_namespaces_driven_over_ssh(tmp_path):
    """Issue 11: three namespaces with an sshd each; the brokers started,
    killed and partitioned through paramiko (iptables inside the namespaces);
    the run valid, and nothing left behind."""
    from harness.remote.netns import unsupported
    why = unsupported()
    if why:
        pytest.skip(f"network namespaces unavailable here: {why}")
    store = tmp_path / "store"
    r = subprocess.run([sys.executable, "-m", "harness.cli", "run", "--nodes", "netns:3",
                        "--nemesis", "kill,partition", "--nemesis-interval", "4s", "--time-limit", "24s",
                        "--final-time-limit", "20s", "--seed", "5", "--store", str(store), "--quiet"],
                       capture_output=True, text=True, timeout=280)
    run_dir = (store / "latest").resolve()
    results = json.loads((run_dir / "results.json").read_text())
    assert r.returncode == 0 and results["valid"] is True, r.stderr[-3000:] + json.dumps(results)[:2000]
    history = [json.loads(line) for line in (run_dir / "history.jsonl").read_text().splitlines()]
    done = {e["f"] for e in history if e["process"] == "nemesis" and e["type"] == "info"}
    assert {"start-kill", "stop-kill", "start-partition", "stop-partition"} <= done
    ssh_log = "".join((run_dir / "nodes" / n / "ssh.log").read_text() for n in ("n1", "n2", "n3"))
    assert "kill -s KILL" in ssh_log and "iptables" in ssh_log and "reference.broker" in ssh_log
    assert results["run"]["target"]["netns"]["addresses"]["n1"].startswith("10.231.")
    run_id = results["run"]["target"]["netns"]["bridge"][len("hwn"):-len("br")]
    leftovers = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True).stdout
    assert run_id and run_id not in leftovers
