"""`--nodes inventory:FILE`: the reference cluster's nodes on an inventory's
hosts, started, killed and restarted over real SSH (paramiko). The "hosts"
here are one sshd of the test's own on 127.0.0.1 (conftest.loopback_sshd),
each node with its own workdir and ports; what the run needs of the
inventory and what it refuses is checked before anything starts."""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from harness.ports import free_port

REPO = Path(__file__).resolve().parent.parent
pytestmark = pytest.mark.timeout(60)


def _cli(*args, timeout=60):
    return subprocess.run([sys.executable, "-m", "harness.cli", "run", *args], cwd=REPO,
                          capture_output=True, text=True, timeout=timeout)


def _inventory(tmp_path, sshd, names=("n1", "n2"), **extra) -> Path:
    lines = ["[defaults]", f'host = "{sshd.host}"', f"port = {sshd.port}", f'key_file = "{sshd.client_key}"',
             f'known_hosts = "{sshd.known_hosts}"', f'python = "{sys.executable}"', 'command_timeout = "30s"',
             *(f"{k} = {json.dumps(v)}" for k, v in extra.items()), ""]
    for name in names:
        # another "host" of the test: its files away from the store, fetched back like a remote one's
        lines += [f"[nodes.{name}]", f'workdir = "{tmp_path / "hosts" / name}"',
                  f"broker_port = {free_port()}", f"rpc_port = {free_port()}", ""]
    path = tmp_path / "inventory.toml"
    path.write_text("\n".join(lines))
    return path


@pytest.mark.timeout(240)
def test_a_kill_test_on_an_inventorys_hosts_over_ssh_is_valid(tmp_path, loopback_sshd):
    inventory = _inventory(tmp_path, loopback_sshd)
    store = tmp_path / "store"
    r = _cli("--nodes", f"inventory:{inventory}", "--nemesis", "kill", "--time-limit", "20s",
             "--nemesis-interval", "5s", "--final-time-limit", "20s", "--rate", "40", "--seed", "4",
             "--store", str(store), "--quiet", timeout=220)
    run_dir = (store / "latest").resolve()
    results = json.loads((run_dir / "results.json").read_text()) if (run_dir / "results.json").exists() else {}
    assert r.returncode == 0 and results.get("valid") is True, \
        f"exit {r.returncode}\n{r.stderr[-3000:]}\n{json.dumps(results)[:3000]}"
    history = [json.loads(line) for line in (run_dir / "history.jsonl").read_text().splitlines()]
    done = {e["f"] for e in history if e["process"] == "nemesis" and e["type"] == "info"}
    assert {"start-kill", "stop-kill"} <= done
    # killed and started again over SSH, on the hosts' own files ...
    ssh_log = "".join((run_dir / "nodes" / n / "ssh.log").read_text() for n in ("n1", "n2"))
    assert "kill -s KILL" in ssh_log and "reference.broker" in ssh_log
    for name in ("n1", "n2"):
        assert (tmp_path / "hosts" / name / "volume").is_dir()
        assert (tmp_path / "hosts" / name / "procs" / "broker.out").is_file()
    # ... the logs fetched into the store, where the run's knowledge is read from
    logs = "".join((run_dir / "nodes" / n / "broker.log").read_text() for n in ("n1", "n2"))
    assert logs.count("listening on") >= 3, "two first starts and at least one restart"
    target = results["run"]["target"]
    assert target["ssh"]["service_address"] == "127.0.0.1"
    assert target["storage_paths"]["recoveries"] >= 1


def test_faults_an_inventory_node_cannot_take_are_refused_at_start(tmp_path, loopback_sshd):
    inventory = _inventory(tmp_path, loopback_sshd)
    for fault, reason in (("detach", "plain directory on its own host"),
                          ("lose-unsynced", "plain directory on its own host"),
                          ("partition", "partitions on inventory nodes are not wired yet"),
                          ("clock", "clock skew on inventory nodes is not wired yet")):
        r = _cli("--nodes", f"inventory:{inventory}", "--nemesis", fault, "--store", str(tmp_path / "store"))
        assert r.returncode == 2 and reason in r.stderr and str(inventory) in r.stderr, (fault, r.stderr)
    assert not (tmp_path / "store").exists()
    assert not (loopback_sshd.dir / "sshd.log").read_text().count("Accepted publickey"), "nothing connected"


def test_inventory_mistakes_are_refused_before_anything_starts(tmp_path, loopback_sshd):
    inventory = _inventory(tmp_path, loopback_sshd)
    shared = inventory.read_text().replace(str(tmp_path / "hosts" / "n2"), str(tmp_path / "hosts" / "n1"))
    (tmp_path / "shared.toml").write_text(shared)
    r = _cli("--nodes", f"inventory:{tmp_path / 'shared.toml'}", "--store", str(tmp_path / "store"))
    assert r.returncode == 2 and "share the workdir" in r.stderr, r.stderr
    r = _cli("--nodes", f"inventory:{tmp_path / 'missing.toml'}", "--store", str(tmp_path / "store"))
    assert r.returncode == 2 and "missing.toml" in r.stderr and "cannot read" in r.stderr, r.stderr
    r = _cli("--db", "tansu", "--nodes", f"inventory:{inventory}", "--store", str(tmp_path / "store"))
    assert r.returncode == 2 and "--db reference" in r.stderr, r.stderr
    assert not (tmp_path / "store").exists()


@pytest.mark.timeout(60)
def test_an_unknown_host_key_is_refused_naming_the_node(tmp_path, loopback_sshd):
    loopback_sshd.known_hosts.write_text("")
    inventory = _inventory(tmp_path, loopback_sshd, names=("n1",))
    r = _cli("--nodes", f"inventory:{inventory}", "--nemesis", "kill", "--time-limit", "5s",
             "--store", str(tmp_path / "store"))
    assert r.returncode == 2 and "node n1" in r.stderr and "is not in known_hosts" in r.stderr, r.stderr
    assert "accept_unknown_host_keys" in r.stderr
