"""`highwater replay`: the recorded fault schedule is followed at its offsets,
and a stored broken run's verdict comes back."""
from __future__ import annotations

import json
import random
import subprocess
import sys
import threading

import pytest

from harness.history import HistoryWriter
from harness.options import OptionError, resolve
from nemeses.base import Fault
from nemeses.schedule import NemesisSchedule, recorded_plan


def _nemesis(type_, f, id_, t, targets=("n1",)):
    return {"process": "nemesis", "type": type_, "f": f, "time": int(t * 1e9),
            "value": {"fault": f.split("-", 1)[1], "id": id_, "targets": list(targets)}}


def test_recorded_plan_takes_invoke_times_and_pairs_by_id():
    events = [_nemesis("invoke", "start-kill", 1, 4.0), _nemesis("info", "start-kill", 1, 4.1),
              {"process": 0, "type": "invoke", "f": "send", "time": 5, "value": []},
              _nemesis("invoke", "start-pause", 2, 5.0, ["n2"]), _nemesis("info", "start-pause", 2, 5.2, ["n2"]),
              _nemesis("invoke", "stop-pause", 2, 7.0, ["n2"]), _nemesis("info", "stop-pause", 2, 7.1, ["n2"]),
              _nemesis("invoke", "stop-kill", 1, 8.0), _nemesis("info", "stop-kill", 1, 9.5),
              _nemesis("info", "start-kill", 3, 12.0)]          # an older history's lone info
    assert recorded_plan(events) == [
        {"fault": "kill", "targets": ["n1"], "start_s": 4.0, "stop_s": 8.0},
        {"fault": "pause", "targets": ["n2"], "start_s": 5.0, "stop_s": 7.0},
        {"fault": "kill", "targets": ["n1"], "start_s": 12.0, "stop_s": None}]


class Recording(Fault):
    name = "kill"

    def __init__(self, history):
        super().__init__(None)
        self.history = history
        self.calls = []

    def start(self, targets):
        self.calls.append(("start", targets, self.history.now() / 1e9))
        return {}

    def stop(self, targets):
        self.calls.append(("stop", targets, self.history.now() / 1e9))


@pytest.mark.timeout(20)
def test_schedule_follows_a_plan_at_its_offsets(tmp_path):
    history = HistoryWriter(tmp_path / "h.jsonl")
    fault = Recording(history)
    plan = [{"fault": "kill", "targets": ["n3"], "start_s": 0.3, "stop_s": 0.8},
            {"fault": "kill", "targets": ["n1", "n2"], "start_s": 1.0, "stop_s": 1.2}]
    schedule = NemesisSchedule([fault], ["n1", "n2", "n3"], history, tmp_path / "n.jsonl", interval=60,
                               targets="one", rng=random.Random(1), time_limit=60, plan=plan)
    done = threading.Event()
    schedule.start()
    schedule._thread.join(10)
    done.set()
    schedule.stop()
    got = [(kind, targets) for kind, targets, _ in fault.calls]
    assert got == [("start", ["n3"]), ("stop", ["n3"]), ("start", ["n1", "n2"]), ("stop", ["n1", "n2"])]
    for (_, _, at), want in zip(fault.calls, (0.3, 0.8, 1.0, 1.2)):
        assert want <= at < want + 0.5
    history.close()
    assert recorded_plan(json.loads(line) for line in open(tmp_path / "h.jsonl")) == [
        {**p, "start_s": pytest.approx(p["start_s"], abs=0.5), "stop_s": pytest.approx(p["stop_s"], abs=0.5)}
        for p in plan]


def test_a_plan_is_validated_like_any_option():
    plan = [{"fault": "kill", "targets": ["n1"], "start_s": 2, "stop_s": 4}]
    assert resolve(None, {"nemesis": "kill", "nemesis_plan": plan})["nemesis_plan"][0]["stop_s"] == 4.0
    with pytest.raises(OptionError, match="not among"):
        resolve(None, {"nemesis": "pause", "nemesis_plan": plan})
    with pytest.raises(OptionError, match="start_s"):
        resolve(None, {"nemesis": "kill", "nemesis_plan": [{**plan[0], "stop_s": 1}]})


def test_replay_of_a_directory_that_is_no_run_exits_2(tmp_path):
    r = subprocess.run([sys.executable, "-m", "harness.cli", "replay", str(tmp_path)],
                       capture_output=True, text=True, timeout=60)
    assert r.returncode == 2 and "test.json" in r.stderr


@pytest.mark.timeout(300)
def test_a_broken_runs_verdict_comes_back_in_a_replay(tmp_path):
    """A deliberately broken broker (the WAL skipped at restart) and kills:
    the stored run is invalid; replayed with its seed and schedule, so is
    the replay, with its faults at the same offsets on the same node."""
    store = tmp_path / "store"
    common = ["--store", str(store), "--quiet"]
    r = subprocess.run([sys.executable, "-m", "harness.cli", "run", "--nodes", "1", "--time-limit", "18s", "--nemesis", "kill",
                        "--nemesis-interval", "3s", "--final-time-limit", "8s", "--rate", "40", "--seed", "9",
                        "--bug", "skip-wal-replay",
                        # uploads rare: the WAL is the only copy of what was acknowledged
                        "--broker-args", "--upload-interval 30s --upload-bytes 64MiB", *common], capture_output=True, text=True, timeout=140)
    original = (store / "latest").resolve()
    assert r.returncode == 1, r.stderr[-3000:]
    r = subprocess.run([sys.executable, "-m", "harness.cli", "replay", str(original), "--times", "1", *common[2:]],
                       capture_output=True, text=True, timeout=140)
    assert r.returncode == 0 and "verdict reproduced in 1 of 1" in r.stdout, r.stdout + r.stderr[-3000:]
    replayed = (store / "latest").resolve()
    assert replayed != original and replayed.parent.name == "queue-replay"

    def plan(run_dir):
        return recorded_plan(json.loads(line) for line in open(run_dir / "history.jsonl"))
    want, got = plan(original), plan(replayed)
    assert len(want) == len(got) >= 2
    for w, g in zip(want, got):
        assert w["targets"] == g["targets"] and abs(w["start_s"] - g["start_s"]) < 0.5
    assert json.loads((replayed / "test.json").read_text())["options"]["seed"] == 9
