"""Histories of the generic models (checkers/model_history.py): the fast
reading by columns gives exactly the results of the reference reading
(model_operations + check_operations), errors included; Jepsen's
independent histories (EDN tuples) are checked per key."""
from __future__ import annotations

import json
import os
import random

import pytest
from hypothesis import HealthCheck, given, settings, strategies as st

from checkers import model_history
from checkers.history import HistoryError
from checkers.model_history import check_model_events, is_independent, read_model_events
from checkers.synth_register import cas_register_history

# (a fresh clone compiles the checkers' kernels during its first tests)
pytestmark = pytest.mark.timeout(900)

SETTINGS = settings(max_examples=int(os.environ.get("HW_CHECKER_EXAMPLES", 100)), deadline=None,
                    suppress_health_check=[HealthCheck.too_slow,
                                           HealthCheck.function_scoped_fixture])


def _both(events, model, monkeypatch):
    """(fast result, whether the fast way took it) == reference result;
    errors alike."""
    took = []
    real = model_history._check_columns

    def spy(*a):
        r = real(*a)
        took.append(r is not None)
        return r

    def run(fn):
        with monkeypatch.context() as m:
            m.setattr(model_history, "_check_columns", fn)
            try:
                return check_model_events(events, model)
            except HistoryError as e:
                return str(e)

    fast = run(spy)
    slow = run(lambda *a: None)
    assert fast == slow
    return fast, any(took)


@st.composite
def register_events(draw, model):
    """Events of a small history by a few processes: invokes and
    completions interleaved, some info (then a fresh process), some fail,
    values small so that both answers come up; kv values as [key, v]."""
    n = draw(st.integers(1, 12))
    procs = draw(st.integers(1, 4))
    fs = {"register": ["read", "write"], "cas-register": ["read", "write", "cas"],
          "kv": ["read", "write", "cas"]}[model]
    keyed = model == "kv" or draw(st.booleans())  # (else: Jepsen's independent form)
    key_names = draw(st.sampled_from([["a", "b"], [0, 1]]))
    events, open_, next_p = [], {}, procs
    alive = list(range(procs))
    for _ in range(2 * n):
        p = draw(st.sampled_from(alive))
        if p in open_:
            f, v = open_.pop(p)
            t = draw(st.sampled_from(["ok", "ok", "ok", "info", "fail"]))
            out = draw(st.integers(0, 2)) if f == "read" and t == "ok" else v
            if keyed and f == "read":
                out = [v[0], out if t == "ok" else None]
            events.append({"process": p, "type": t, "f": f, "value": out})
            if t == "info":
                alive[alive.index(p)] = next_p
                next_p += 1
        else:
            f = draw(st.sampled_from(fs))
            v = (None if f == "read" else draw(st.integers(0, 2)) if f == "write"
                 else [draw(st.one_of(st.none(), st.integers(0, 2))), draw(st.integers(0, 2))])
            if keyed:
                v = [draw(st.sampled_from(key_names)), v]
            open_[p] = (f, v)
            events.append({"process": p, "type": "invoke", "f": f, "value": v})
    if draw(st.booleans()):
        for j, e in enumerate(events):
            e["time"] = 10 * j + draw(st.integers(0, 15))
        events.sort(key=lambda e: e["time"])
    return events


@SETTINGS
@given(st.data())
def test_fast_reading_matches_the_reference(monkeypatch, data):
    model = data.draw(st.sampled_from(["register", "cas-register", "kv"]))
    events = data.draw(register_events(model))
    result, took = _both(events, model, monkeypatch)
    assert took or isinstance(result, str)  # well-formed: the fast way takes it


def test_generated_etcd_like_histories_both_ways(monkeypatch):
    answers = set()
    for seed in range(12):
        events = cas_register_history(150, clients=5, seed=seed, p_info=0.1,
                                      stale_reads=seed % 2)
        (result, stats), took = _both(events, "cas-register", monkeypatch)
        assert took
        answers.add(result["valid"])
    assert answers == {True, False}


@pytest.mark.parametrize("edit, error", [
    (lambda evs: evs.insert(1, dict(evs[0])), "invokes while an op is open"),
    (lambda evs: evs.__setitem__(0, dict(evs[0], type="ok")), "without an invoke"),
    (lambda evs: evs.__setitem__(1, dict(evs[1], type="done")), "unknown type"),
    (lambda evs: evs.__setitem__(0, dict(evs[0], f="incr")), "not an operation"),
    (lambda evs: evs.__setitem__(0, [1, 2]), "must be a map"),
])
def test_errors_are_named_alike(monkeypatch, edit, error):
    events = [{"process": 0, "type": "invoke", "f": "write", "value": 1},
              {"process": 0, "type": "ok", "f": "write", "value": 1},
              {"process": 1, "type": "invoke", "f": "read", "value": None},
              {"process": 1, "type": "ok", "f": "read", "value": 1}]
    edit(events)
    result, _ = _both(events, "cas-register", monkeypatch)
    assert isinstance(result, str) and error in result


def test_values_the_fast_way_leaves_alone(monkeypatch):
    """Lists as values, float times, appends: the reference reading."""
    base = [{"process": 0, "type": "invoke", "f": "write", "value": [1, 2], "time": 1},
            {"process": 0, "type": "ok", "f": "write", "value": [1, 2], "time": 2},
            {"process": 1, "type": "invoke", "f": "read", "value": None, "time": 3},
            {"process": 1, "type": "ok", "f": "read", "value": [1, 2], "time": 4}]
    (r, _), took = _both(base, "register", monkeypatch)
    assert r["valid"] is True and not took
    floats = [dict(e, value=1, time=e["time"] + 0.5) for e in base]
    (r, _), took = _both(floats, "register", monkeypatch)
    assert r["valid"] is True and not took
    appends = [{"process": 0, "type": "invoke", "f": "append", "value": ["k", "x"]},
               {"process": 0, "type": "ok", "f": "append", "value": ["k", "x"]},
               {"process": 1, "type": "invoke", "f": "read", "value": ["k", None]},
               {"process": 1, "type": "ok", "f": "read", "value": ["k", "x"]}]
    (r, _), took = _both(appends, "kv", monkeypatch)
    assert r["valid"] is True and not took
    appends[3]["value"] = ["k", "xx"]
    (r, _), _ = _both(appends, "kv", monkeypatch)
    assert r["valid"] is False


def test_append_value_must_be_a_string():
    events = [{"process": 0, "type": "invoke", "f": "append", "value": ["k", 3]},
              {"process": 0, "type": "ok", "f": "append", "value": ["k", 3]}]
    with pytest.raises(HistoryError, match="append value must be a string"):
        check_model_events(events, "kv")
    with pytest.raises(HistoryError, match="not an operation of the cas-register"):
        check_model_events([dict(e, value="x") for e in events], "cas-register")


# ------------------------------------------------------------ independent

INDEPENDENT_EDN = """[{:type :invoke, :f :write, :value [0 1], :process 0, :time 1}
{:type :ok, :f :write, :value [0 1], :process 0, :time 2}
{:type :invoke, :f :write, :value #jepsen.independent.Tuple{:key 1, :value 2}, :process 1, :time 3}
{:type :ok, :f :write, :value #jepsen.independent.Tuple{:key 1, :value 2}, :process 1, :time 4}
{:type :invoke, :f :cas, :value [0 [1 3]], :process 2, :time 5}
{:type :ok, :f :cas, :value [0 [1 3]], :process 2, :time 6}
{:type :invoke, :f :read, :value [1 nil], :process 0, :time 7}
{:type :ok, :f :read, :value [1 %s], :process 0, :time 8}
{:type :invoke, :f :read, :value [0 nil], :process 1, :time 9}
{:type :ok, :f :read, :value [0 3], :process 1, :time 10}
{:type :info, :f :start, :process :nemesis, :time 11}]
"""


@pytest.mark.parametrize("read, valid", [("2", True), ("1", False)])
def test_independent_tuples_from_edn_are_checked_per_key(tmp_path, monkeypatch, read, valid):
    p = tmp_path / "history.edn"
    p.write_text(INDEPENDENT_EDN % read)
    events, _ = read_model_events(p)
    assert is_independent(events)
    (r, stats), took = _both(events, "cas-register", monkeypatch)
    assert r["valid"] is valid and r["independent"] is True and took
    assert stats == {"ok": 5, "fail": 0, "info": 0}
    if valid:
        assert r["partitions"] == 2
    else:
        (w,) = r["anomalies"]["nonlinearizable"]
        assert w["key"] == 1 and w["op"]["output"] == 1


def test_plain_register_history_is_not_independent():
    events = [{"process": 0, "type": "invoke", "f": "write", "value": 1},
              {"process": 0, "type": "ok", "f": "write", "value": 1},
              {"process": 1, "type": "invoke", "f": "read", "value": None},
              {"process": 1, "type": "ok", "f": "read", "value": 1}]
    assert not is_independent(events)
    # cas values [old, new] are pairs, but a cas of an independent history
    # is [key, [old, new]]
    assert not is_independent([{"process": 0, "type": "invoke", "f": "cas", "value": [1, 2]}])


def test_jsonl_read_in_one_call_and_errors_named(tmp_path):
    p = tmp_path / "h.jsonl"
    lines = [json.dumps(e) for e in cas_register_history(20, seed=1)]
    p.write_text("\n".join(lines) + "\n\n")
    events, _ = read_model_events(p)
    assert len(events) == len(lines)
    p.write_text("\n".join(lines[:5] + ["{oops"] + lines[5:]))
    with pytest.raises(HistoryError, match=r"h.jsonl:6: invalid JSON"):
        read_model_events(p)


def test_stale_read_found_without_the_search():
    """A read of a value overwritten for sure before it began: the first
    pass proves it, even with no search budget at all."""
    rng = random.Random(3)
    events = []
    t = 0
    for v in range(300):
        for p, f, val in ((v % 7, "write", v % 5), (7, "read", None)):
            events.append({"process": p, "type": "invoke", "f": f, "value": val, "time": t})
            events.append({"process": p, "type": "ok", "f": f,
                           "value": v % 5 if f == "read" else val, "time": t + 1})
            t += 2 + rng.randrange(3)
    events[-1]["value"] = (299 - 1) % 5  # the last read sees the value before
    r, _ = check_model_events(events, "cas-register", {"linearizable_max_states": 1})
    assert r["valid"] is False
    (w,) = r["anomalies"]["nonlinearizable"]
    assert w["reason"].startswith("stale read") and w["op"]["index"] == len(events) - 1
    assert w["overwritten_by"]["f"] == "write" and w["written_by"]["f"] == "write"


# ------------------------------------------------- files, read compiled

def _file_both(tmp_path, events, model, monkeypatch, text=None):
    """check_model_file with the compiled reading == the events way;
    returns (result, whether the compiled reading took it)."""
    p = tmp_path / "h.jsonl"
    p.write_text(text if text is not None else "".join(json.dumps(e) + "\n" for e in events))
    took = []
    real = model_history._check_lines

    def spy(*a):
        r = real(*a)
        took.append(r is not None)
        return r

    def run(fn):
        with monkeypatch.context() as m:
            m.setattr(model_history, "_check_lines", fn)
            try:
                return model_history.check_model_file(p, model)
            except HistoryError as e:
                return str(e)

    fast = run(spy)
    slow = run(lambda *a: None)
    assert fast == slow
    return fast, any(took)


@SETTINGS
@given(st.data())
def test_compiled_file_reading_matches_the_events_way(tmp_path, monkeypatch, data):
    model = data.draw(st.sampled_from(["register", "cas-register", "kv"]))
    events = data.draw(register_events(model))
    text = None
    if data.draw(st.booleans()):  # another layout, extra fields, nemesis lines
        rng = random.Random(data.draw(st.integers(0, 9)))
        lines = []
        for e in events:
            e = dict(e, note=rng.choice([None, "x", [1, {"a": 2}]])) if rng.random() < 0.3 else e
            items = list(e.items())
            rng.shuffle(items)
            lines.append("{" + ", ".join(f"{json.dumps(k)} : {json.dumps(v)}" for k, v in items)
                         + "}")
            if rng.random() < 0.1:
                lines.append(json.dumps({"process": "nemesis", "type": "info", "f": "start",
                                         "value": "\u00e9"}))
        text = "\n".join(lines) + "\n"
    result, took = _file_both(tmp_path, events, model, monkeypatch, text)
    # (keys that are strings: the events way)
    assert took or isinstance(result, str) or '["a", ' in json.dumps(events) \
        or '["b", ' in json.dumps(events)


@pytest.mark.parametrize("line, taken", [
    ('{"process": 0, "type": "ok", "f": "read", "value": 1 "time": 3}', False),  # no comma
    ('{"process": 0, "type": "info", "f": "read", "value": [1,}', False),        # bad JSON
    ('{"process": 0, "type": "info", "f": "read", "value": [1, tru]}', False),   # bad JSON
    ('{"process": 0, "type": "info", "f": "read", "value": "a\\q"}', False),   # bad escape
    ('{"process": 0, "type": "info", "f": "read", "value": 1, "x": nul}', False),
    ('{"process": 0, "type": "info", "f": "read", "value": "timed-out"}', True),
    ('{"process": 0, "type": "ok", "f": "read", "value": 1.0}', False),
    ('{"process": "n1", "type": "ok", "f": "read", "value": 1}', False),
    ('{"process": 0, "type": "ok", "f": "read", "value": 1, "time": 2.5}', False),
    ('{"process": 0, "type": "ok", "f": "read", "value": 1,}', False),
])
def test_compiled_file_reading_steps_aside(tmp_path, monkeypatch, line, taken):
    text = '{"process": 0, "type": "invoke", "f": "read", "value": null, "time": 1}\n' + line + "\n"
    result, took = _file_both(tmp_path, None, "register", monkeypatch, text)
    assert took == taken


def test_etcd_like_files_both_ways(tmp_path, monkeypatch):
    answers = set()
    for seed in range(8):
        events = cas_register_history(200, clients=6, seed=seed, p_info=0.1,
                                      stale_reads=seed % 2)
        (result, stats, _), took = _file_both(tmp_path, events, "cas-register", monkeypatch)
        assert took
        answers.add(result["valid"])
    assert answers == {True, False}
