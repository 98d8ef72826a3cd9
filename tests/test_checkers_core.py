"""Composition, exit codes, "a quiet run is not a passing run", recovery
bounds and perf statistics (checkers/core.py, workload.py, recovery.py,
perf.py)."""
from __future__ import annotations

import json

import pytest

import checkers
from checkers import check_history, compose, exit_code, merge_valid
from checkers.history import parse_events
from checkers.synth import build, generate

# (a fresh clone compiles the checkers' kernels during its first tests)
pytestmark = pytest.mark.timeout(900)

S = 1_000_000_000


def hist(lines, dt=1000):
    return parse_events(build(lines, dt))


def send(p, k, v, offset, type="ok"):
    done = [["send", k, [offset, v]]] if offset is not None else [["send", k, v]]
    return [(p, "invoke", "send", [["send", k, v]]), (p, type, "send", done)]


def poll(p, result):
    return [(p, "invoke", "poll", [["poll"]]), (p, "ok", "poll", [["poll", result]])]


def kill(kind, i):
    return ("nemesis", "info", f"{kind}-kill", {"fault": "kill", "id": i, "targets": ["n1"]})


def test_merge_valid_and_exit_codes():
    assert merge_valid([True, True]) is True
    assert merge_valid([True, "unknown"]) == "unknown"
    assert merge_valid(["unknown", False, True]) is False
    assert exit_code({"valid": True}) == 0
    assert exit_code({"valid": False}) == 1
    assert exit_code({"valid": "unknown"}) == 3


def test_compose_shape():
    r = compose({"a": {"valid": True},
                 "b": {"valid": False, "anomalies": {"lost-write": [{"key": "x"}]},
                       "allowed": []},
                 "c": {"valid": "unknown", "anomalies": {"G0": [{}]}, "allowed": ["G0"]}},
                {"ok": 3, "fail": 1, "info": 0})
    assert r == {"valid": False,
                 "anomaly_types": ["G0", "lost-write"],
                 "anomalies": {"G0": [{}], "lost-write": [{"key": "x"}]},
                 "allowed": ["G0"],
                 "checkers": {"a": {"valid": True},
                              "b": {"valid": False, "allowed": []},
                              "c": {"valid": "unknown", "allowed": ["G0"]}},
                 "stats": {"ok": 3, "fail": 1, "info": 0}}


def test_check_history_results_json_shape():
    h = hist(send(0, "x", 1, 0) + send(0, "x", 2, 1) + poll(1, {"x": [[0, 1]]}))
    r = check_history(h)
    assert set(r) == {"valid", "anomaly_types", "anomalies", "allowed", "checkers", "stats"}
    assert r["valid"] is False and r["anomaly_types"] == ["unseen"]
    assert set(r["checkers"]) == {"kafka", "recovery", "perf", "workload"}
    assert r["stats"] == {"ok": 3, "fail": 0, "info": 0}
    assert exit_code(r) == 1
    json.dumps(r)  # serialisable as results.json


def test_lost_write_is_invalid_even_when_quiet():
    # false beats unknown
    h = hist(send(0, "x", 1, 0) + send(0, "x", 2, 1) + send(0, "x", 3, 2)
             + poll(1, {"x": [[0, 1], [2, 3]]}))
    r = check_history(h)
    assert r["valid"] is False and "lost-write" in r["anomaly_types"]


def test_quiet_run_is_unknown():
    h = hist(send(0, "x", 1, None, type="fail") + poll(1, {}))
    r = check_history(h)
    assert r["valid"] == "unknown" and exit_code(r) == 3
    w = r["checkers"]["workload"]
    assert "no ok send" in w["reasons"] and "no ok send to key x" in w["reasons"]
    assert "no ok poll read key x" in w["reasons"]
    # hand-written anomaly tests can switch it off
    r = check_history(h, options={"require_activity": False})
    assert r["valid"] is True and "workload" not in r["checkers"]


def test_no_ok_send_after_heal():
    lines = (send(0, "x", 1, 0)[:1] + [kill("start", 3)] + send(0, "x", 1, 0)[1:]
             + poll(1, {"x": [[0, 1]]}) + [kill("stop", 3)])
    r = check_history(hist(lines))
    assert r["valid"] == "unknown"
    assert r["checkers"]["workload"]["reason"] == "no ok send after heal of kill id 3"
    lines += send(0, "x", 2, 1) + poll(1, {"x": [[1, 2]]})
    assert check_history(hist(lines))["valid"] is True


def test_fault_with_nothing_in_flight():
    """Started and healed between operations: it never met the workload."""
    lines = (send(0, "x", 1, 0) + [kill("start", 1), kill("stop", 1)]
             + send(0, "x", 2, 1) + poll(1, {"x": [[0, 1], [1, 2]]}))
    r = check_history(hist(lines))
    assert r["valid"] == "unknown"
    assert r["checkers"]["workload"]["reasons"] == [
        "kill id 1 started at index 2 with no client operation in flight"]


def test_fault_meets_an_operation_invoked_before_its_heal():
    """Nothing pending at the instant of injection, but the workload ran into
    the fault before it was healed: that counts as in flight."""
    lines = ([kill("start", 1)] + send(0, "x", 1, 0) + [kill("stop", 1)]
             + send(0, "x", 2, 1) + poll(1, {"x": [[0, 1], [1, 2]]}))
    r = check_history(hist(lines))
    assert r["valid"] is True, r["checkers"]["workload"]


def test_unknown_checker_name():
    with pytest.raises(ValueError, match="available"):
        check_history(hist(poll(0, {})), checkers=("nope",))


def test_crashing_checker_is_unknown():
    class Boom:
        name = "boom"

        def check(self, history, options):
            raise RuntimeError("kaput")

    r = check_history(hist(send(0, "x", 1, 0) + poll(1, {"x": [[0, 1]]})),
                      checkers=("kafka", Boom()))
    assert r["valid"] == "unknown"
    assert r["checkers"]["boom"]["error"] == "RuntimeError: kaput"


def test_check_path(tmp_path):
    events = generate(200, seed=2, nemesis_every=40)
    (tmp_path / "history.jsonl").write_text("".join(json.dumps(e) + "\n" for e in events))
    r = checkers.check_path(tmp_path)
    assert r["valid"] is True, r
    assert check_history(str(tmp_path / "history.jsonl"))["valid"] is True


# ------------------------------------------------------------------ recovery

def recovery_history():
    # x: ok sends at 0 s and 1 s; fault 1 from 1.5 s to 4 s; sends invoked at
    # 2 s (fails at 3 s) and 3.5 s (acked at 6 s); then 6.5 s -> 7 s.
    t = [(0, "invoke", "send", [["send", "x", 1]], {"time": 0}),
         (0, "ok", "send", [["send", "x", [0, 1]]], {"time": int(0.1 * S)}),
         (0, "invoke", "send", [["send", "x", 2]], {"time": 1 * S}),
         (0, "ok", "send", [["send", "x", [1, 2]]], {"time": int(1.1 * S)}),
         kill("start", 1) + ({"time": int(1.5 * S)},),
         (0, "invoke", "send", [["send", "x", 3]], {"time": 2 * S}),
         (0, "fail", "send", [["send", "x", 3]], {"time": 3 * S}),
         (0, "invoke", "send", [["send", "x", 4]], {"time": int(3.5 * S)}),
         kill("stop", 1) + ({"time": 4 * S},),
         (0, "ok", "send", [["send", "x", [2, 4]]], {"time": 6 * S}),
         (0, "invoke", "send", [["send", "x", 5]], {"time": int(6.5 * S)}),
         (0, "ok", "send", [["send", "x", [3, 5]]], {"time": 7 * S}),
         (1, "invoke", "poll", [["poll"]], {"time": 7 * S}),
         (1, "ok", "poll", [["poll", {"x": [[0, 1], [1, 2], [2, 4], [3, 5]]}]], {"time": 8 * S})]
    return hist(t)


def test_recovery_windows_and_bound():
    h = recovery_history()
    r = check_history(h, checkers=("recovery",), options={"recovery_bound_s": 3})
    rec = r["checkers"]["recovery"]
    (fault,) = rec["faults"]
    assert fault["fault"] == "kill" and fault["id"] == 1
    assert fault["start_s"] == 1.5 and fault["stop_s"] == 4.0
    assert fault["keys"]["x"] == {"after_start_s": 4.5, "after_heal_s": 3.0}
    assert rec["longest_windows"]["x"]["window_s"] == 4.0   # invoked 2 s, next ack 6 s
    assert r["anomalies"]["recovery-bound-exceeded"] == [
        {"key": "x", "window_s": 4.0, "start_s": 2.0, "end_s": 6.0,
         "unrecovered": False, "faults": [{"fault": "kill", "id": 1}], "bound_s": 3}]
    assert r["valid"] is False
    # no bound: report only
    r = check_history(h, checkers=("recovery",),
                      options={"recovery_bound_s": None, "require_activity": False})
    assert r["valid"] is True and r["anomaly_types"] == []


def test_recovery_unrecovered_key():
    lines = send(0, "x", 1, 0) + send(0, "x", 2, None, type="info") + poll(1, {})
    r = check_history(hist(lines), checkers=("recovery",),
                      options={"recovery_bound_s": 1e-7, "require_activity": False})
    (w,) = r["anomalies"]["recovery-bound-exceeded"]
    assert w["unrecovered"] is True and w["key"] == "x"


# ---------------------------------------------------------------------- perf

def test_perf_latency_and_throughput():
    r = check_history(recovery_history(), checkers=("perf",),
                      options={"require_activity": False})
    p = r["checkers"]["perf"]
    assert p["valid"] is True
    assert p["latency_s"]["send"]["ok"]["count"] == 4
    assert p["latency_s"]["send"]["ok"]["max"] == 2.5
    assert p["latency_s"]["send"]["fail"]["p50"] == 1.0
    assert p["counts"]["send"] == {"fail": 1, "ok": 4}
    assert p["duration_s"] == 8.0
    assert p["throughput_ok_per_s"] == 5 / 8
    assert p["rate"]["series"]["send:ok"][0] == [0.0, 1.0]
