"""Jepsen's Kafka anomalies on small hand-written histories, each with its
exact witness (checkers/kafka.py)."""
from __future__ import annotations

import pytest

from checkers.history import parse_events
from checkers.kafka import analyze
from checkers.synth import build

# (a fresh clone compiles the checkers' kernels during its first tests)
pytestmark = pytest.mark.timeout(900)


def kafka(lines, **options):
    return analyze(parse_events(build(lines)), options)


def R(process, index, f="send", type="ok"):
    """The witness reference of the op completing at line `index`."""
    return {"process": process, "type": type, "f": f, "index": index,
            "time": index * 1000}


def send(p, k, v, offset, type="ok"):
    """invoke + completion lines of a one-mop send."""
    done = [["send", k, [offset, v]]] if offset is not None else [["send", k, v]]
    return [(p, "invoke", "send", [["send", k, v]]), (p, type, "send", done)]


def poll(p, result, type="ok"):
    return [(p, "invoke", "poll", [["poll"]]),
            (p, type, "poll", [["poll", result]] if result is not None else [["poll"]])]


def assign(p, keys, **extra):
    return [(p, "invoke", "assign", keys, extra), (p, "ok", "assign", keys)]


def test_clean_history_is_valid():
    r = kafka(send(0, "x", 1, 0) + send(0, "x", 2, 1) + assign(1, ["x"])
              + poll(1, {"x": [[0, 1], [1, 2]]}))
    assert r["valid"] is True
    assert r["anomaly_types"] == []
    assert r["realtime_lag"]["all"]["count"] == 2


def test_inconsistent_offsets():
    r = kafka(send(0, "x", 1, 0) + send(1, "x", 2, 0)
              + poll(2, {"x": [[0, 1]]}) + poll(3, {"x": [[0, 2]]}))
    assert r["anomalies"]["inconsistent-offsets"] == [
        {"key": "x", "offset": 0, "index": 0, "values": [1, 2]}]
    assert r["valid"] is False


def test_duplicate():
    r = kafka(send(0, "x", 1, 0) + poll(1, {"x": [[0, 1], [1, 1]]}))
    assert r["anomalies"]["duplicate"] == [
        {"key": "x", "value": 1, "count": 2, "offsets": [0, 1]}]


def test_lost_write():
    # 2 was acked at offset 1, but the reader jumped from offset 0 to 2.
    lines = (send(0, "x", 1, 0) + send(0, "x", 2, 1) + send(0, "x", 3, 2)
             + poll(1, {"x": [[0, 1], [2, 3]]}))
    r = kafka(lines)
    assert r["anomalies"]["lost-write"] == [
        {"key": "x", "value": 2, "index": 1, "max_read_index": 2,
         "writer": R(0, 3), "max_read": R(1, 7, "poll")}]
    # the same read is also an internal skip over value 2
    assert r["anomalies"]["int-poll-skip"] == [
        {"key": "x", "values": [1, 3], "delta": 2, "skipped": [2],
         "op": R(1, 7, "poll")}]
    assert "lost-write" in r["bad_anomaly_types"]


def test_lost_write_bound_uses_earliest_index():
    # 3 appears at offsets 1 and 3 (a duplicate): the bound is its earliest
    # index (1), so 4 at offset 2 (above the bound) is not lost, but 2 at 0 is.
    lines = (send(0, "x", 2, 0) + send(0, "x", 3, 1) + send(0, "x", 4, 2)
             + poll(1, {"x": [[1, 3]]}) + poll(2, {"x": [[3, 3]]}))
    r = kafka(lines)
    assert [(w["value"], w["index"], w["max_read_index"])
            for w in r["anomalies"]["lost-write"]] == [(2, 0, 1)]


def test_info_send_not_read_is_not_lost():
    lines = (send(0, "x", 1, 0) + send(2, "x", 2, None, type="info")
             + send(3, "x", 3, 2) + poll(1, {"x": [[0, 1], [2, 3]]}))
    r = kafka(lines)
    assert "lost-write" not in r["anomalies"]


def test_g1a():
    lines = send(0, "x", 1, None, type="fail") + poll(1, {"x": [[0, 1]]})
    r = kafka(lines)
    assert r["anomalies"]["G1a"] == [
        {"key": "x", "value": 1, "writer": R(0, 1, type="fail"),
         "reader": R(1, 3, "poll")}]


def test_garbage_read():
    r = kafka(poll(1, {"x": [[0, 99]]}))
    assert r["anomalies"]["garbage-read"] == [
        {"key": "x", "value": 99, "reader": R(1, 1, "poll")}]


def test_precommitted_read():
    lines = [(0, "invoke", "txn", [["send", "x", 1], ["poll"]]),
             (0, "ok", "txn", [["send", "x", [0, 1]], ["poll", {"x": [[0, 1]]}]])]
    r = kafka(lines)
    assert r["anomalies"]["precommitted-read"] == [
        {"op": R(0, 1, "txn"), "key": "x", "value": 1}]


def test_poll_skip_and_allowed_with_subscribe():
    lines = (send(0, "x", 1, 0) + send(0, "x", 2, 1) + send(0, "x", 3, 2)
             + assign(1, ["x"]) + poll(1, {"x": [[0, 1]]}) + poll(1, {"x": [[2, 3]]})
             + poll(2, {"x": [[0, 1], [1, 2], [2, 3]]}))
    r = kafka(lines)
    assert r["anomalies"]["poll-skip"] == [
        {"key": "x", "values": [1, 3], "delta": 2, "skipped": [2],
         "ops": [R(1, 9, "poll"), R(1, 11, "poll")]}]
    assert r["valid"] is False and r["bad_anomaly_types"] == ["poll-skip"]
    # with a subscribing consumer, rebalances may skip: allowed
    sub = [(3, "invoke", "subscribe", ["x"]), (3, "ok", "subscribe", ["x"])]
    r = kafka(lines + sub)
    assert r["allowed"] == ["poll-skip"] and r["valid"] is True


def test_poll_position_reset_by_assign_and_not_moved_by_failed_poll():
    lines = (send(0, "x", 1, 0) + send(0, "x", 2, 1) + send(0, "x", 3, 2)
             + assign(1, ["x"]) + poll(1, {"x": [[0, 1]]})
             + poll(1, {"x": [[1, 2]]}, type="fail")   # checked, does not advance
             + poll(1, {"x": [[1, 2], [2, 3]]})
             + assign(1, ["y"]) + assign(1, ["x"])     # forgets x
             + poll(1, {"x": [[0, 1]]}))
    r = kafka(lines)
    assert "nonmonotonic-poll" not in r["anomalies"]
    assert "poll-skip" not in r["anomalies"]


def test_nonmonotonic_poll():
    lines = (send(0, "x", 1, 0) + send(0, "x", 2, 1) + assign(1, ["x"])
             + poll(1, {"x": [[0, 1], [1, 2]]}) + poll(1, {"x": [[1, 2]]}))
    r = kafka(lines)
    assert r["anomalies"]["nonmonotonic-poll"] == [
        {"key": "x", "values": [2, 2], "delta": 0,
         "ops": [R(1, 7, "poll"), R(1, 9, "poll")]}]


def test_seek_to_beginning_is_not_nonmonotonic():
    lines = (send(0, "x", 1, 0) + assign(1, ["x"]) + poll(1, {"x": [[0, 1]]})
             + assign(1, ["x"], seek_to_beginning=True) + poll(1, {"x": [[0, 1]]}))
    assert "nonmonotonic-poll" not in kafka(lines)["anomalies"]


def test_int_nonmonotonic_poll_and_rebalance_exemption():
    lines = send(0, "x", 1, 0) + send(0, "x", 2, 1) + poll(1, {"x": [[1, 2], [0, 1]]})
    r = kafka(lines)
    assert r["anomalies"]["int-nonmonotonic-poll"] == [
        {"key": "x", "values": [2, 1], "delta": -1, "op": R(1, 5, "poll")}]
    lines[-1] = lines[-1] + ({"rebalance_log": [{"keys": ["x"]}]},)
    assert "int-nonmonotonic-poll" not in kafka(lines)["anomalies"]


def test_int_send_skip_is_allowed_and_int_nonmonotonic_send_is_not():
    skip = ([(0, "invoke", "send", [["send", "x", 1], ["send", "x", 3]])]
            + send(1, "x", 2, 1)
            + [(0, "ok", "send", [["send", "x", [0, 1]], ["send", "x", [2, 3]]])]
            + poll(2, {"x": [[0, 1], [1, 2], [2, 3]]}))
    r = kafka(skip)
    assert r["anomalies"]["int-send-skip"] == [
        {"key": "x", "values": [1, 3], "delta": 2, "skipped": [2], "op": R(0, 3)}]
    # interleaved sends are also a ww cycle (G0): both allowed by default
    assert r["allowed"] == ["G0", "int-send-skip"] and r["valid"] is True

    back = ([(0, "invoke", "send", [["send", "x", 1], ["send", "x", 2]]),
             (0, "ok", "send", [["send", "x", [1, 1]], ["send", "x", [0, 2]]])]
            + poll(2, {"x": [[0, 2], [1, 1]]}))
    r = kafka(back)
    assert r["anomalies"]["int-nonmonotonic-send"] == [
        {"key": "x", "values": [1, 2], "delta": -1, "op": R(0, 1)}]
    assert r["valid"] is False


def test_nonmonotonic_send():
    lines = send(0, "x", 1, 1) + send(0, "x", 2, 0) + poll(1, {"x": [[0, 2], [1, 1]]})
    r = kafka(lines)
    assert r["anomalies"]["nonmonotonic-send"] == [
        {"key": "x", "values": [1, 2], "delta": -1, "ops": [R(0, 1), R(0, 3)]}]


def test_unseen_at_the_end():
    lines = send(0, "x", 1, 0) + send(0, "x", 2, 1) + poll(1, {"x": [[0, 1]]})
    r = kafka(lines)
    assert r["anomalies"]["unseen"] == [
        {"unseen": {"x": 1}, "messages": {"x": [2]}, "time": 5000}]
    # the count over time: 1, then 2 unseen, then 1 after the poll
    assert [s["unseen"] for s in r["unseen_series"]][-1] == {"x": 1}


def test_realtime_lag():
    lines = send(0, "x", 1, 0) + poll(1, {"x": []}) + poll(1, {"x": [[0, 1]]})
    r = kafka(lines)
    lag = r["realtime_lag"]["by_key"]["x"]
    # acked at line 1, first seen by the poll completing at line 5
    assert lag["count"] == 1 and lag["max"] == pytest.approx(4000e-9)


def _g1c_realtime_lines():
    # W sends 2 at offset 1; P reads it and completes; only then is W'
    # invoked, yet W' lands *before* W at offset 0: W -wr-> P -rt-> W' -ww-> W.
    return (send(0, "x", 2, 1)                   # lines 0-1: W
            + poll(1, {"x": [[1, 2]]})            # lines 2-3: P
            + send(2, "x", 1, 0)                  # lines 4-5: W'
            + poll(3, {"x": [[0, 1], [1, 2]]}))   # lines 6-7


def test_g1c_realtime():
    r = kafka(_g1c_realtime_lines())
    cases = r["anomalies"]["G1c-realtime"]
    assert cases == [{
        "cycle": [R(0, 1), R(1, 3, "poll"), R(2, 5)],
        "steps": [{"type": "wr", "key": "x", "value": 2},
                  {"type": "realtime"},
                  {"type": "ww", "key": "x", "value": 1, "value'": 2}]}]
    assert "G1c-realtime" in r["bad_anomaly_types"]
    # W -rt-> W' -ww-> W is G0-realtime, allowed by default
    assert "G0-realtime" in r["allowed"]


def test_g1c_process():
    lines = (send(0, "x", 2, 1) + poll(1, {"x": [[1, 2]]}) + send(1, "x", 1, 0)
             + poll(3, {"x": [[0, 1], [1, 2]]}))
    r = kafka(lines)
    assert r["anomalies"]["G1c-process"] == [{
        "cycle": [R(0, 1), R(1, 3, "poll"), R(1, 5)],
        "steps": [{"type": "wr", "key": "x", "value": 2},
                  {"type": "process"},
                  {"type": "ww", "key": "x", "value": 1, "value'": 2}]}]


def test_g0_is_allowed():
    lines = ([(0, "invoke", "send", [["send", "x", 1], ["send", "y", 2]]),
              (1, "invoke", "send", [["send", "x", 2], ["send", "y", 1]]),
              (0, "ok", "send", [["send", "x", [0, 1]], ["send", "y", [1, 2]]]),
              (1, "ok", "send", [["send", "x", [1, 2]], ["send", "y", [0, 1]]])]
             + poll(2, {"x": [[0, 1], [1, 2]], "y": [[0, 1], [1, 2]]}))
    r = kafka(lines)
    assert r["anomaly_types"] == ["G0"]
    (case,) = r["anomalies"]["G0"]
    assert {c["index"] for c in case["cycle"]} == {2, 3}
    assert {s["type"] for s in case["steps"]} == {"ww"}
    assert r["valid"] is True and r["allowed"] == ["G0"]


def test_configurable_allowed():
    lines = send(0, "x", 1, 0) + send(0, "x", 2, 1) + poll(1, {"x": [[0, 1]]})
    r = kafka(lines, allow=["unseen"])
    assert r["valid"] is True and r["allowed"] == ["unseen"]
    r = kafka(lines, allowed_anomalies=[])
    assert r["valid"] is False


def test_no_cycle_search_when_disabled():
    r = kafka(_g1c_realtime_lines(), cycles=False)
    assert not any(t.startswith("G") for t in r["anomaly_types"] if t != "G1a")
