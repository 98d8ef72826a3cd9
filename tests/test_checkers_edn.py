"""Jepsen history.edn import (checkers/edn.py)."""
from __future__ import annotations

import json
import os

import pytest

from checkers import check_history
from checkers.edn import EdnError, Keyword, convert, read_all, read_edn_history
from checkers.history import HistoryError
from checkers.synth import generate

# (a fresh clone compiles the checkers' kernels during its first tests)
pytestmark = pytest.mark.timeout(900)

DATA = os.path.join(os.path.dirname(__file__), "data", "histories")


def test_reader_subset():
    forms = read_all('{:a 1, :b [1 -2.5 "x\\"y\\n"] :c #{1 2} :d nil} (1 2) '
                     '#_ 3 #inst "2020-01-01" \\a :kw ; comment\n 7N true')
    m, lst, inst, ch, kw, big, t = forms
    assert m == {"a": 1, "b": [1, -2.5, 'x"y\n'], "c": {1, 2}, "d": None}
    assert all(isinstance(k, Keyword) for k in m)
    assert lst == [1, 2] and inst == "2020-01-01" and ch == "a"
    assert kw == "kw" and isinstance(kw, Keyword) and big == 7 and t is True


@pytest.mark.parametrize("text", ["{:a 1", "[1 2)", "{:a}", ")"])
def test_reader_errors(text):
    with pytest.raises(EdnError):
        read_all(text)


def test_jepsen_history_file():
    h = read_edn_history(os.path.join(DATA, "jepsen-kafka-small.edn"))
    send, assign, poll, debug = h.ops
    assert send.value == [["send", "3", [0, 12]]] and send.type == "ok"
    assert assign.value == ["3"] and assign.extra == {"seek_to_beginning": True}
    assert poll.value == [["poll", {"3": [[0, 12]]}]]
    assert poll.extra == {"rebalance_log": [{"keys": ["3"]}]}
    assert debug.f == "debug-topic-partitions"
    start, stop = h.nemesis
    assert start.f == "start-partition" and start.value == {
        "fault": "partition", "id": 1, "targets": ["majority"]}
    assert stop.value["id"] == 1
    r = check_history(h, options={"require_activity": False})
    assert r["valid"] is True


def _to_edn(x):
    if isinstance(x, dict):
        return "{" + ", ".join(f"{_to_edn(k)} {_to_edn(v)}" for k, v in x.items()) + "}"
    if isinstance(x, list):
        return "[" + " ".join(_to_edn(v) for v in x) + "]"
    if x is None:
        return "nil"
    if isinstance(x, bool):
        return "true" if x else "false"
    if isinstance(x, str):
        return ":" + x
    return str(x)


def _jepsenize(ev):
    """Our event as Jepsen would have written it (integer keys, keywords)."""
    def key(k):
        return int(k)

    value = ev["value"]
    if ev["process"] == "nemesis":
        value = value["targets"]
    elif ev["f"] in ("send", "poll"):
        out = []
        for m in value:
            if m[0] == "send":
                out.append(["send", key(m[1]), m[2]])
            elif len(m) > 1:
                out.append(["poll", {key(k): v for k, v in m[1].items()}])
            else:
                out.append(["poll"])
        value = out
    elif ev["f"] == "assign":
        value = [key(k) for k in value]
    op = {"type": ev["type"], "f": ev["f"], "value": value, "time": ev["time"],
          "process": ev["process"], "index": ev["index"]}
    if ev.get("seek_to_beginning"):
        op["seek-to-beginning?"] = True
    return op


def test_generated_history_round_trips_through_edn(tmp_path):
    events = generate(200, seed=9, nemesis_every=30)
    p = tmp_path / "history.edn"
    p.write_text("\n".join(_to_edn(_jepsenize(e)) for e in events))
    h = read_edn_history(tmp_path)
    assert len(h.ops) == sum(1 for e in events if e["type"] == "invoke"
                             and e["process"] != "nemesis")
    r = check_history(h)
    assert r["valid"] is True, json.dumps(r)[:500]


def test_vector_of_ops_and_bad_file(tmp_path):
    p = tmp_path / "h.edn"
    p.write_text("[{:type :invoke, :f :poll, :value [[:poll]], :time 1, :process 0}"
                 " {:type :ok, :f :poll, :value [[:poll {}]], :time 2, :process 0}]")
    h = read_edn_history(p)
    assert len(h.ops) == 1 and h.ops[0].type == "ok"
    p.write_text("{:type :invoke")
    with pytest.raises(HistoryError, match="EDN"):
        read_edn_history(p)


def test_convert_drops_unknown_fs_with_a_warning():
    warnings = []
    events = convert([{Keyword("type"): Keyword("invoke"), Keyword("f"): Keyword("frob"),
                       Keyword("process"): 0, Keyword("time"): 0, Keyword("value"): None}],
                     warnings)
    assert events == [] and "frob" in warnings[0]
