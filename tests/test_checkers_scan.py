"""The compiled scan of a history file (checkers/scan.py) must read exactly
what the ordinary line-by-line reader reads: the same ops, values, extras,
events, nemesis events, poll table and warnings, or the same error. When it
cannot vouch for a file it must step aside, never guess."""
from __future__ import annotations

import json
import re

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings, strategies as st

from checkers import history
from checkers.history import HistoryError, parse_bytes
from checkers.synth import generate

# (a fresh clone compiles the checkers' kernels during its first tests)
pytestmark = pytest.mark.timeout(900)


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
    (lambda ls: ls.__setitem__(3, ls[3].replace(',"value":', ', "value" :\t')), True),
    (lambda ls: ls.__setitem__(3, ls[3][:-1] + ',"time":1}'), False),      # repeated field: JSON keeps the last, going back
    (lambda ls: ls.__setitem__(3, ls[3][:-1] + ',"value":null}'), False),  # the last: null, wrong for an ok assign
    (lambda ls: ls.__setitem__(4, ls[4].replace('"time":', '"time":-')), False),
    (lambda ls: ls.__setitem__(4, ls[4].replace('"index":4', '"index":5')), False),
    (lambda ls: ls.__setitem__(4, ls[4].replace('"f":"', '"f":"x')), False),
    (lambda ls: ls.insert(5, ""), False),
    (lambda ls: ls.__setitem__(5, "{not json"), False),
    (lambda ls: ls.__setitem__(3, ls[3][:-1] + ',"error":"x"}'), True),
    (lambda ls: ls.__setitem__(3, ls[3].replace('"time":', '"ti\\u006de":')), True),
    (lambda ls: ls.__setitem__(3, ls[3].replace('"time":', '"time":1.0,"t":')), False),
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
    out = scan.join_members(buf, np.array([0, 2, 3]), np.array([1, 3, 6]), np.array([4, 4, 7]))
    assert out.tobytes() == b"[{a,c},{def}]"
    z = np.zeros(0, dtype=np.int64)
    assert scan.join_members(buf, z, z, z).tobytes() == b"[]"
    for line in (b'{"index":1,"time":2,"process":0,"type":"ok","f":"poll","value":[["poll",{"a":[[0,1]]}]]}',
                 b' { "value" : [ [ "poll" , {"a" : [ [0 , 1] ] } ] ] ,"f":"p\\u006fll", "time":2,'
                 b'"type":"ok","process":0,"index":1}\r'):
        b = np.frombuffer(line, dtype=np.uint8)
        vlo, vhi, lo, hi, nseg, npairs = scan.find_bodies(
            b, np.array([0]), np.array([len(line)]), *scan.WORDS)
        assert line[lo[0]:hi[0]].replace(b" ", b"") == b'{"a":[[0,1]]}'
        assert line[vlo[0]:vhi[0]].startswith(b"[") and line[vlo[0]:vhi[0]].endswith(b"]")
        assert (nseg[0], npairs[0]) == (1, 1)


def _layouts(ev, rng):
    """ev as one JSON line in a random layout: fields shuffled, random
    whitespace, escapes in the field names, an extra field or not."""
    import random
    items = list(ev.items())
    rng.shuffle(items)
    if rng.random() < 0.3:
        items.insert(rng.randrange(len(items) + 1), ("note", rng.choice(["x", "\u00e9", 1, None])))
    ws = lambda: rng.choice(["", " ", "  ", "\t"])
    parts = []
    for k, v in items:
        name = json.dumps(k)
        if rng.random() < 0.1:
            name = '"' + "".join(f"\\u{ord(c):04x}" if rng.random() < 0.5 else c for c in k) + '"'
        text = json.dumps(v, separators=(rng.choice([",", ", "]), rng.choice([":", ": "])),
                          ensure_ascii=rng.random() < 0.5)
        parts.append(ws() + name + ws() + ":" + ws() + text + ws())
    return ws() + "{" + ",".join(parts) + "}" + ws()


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(seed=st.integers(0, 10**6))
def test_any_layout_is_taken_and_read_alike(monkeypatch, seed):
    import random
    rng = random.Random(seed)
    events = generate(80, processes=3, keys=3, seed=seed % 7, nemesis_every=30, batch=2)
    for e in events:
        if e["process"] != "nemesis" and e["type"] == "ok" and e["f"] == "poll" and rng.random() < 0.3:
            res = e["value"][0][1]
            e["value"] = [["poll", {k + rng.choice(["", "\u00e9", "\"q", "\\"]): v
                                    for k, v in res.items()}]]
    lines = [_layouts(e, rng) for e in events]
    # poll result keys (digits) spelled with escapes here and there: two
    # spellings of one key are one key
    respell = lambda m: '"' + "".join(f"\\u{ord(c):04x}" if rng.random() < 0.5 else c
                                      for c in m.group(1)) + '"' + m.group(2)
    lines = [re.sub(r'"(\d+)"(\s*:\s*\[)', respell, l) for l in lines]
    took, snap = _agree(lines, monkeypatch)
    assert took
    assert snap[-1] is not None


def test_canonical_and_default_layouts_read_alike(monkeypatch):
    events = generate(300, processes=4, keys=4, seed=3, nemesis_every=50, batch=3)
    canonical = _lines(events)
    loose = [json.dumps({**{k: v for k, v in e.items() if k != "index"}, "index": e["index"]})
             for e in events]
    a = _agree(canonical, monkeypatch)
    b = _agree(loose, monkeypatch)
    assert a == b and a[0]


def test_one_key_spelled_twice_in_a_result(monkeypatch):
    lines = _lines(generate(40, processes=2, keys=2, seed=1, batch=2))
    i = next(j for j, l in enumerate(lines) if '"type":"ok","f":"poll"' in l and '[["poll",{"' in l)
    assert lines[i].endswith("}]]}")
    # (a key no other result holds: each spelling once in the file's bytes)
    lines[i] = lines[i][:-4] + ',"\\u0039\\u0039":[[7,8]],"99":[[9,10]]}]]}'
    took, snap = _agree(lines, monkeypatch)
    assert took
    ops = snap[0]
    # JSON keeps the last of a key given twice
    (value,) = [o[-1] for o in ops if o[6] == i]
    assert value[0][1]["99"] == [[9, 10]]
    # and so does the poll table (both readers build it the same way)
    keys, seg_op, seg_key, seg_lo, off, val = snap[-1]
    (op_id,) = [o[0] for o in ops if o[6] == i]
    rows = [list(zip(off[seg_lo[s]:seg_lo[s + 1]], val[seg_lo[s]:seg_lo[s + 1]]))
            for s in range(len(seg_op)) if seg_op[s] == op_id and keys[seg_key[s]] == "99"]
    assert rows == [[(9, 10)]]


@pytest.mark.parametrize("last", ["invoke", "completion", "none"])
def test_op_codes_are_those_of_the_ops(last):
    """History.op_codes (the scan's per-op columns for the array analysis)
    equal what the analysis would read from the ops, the last line's op
    included (that line is read the ordinary way)."""
    from checkers.kafka.tables import op_columns
    events = generate(300, processes=4, keys=3, seed=8, nemesis_every=60, batch=2)
    for e in events[::7]:
        if e["process"] != "nemesis":
            e["note"] = "x"
    lines = _lines(events)
    if last == "invoke":
        lines.append(json.dumps({"index": len(lines), "time": 10**12, "process": 999,
                                 "type": "invoke", "f": "poll", "value": [["poll"]]}))
    elif last == "completion":
        lines = lines[:-1]
    h = parse_bytes("\n".join(lines).encode())
    assert h.op_codes is not None
    want = op_columns(h.ops, int_processes=True)
    got = op_columns(h.ops, int_processes=True, codes=h.op_codes)
    for x, y in zip(want, got):
        assert x.tolist() == y.tolist()
    assert h.op_codes[5].tolist() == [o.time if o.time is not None else -1 for o in h.ops]


@pytest.mark.parametrize("edit", [None, "bad-late", "bad-early", "time-back"])
def test_scan_in_parts_is_the_scan_in_one(edit):
    """The reader scans a big file in threads, a part each: the result is
    the one scan's, out-of-form lines and extra fields included."""
    from checkers import scan
    events = generate(400, processes=4, keys=3, seed=9, nemesis_every=80, batch=2)
    for e in events[::5]:
        e["note"] = [1, {"x": "y"}]
    lines = _lines(events)
    if edit == "bad-late":
        lines[int(len(lines) * 0.8)] = "{not json"
    elif edit == "bad-early":
        lines[len(lines) // 5] = lines[len(lines) // 5].replace('"index":', '"index":-')
    elif edit == "time-back":
        lines[len(lines) // 2] = re.sub(r'"time":\d+', '"time":0', lines[len(lines) // 2])
    data = "\n".join(lines).encode()
    buf = np.frombuffer(data, dtype=np.uint8)
    starts, ends = scan.line_bounds(buf)
    one = scan.scan_lines(buf, starts, ends, *scan.WORDS, parts=1)
    for parts in (2, 3, 7):
        many = scan.scan_lines(buf, starts, ends, *scan.WORDS, parts=parts)
        assert many[:2] == one[:2]  # status, bad line
        if one[0] == scan.SCANNED:
            nops = one[18]
            for x, y in zip(one[2:19] + (one[19][:nops], one[20][:nops]),
                            many[2:19] + (many[19][:nops], many[20][:nops])):
                if isinstance(x, np.ndarray):
                    assert x.tolist() == y.tolist()
                else:
                    assert x == y
    assert (one[0] == scan.SCANNED) == (edit is None)
