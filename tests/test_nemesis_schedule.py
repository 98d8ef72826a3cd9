"""The fault schedule: targets, pairing of start/stop, and no fault that
cannot be healed and followed by writes before the workload ends."""
from __future__ import annotations

import json
import random
import threading

import pytest

from harness.history import HistoryWriter
from nemeses.base import Fault, choose_targets
from nemeses.schedule import NemesisSchedule


@pytest.mark.parametrize("spec,n,count", [("one", 5, 1), ("minority", 5, 2), ("majority", 5, 3), ("all", 5, 5),
                                          ("one", 1, 1), ("majority", 1, 1), ("minority", 3, 1)])
def test_choose_targets(spec, n, count):
    nodes = [f"n{i}" for i in range(1, n + 1)]
    targets = choose_targets(spec, nodes, random.Random(1))
    assert len(targets) == count and set(targets) <= set(nodes) and targets == sorted(targets)


def test_primaries_follow_what_the_target_reports():
    nodes = ["n1", "n2", "n3"]
    rng = random.Random(5)
    assert {choose_targets("primaries", nodes, rng, ["n2"])[0] for _ in range(20)} == {"n2"}
    picked = {choose_targets("primaries", nodes, rng, ["n1", "n3"])[0] for _ in range(50)}
    assert picked == {"n1", "n3"}
    # a target that names no primary (or a gone node) still gets a fault
    assert choose_targets("primaries", nodes, rng, ["n9"])[0] in nodes


def test_a_fault_is_refused_by_the_target_with_its_reason():
    from nemeses import FaultUnsupported, build_faults

    class NoPause:
        name = "t"

        def unsupported(self, control):
            return None if control == "process" else f"no {control} here, because reasons"

    assert [f.name for f in build_faults("kill", NoPause())] == ["kill"]
    with pytest.raises(FaultUnsupported, match="because reasons"):
        build_faults("kill,pause", NoPause())
    with pytest.raises(FaultUnsupported, match="meteor"):
        build_faults("meteor", NoPause())


def test_choose_targets_rejects_unknown_spec():
    with pytest.raises(ValueError, match="some"):
        choose_targets("some", ["n1"], random.Random(1))


class RecordingFault(Fault):
    """Applies nothing; notes what the schedule asked for (the schedule's own logic under test)."""
    name = "kill"

    def __init__(self):
        super().__init__(db=None)
        self.calls = []
        self.lock = threading.Lock()

    def start(self, targets):
        with self.lock:
            self.calls.append(("start", tuple(targets)))
        return {"param": 1}

    def stop(self, targets):
        with self.lock:
            self.calls.append(("stop", tuple(targets)))


def test_schedule_pairs_starts_and_stops_and_leaves_time_to_recover(tmp_path):
    history = HistoryWriter(tmp_path / "history.jsonl")
    fault = RecordingFault()
    schedule = NemesisSchedule([fault], ["n1", "n2", "n3"], history, tmp_path / "nemesis.jsonl",
                               interval=0.3, targets="one", rng=random.Random(3), time_limit=2.2, settle=0.3)
    schedule.start()
    threading.Event().wait(2.4)
    schedule.stop()
    history.close()
    events = [json.loads(line) for line in (tmp_path / "history.jsonl").read_text().splitlines()]
    starts = [e for e in events if e["f"] == "start-kill" and e["type"] == "info"]
    stops = [e for e in events if e["f"] == "stop-kill" and e["type"] == "info"]
    assert len(starts) >= 2
    assert [e["value"]["id"] for e in starts] == [e["value"]["id"] for e in stops]
    # Jepsen's recording: each operation an invoke when requested, then an
    # info when in force, adjacent, same f and id; parameters on the info.
    assert all(e["process"] == "nemesis" for e in events)
    assert [e["type"] for e in events] == ["invoke", "info"] * (len(events) // 2)
    for inv, done in zip(events[::2], events[1::2]):
        assert inv["f"] == done["f"] and inv["value"]["id"] == done["value"]["id"] and inv["time"] <= done["time"]
    assert all(e["value"]["param"] == 1 and len(e["value"]["targets"]) == 1 for e in starts)
    # Every fault was healed before the workload's end (2.2 s); the schedule
    # aims for `settle` earlier, which leaves slack for a loaded machine.
    assert max(e["time"] for e in stops) <= 2.2e9
    logged = [json.loads(line) for line in (tmp_path / "nemesis.jsonl").read_text().splitlines()]
    assert [e["f"] for e in logged] == [e["f"] for e in events]
    assert fault.calls[0][0] == "start" and fault.calls[-1][0] == "stop"


def test_stop_heals_a_fault_still_active(tmp_path):
    history = HistoryWriter(tmp_path / "history.jsonl")
    fault = RecordingFault()
    schedule = NemesisSchedule([fault], ["n1"], history, tmp_path / "nemesis.jsonl",
                               interval=0.2, targets="one", rng=random.Random(3), time_limit=60)
    schedule.start()
    threading.Event().wait(0.3)   # the first fault is in force now
    schedule.stop()
    assert fault.calls == [("start", ("n1",)), ("stop", ("n1",))]


def test_a_failing_fault_is_recorded_and_surfaced(tmp_path):
    history = HistoryWriter(tmp_path / "history.jsonl")

    class Broken(RecordingFault):
        def start(self, targets):
            raise OSError("no such node")

    schedule = NemesisSchedule([Broken()], ["n1"], history, tmp_path / "nemesis.jsonl",
                               interval=0.1, targets="one", rng=random.Random(3), time_limit=60)
    schedule.start()
    schedule._thread.join(10)
    schedule.stop()
    history.close()
    events = [json.loads(line) for line in (tmp_path / "history.jsonl").read_text().splitlines()]
    assert isinstance(schedule.error, OSError)
    assert events[0]["type"] == "invoke" and "no such node" in events[1]["error"]
