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
import pytest

# (a fresh clone compiles the checkers' kernels during its first tests)
pytestmark = pytest.mark.timeout(900)


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
    # (two reads after them all that cannot both be right, which no cheap
    # test sees: every value read was written, none overwritten for sure)
    ops = [Operation(0, 100, ("write", i), None) for i in range(18)]
    ops += [Operation(101, 102, ("read", None), 1), Operation(103, 104, ("read", None), 2)]
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


# ------------------------------------------- compiled search, kv append

def _same_search(ops, model):
    """The compiled search gives the Python search's answer and witness."""
    fast = check_operations(ops, model, compiled=True)
    slow = check_operations(ops, model, compiled=False)
    assert fast == slow
    return fast


@SETTINGS
@given(timed(register_ops))
def test_compiled_register_search_is_the_python_one(ops):
    _same_search(ops, "register")


@SETTINGS
@given(timed(cas_ops))
def test_compiled_cas_search_is_the_python_one(ops):
    r = _same_search(ops, "cas-register")
    assert r["valid"] is brute_force(ops, MODELS["cas-register"])


# kv with reads of "" (which also match an absent key) and writes of ""
kv_values = st.sampled_from([0, 1, "", "x"])
kv_ops_empty = st.builds(
    lambda k, io: ((io[0][0], k, io[0][1]), io[1]), st.sampled_from("ab"),
    st.one_of(st.tuples(st.tuples(st.just("write"), kv_values), st.none()),
              st.tuples(st.tuples(st.just("read"), st.none()),
                        st.one_of(st.none(), kv_values)),
              st.tuples(st.tuples(st.just("cas"), st.tuples(st.one_of(st.none(), kv_values),
                                                            kv_values)), st.none())))


@SETTINGS
@given(timed(kv_ops_empty))
def test_compiled_kv_search_is_the_python_one(ops):
    r = _same_search(ops, "kv")
    assert r["valid"] is brute_force(ops, MODELS["kv"])


@st.composite
def kv_append_history(draw):
    """A kv history with appends, most of it what a real store would give
    (each op taking effect at one instant inside its interval; an
    indeterminate one at any instant after its call, or never), sometimes
    with one read changed."""
    n = draw(st.integers(1, 6))
    ops = []
    for _ in range(n):
        call = draw(st.integers(0, 20))
        indeterminate = draw(st.integers(0, 3)) == 0
        ret = None if indeterminate else call + draw(st.integers(1, 10))
        at = call + draw(st.integers(0, 30 if indeterminate else ret - call))
        happens = not indeterminate or draw(st.booleans())
        f = draw(st.sampled_from(["read", "append", "append", "write"]))
        key = draw(st.sampled_from("ab"))
        v = None if f == "read" else draw(st.sampled_from(["x", "y", "zz"]))
        ops.append([call, ret, at, happens, f, key, v])
    state = {}
    out = [None] * n
    for j in sorted(range(n), key=lambda j: ops[j][2]):
        call, ret, at, happens, f, key, v = ops[j]
        if not happens:
            continue
        if f == "read":
            out[j] = state.get(key)
        elif f == "write":
            state[key] = v
        else:
            state[key] = state.get(key, "") + v
    if draw(st.integers(0, 2)) == 0:  # a read that may be wrong
        reads = [j for j in range(n) if ops[j][4] == "read"]
        if reads:
            out[draw(st.sampled_from(reads))] = draw(st.sampled_from([None, "", "x", "xy", "y"]))
    return [Operation(call, ret, (f, key, v), out[j] if f == "read" else None)
            for j, (call, ret, at, happens, f, key, v) in enumerate(ops)]


@SETTINGS
@given(kv_append_history())
def test_kv_append_matches_brute_force(ops):
    assert check_operations(ops, "kv")["valid"] is brute_force(ops, MODELS["kv"])


def test_kv_append_histories_reach_both_answers():
    """The generator above gives valid and invalid histories, with
    indeterminate appends, and the search agrees with brute force on
    them: not a test that only ever sees one answer."""
    from hypothesis import find
    for want in (True, False):
        ops = find(kv_append_history(),
                   lambda ops: any(o.ret is None and o.input[0] == "append" for o in ops)
                   and brute_force(ops, MODELS["kv"]) is want and len(ops) >= 3,
                   settings=settings(max_examples=2000, deadline=None, database=None))
        assert check_operations(ops, "kv")["valid"] is want


def test_kv_append_known_answers():
    a1 = Operation(0, 10, ("append", "k", "x"), None)
    a2 = Operation(0, 10, ("append", "k", "y"), None)
    read = lambda v, call=20: Operation(call, call + 5, ("read", "k", None), v)
    for v, want in (("xy", True), ("yx", True), ("x", False), ("xyx", False), (None, False)):
        assert check_operations([a1, a2, read(v)], "kv")["valid"] is want, v
    # an absent key reads as None, or as "" (Porcupine's kv); an append of
    # an indeterminate op may or may not be in a later read
    assert check_operations([read(None, 0), read("", 0)], "kv")["valid"] is True
    maybe = Operation(0, None, ("append", "k", "z"), None)
    for v, want in (("xz", True), ("x", True), ("zx", True), ("z", False)):
        assert check_operations([a1, maybe, read(v)], "kv")["valid"] is want, v
    # a write replaces what appends made
    w = Operation(12, 14, ("write", "k", "q"), None)
    assert check_operations([a1, w, read("qx", 30), Operation(16, 18, ("append", "k", "x"), None)],
                            "kv")["valid"] is True
    assert check_operations([a1, w, read("xq")], "kv")["valid"] is False


def test_late_indeterminate_write_explains_a_read():
    """A read of a value whose only writer timed out, after a write of
    another value completed: the timed-out write may have taken effect
    late. Valid; the stale-read pass must not say otherwise."""
    maybe = Operation(0, None, ("write", 1), None)
    ops = [maybe, Operation(1, 2, ("write", 2), None), Operation(3, 4, ("read", None), 1)]
    for model in ("register", "cas-register"):
        assert check_operations(ops, model)["valid"] is True
        assert check_operations(ops[1:], model)["valid"] is False  # without it: stale
        # the first pass alone (no budget for the search to overrule it)
        assert check_operations(ops, model, max_states=1)["valid"] == "unknown"
        assert check_operations(ops[1:], model, max_states=1)["valid"] is False
    cas = Operation(0, None, ("cas", (2, 1)), None)
    assert check_operations([cas] + ops[1:], "cas-register")["valid"] is True
    assert check_operations([cas] + ops[1:], "cas-register", max_states=1)["valid"] == "unknown"


@settings(max_examples=int(os.environ.get("HW_CHECKER_EXAMPLES", 150)) * 4, deadline=None,
          suppress_health_check=[HealthCheck.too_slow])
@given(timed(cas_ops))
def test_stale_read_pass_is_sound(ops):
    """What the first pass calls a stale read, brute force finds no
    linearization for."""
    import numpy as np
    from checkers import wgl
    init, kind, a, b = MODELS["cas-register"].encode(ops)
    call = np.array([o.call for o in ops], dtype=np.int64)
    ret = np.array([o.ret if o.ret is not None else 0 for o in ops], dtype=np.int64)
    done = np.array([o.ret is not None for o in ops])
    r, _, _ = wgl.stale_read(kind, a, b, call, ret, done, init)
    if r >= 0:
        assert brute_force(ops, MODELS["cas-register"]) is False


def test_a_write_of_the_current_value_is_not_a_read():
    """Taking a read first from a state that allows it never loses a
    linearization; taking a write of the value already there first would:
    later, that write may be the one that sets the value back."""
    ops = [Operation(0, 1, ("write", 0), None), Operation(0, 1, ("cas", (0, 1)), None),
           Operation(0, 1, ("cas", (0, 1)), None), Operation(0, 1, ("write", 0), None)]
    for compiled in (True, False):
        assert check_operations(ops, "cas-register", compiled=compiled)["valid"] is True
