"""The reader's fast path for poll completions (history.LazyPoll /
PollTable) and the array-based Kafka analysis over it must agree exactly
with the ordinary path: same values, same errors, same results."""
from __future__ import annotations

import copy
import json

import pytest

from checkers import check_history
from checkers.history import HistoryError, parse_events, read_history
from checkers.synth import generate, plant_anomalies

# (a fresh clone compiles the checkers' kernels during its first tests)
pytestmark = pytest.mark.timeout(900)



def _lines(events):
    return [json.dumps(e, separators=(",", ":")) for e in events]


def _read(tmp_path, lines):
    p = tmp_path / "h.jsonl"
    p.write_text("".join(l + "\n" for l in lines))
    return read_history(p)


def _strip(x):
    if isinstance(x, dict):
        return {k: _strip(v) for k, v in x.items() if k != "elapsed_s"}
    if isinstance(x, list):
        return [_strip(v) for v in x]
    return x


def _poll(result, type_="ok", f="poll"):
    return [
        {"index": 0, "time": 10, "process": 0, "type": "invoke", "f": f, "value": [["poll"]]},
        {"index": 1, "time": 20, "process": 0, "type": type_, "f": f, "value": [["poll", result]]},
        {"index": 2, "time": 30, "process": 1, "type": "invoke", "f": "poll", "value": [["poll"]]},
    ]


@pytest.mark.parametrize("result", [
    '{"x":[[0,1],[1,2]],"y":[]}', '{}', '{"x":[]}', '{"a b":[[3,-4]]}',
    '{"x":[[0,1]],"x":[[5,6]]}',         # duplicate key: JSON keeps the last
    '{"x":[[01,1]]}', '{"x":[[-1,1]]}', '{"x":[[1.5,1]]}', '{"x":[[null,1]]}',
    '{"x":[[0,1,2]]}', '{"x":[[0]]}', '{"x":[0,1]}', '{"x":[[0,1],]}',
    '{"x": [[0,1]]}', '{"\\u00e9":[[0,1]]}', '{"x":[[0,true]]}',
    '{"x":[[0,12345678901234567890]]}', '{"x":[[0,1]]', '{"x":{"y":1}}',
])
@pytest.mark.parametrize("type_,f", [("ok", "poll"), ("info", "poll"), ("ok", "txn"),
                                     ("ok", "send"), ("invoke", "poll")])
def test_fast_path_agrees_with_ordinary_path(tmp_path, monkeypatch, result, type_, f):
    evs = _poll("RESULT", type_, f)
    if type_ == "invoke":
        evs = evs[:1] + [dict(evs[1], process=2, index=1, type="invoke")] + evs[2:]
    lines = [l.replace('"RESULT"', result) for l in _lines(evs)]
    try:
        slow_events = [json.loads(l) for l in lines]
    except ValueError:
        slow_events = None
    try:
        fast = _read(tmp_path, lines)
    except HistoryError as e:
        fast_err = str(e).split(": ", 1)[1]
        if slow_events is not None:
            with pytest.raises(HistoryError) as ei:
                parse_events(slow_events)
            assert str(ei.value).split(": ", 1)[1] == fast_err
        return
    slow = parse_events(slow_events)
    assert [op.value for op in fast.ops] == [op.value for op in slow.ops]
    assert [op.type for op in fast.ops] == [op.type for op in slow.ops]


@pytest.mark.parametrize("planted", [False, True])
@pytest.mark.parametrize("seed", [1, 2])
def test_array_analysis_equals_list_analysis(tmp_path, monkeypatch, planted, seed):
    events = generate(3000, processes=5, keys=6, seed=seed, nemesis_every=500, batch=3)
    if planted:
        events = plant_anomalies(events)
    fast = _read(tmp_path, _lines(events))
    assert fast.polls is not None
    slow = parse_events(copy.deepcopy(events))
    assert slow.polls is None
    opts = {"recovery_bound_s": None}
    assert _strip(check_history(fast, options=opts)) == _strip(check_history(slow, options=opts))
    for ww in (False,):
        o = dict(opts, ww_deps=ww)
        fast2 = _read(tmp_path, _lines(events))
        assert _strip(check_history(fast2, options=o)) == \
            _strip(check_history(parse_events(copy.deepcopy(events)), options=o))


def test_mixed_fast_and_decoded_polls(tmp_path, monkeypatch):
    """Some poll lines in a shape the scan leaves to the decoder, merged
    with the arrays of the others."""
    events = plant_anomalies(generate(3000, processes=5, keys=6, seed=3, nemesis_every=500, batch=3))
    lines = _lines(events)
    for j in range(0, len(lines), 7):
        if '"poll",{' in lines[j] and lines[j].endswith("]]}"):  # an empty second poll
            lines[j] = lines[j][:-3] + '],["poll",{}]]}'      # micro-op: left to the decoder
    fast = _read(tmp_path, lines)
    assert fast.polls is not None
    assert any(op.f == "poll" and op.lazy_poll() is None and op.type != "info"
               for op in fast.ops)
    slow = parse_events([json.loads(l) for l in lines])
    opts = {"recovery_bound_s": None}
    assert _strip(check_history(fast, options=opts)) == _strip(check_history(slow, options=opts))


@pytest.mark.parametrize("how", ["null-offset", "huge-value", "float"])
def test_table_not_representable_falls_back(tmp_path, monkeypatch, how):
    """Reads the arrays cannot hold (an unknown offset in a decoded poll,
    values too spread out): the analysis decodes the lazy values instead."""
    events = generate(2000, processes=4, keys=4, seed=6, nemesis_every=400, batch=2)
    polls = [e for e in events if e["f"] == "poll" and e["type"] == "ok"
             and len(e["value"][0]) > 1 and any(e["value"][0][1].values())]
    e = polls[len(polls) // 2]
    k = next(k for k, ps in e["value"][0][1].items() if ps)
    if how == "float":  # not valid at all: both paths must reject it alike
        e["value"][0][1][k] = [[1.5, 2], [3.5, 4]]
        with pytest.raises(HistoryError) as fast_err:
            _read(tmp_path, _lines(events))
        with pytest.raises(HistoryError) as slow_err:
            parse_events(copy.deepcopy(events))
        assert str(fast_err.value).split(": ", 1)[1] == str(slow_err.value).split(": ", 1)[1]
        return
    if how == "null-offset":
        e["value"][0][1][k][0][0] = None
    else:
        e["value"][0][1][k].append([10**9, 10**12])
    fast = _read(tmp_path, _lines(events))
    assert fast.polls is not None
    from checkers.kafka.tables import ReadTable
    assert ReadTable.build(fast) is None
    slow = parse_events(copy.deepcopy(events))
    opts = {"recovery_bound_s": None}
    assert _strip(check_history(fast, options=opts)) == _strip(check_history(slow, options=opts))
