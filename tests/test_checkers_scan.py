"""The compiled scan of a history file (checkers/scan.py) must read exactly
what the ordinary line-by-line reader reads: the same ops, values, extras,
events, nemesis events, poll table and warnings, or the same error. When it
cannot vouch for a file it must step aside, never guess."""
from __future__ import annotations

import json

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings, strategies as st

from checkers import history
from checkers.history import HistoryError, parse_bytes
from checkers.synth import generate


def _lines(events):
    return [json.dumps(e, separators=(",", ":")) for e in events]


def _snapshot(h):
    ops = [(o.id, o.process, o.f, o.type, o.invoke_index, o.invoke_time, o.index,
            o.time, o.extra, o.value) for o in h.ops]
    nem = [(o.f, o.type, o.index, o.time, o.value, o.extra) for o in h.nemesis]
    polls = None
    if h.polls is not None:
        p = h.polls
        polls = (p.keys, p.seg_op.tolist(), p.seg_key.tolist(), p.seg_lo.tolist(),
                 p.off.tolist(), p.val.tolist())
    return ops, nem, list(h.events), h.warnings, h.n_lines, h.end_time, polls


def _read(data, scanned: bool, monkeypatch):
    """(snapshot or error text, whether the scan took the file)."""
    took = []
    real = history._parse_scanned

    def spy(*a):
        r = real(*a)
        took.append(r is not None)
        return r

    with monkeypatch.context() as m:
        m.setattr(history, "_parse_scanned", spy if scanned else (lambda *a: None))
        try:
            return _snapshot(parse_bytes(data, "h.jsonl")), any(took)
        except HistoryError as e:
            return str(e), any(took)


def _agree(lines, monkeypatch):
    data = "".join(l + "\n" for l in lines).encode()
    fast, took = _read(data, True, monkeypatch)
    slow, _ = _read(data, False, monkeypatch)
    assert fast == slow
    return took, fast


def test_canonical_history_is_taken_by_the_scan(monkeypatch):
    events = generate(2000, processes=5, keys=6, seed=4, nemesis_every=300, batch=3)
    took, snap = _agree(_lines(events), monkeypatch)
    assert took
    assert snap[-1] is not None  # the poll results became a table


def test_extra_fields_and_nemesis_values_are_read_alike(monkeypatch):
    events = generate(600, processes=4, keys=3, seed=5, nemesis_every=100, batch=2)
    for i, e in enumerate(events):
        if e["process"] == "nemesis":
            e["value"] = dict(e["value"], signal="KILL", note="\\ \u00e9")
            e["node"] = "n1"
        elif e["type"] == "info":
            e["error"] = "timed out: [\"poll\"] \\ \u00e9"
        elif i % 17 == 0:
            e["seek_to_beginning"] = True
            e["rebalance_log"] = [{"keys": ["0"]}]
    took, _ = _agree(_lines(events), monkeypatch)
    assert took


@pytest.mark.parametrize("edit, taken", [
    (lambda ls: ls.__setitem__(3, ls[3].replace(',"value":', ', "value":')), False),
    (lambda ls: ls.__setitem__(3, ls[3][:-1] + ',"time":1}'), False),      # repeated field: JSON keeps the last
    (lambda ls: ls.__setitem__(3, ls[3][:-1] + ',"value":null}'), False),
    (lambda ls: ls.__setitem__(4, ls[4].replace('"time":', '"time":-')), False),
    (lambda ls: ls.__setitem__(4, ls[4].replace('"index":4', '"index":5')), False),
    (lambda ls: ls.__setitem__(4, ls[4].replace('"f":"', '"f":"x')), False),
    (lambda ls: ls.insert(5, ""), False),
    (lambda ls: ls.__setitem__(5, "{not json"), False),
    (lambda ls: ls.__setitem__(3, ls[3][:-1] + ',"error":"x"}'), True),
])
def test_out_of_form_lines_step_aside_or_agree(monkeypatch, edit, taken):
    lines = _lines(generate(200, processes=3, keys=2, seed=2, batch=2))
    edit(lines)
    took, _ = _agree(lines, monkeypatch)
    assert took == taken


_MUTATIONS = [
    lambda l: l.replace(',"value":', ', "value":'),
    lambda l: l[:-1] + ',"error":"x"}',
    lambda l: l[:-1] + ',"process":7}',
    lambda l: l[:-1] + ',"value":[["poll"]]}',
    lambda l: l.replace('"type":"ok"', '"type":"info"'),
    lambda l: l.replace('"type":"ok"', '"type":"invoke"'),
    lambda l: l.replace('"type":"invoke"', '"type":"ok"'),
    lambda l: l.replace('"f":"send"', '"f":"txn"'),
    lambda l: l.replace('"f":"poll"', '"f":"txn"'),
    lambda l: l.replace('"f":"assign"', '"f":"subscribe"'),
    lambda l: l.replace('"f":"send"', '"f":"poll"'),
    lambda l: l.replace('"process":1,', '"process":2,'),
    lambda l: l.replace('"process":1,', '"process":"nemesis",'),
    lambda l: l.replace('"process":1,', '"process":-1,'),
    lambda l: l.replace('"value":[["send"', '"value":null,"x":[["send"'),
    lambda l: l.replace('"value":["', '"value":[7,"'),
    lambda l: l.replace('"value":["', '"value":[],"y":["'),
    lambda l: l.replace('[["poll",{"', '[["poll",{"\\u0030'),
    lambda l: l.replace('[["poll",{', '[["poll",{"0":[[0,1]],'),
    lambda l: l.replace('[["poll",{', '[["poll",{"z":[[1.5,1]],'),
    lambda l: l.replace('[["poll",{', '[["poll",{"z":[[null,1]],'),
    lambda l: l.replace('"value":[["send","', '"value":[["send",5,"'),
    lambda l: l.replace('"value":[["send","0",', '"value":[["send","0",[null,3]],["send","0",'),
    lambda l: l.replace('"value":[["send","0",', '"value":[["send","0",[01,3]],["send","0",'),
    lambda l: l.replace('"value":[["send","0",', '"value":[["send","0",-0],["send","0",'),
    lambda l: l.replace('"time":', '"time":1.5,"t":'),
    lambda l: l.replace('}', ' }', 1),
    lambda l: l + " ",
]


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(seed=st.integers(0, 5),
       edits=st.lists(st.tuples(st.integers(0, 10**6), st.integers(0, len(_MUTATIONS) - 1)),
                      max_size=4),
       drop=st.lists(st.integers(0, 10**6), max_size=2))
def test_mutated_histories_read_alike(monkeypatch, seed, edits, drop):
    lines = _lines(generate(60, processes=3, keys=2, seed=seed, nemesis_every=20, batch=2))
    for at, which in edits:
        i = at % len(lines)
        lines[i] = _MUTATIONS[which](lines[i])
    for at in drop:
        del lines[at % len(lines)]
    _agree(lines, monkeypatch)


def test_scan_vouches_only_for_whole_numbers_it_can_hold(monkeypatch):
    lines = _lines(generate(100, processes=2, keys=2, seed=1, batch=2))
    lines[3] = lines[3].replace('"time":', '"time":1234567890123456789', 1).replace(
        '"time":1234567890123456789', '"time":12345678901234567890', 1)
    took, _ = _agree(lines, monkeypatch)
    assert not took


def test_join_spans_and_find_bodies_on_edges():
    from checkers import scan
    buf = np.frombuffer(b'abcdef', dtype=np.uint8)
    out = scan.join_spans(buf, np.array([0, 3], dtype=np.int64), np.array([2, 6], dtype=np.int64))
    assert out.tobytes() == b"[ab,def]"
    assert scan.join_spans(buf, np.zeros(0, dtype=np.int64),
                           np.zeros(0, dtype=np.int64)).tobytes() == b"[]"
    line = b'{"index":1,"time":2,"process":0,"type":"ok","f":"poll","value":[["poll",{"a":[[0,1]]}]]}'
    b = np.frombuffer(line, dtype=np.uint8)
    body, nseg, npairs = scan.find_bodies(b, np.array([0]), np.array([len(line)]),
                                          scan._MARK, scan._END)
    assert line[body[0]:len(line) - 3] == b'{"a":[[0,1]]}'
    assert (nseg[0], npairs[0]) == (1, 1)
