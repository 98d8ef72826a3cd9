"""Property tests: histories generated from a model of a correct log are
valid; planting one anomaly in them is found, with the right witness."""
from __future__ import annotations

import copy
import os

from hypothesis import HealthCheck, given, settings, strategies as st

from checkers import check_history
from checkers.history import parse_events
from checkers.kafka import analyze
from checkers.synth import generate
import pytest

# (a fresh clone compiles the checkers' kernels during its first tests)
pytestmark = pytest.mark.timeout(900)

# HW_CHECKER_EXAMPLES=1000 for a longer hunt; 60 keeps the suite quick.
SETTINGS = settings(max_examples=int(os.environ.get("HW_CHECKER_EXAMPLES", 60)),
                    deadline=None,
                    suppress_health_check=[HealthCheck.too_slow])

histories = st.builds(
    generate,
    n_ops=st.integers(20, 150),
    processes=st.integers(1, 5),
    keys=st.integers(1, 4),
    seed=st.integers(0, 2**32),
    p_fail=st.sampled_from([0.0, 0.05, 0.2]),
    p_info=st.sampled_from([0.0, 0.05, 0.2]),
    max_mops=st.integers(1, 2),
    batch=st.integers(1, 5),
    nemesis_every=st.sampled_from([0, 15]),
)


def kafka(events, **options):
    return analyze(parse_events(events), options)


def version_index(events, k, offset):
    """Dense index of offset in key k's version order, as the checker builds it."""
    offsets = set()
    for ev in events:
        if ev["type"] == "invoke" or ev["process"] == "nemesis":
            continue
        for m in ev["value"] or ():
            if m[0] == "send" and m[1] == k and isinstance(m[2], list) and ev["type"] == "ok":
                offsets.add(m[2][0])
            elif m[0] == "poll" and len(m) > 1:
                offsets.update(o for o, _ in m[1].get(k, ()))
    return sorted(offsets).index(offset)


def witnesses_of(events, k, offset):
    """How many completions report offset of key k (ok sends, any polls)."""
    n = 0
    for ev in events:
        if ev["type"] == "invoke" or ev["process"] == "nemesis":
            continue
        for m in ev["value"] or ():
            if m[0] == "send" and m[1] == k and isinstance(m[2], list):
                n += ev["type"] == "ok" and m[2][0] == offset
            elif m[0] == "poll" and len(m) > 1:
                n += any(o == offset for o, _ in m[1].get(k, ()))
    return n


def ok_polls(events):
    return [ev for ev in events if ev["type"] == "ok" and ev["f"] == "poll"
            and ev["value"][0][1]]


def ok_sends(events):
    return [(ev, m) for ev in events if ev["type"] == "ok" and ev["f"] == "send"
            for m in ev["value"]]


@SETTINGS
@given(histories)
def test_correct_log_histories_are_valid(events):
    r = kafka(events)
    assert r["valid"] is True, (r["bad_anomaly_types"], r["anomalies"])
    assert set(r["anomaly_types"]) <= {"G0", "G0-process", "G0-realtime", "int-send-skip"}
    full = check_history(parse_events(events))
    assert full["valid"] in (True, "unknown")  # unknown only if too quiet
    if full["valid"] == "unknown":
        assert "reason" in full["checkers"]["workload"]


@SETTINGS
@given(histories, st.data())
def test_planted_lost_write_is_found(events, data):
    sends = ok_sends(events)
    # the last value of a key has nothing read after it: it would be unseen,
    # not provably lost
    last = {}
    for _, m in sends:
        last[m[1]] = max(last.get(m[1], -1), m[2][0])
    candidates = [m for _, m in sends if m[2][0] < last[m[1]]]
    if not candidates:
        return
    _, k, (o, v) = data.draw(st.sampled_from(candidates))
    index = version_index(events, k, o)
    bound = max(version_index(events, k, p[0]) for ev in ok_polls(events)
                for p in ev["value"][0][1].get(k, ()) if p[1] != v)
    planted = copy.deepcopy(events)
    for ev in planted:
        for m in ev["value"] if ev["f"] == "poll" and ev["type"] != "invoke" else ():
            if len(m) > 1 and k in m[1]:
                m[1][k] = [p for p in m[1][k] if p[1] != v]
    r = kafka(planted)
    assert r["valid"] is False
    lost = [{f: w[f] for f in ("key", "value", "index", "max_read_index")}
            for w in r["anomalies"]["lost-write"]]
    assert lost == [{"key": k, "value": v, "index": index, "max_read_index": bound}]


@SETTINGS
@given(histories, st.data())
def test_planted_duplicate_is_found(events, data):
    polls = ok_polls(events)
    if not polls:
        return
    ev = data.draw(st.sampled_from(polls))
    k = data.draw(st.sampled_from(sorted(ev["value"][0][1])))
    o, v = data.draw(st.sampled_from(ev["value"][0][1][k]))
    planted = copy.deepcopy(events)
    new_offset = 10_000  # past the end of any generated log
    planted[ev["index"]]["value"][0][1][k].append([new_offset, v])
    r = kafka(planted)
    assert r["valid"] is False
    assert {"key": k, "value": v, "count": 2, "offsets": [o, new_offset]} \
        in r["anomalies"]["duplicate"]


@SETTINGS
@given(histories, st.data())
def test_planted_inconsistent_offset_is_found(events, data):
    polls = ok_polls(events)
    if not polls:
        return
    ev = data.draw(st.sampled_from(polls))
    k = data.draw(st.sampled_from(sorted(ev["value"][0][1])))
    j = data.draw(st.integers(0, len(ev["value"][0][1][k]) - 1))
    o, v = ev["value"][0][1][k][j]
    if witnesses_of(events, k, o) < 2:
        return  # nobody else saw this offset: rewriting it is undetectable
    planted = copy.deepcopy(events)
    planted[ev["index"]]["value"][0][1][k][j] = [o, -1]   # a value nobody sent
    r = kafka(planted)
    assert r["valid"] is False
    assert r["anomalies"]["inconsistent-offsets"] == [
        {"key": k, "offset": o, "index": version_index(events, k, o), "values": [-1, v]}]
    assert [(g["key"], g["value"]) for g in r["anomalies"]["garbage-read"]] == [(k, -1)]


@SETTINGS
@given(histories, st.data())
def test_planted_read_of_failed_send_is_found(events, data):
    read = {(k, p[1]) for ev in ok_polls(events) for k, ps in ev["value"][0][1].items()
            for p in ps}
    sends = [(ev, m) for ev, m in ok_sends(events)
             if len(ev["value"]) == 1 and (m[1], m[2][1]) in read]
    if not sends:
        return
    ev, (_, k, (o, v)) = data.draw(st.sampled_from(sends))
    planted = copy.deepcopy(events)
    done = planted[ev["index"]]
    done["type"] = "fail"
    done["value"] = [["send", k, v]]
    r = kafka(planted)
    assert r["valid"] is False
    g1a = r["anomalies"]["G1a"]
    assert {(w["key"], w["value"], w["writer"]["index"], w["writer"]["type"])
            for w in g1a} == {(k, v, ev["index"], "fail")}


@SETTINGS
@given(histories, st.data())
def test_planted_unread_tail_is_unseen(events, data):
    # drop every poll result at or past the last acked offset of a key: that
    # acked value is unseen at the end (loss or lag: not provably lost)
    sends = ok_sends(events)
    if not sends:
        return
    k = data.draw(st.sampled_from(sorted({m[1] for _, m in sends})))
    last, v = max(tuple(m[2]) for _, m in sends if m[1] == k)
    planted = copy.deepcopy(events)
    for ev in planted:
        if ev["f"] == "poll" and ev["type"] != "invoke":
            for m in ev["value"]:
                if len(m) > 1 and k in m[1]:
                    m[1][k] = [p for p in m[1][k] if p[0] < last]
    r = kafka(planted)
    assert r["valid"] is False
    (u,) = r["anomalies"]["unseen"]
    assert u["unseen"] == {k: 1} and u["messages"] == {k: [v]}
    assert "lost-write" not in r["anomalies"]
