"""The Kafka analysis over arrays (kafka.tables.ReadTable and the compiled
kernels) against the list-based reference, on histories that reach the
corners of the array code: txn ops, subscribe / crash / rewinds, rebalance
logs, decoded polls among the lazy ones, unknown offsets, sparse or huge
process numbers, float times, values the arrays cannot hold."""
from __future__ import annotations

import copy
import json
import os

import pytest
from hypothesis import HealthCheck, given, settings, strategies as st

from checkers.history import parse_events, parse_lines
from checkers.kafka import LISTS, analyze
from checkers.kafka.tables import ReadTable
from checkers.synth import build, generate, plant_anomalies, plant_many

# (a fresh clone compiles the checkers' kernels during its first tests)
pytestmark = pytest.mark.timeout(900)

SETTINGS = settings(max_examples=int(os.environ.get("HW_CHECKER_EXAMPLES", 60)),
                    deadline=None, suppress_health_check=[HealthCheck.too_slow])


def _lines(events, loose=()):
    """JSON lines; the poll results of those at positions in loose in a
    shape the scan leaves to the decoder (an empty second poll micro-op,
    which reads nothing), not to the arrays."""
    out = []
    for j, ev in enumerate(events):
        line = json.dumps(ev, separators=(",", ":"))
        if j in loose and '"poll",{' in line and line.endswith("]]}"):
            line = line[:-3] + '],["poll",{}]]}'
        out.append(line)
    return out


def same_analysis(events, table=True, loose=(), **options):
    """analyze() of the history read from its lines (array path) equals
    that of the decoded events (list path); table: the arrays must hold it."""
    lines = _lines(events, loose)
    fast = parse_lines(lines)
    assert fast.polls is not None
    completed_at = {op.index: op for op in fast.ops}
    for j in loose:  # the loose poll results were decoded
        if lines[j].endswith('["poll",{}]]}'):
            assert completed_at[j].lazy_poll() is None
    assert (ReadTable.build(fast) is not None) == table
    slow = parse_events([json.loads(l) for l in lines])
    assert slow.polls is None
    r = analyze(fast, options)
    assert r == analyze(slow, options)
    # the reference backend on the same history (its lazy values decoded)
    assert r == analyze(fast, options, backend=LISTS)
    return r


def send(p, k, v, offset, type="ok"):
    done = [["send", k, [offset, v]]] if offset is not None else [["send", k, v]]
    return [(p, "invoke", "send", [["send", k, v]]), (p, type, "send", done)]


def poll(p, result, type="ok", **extra):
    return [(p, "invoke", "poll", [["poll"]]),
            (p, type, "poll", [["poll", result]] if result is not None else [["poll"]], extra)]


def assign(p, keys, type="ok", **extra):
    return [(p, "invoke", "assign", keys, extra), (p, type, "assign", keys)]


def _corners():
    """One history with a bit of everything."""
    return build(
        send(0, "x", 1, 0) + send(0, "x", 2, 1) + send(0, "y", 5, 0)
        + send(0, "x", 3, None, type="info") + send(0, "z", 9, None, type="fail")
        + send(0, "w", 7, 0)                                   # a key nobody reads
        + assign(1, ["x", "y"]) + poll(1, {"x": [[0, 1]], "y": []})
        + poll(1, {"x": [[1, 2], [0, 1]]}, rebalance_log=[{"keys": ["x"]}, "noise"])
        + poll(1, {"x": [[0, 1]]}, type="fail")
        + assign(1, ["y"]) + assign(1, ["x"], type="fail") + assign(1, ["x"])
        + poll(1, {"x": [[1, 2]]}) + [(1, "invoke", "crash", None), (1, "info", "crash", None)]
        + poll(1, {"x": [[0, 1]], "z": [[0, 9]]})             # reads a failed send
        + assign(1, ["x"], seek_to_beginning=True) + poll(1, {"x": [[0, 1], [2, 1]]})
        + [(2, "invoke", "subscribe", ["x"]), (2, "ok", "subscribe", ["x"])]
        + poll(2, {"x": [[1, 2]], "q": [[0, 4]]})             # garbage
        + [(3, "invoke", "txn", [["send", "x", 4], ["poll"]]),
           (3, "ok", "txn", [["send", "x", [3, 4]], ["poll", {"x": [[2, 1], [3, 4]]}],
                             ["poll", {"x": [[3, 4]], "y": [[0, 5]]}]])]
        + send(3, "x", 2, 4) + send(3, "y", 6, 1) + send(3, "y", 8, 0)
        + poll(4, {}) + poll(4, {"x": []}) + poll(4, {"x": [[4, 2], [3, 4]], "y": [[2, 5]]}))


def test_corners():
    events = _corners()
    r = same_analysis(events)
    assert {"precommitted-read", "G1a", "garbage-read", "nonmonotonic-send",
            "int-nonmonotonic-poll", "duplicate"} <= set(r["anomaly_types"])
    same_analysis(events, ww_deps=False)
    polls = [j for j, ev in enumerate(events) if ev["f"] == "poll" and ev["type"] == "ok"]
    # decoded polls first, in the middle (the arrays merge them in) and last
    same_analysis(events, loose={polls[0], polls[len(polls) // 2], polls[-1]})


def test_processes_sparse_huge_and_negative():
    events = _corners()
    for pids in ((10**12,), (-7,), (2**63 - 1, -2**63)):
        evs = copy.deepcopy(events)
        for ev in evs:
            if ev["process"] in (1, 2):
                ev["process"] = pids[ev["process"] % len(pids)]
        same_analysis(evs)


def test_float_times():
    events = _corners()
    for ev in events[::3]:
        ev["time"] = ev["time"] + 0.5
    same_analysis(events)


@pytest.mark.parametrize("value", [2**62, -2**62, 2**63 - 1, -2**63, 2**63, 2**64 - 1])
def test_send_values_out_of_range(value):
    """Sent values the int64 arrays cannot hold, or not all: the list path."""
    events = build(send(0, "x", value, 0) + send(0, "x", 1, 1) + poll(1, {"x": [[1, 1]]})
                   + poll(2, {"x": [[1, 1]]}))
    same_analysis(events)  # (the reads fit the arrays)


@pytest.mark.parametrize("planted", [False, True])
def test_generated_with_decoded_polls(planted):
    events = generate(1500, processes=5, keys=4, seed=11, nemesis_every=200, batch=3,
                      max_mops=2)
    if planted:
        events = plant_anomalies(events)
    polls = [j for j, ev in enumerate(events) if ev["f"] == "poll" and ev["type"] == "ok"]
    same_analysis(events)
    same_analysis(events, loose=set(polls[::9]))


def test_many_cases_every_witness_alike():
    """A system that loses, fails and reorders a lot: thousands of cases of
    a type (the array path makes their witnesses only when read). Every
    witness, not just the first few, equals the list path's, and the
    result's cap keeps the count."""
    events = plant_many(generate(3000, processes=5, keys=4, seed=12, nemesis_every=300,
                                 batch=4), fraction=0.05, seed=4)
    r = same_analysis(events, max_witnesses=10**9)
    counts = r["anomaly_counts"]
    for t in ("int-poll-skip", "int-nonmonotonic-poll", "poll-skip", "nonmonotonic-poll", "G1a"):
        assert counts[t] > 100 and len(r["anomalies"][t]) == counts[t], t
    capped = same_analysis(events, max_witnesses=3)
    assert capped["anomaly_counts"] == counts
    assert all(capped["anomalies"][t] == r["anomalies"][t][:3] for t in counts)


# ------------------------------------------------------------ random histories

@st.composite
def histories(draw):
    """Sequential ops of a few processes (each op's invoke and completion
    adjacent) on a few keys: sends appended to a log (ok with offset, info
    or fail without), polls of random, sometimes wrong, ranges of it, assign,
    subscribe, crash, txn, rebalance logs; times may be floats."""
    keys = ["a", "b", "c"][:draw(st.integers(1, 3))]
    logs = {k: [] for k in keys}
    nxt = [1]
    lines = []
    for _ in range(draw(st.integers(1, 40))):
        p = draw(st.integers(0, 3))
        kind = draw(st.sampled_from(["send", "send", "poll", "poll", "poll", "assign",
                                     "subscribe", "crash", "txn"]))
        if kind == "send":
            k = draw(st.sampled_from(keys))
            v = draw(st.sampled_from([nxt[0], nxt[0], 1, -3]))
            nxt[0] += 1
            t = draw(st.sampled_from(["ok", "ok", "info", "fail"]))
            off = None
            if t == "ok" or (t == "info" and draw(st.booleans())):
                logs[k].append(v)
                off = max(0, len(logs[k]) - 1 + draw(st.sampled_from([0, 0, 0, -1, 5])))
            lines += send(p, k, v, off if t != "fail" else None, type=t)
        elif kind in ("poll", "txn"):
            res = {}
            for k in draw(st.lists(st.sampled_from(keys), max_size=3, unique=True)):
                lo = draw(st.integers(0, len(logs[k])))
                pairs = [[o, logs[k][o]] for o in range(lo, len(logs[k]))]
                pairs = pairs[:draw(st.integers(0, 4))]
                if pairs and draw(st.integers(0, 4)) == 0:  # a wrong read
                    j = draw(st.integers(0, len(pairs) - 1))
                    pairs[j] = [pairs[j][0] + draw(st.sampled_from([0, 1, 7])),
                                draw(st.sampled_from([pairs[j][1], 99, nxt[0]]))]
                if len(pairs) > 1 and draw(st.integers(0, 4)) == 0:
                    pairs.reverse()
                res[k] = pairs
            extra = {"rebalance_log": [{"keys": list(res)[:1]}]} if draw(st.integers(0, 5)) == 0 else {}
            t = draw(st.sampled_from(["ok", "ok", "ok", "info", "fail"]))
            if kind == "poll":
                lines += poll(p, res if t == "ok" or draw(st.booleans()) else None, type=t,
                              **extra)
            else:
                k = draw(st.sampled_from(keys))
                logs[k].append(nxt[0])
                lines += [(p, "invoke", "txn", [["send", k, nxt[0]], ["poll"]]),
                          (p, t, "txn", [["send", k, [len(logs[k]) - 1, nxt[0]]],
                                         ["poll", res]], extra)]
                nxt[0] += 1
        elif kind == "assign":
            ks = draw(st.lists(st.sampled_from(keys + ["zz"]), max_size=3, unique=True))
            extra = {"seek_to_beginning": True} if draw(st.booleans()) else {}
            lines += assign(p, ks, type=draw(st.sampled_from(["ok", "ok", "fail"])), **extra)
        elif kind == "subscribe":
            lines += [(p, "invoke", "subscribe", keys), (p, "ok", "subscribe", keys)]
        else:
            lines += [(p, "invoke", "crash", None), (p, "info", "crash", None)]
    events = build(lines)
    if draw(st.integers(0, 5)) == 0:
        for ev in events[::2]:
            ev["time"] += 0.25
    loose = set(draw(st.lists(st.integers(0, len(events) - 1), max_size=4)))
    return events, loose


@SETTINGS
@given(histories(), st.booleans())
def test_random_histories(h, ww_deps):
    events, loose = h
    fast = parse_lines(_lines(events, loose))
    slow = parse_events(copy.deepcopy(events))
    if fast.polls is None:  # nothing left lazy: no arrays to compare
        return
    opts = {"ww_deps": ww_deps}
    assert analyze(fast, opts) == analyze(slow, opts)


def test_polls_decoded_before_the_analysis_count_once():
    """Another checker may decode the poll values the reader kept as
    arrays (op.value) before this one runs: their reads are in the poll
    table already, and must not be counted a second time."""
    events = plant_anomalies(generate(600, processes=4, keys=3, seed=2, batch=2))
    lines = _lines(events)
    fresh = analyze(parse_lines(lines))
    h = parse_lines(lines)
    for op in h.ops:
        op.value
    assert analyze(h) == fresh
    assert analyze(h, backend=LISTS) == fresh


@pytest.mark.parametrize("respell", [False, True])
def test_reader_send_rows_are_the_values(respell):
    """The sends the reader parsed into arrays (History.send_rows) are
    those of the ops' values: the array analysis from them equals the one
    from Op.value and the reference; keys spelled with escapes too."""
    import re
    events = plant_anomalies(generate(800, processes=4, keys=3, seed=5, batch=2,
                                      max_mops=2))
    lines = [json.dumps(e) for e in events]  # (json.dumps' own layout)
    if respell:  # some send keys spelled "\u0031"...
        lines = [re.sub(r'\["send", "(\d)"', lambda m: '["send", "\\u%04x"' % ord(m.group(1)), l)
                 if j % 3 == 0 else l for j, l in enumerate(lines)]
    h = parse_lines(lines)
    assert h.send_rows is not None
    r = analyze(h)
    h2 = parse_lines(lines)
    h2.send_rows = None
    assert analyze(h2) == r
    assert analyze(parse_lines(lines), backend=LISTS) == r
