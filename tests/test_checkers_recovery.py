"""Recovery bounds (checkers/recovery.py): time to the first ok send after a
fault starts and after it heals, per key; the longest unavailability window
per key; recovery-bound-exceeded; and what a plot of them needs."""
from __future__ import annotations

from checkers import check_history
from checkers.history import parse_events
from checkers.synth import build
import pytest

# (a fresh clone compiles the checkers' kernels during its first tests)
pytestmark = pytest.mark.timeout(900)

S = 1_000_000_000


def t(x):
    return {"time": int(x * S)}


def send(p, k, v, off, t0, t1, type="ok"):
    done = [["send", k, [off, v]]] if type == "ok" else [["send", k, v]]
    return [(p, "invoke", "send", [["send", k, v]], t(t0)), (p, type, "send", done, t(t1))]


def nem(kind, i, at):
    return ("nemesis", "info", f"{kind}-kill", {"fault": "kill", "id": i, "targets": ["n1"]}, t(at))


def history():
    # x recovers 1 s after the heal; y keeps working through the fault
    lines = (send(0, "x", 1, 0, 0, 0.1) + send(1, "y", 1, 0, 0.2, 0.3) + [nem("start", 1, 1)] +
             send(0, "x", 2, None, 1.5, 2.5, type="info") + send(1, "y", 2, 1, 1.6, 1.8) +
             [nem("stop", 1, 3)] +
             send(2, "x", 3, 1, 3.5, 4.0) + send(1, "y", 3, 2, 3.2, 3.4) +
             [(3, "invoke", "poll", [["poll"]], t(4.5)),
              (3, "ok", "poll", [["poll", {"x": [[0, 1], [1, 3]], "y": [[0, 1], [1, 2], [2, 3]]}]],
               t(5))])
    return parse_events(build(lines))


def test_time_to_first_ok_send_after_start_and_heal_per_key():
    r = check_history(history(), checkers=("recovery",),
                      options={"recovery_bound_s": None, "require_activity": False})
    rec = r["checkers"]["recovery"]
    (f,) = rec["faults"]
    assert (f["fault"], f["id"], f["start_s"], f["stop_s"]) == ("kill", 1, 1.0, 3.0)
    assert f["keys"]["x"] == {"after_start_s": 3.0, "after_heal_s": 1.0}
    assert f["keys"]["y"] == {"after_start_s": 0.8, "after_heal_s": 0.4}
    assert f["max_after_start_s"] == 3.0 and f["max_after_heal_s"] == 1.0
    assert rec["valid"] is True and "anomalies" not in rec


def test_longest_window_and_bound_exceeded():
    r = check_history(history(), checkers=("recovery",),
                      options={"recovery_bound_s": 2, "require_activity": False})
    rec = r["checkers"]["recovery"]
    # x: the send invoked at 1.5 s waited for the next ack, at 4.0 s
    assert rec["longest_windows"]["x"]["window_s"] == 2.5
    assert rec["longest_windows"]["x"]["faults"] == [{"fault": "kill", "id": 1}]
    assert r["valid"] is False
    (w,) = r["anomalies"]["recovery-bound-exceeded"]
    assert (w["key"], w["start_s"], w["end_s"], w["bound_s"]) == ("x", 1.5, 4.0, 2)


def test_plot_data():
    rec = check_history(history(), checkers=("recovery",),
                        options={"require_activity": False})["checkers"]["recovery"]
    assert rec["end_s"] == 5.0 and rec["keys"] == ["x", "y"]
    # per key, its longest windows by start time (one per ack they end at)
    assert rec["windows"]["x"] == [
        {"start_s": 0.0, "end_s": 0.1, "window_s": 0.1, "unrecovered": False},
        {"start_s": 1.5, "end_s": 4.0, "window_s": 2.5, "unrecovered": False}]
    assert [w["end_s"] for w in rec["windows"]["y"]] == [0.3, 1.8, 3.4]
    few = check_history(history(), checkers=("recovery",),
                        options={"require_activity": False, "recovery_max_windows": 1})
    (longest,) = few["checkers"]["recovery"]["windows"]["y"]
    assert abs(longest["window_s"] - 0.2) < 1e-9


from hypothesis import given, settings, strategies as st  # noqa: E402


@settings(max_examples=300, deadline=None)
@given(attempts=st.lists(st.integers(0, 50), min_size=1, max_size=30),
       acks=st.lists(st.integers(0, 50), max_size=30), tail=st.integers(0, 10))
def test_windows_equal_a_brute_force_walk(attempts, acks, tail):
    """recovery._windows against the plain definition: each attempt waits
    for the first ack at or after it (or the end); the worst wait is the
    first longest; per wait end, the earliest attempt waiting for it."""
    import numpy as np

    from checkers.recovery import _windows
    attempts.sort()
    acks.sort()
    end = max(attempts + acks) + tail
    worst, by_end = None, {}
    for t in attempts:
        nxt = [a for a in acks if a >= t]
        w = (t, nxt[0], False) if nxt else (t, end, True)
        if worst is None or w[1] - w[0] > worst[1] - worst[0]:
            worst = w
        by_end.setdefault((w[1], w[2]), t)
    got_worst, starts, ends, unrec = _windows(np.array(attempts), np.array(acks, dtype=np.int64),
                                              end)
    assert got_worst == worst
    assert {(e, u): s for s, e, u in zip(starts.tolist(), ends.tolist(), unrec.tolist())} \
        == by_end
