"""Linearizability search (checkers/linearizable.py) against a brute-force
oracle (try every order) on small generated histories, for every model."""
from __future__ import annotations

import itertools
import os

from hypothesis import HealthCheck, given, settings, strategies as st

from checkers import check_history
from checkers.history import parse_events
from checkers.linearizable import MODELS, Operation, check_operations
from checkers.synth import build, generate


def brute_force(ops, model):
    parts = model.partition(ops) if hasattr(model, "partition") else [ops]
    return all(_brute_part(p, model) for p in parts)


def _brute_part(ops, model):
    done = [i for i, o in enumerate(ops) if o.ret is not None]
    info = [i for i, o in enumerate(ops) if o.ret is None]
    for r in range(len(info) + 1):
        for extra in itertools.combinations(info, r):
            for order in itertools.permutations(done + list(extra)):
                if _legal(ops, order, model):
                    return True
    return False


def _legal(ops, order, model):
    pos = {i: n for n, i in enumerate(order)}
    for a in order:
        for b in order:
            # b finished before a began, so b must come first
            if ops[b].ret is not None and ops[b].ret < ops[a].call and pos[b] > pos[a]:
                return False
    state = model.init
    for i in order:
        ok, state = model.step(state, ops[i].input, ops[i].output)
        if not ok:
            return False
    return True


@st.composite
def timed(draw, inputs):
    n = draw(st.integers(1, 6))
    ops = []
    for _ in range(n):
        call = draw(st.integers(0, 20))
        ret = None if draw(st.integers(0, 5)) == 0 else call + draw(st.integers(1, 10))
        inp, out = draw(inputs)
        ops.append(Operation(call, ret, inp, out))
    return ops


values = st.integers(0, 2)
register_ops = st.one_of(st.tuples(st.tuples(st.just("write"), values), st.none()),
                         st.tuples(st.tuples(st.just("read"), st.none()),
                                   st.one_of(st.none(), values)))
cas_ops = st.one_of(register_ops,
                    st.tuples(st.tuples(st.just("cas"), st.tuples(st.one_of(st.none(), values), values)),
                              st.none()))
kv_ops = st.builds(lambda k, io: ((io[0][0], k, io[0][1]), io[1]), st.sampled_from("ab"), cas_ops)
log_ops = st.one_of(
    st.tuples(st.tuples(st.just("append"), st.integers(1, 4),
                        st.one_of(st.none(), st.integers(0, 3))), st.none()),
    st.tuples(st.builds(lambda ps: ("read", tuple(ps)),
                        st.lists(st.tuples(st.integers(0, 3), st.integers(1, 4)),
                                 min_size=1, max_size=2)), st.none()))

SETTINGS = settings(max_examples=int(os.environ.get("HW_CHECKER_EXAMPLES", 150)), deadline=None,
                    suppress_health_check=[HealthCheck.too_slow])


@SETTINGS
@given(timed(register_ops))
def test_register_matches_brute_force(ops):
    assert check_operations(ops, "register")["valid"] is brute_force(ops, MODELS["register"])


@SETTINGS
@given(timed(cas_ops))
def test_cas_register_matches_brute_force(ops):
    assert check_operations(ops, "cas-register")["valid"] is brute_force(ops, MODELS["cas-register"])


@SETTINGS
@given(timed(kv_ops))
def test_kv_matches_brute_force(ops):
    assert check_operations(ops, "kv")["valid"] is brute_force(ops, MODELS["kv"])


@SETTINGS
@given(timed(log_ops))
def test_log_matches_brute_force(ops):
    assert check_operations(ops, "log")["valid"] is brute_force(ops, MODELS["log"])


def test_known_register_answers():
    w1 = Operation(0, 10, ("write", 1), None)
    r1 = Operation(5, 15, ("read", None), 1)
    r0 = Operation(11, 20, ("read", None), None)   # reads the initial value after w1 ended
    assert check_operations([w1, r1], "register")["valid"] is True
    bad = check_operations([w1, r0], "register")
    assert bad["valid"] is False and bad["cannot_place"] == r0
    assert [o for o in bad["prefix"]] == [w1]
    # an indeterminate write may or may not have happened
    w2 = Operation(0, None, ("write", 2), None)
    assert check_operations([w2, Operation(30, 40, ("read", None), 2)], "register")["valid"] is True
    assert check_operations([w2, Operation(30, 40, ("read", None), None)], "register")["valid"] is True


def test_budget_gives_unknown():
    # many concurrent writes and an impossible read: a big search space
    ops = [Operation(0, 100, ("write", i), None) for i in range(18)]
    ops.append(Operation(0, 100, ("read", None), 99))
    r = check_operations(ops, "register", budget_s=0.05, max_states=2000)
    assert r["valid"] == "unknown"


def test_checker_on_kafka_histories():
    events = generate(150, seed=4, processes=3, keys=2)
    r = check_history(parse_events(events), checkers=("linearizable",),
                      options={"require_activity": False})
    assert r["valid"] is True
    # a send acked at offset 0 after a poll had already seen another value there
    lines = [(0, "invoke", "send", [["send", "x", 1]]),
             (0, "ok", "send", [["send", "x", [0, 1]]]),
             (1, "invoke", "send", [["send", "x", 2]]),
             (1, "ok", "send", [["send", "x", [0, 2]]])]
    r = check_history(parse_events(build(lines)), checkers=("linearizable",),
                      options={"require_activity": False})
    assert r["valid"] is False
    (w,) = r["anomalies"]["nonlinearizable"]
    assert w["key"] == "x" and w["op"]["index"] == 3 and w["prefix_length"] == 1
