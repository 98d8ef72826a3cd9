"""Reading histories (checkers/history.py): validation, torn last lines,
open invokes, store directories."""
from __future__ import annotations

import json

import pytest

from checkers.history import HistoryError, parse_events, read_history
from checkers.synth import build, generate

# (a fresh clone compiles the checkers' kernels during its first tests)
pytestmark = pytest.mark.timeout(900)

GOOD = [
    {"index": 0, "time": 1200, "process": 0, "type": "invoke", "f": "send", "value": [["send", "x", 1]]},
    {"index": 1, "time": 5100, "process": 0, "type": "ok", "f": "send", "value": [["send", "x", [0, 1]]]},
    {"index": 2, "time": 5300, "process": 1, "type": "invoke", "f": "poll", "value": [["poll"]]},
    {"index": 3, "time": 9000, "process": 1, "type": "ok", "f": "poll", "value": [["poll", {"x": [[0, 1]]}]]},
    {"index": 4, "time": 9500, "process": "nemesis", "type": "info", "f": "start-kill", "value": {"fault": "kill", "id": 1, "targets": ["n1"]}},
    {"index": 5, "time": 19500, "process": "nemesis", "type": "info", "f": "stop-kill", "value": {"fault": "kill", "id": 1, "targets": ["n1"]}},
]


def write(tmp_path, lines, name="history.jsonl"):
    p = tmp_path / name
    p.write_text("".join(l + "\n" for l in lines))
    return p


def test_design_example_reads(tmp_path):
    h = read_history(write(tmp_path, [json.dumps(e) for e in GOOD]))
    assert len(h.ops) == 2 and len(h.nemesis) == 2
    send, poll = h.ops
    assert (send.f, send.type, send.invoke_index, send.index, send.time) == ("send", "ok", 0, 1, 5100)
    assert poll.value == [["poll", {"x": [[0, 1]]}]]
    assert [n.f for n in h.nemesis] == ["start-kill", "stop-kill"]
    assert list(h.events) == [0, 1, 2, 3]
    assert h.warnings == [] and h.stats() == {"ok": 2, "fail": 0, "info": 0}


def test_store_directory(tmp_path):
    write(tmp_path, [json.dumps(e) for e in GOOD])
    assert len(read_history(tmp_path).ops) == 2
    with pytest.raises(HistoryError, match="cannot read"):
        read_history(tmp_path / "missing")
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(HistoryError, match="no history.jsonl"):
        read_history(empty)


def test_bad_json_mid_file_names_the_line(tmp_path):
    lines = [json.dumps(e) for e in GOOD]
    lines[2] = lines[2][:-5]
    with pytest.raises(HistoryError) as e:
        read_history(write(tmp_path, lines))
    assert e.value.line == 3
    assert str(e.value).startswith(f"{tmp_path / 'history.jsonl'}:3: invalid JSON")


def test_torn_last_line_dropped_with_warning(tmp_path, caplog):
    lines = [json.dumps(e) for e in GOOD]
    text = "\n".join(lines[:4]) + "\n" + lines[4][:17]   # no final newline
    p = tmp_path / "history.jsonl"
    p.write_text(text)
    h = read_history(p)
    assert len(h.nemesis) == 0 and len(h.ops) == 2
    assert len(h.warnings) == 1 and "torn last line" in h.warnings[0] and ":5:" in h.warnings[0]
    assert "torn last line" in caplog.text


def test_open_invoke_counts_as_info(tmp_path):
    lines = [json.dumps(e) for e in GOOD[:3]]
    h = read_history(write(tmp_path, lines))
    poll = h.ops[1]
    assert poll.type == "info" and poll.index is None and poll.time is None
    assert "never completed" in h.warnings[0]
    assert h.stats() == {"ok": 1, "fail": 0, "info": 1}


@pytest.mark.parametrize("mutate, line, message", [
    (lambda ev: ev[1].update(index=7), 2, "index must be 1"),
    (lambda ev: ev[1].update(type="done"), 2, "type must be one of"),
    (lambda ev: ev[1].pop("time"), 2, "missing field 'time'"),
    (lambda ev: ev[0].update(value=[["send", 1, 1]]), 1, "send key must be a string"),
    (lambda ev: ev[0].update(value=[["send", "x", [0, 1]]]), 1, "send value must be an integer"),
    (lambda ev: ev[1].update(value=[["send", "x", [-1, 1]]]), 2, "send value must be an integer"),
    (lambda ev: ev[3].update(value=[["poll", {"x": [[0]]}]]), 4, "[offset, value] pairs"),
    (lambda ev: ev[3].update(value=[["poll", {"x": [["a", 1]]}]]), 4, "poll pair"),
    (lambda ev: ev[3].update(value=[["send", "x", [0, 1]]]), 4, "not allowed in poll"),
    (lambda ev: ev[1].update(f="poll", value=[["poll"]]), 2, "does not match the invoke"),
    (lambda ev: ev[1].update(process=5), 2, "without an open invoke"),
    (lambda ev: ev[1].update(type="invoke", value=[["send", "x", 2]]), 2, "has not completed"),
    (lambda ev: ev[0].update(f="frobnicate"), 1, "unknown f"),
    (lambda ev: ev[0].update(process=1.5), 1, "process must be"),
    (lambda ev: ev[4].update(value={"fault": "pause", "id": 1}), 5, "value.fault must be 'kill'"),
    (lambda ev: ev[4].update(value={"fault": "kill"}), 5, "value.id"),
    (lambda ev: ev[4].update(f="kill"), 5, "start-<fault>"),
])
def test_malformed_lines(tmp_path, mutate, line, message):
    events = json.loads(json.dumps(GOOD))
    mutate(events)
    with pytest.raises(HistoryError) as e:
        read_history(write(tmp_path, [json.dumps(ev) for ev in events]))
    assert e.value.line == line
    assert message in str(e.value)
    assert str(e.value).startswith(f"{tmp_path / 'history.jsonl'}:{line}: ")


def test_blank_line_mid_file_is_an_error(tmp_path):
    lines = [json.dumps(e) for e in GOOD]
    lines.insert(2, "")
    with pytest.raises(HistoryError) as e:
        read_history(write(tmp_path, lines))
    assert e.value.line == 3


def test_non_object_line(tmp_path):
    with pytest.raises(HistoryError, match=":1: event must be a JSON object"):
        read_history(write(tmp_path, ["[1, 2]", json.dumps(GOOD[0])]))


def test_completion_without_value_keeps_the_invoke_value():
    h = parse_events(build([(0, "invoke", "send", [["send", "x", 1]]),
                            (0, "info", "send", None)]))
    assert h.ops[0].value == [["send", "x", 1]] and h.ops[0].type == "info"


def test_jepsen_style_nemesis_invoke_then_info():
    h = parse_events(build([
        ("nemesis", "invoke", "start-kill", None),
        ("nemesis", "info", "start-kill", {"fault": "kill", "id": 1, "targets": ["n1"]})]))
    (n,) = h.nemesis
    assert n.invoke_index == 0 and n.index == 1 and n.value["id"] == 1


def test_extra_fields_kept():
    h = parse_events(build([(0, "invoke", "assign", ["x"], {"seek_to_beginning": True}),
                            (0, "ok", "assign", ["x"])]))
    assert h.ops[0].extra == {"seek_to_beginning": True}


def test_generated_history_roundtrip(tmp_path):
    events = generate(300, seed=5, nemesis_every=40)
    p = write(tmp_path, [json.dumps(e) for e in events])
    h = read_history(p)
    assert h.n_lines == len(events)
    assert sum(1 for _ in h.events) + len(h.nemesis) == len(events)
