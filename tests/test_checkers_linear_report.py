"""Issue 5 linearizability gaps: the log model's read to the end, the
violation report (longest linearizable prefix, the op that cannot be
placed, a timeline) and its HTML page, and register / cas-register / kv
histories given as Jepsen-style events (checkers/linearizable.py,
checkers/render_linear.py)."""
from __future__ import annotations

import itertools
import os

from hypothesis import HealthCheck, given, settings, strategies as st

from checkers import check_history
from checkers.edn import read_all
from checkers.history import parse_events
from checkers.linearizable import (MODELS, Operation, check_operations, log_operations,
                                   violation_witness)
from checkers.model_history import check_model_events
from checkers.render_linear import render_html
from checkers.synth import build
import pytest

# (a fresh clone compiles the checkers' kernels during its first tests)
pytestmark = pytest.mark.timeout(900)

LOG = MODELS["log"]


def brute_force(ops, model):
    done = [i for i, o in enumerate(ops) if o.ret is not None]
    info = [i for i, o in enumerate(ops) if o.ret is None]
    for r in range(len(info) + 1):
        for extra in itertools.combinations(info, r):
            for order in itertools.permutations(done + list(extra)):
                pos = {i: n for n, i in enumerate(order)}
                if any(ops[b].ret is not None and ops[b].ret < ops[a].call and pos[b] > pos[a]
                       for a in order for b in order):
                    continue
                state, good = model.init, True
                for i in order:
                    good, state = model.step(state, ops[i].input, ops[i].output)
                    if not good:
                        break
                if good:
                    return True
    return False


# ------------------------------------------------------------ read to the end

def test_read_end_must_include_every_append_acked_before_it_began():
    a1 = Operation(0, 10, ("append", 1, 0), None)
    a2 = Operation(11, 20, ("append", 2, 1), None)
    # began after a2 was acked, read to the end but saw only offset 0
    stale = Operation(21, 30, ("read-end", 0, ((0, 1),)), None)
    r = check_operations([a1, a2, stale], "log")
    assert r["valid"] is False and r["cannot_place"] is stale
    assert r["prefix"] == [a1, a2] and r["state"] == (1, 2)
    # the same slice read as a plain read (not to the end) is fine
    plain = stale._replace(input=("read", ((0, 1),)))
    assert check_operations([a1, a2, plain], "log")["valid"] is True
    # complete reads to the end are fine, from any start
    full = stale._replace(input=("read-end", 0, ((0, 1), (1, 2))))
    tail = stale._replace(input=("read-end", 1, ((1, 2),)))
    empty_tail = stale._replace(input=("read-end", 2, ()))
    for good in (full, tail, empty_tail):
        assert check_operations([a1, a2, good], "log")["valid"] is True


def test_read_end_may_miss_a_concurrent_or_indeterminate_append():
    a1 = Operation(0, 10, ("append", 1, 0), None)
    concurrent = Operation(12, 40, ("append", 2, 1), None)   # acked after the read began
    read = Operation(21, 30, ("read-end", 0, ((0, 1),)), None)
    assert check_operations([a1, concurrent, read], "log")["valid"] is True
    maybe = Operation(5, None, ("append", 2, None), None)
    assert check_operations([a1, maybe, read], "log")["valid"] is True
    # ...but not invent one
    invented = read._replace(input=("read-end", 0, ((0, 1), (1, 3))))
    assert check_operations([a1, invented], "log")["valid"] is False


log_ops = st.one_of(
    st.tuples(st.just("append"), st.integers(1, 3), st.one_of(st.none(), st.integers(0, 2))),
    st.builds(lambda s, vs: ("read-end", s, tuple((s + j, v) for j, v in enumerate(vs))),
              st.integers(0, 2), st.lists(st.integers(1, 3), max_size=2)),
    st.builds(lambda ps: ("read", tuple(ps)),
              st.lists(st.tuples(st.integers(0, 2), st.integers(1, 3)), min_size=1, max_size=2)))


@st.composite
def timed_log(draw):
    ops = []
    for _ in range(draw(st.integers(1, 6))):
        call = draw(st.integers(0, 20))
        inp = draw(log_ops)
        ret = call + draw(st.integers(1, 10))
        if inp[0] == "append" and draw(st.integers(0, 4)) == 0:
            ret = None
        ops.append(Operation(call, ret, inp, None))
    return ops


@settings(max_examples=int(os.environ.get("HW_CHECKER_EXAMPLES", 150)), deadline=None,
          suppress_health_check=[HealthCheck.too_slow])
@given(timed_log())
def test_log_with_reads_to_the_end_matches_brute_force(ops):
    r = check_operations(ops, "log")
    assert r["valid"] is brute_force(ops, LOG)
    if r["valid"] is False:
        # the reported prefix is itself a legal sequence of the model
        state = LOG.init
        for o in r["prefix"]:
            good, state = LOG.step(state, o.input, o.output)
            assert good
        assert r["state"] == state


def test_kafka_poll_that_read_nothing_because_it_was_at_the_end():
    # a consumer of a stale leader: nothing new, its position 1 is "the end",
    # while offset 1 had been acknowledged before the poll began
    lines = [(0, "invoke", "send", [["send", "x", 1]]),
             (0, "ok", "send", [["send", "x", [0, 1]]]),
             (1, "invoke", "poll", [["poll"]]),
             (1, "ok", "poll", [["poll", {"x": [[0, 1]]}]], {"to_end": ["x"]}),
             (0, "invoke", "send", [["send", "x", 2]]),
             (0, "ok", "send", [["send", "x", [1, 2]]]),
             (1, "invoke", "poll", [["poll"]]),
             (1, "ok", "poll", [["poll", {}]], {"to_end_at": {"x": 1}})]
    h = parse_events(build(lines))
    reads = [o.input for o in log_operations(h)["x"] if o.input[0] != "append"]
    assert reads == [("read-end", 0, ((0, 1),)), ("read-end", 1, ())]
    r = check_history(h, checkers=("linearizable",), options={"require_activity": False})
    assert r["valid"] is False
    (w,) = r["anomalies"]["nonlinearizable"]
    assert w["op"]["index"] == 7 and w["state"]["length"] == 2
    # at the true end (2) the same empty read is fine
    lines[-1] = (1, "ok", "poll", [["poll", {}]], {"to_end_at": {"x": 2}})
    r = check_history(parse_events(build(lines)), checkers=("linearizable",),
                      options={"require_activity": False})
    assert r["valid"] is True
    # a malformed field decides nothing: unknown, with the reason
    lines[-1] = (1, "ok", "poll", [["poll", {}]], {"to_end_at": {"x": -1}})
    r = check_history(parse_events(build(lines)), checkers=("linearizable",),
                      options={"require_activity": False})
    assert r["valid"] == "unknown"
    assert "to_end_at of op 7 must map keys to offsets >= 0" in r["checkers"]["linearizable"]["error"]


def test_kafka_poll_marked_to_end():
    lines = [(0, "invoke", "send", [["send", "x", 1]]),
             (0, "ok", "send", [["send", "x", [0, 1]]]),
             (0, "invoke", "send", [["send", "x", 2]]),
             (0, "ok", "send", [["send", "x", [1, 2]]]),
             (1, "invoke", "poll", [["poll"]]),
             (1, "ok", "poll", [["poll", {"x": [[0, 1]]}]], {"to_end": True})]
    h = parse_events(build(lines))
    (read,) = [o for o in log_operations(h)["x"] if o.input[0] != "append"]
    assert read.input == ("read-end", 0, ((0, 1),))
    r = check_history(h, checkers=("linearizable",), options={"require_activity": False})
    assert r["valid"] is False
    (w,) = r["anomalies"]["nonlinearizable"]
    assert w["key"] == "x" and w["op"]["index"] == 5 and w["op"]["process"] == 1
    assert w["prefix_length"] == 2 and w["state"] == {"length": 2, "tail": [[0, 1], [1, 2]]}
    assert [e["linearized"] for e in w["timeline"]] == [0, 1, None]
    assert w["timeline"][-1]["cannot_place"] is True
    # without the flag the poll is an ordinary read: valid
    lines[-1] = lines[-1][:4]
    r = check_history(parse_events(build(lines)), checkers=("linearizable",),
                      options={"require_activity": False})
    assert r["valid"] is True


# ------------------------------------------------------------- the report

def test_violation_witness_and_html():
    w1 = Operation(0, 10, ("write", 1), None, {"process": 0, "index": 1})
    r1 = Operation(11, 20, ("read", None), 2, {"process": 1, "index": 3})
    res = check_operations([w1, r1], "register")
    w = violation_witness(res)
    assert w["op"] == {"process": 1, "index": 3, "input": ["read", None], "output": 2}
    assert w["prefix_length"] == 1 and w["state"] == 1 and w["model"] == "register"
    assert [(e["linearized"], e["cannot_place"]) for e in w["timeline"]] == [(0, False), (None, True)]
    page = render_html(w, source="h.jsonl")
    assert page.startswith("<!DOCTYPE html>") and "</svg>" in page
    assert 'class="bad"' in page and "#1 " in page and "h.jsonl" in page
    assert "<script" not in page and "http://" not in page.replace(
        'xmlns="http://www.w3.org/2000/svg"', "")


# ------------------------------------------- register / cas / kv histories

def ev(p, t, f, v):
    return {"process": p, "type": t, "f": f, "value": v}


def test_register_events():
    ok = [ev(0, "invoke", "write", 1), ev(0, "ok", "write", 1),
          ev(1, "invoke", "read", None), ev(1, "ok", "read", 1)]
    r, stats = check_model_events(ok, "register")
    assert r["valid"] is True and stats == {"ok": 2, "fail": 0, "info": 0}
    bad = ok + [ev(1, "invoke", "read", None), ev(1, "ok", "read", 3)]
    r, _ = check_model_events(bad, "register")
    assert r["valid"] is False
    (w,) = r["anomalies"]["nonlinearizable"]
    assert w["op"]["index"] == 5 and w["op"]["output"] == 3
    # a failed write never happened; an info write may have
    r, _ = check_model_events([ev(0, "invoke", "write", 3), ev(0, "fail", "write", 3)] + bad[4:],
                              "register")
    assert r["valid"] is False
    r, _ = check_model_events([ev(0, "invoke", "write", 3), ev(0, "info", "write", 3)] + bad[4:],
                              "register")
    assert r["valid"] is True


def test_cas_and_kv_events_from_edn():
    text = """[{:type :invoke, :f :write, :value 1, :process 0}
               {:type :ok, :f :write, :value 1, :process 0}
               {:type :invoke, :f :cas, :value [1 2], :process 1}
               {:type :ok, :f :cas, :value [1 2], :process 1}
               {:type :invoke, :f :read, :value nil, :process 0}
               {:type :ok, :f :read, :value 1, :process 0}]"""
    events = [{str(k): v for k, v in e.items()} for e in read_all(text)[0]]
    r, _ = check_model_events(events, "cas-register")
    assert r["valid"] is False        # the cas to 2 was acked before the read of 1
    events[5]["value"] = 2
    assert check_model_events(events, "cas-register")[0]["valid"] is True
    kv = [ev(0, "invoke", "write", ["a", 1]), ev(0, "ok", "write", ["a", 1]),
          ev(1, "invoke", "write", ["b", 2]), ev(1, "ok", "write", ["b", 2]),
          ev(0, "invoke", "read", ["a", None]), ev(0, "ok", "read", ["a", 1]),
          ev(1, "invoke", "read", ["b", None]), ev(1, "ok", "read", ["b", 1])]
    r, _ = check_model_events(kv, "kv")
    assert r["valid"] is False
    (w,) = r["anomalies"]["nonlinearizable"]
    assert w["key"] == "b" and w["op"]["key"] == "b" and w["op"]["output"] == 1
