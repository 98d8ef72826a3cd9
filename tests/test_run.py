"""`highwater run` end to end: a real broker process, real SIGKILLs, real
kafka-python clients, a real S3; then the store directory and the verdict."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from harness.s3server import s3_client


def _processes_mentioning(text: str) -> list[str]:
    # not by "pytest" in the command line: the run directory itself lives
    # under /tmp/pytest-of-root/ when pytest picks the temporary directory
    from harness.store import processes_naming
    out = []
    for pid in processes_naming(Path(text)):
        try:
            out.append(f"{pid}: " + Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace"))
        except OSError:
            pass
    return out


def _like_a_terminal():
    """Ctrl-C as in a terminal: a shell that starts a job in the background
    without job control (a CI runner may) leaves SIGINT ignored, and the
    child would inherit that and never see the interrupt."""
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def _interrupt_and_wait(proc, timeout, mark):
    """SIGINT, then wait; on a hang, kill it and every process whose command
    line mentions mark (its S3 server, its broker) so that nothing outlives
    the test, and fail."""
    proc.send_signal(signal.SIGINT)
    try:
        return proc.wait(timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        for line in _processes_mentioning(mark):
            try:
                os.kill(int(line.split(":")[0]), signal.SIGKILL)
            except ProcessLookupError:
                pass
        proc.wait(10)
        pytest.fail(f"no exit within {timeout} s of SIGINT")


def _read_jsonl(path):
    return [json.loads(line) for line in Path(path).read_text().splitlines()]


@pytest.mark.timeout(180)
def test_run_kill_chaos_is_valid_and_stores_everything(tmp_path, s3_server):
    bucket = "run-e2e"
    s3_client(s3_server.endpoint).create_bucket(Bucket=bucket)
    store = tmp_path / "store"
    t0 = time.monotonic()
    # 28 s: two kill cycles (5 s + 5 s + the restart, which registers with the controller and recovers
    # the node's own WAL: about a second) and the schedule's settle time
    r = subprocess.run([sys.executable, "-m", "harness.cli", "run", "--nodes", "1", "--time-limit", "28s",
                        "--nemesis", "kill", "--nemesis-interval", "5s", "--final-time-limit", "20s",
                        "--rate", "40", "--store", str(store), "--s3-endpoint", s3_server.endpoint,
                        "--bucket", bucket, "--seed", "7",
                        "--broker-args", "--upload-bytes 16KiB --upload-interval 1s"],
                       capture_output=True, text=True, timeout=170)
    elapsed = time.monotonic() - t0
    run_dir = (store / "latest").resolve()
    assert r.returncode == 0, f"exit {r.returncode}\n{r.stderr[-4000:]}\n{(run_dir / 'results.json').read_text() if (run_dir / 'results.json').exists() else ''}"
    assert elapsed < 28 + 20 + 60
    for name in ("test.json", "history.jsonl", "nemesis.jsonl", "results.json", "nodes/n1/broker.log",
                 "latency-raw.png", "rate.png", "availability.png", "index.html"):
        assert (run_dir / name).exists(), name
    results = json.loads((run_dir / "results.json").read_text())
    assert results["valid"] is True
    page = (run_dir / "index.html").read_text()
    assert ">valid<" in page and "latency-raw.png" in page and "history.jsonl" in page
    assert results["stats"]["ok"] > 100
    test = json.loads((run_dir / "test.json").read_text())
    assert test["seed"] == 7
    nemesis = _read_jsonl(run_dir / "nemesis.jsonl")
    starts = [e for e in nemesis if e["f"] == "start-kill" and e["type"] == "info"]
    stops = [e for e in nemesis if e["f"] == "stop-kill" and e["type"] == "info"]
    assert len(starts) >= 2 and [e["value"]["id"] for e in starts] == [e["value"]["id"] for e in stops]
    history = _read_jsonl(run_dir / "history.jsonl")
    assert [e["index"] for e in history] == list(range(len(history)))
    last_heal = max(e["time"] for e in history if e["f"] == "stop-kill")
    assert any(e["type"] == "ok" and e["f"] == "send" and e["time"] > last_heal for e in history)
    assert "restart" in (run_dir / "nodes/n1/broker.log").read_text().lower() or \
        (run_dir / "nodes/n1/broker.log").read_text().count("=== highwater: starting n1") >= 3
    assert not _processes_mentioning(str(run_dir))
    # final polls that reached the high watermark say so, and the log
    # model's read-to-end rule then holds: every acked send is in them
    ends = [e for e in history if e["f"] == "poll" and e.get("to_end")]
    assert ends and all(e["type"] == "ok" and set(e["to_end"]) <= set(e["value"][0][1])
                        for e in ends)
    r = subprocess.run([sys.executable, "-m", "harness.cli", "check", str(run_dir),
                        "--checker", "linearizable", "--model", "log"],
                       capture_output=True, text=True, timeout=120)
    verdict = json.loads(r.stdout.strip().splitlines()[-1])
    assert r.returncode == 0 and verdict["valid"] is True, r.stdout[-2000:] + r.stderr[-2000:]


@pytest.mark.timeout(120)
def test_interrupted_run_leaves_no_process_behind(tmp_path):
    """Ctrl-C in the middle of the workload: the embedded SeaweedFS and the
    broker are gone afterwards, and what was recorded is kept."""
    store = tmp_path / "store"
    # a long time limit: the harness must still be mid-run when it is killed,
    # however slowly a loaded machine brings the workload up
    proc = subprocess.Popen([sys.executable, "-m", "harness.cli", "run", "--nodes", "1", "--time-limit", "150s",
                             "--store", str(store), "--nemesis", "none"],
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            preexec_fn=_like_a_terminal)
    deadline = time.monotonic() + 90
    seen = []
    for line in proc.stdout:
        seen.append(line)
        if "workload" in line or time.monotonic() > deadline:
            break
    time.sleep(3)
    _interrupt_and_wait(proc, 60, str(tmp_path))
    run_dir = (store / "latest").resolve()
    assert proc.returncode == 130, "".join(seen)
    assert (run_dir / "history.jsonl").stat().st_size > 0
    assert not _processes_mentioning(str(run_dir)), "left behind"


@pytest.mark.timeout(90)
def test_s3_verb_prints_endpoint_first_and_stops_cleanly(tmp_path):
    proc = subprocess.Popen([sys.executable, "-m", "harness.cli", "s3", "--dir", str(tmp_path / "s3")],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            preexec_fn=_like_a_terminal)
    first = proc.stdout.readline()
    assert first.startswith("http://127.0.0.1:") and "bucket=highwater" in first
    endpoint = first.split()[0]
    s3_client(endpoint).put_object(Bucket="highwater", Key="k", Body=b"v")
    _interrupt_and_wait(proc, 30, str(tmp_path))
    assert not _processes_mentioning(str(tmp_path / "s3"))


@pytest.mark.timeout(180)
def test_librdkafka_clients_in_consumer_groups_under_kills_are_valid(tmp_path, s3_server):
    """Issue 12: the same workload through confluent-kafka, consumers joining
    one group (rebalances logged on the polls), a broker SIGKILLed."""
    bucket = "run-librdkafka"
    s3_client(s3_server.endpoint).create_bucket(Bucket=bucket)
    store = tmp_path / "store"
    r = subprocess.run([sys.executable, "-m", "harness.cli", "run", "--nodes", "1", "--time-limit", "22s",
                        "--nemesis", "kill", "--nemesis-interval", "5s", "--final-time-limit", "20s",
                        "--client", "librdkafka", "--sub-via", "subscribe", "--rate", "40",
                        "--store", str(store), "--s3-endpoint", s3_server.endpoint, "--bucket", bucket,
                        "--seed", "11", "--broker-args", "--upload-bytes 16KiB --upload-interval 1s"],
                       capture_output=True, text=True, timeout=170)
    run_dir = (store / "latest").resolve()
    results = json.loads((run_dir / "results.json").read_text())
    assert r.returncode == 0 and results["valid"] is True, r.stderr[-3000:] + json.dumps(results)[:3000]
    history = _read_jsonl(run_dir / "history.jsonl")
    assert any(e["f"] == "subscribe" and e["type"] == "ok" for e in history)
    assert any(e.get("rebalance_log") for e in history)
    assert json.loads((run_dir / "test.json").read_text())["options"]["client"] == "librdkafka"
    assert any(e["f"] == "start-kill" and e["type"] == "info" for e in history)


@pytest.mark.timeout(240)
def test_a_harness_killed_mid_run_leaves_a_checkable_history_and_the_next_run_cleans_up(tmp_path):
    """SIGKILL the harness itself in the middle of a run (FUSE volumes, a
    broker, SeaweedFS running): its history is still checkable, and the next
    `highwater run` stops what it left and unmounts its volumes."""
    store = tmp_path / "store"
    # a long time limit: the harness must still be mid-run when it is killed,
    # however slowly a loaded machine brings the workload up
    proc = subprocess.Popen([sys.executable, "-m", "harness.cli", "run", "--nodes", "1", "--time-limit", "150s",
                             "--store", str(store), "--nemesis", "lose-unsynced", "--nemesis-interval", "30s",
                             "--broker-args", "--wal-capacity 16MiB"],
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    for line in proc.stdout:
        if "workload" in line:
            break
    run_dir = (store / "latest").resolve()
    history = run_dir / "history.jsonl"
    deadline = time.monotonic() + 90
    while time.monotonic() < deadline and history.stat().st_size < 2000:
        time.sleep(0.2)
    assert proc.poll() is None, f"the harness ended by itself before the kill (exit {proc.returncode})"
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait(10)
    left = _processes_mentioning(str(run_dir))
    said = proc.stdout.read()[-3000:]
    assert left, (f"expected the killed harness's broker and S3 to be left running; history "
                  f"{history.stat().st_size} bytes; the harness said:\n{said}")
    r = subprocess.run([sys.executable, "-m", "harness.cli", "check", str(run_dir), "--no-require-activity"],
                       capture_output=True, text=True, timeout=120)
    # read and judged (a run cut short has unseen writes: no final polls), not refused
    assert r.returncode in (0, 1, 3), r.stdout + r.stderr
    assert json.loads(r.stdout.strip().splitlines()[-1])["stats"]["ok"] > 0
    r = subprocess.run([sys.executable, "-m", "harness.cli", "run", "--nodes", "1", "--time-limit", "5s", "--nemesis", "none",
                        "--store", str(store), "--quiet"], capture_output=True, text=True, timeout=150)
    assert "cleaned up after a killed harness" in r.stderr and str(run_dir) in r.stderr, r.stderr[-2000:]
    assert not _processes_mentioning(str(run_dir))
    assert not any(str(run_dir) in line for line in open("/proc/self/mounts"))
    assert (run_dir / "harness-killed.txt").exists() and not (run_dir / "RUNNING").exists()


def test_a_fault_aimed_at_a_path_that_never_ran_makes_the_run_unknown():
    from harness.run_test import unexercised_paths
    ran = {"storage_paths": {"uploads": 12, "recoveries": 0, "wal_writes": 40}, "reassignments": []}
    assert unexercised_paths(["s3-slow", "disk-slow"], ran) == []
    reasons = unexercised_paths(["kill", "reassign"], ran)
    assert any("recoveries" in r for r in reasons) and any("reassign" in r for r in reasons)
    assert unexercised_paths(["kill"], {}) == []          # a target that does not count its paths


def test_final_polls_that_never_reach_what_the_run_saw_make_a_valid_run_unknown():
    from harness.run_test import qualify
    short = {"final_polls_short": {"2": {"reached": 75, "target": 185}}}
    r = qualify({"valid": True}, short, ["kill"])
    assert r["valid"] == "unknown" and "key 2 reached 75 of 185" in r["reasons"][0]
    assert qualify({"valid": False, "anomaly_types": ["unseen"]}, short, ["kill"])["valid"] is False
    assert qualify({"valid": True}, {"final_polls_short": {}}, ["kill"]) == {"valid": True}
    assert qualify({"valid": True}, {"harness_errors": ["worker 1: boom"]}, [])["valid"] == "unknown"
