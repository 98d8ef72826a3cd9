"""Reading and validating a history (design.md, "History format").

A history file is JSON Lines, one event per line. Reading it:

- validates every line (fields, types, the value's shape for each ``f``);
- drops a torn *last* line with a warning (the harness died mid-write);
- pairs each invoke with the next completion of the same process; an invoke
  left open at the end counts as ``info`` (it may or may not have happened);
- raises ``HistoryError`` naming the file and 1-based line for anything else.

The in-memory form is deliberately small, for histories of a million events:
one ``Op`` (a ``__slots__`` record) per invoke/completion pair, values kept
as the decoded JSON lists, and the event order as one ``array`` of ints.
Poll results, most of a history's bytes, are the exception: a poll
completion whose result is integer pairs keeps it as JSON text
(``LazyPoll``, decoded only if ``Op.value`` is asked for) and its pairs go
into flat arrays (``History.polls``, a ``PollTable``) that the Kafka
analysis works on. The compiled passes of ``scan`` tokenize every line, in
any JSON layout, and vouch for what they can; the rest goes through the
JSON decoder and the checks below (``_parse_scanned``); a file they cannot
take at all is read line by line (``parse_bytes``), which names errors.
Both ways give the same History (tests/test_checkers_scan.py).
This is the only module of ``checkers`` that does I/O (with
``model_history``, for the generic models' histories).
"""
from __future__ import annotations

import gc
import json
import logging
import os
import threading
from array import array
from collections import deque
from contextlib import contextmanager
from itertools import chain, repeat
from operator import itemgetter

import numpy as np

from . import scan

try:  # orjson is ~3x faster per line; the stdlib does the same job without it
    import orjson as _orjson
except ImportError:  # pragma: no cover - depends on the environment
    _orjson = None

log = logging.getLogger(__name__)

CLIENT_FS = frozenset({"send", "poll", "txn", "assign", "subscribe", "crash"})
# Jepsen's Kafka workload also records these; accepted and ignored by checkers.
EXTRA_CLIENT_FS = frozenset({"debug-topic-partitions"})
TYPES = frozenset({"invoke", "ok", "fail", "info"})
COMPLETION_TYPES = ("ok", "fail", "info")
NEMESIS = "nemesis"
STANDARD_FIELDS = frozenset({"index", "time", "process", "type", "f", "value"})


class HistoryError(ValueError):
    """A malformed history. The message names the file and the line."""

    def __init__(self, path, line: int | None, what: str):
        self.path = str(path)
        self.line = line
        self.what = what
        where = f"{self.path}:{line}" if line is not None else self.path
        super().__init__(f"{where}: {what}")


class Op:
    """One operation: an invoke and its completion.

    ``type`` is the completion's type (``ok``/``fail``/``info``); an invoke
    that never completed has type ``info`` and ``index``/``time`` of None.
    ``value`` is the completion's value (the invoke's when there is none).
    ``index``/``time`` are the completion's, ``invoke_index``/``invoke_time``
    the invoke's. ``extra`` holds any non-standard fields (e.g.
    ``seek_to_beginning``, ``rebalance_log``, ``error``) or None.
    """

    __slots__ = ("id", "process", "f", "type", "_value", "invoke_index",
                 "invoke_time", "index", "time", "extra")

    def __init__(self, id, process, f, type, value, invoke_index, invoke_time,
                 index=None, time=None, extra=None):
        self.id = id
        self.process = process
        self.f = f
        self.type = type
        self._value = value
        self.invoke_index = invoke_index
        self.invoke_time = invoke_time
        self.index = index
        self.time = time
        self.extra = extra

    @property
    def value(self):
        v = self._value
        if type(v) is LazyPoll:  # decoded on first use (see LazyPoll)
            v = self._value = v.decode()
        return v

    @value.setter
    def value(self, v):
        self._value = v

    def lazy_poll(self):
        """The LazyPoll standing for this op's value if it was not decoded
        (its reads are then in ``History.polls``), else None."""
        v = self._value
        return v if type(v) is LazyPoll else None

    def ref(self) -> dict:
        """A small JSON description of this op, for witnesses."""
        return {"process": self.process, "type": self.type, "f": self.f,
                "index": self.index if self.index is not None else self.invoke_index,
                "time": self.time if self.time is not None else self.invoke_time}

    def to_dict(self) -> dict:
        d = self.ref()
        d["invoke_index"] = self.invoke_index
        d["value"] = self.value
        if self.extra:
            d.update(self.extra)
        return d

    def __repr__(self):
        return (f"Op(id={self.id}, process={self.process!r}, f={self.f!r}, "
                f"type={self.type!r}, index={self.index}, value={self.value!r})")


class LazyPoll(tuple):
    """The value ``[["poll", {key: [[offset, value], ...], ...}]]`` of a poll
    completion, kept as the JSON text of its result object (``data[lo:hi]``,
    the history file's bytes): the reader validated it and parsed it into
    ``History.polls`` (flat arrays), and decodes it into lists only when
    ``Op.value`` is asked for."""

    __slots__ = ()

    # A tuple (data, lo, hi): the reader makes hundreds of thousands, by
    # tuple.__new__ at C speed (new_lazy_polls), where a Python __init__
    # would cost a microsecond each.
    def __new__(cls, data: bytes, lo: int, hi: int):
        return tuple.__new__(cls, (data, lo, hi))

    data = property(itemgetter(0))
    lo = property(itemgetter(1))
    hi = property(itemgetter(2))

    def decode(self):
        data, lo, hi = self
        return [["poll", _loads(data[lo:hi])]]


def new_lazy_polls(data, lo, hi):
    """[LazyPoll(data, lo[j], hi[j]) ...] at C speed."""
    return list(map(tuple.__new__, repeat(LazyPoll), zip(repeat(data), lo, hi)))


class PollTable:
    """Reads of the poll ops whose value is a ``LazyPoll``, as flat arrays.

    One *segment* per (op, key) of a poll result, ordered by op id and then
    in the result's key order; segment s has key ``keys[seg_key[s]]`` and
    rows ``seg_lo[s]:seg_lo[s + 1]`` of ``off`` / ``val`` (int64), in the
    result's pair order."""

    __slots__ = ("keys", "seg_op", "seg_key", "seg_lo", "off", "val")


class History:
    """A parsed history.

    ``ops``: client operations in invocation order (``op.id`` is the position).
    ``nemesis``: nemesis events as Ops (``f`` = ``start-<fault>`` /
    ``stop-<fault>``), in file order.
    ``events``: for every client line in file order, ``2*op.id`` for an
    invoke and ``2*op.id + 1`` for a completion (realtime order).
    ``warnings``: what was tolerated (torn last line, open invokes, ...).
    """

    __slots__ = ("ops", "nemesis", "events", "warnings", "path", "n_lines",
                 "end_time", "_cache", "polls", "op_codes", "send_rows")

    def __init__(self, ops, nemesis, events, warnings, path=None, n_lines=0,
                 end_time=0, polls=None):
        self.ops = ops
        self.nemesis = nemesis
        self.events = events
        self.warnings = warnings
        self.path = path
        self.n_lines = n_lines
        self.end_time = end_time
        self._cache = {}
        # PollTable of the ops whose value is a LazyPoll (None: there are none)
        self.polls = polls
        # (completion type code (ok 0, info 1, fail 2), f code (F_NAMES'
        # index; 6 another), value was a LazyPoll, has extra fields,
        # process, completion time (-1: none)) of every op as arrays, when
        # the compiled scan read the history: the array analysis' per-op
        # columns without walking a million ops again (None: it walks them)
        self.op_codes = None
        # (op, key, offset (-1: unknown), value) of every send micro-op of
        # the send ops, as arrays in op order (keys: names[key]), when the
        # compiled scan vouched for every send op's value: (ops, names,
        # keys, offsets, values); None: the analysis reads Op.value
        self.send_rows = None

    def __len__(self):
        return len(self.ops)

    def stats(self) -> dict:
        """Completion-type counts of client ops (open invokes count as info)."""
        counts = {"ok": 0, "fail": 0, "info": 0}
        for op in self.ops:
            counts[op.type] += 1
        return counts


@contextmanager
def no_gc():
    """Building millions of small containers triggers the cyclic collector
    over and over (5x slower), and once re-enabled it would rescan them all
    (seconds per million). Nothing we build has reference cycles, so: no
    collection while we build, then ``gc.freeze()`` what is alive, which the
    collector then leaves alone. Reference counting still frees all of it
    when it is dropped; only cyclic garbage alive at that moment would stay."""
    enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if enabled:
            gc.freeze()
            gc.enable()


# ---------------------------------------------------------------- validation

_LIST = frozenset({list})
_TWO = frozenset({2})
_INT = frozenset({int})
_first = itemgetter(0)
_second = itemgetter(1)


def _check_send_mop(m, completion: bool):
    if len(m) != 3:
        return f"send micro-op must be [\"send\", key, value], got {m!r}"
    k, v = m[1], m[2]
    if type(k) is not str:
        return f"send key must be a string, got {k!r}"
    if type(v) is int:
        return None
    if completion and type(v) is list and len(v) == 2:
        o, x = v
        if (o is None or (type(o) is int and o >= 0)) and type(x) is int:
            return None
    return ("send value must be an integer" +
            (" or [offset|null, integer]" if completion else "") + f", got {v!r}")


def _check_poll_mop(m, completion: bool):
    if len(m) == 1:
        return None
    if len(m) != 2 or not completion:
        return "poll micro-op must be [\"poll\"]" + (
            " or [\"poll\", {key: [[offset, value], ...]}]" if completion else "") + f", got {m!r}"
    res = m[1]
    if type(res) is not dict:
        return f"poll result must be an object of key -> [[offset, value], ...], got {res!r}"
    for k, pairs in res.items():
        # Fast path at C speed: a list of [int >= 0, int] pairs.
        if (type(pairs) is list
                and set(map(type, pairs)) <= _LIST
                and set(map(len, pairs)) <= _TWO
                and set(map(type, chain.from_iterable(pairs))) <= _INT
                and (not pairs or min(map(_first, pairs)) >= 0)):
            continue
        # Slow path: unknown offsets, or something to explain.
        if type(pairs) is not list:
            return f"poll result for key {k!r} must be a list, got {pairs!r}"
        for p in pairs:
            if type(p) is not list or len(p) != 2:
                return f"poll result for key {k!r} must hold [offset, value] pairs, got {p!r}"
            o, x = p
            if not ((o is None or (type(o) is int and o >= 0)) and type(x) is int):
                return f"poll pair for key {k!r} must be [offset|null, integer], got {p!r}"
    return None


def _check_mops(value, f: str, completion: bool):
    if type(value) is not list:
        return f"value of {f} must be a list of micro-ops, got {value!r}"
    for m in value:
        if type(m) is not list or not m:
            return f"micro-op must be a non-empty list, got {m!r}"
        kind = m[0]
        if kind == "send" and f in ("send", "txn"):
            err = _check_send_mop(m, completion)
        elif kind == "poll" and f in ("poll", "txn"):
            err = _check_poll_mop(m, completion)
        else:
            err = f"micro-op {kind!r} not allowed in {f}"
        if err:
            return err
    return None


def _check_value(f: str, type_: str, value):
    completion = type_ != "invoke"
    if f in ("send", "poll", "txn"):
        if value is None and type_ in ("fail", "info"):
            return None  # the invoke's value stands
        return _check_mops(value, f, completion)
    if f in ("assign", "subscribe"):
        if value is None and type_ in ("fail", "info"):
            return None
        if type(value) is not list or any(type(k) is not str for k in value):
            return f"value of {f} must be a list of key strings, got {value!r}"
        return None
    return None  # crash, debug-topic-partitions: any value


def _check_nemesis(ev: dict):
    f = ev["f"]
    if type(f) is not str or not (f.startswith("start-") or f.startswith("stop-")):
        return f"nemesis f must be start-<fault> or stop-<fault>, got {f!r}"
    if ev["type"] not in ("invoke", "info", "ok", "fail"):
        return f"bad nemesis type {ev['type']!r}"
    v = ev["value"]
    if ev["type"] == "invoke" and v is None:
        return None
    if type(v) is not dict:
        return f"nemesis value must be an object with fault, id, targets; got {v!r}"
    fault = f.split("-", 1)[1]
    if v.get("fault") != fault:
        return f"nemesis value.fault must be {fault!r} for {f}, got {v.get('fault')!r}"
    if "id" not in v or type(v["id"]) not in (int, str):
        return f"nemesis value.id must be an integer or string, got {v.get('id')!r}"
    if "targets" in v and type(v["targets"]) is not list:
        return f"nemesis value.targets must be a list, got {v['targets']!r}"
    return None


# ------------------------------------------------------------------- parsing

class _Builder:
    """Pairs invokes and completions as events arrive, validating them."""

    def __init__(self, source):
        self.source = source
        self.ops = []
        self.nemesis = []
        self.events = array("q")
        self.warnings = []
        self.open = {}        # process -> open client Op
        self.open_nemesis = {}  # (f) -> open nemesis Op (Jepsen-style invoke)
        self.expected_index = 0
        self.last_time = None
        self.n_lines = 0
        self.lazy = []        # (op id, LazyPoll) of ops whose value is one

    def fail(self, lineno, what):
        raise HistoryError(self.source, lineno, what)

    def warn(self, msg):
        self.warnings.append(msg)
        log.warning("%s", msg)

    def add_fast(self, ev, body=None) -> bool:
        """add() for the common case (a well-formed client event with the
        six standard fields, times not going back); False, having changed
        nothing, for anything else, which add() then handles."""
        if type(ev) is not dict or len(ev) != 6:
            return False
        try:
            index, time, process, type_, f = (ev["index"], ev["time"], ev["process"],
                                              ev["type"], ev["f"])
            value = ev["value"]
        except KeyError:
            return False
        if (type(index) is not int or index != self.expected_index
                or type(time) is not int or self.last_time is None
                or time < self.last_time or type(process) is not int
                or type_ not in TYPES or f not in CLIENT_FS):
            return False
        if body is not None:
            if type_ == "invoke" or (f != "poll" and f != "txn"):
                return False
            value = body
        else:
            if f == "send" and type(value) is list:
                # _check_value's verdict on the usual sends, inline
                completion = type_ != "invoke"
                for m in value:
                    if type(m) is not list or len(m) != 3 or m[0] != "send" \
                            or type(m[1]) is not str:
                        return False
                    v = m[2]
                    if type(v) is int:
                        continue
                    if not (completion and type(v) is list and len(v) == 2):
                        return False
                    o = v[0]
                    if type(v[1]) is not int or not (
                            o is None or (type(o) is int and o >= 0)):
                        return False
            elif not (value == _POLL_INVOKE and (f == "poll" or f == "txn")) \
                    and _check_value(f, type_, value) is not None:
                return False
        if type_ == "invoke":
            if process in self.open:
                return False
            op = Op(len(self.ops), process, f, "info", value, index, time)
            self.open[process] = op
            self.ops.append(op)
            self.events.append(2 * op.id)
        else:
            op = self.open.get(process)
            if op is None or op.f != f:
                return False
            del self.open[process]
            self._complete(op, type_, index, time, value, body)
            self.events.append(2 * op.id + 1)
        self.expected_index += 1
        self.last_time = time
        self.n_lines += 1
        return True

    def add(self, ev, lineno, body=None):
        """body: a LazyPoll, the poll result cut out of the line (already
        validated), whose value is then [["poll", <result>]]."""
        if type(ev) is not dict:
            self.fail(lineno, f"event must be a JSON object, got {type(ev).__name__}")
        for field in ("index", "time", "process", "type", "f"):
            if field not in ev:
                self.fail(lineno, f"missing field {field!r}")
        if "value" not in ev:
            self.fail(lineno, "missing field 'value'")
        index, time, process, type_, f = (ev["index"], ev["time"], ev["process"],
                                          ev["type"], ev["f"])
        if type(index) is not int:
            self.fail(lineno, f"index must be an integer, got {index!r}")
        if index != self.expected_index:
            self.fail(lineno, f"index must be {self.expected_index} (events numbered "
                              f"0, 1, 2, ... in file order), got {index}")
        self.expected_index += 1
        if type(time) not in (int, float) or time < 0:
            self.fail(lineno, f"time must be a non-negative number of nanoseconds, got {time!r}")
        if self.last_time is not None and time < self.last_time:
            # Tolerated (clocks of writers may be off), but realtime order
            # below always follows file order, never time.
            if len(self.warnings) < 100:
                self.warn(f"{self.source}:{lineno}: time {time} goes back from {self.last_time}")
        self.last_time = time if self.last_time is None else max(time, self.last_time)
        if type_ not in TYPES:
            self.fail(lineno, f"type must be one of invoke, ok, fail, info; got {type_!r}")
        if type(f) is not str:
            self.fail(lineno, f"f must be a string, got {f!r}")
        extra = None
        if len(ev) > 6:
            extra = {k: v for k, v in ev.items() if k not in STANDARD_FIELDS}
        self.n_lines += 1

        if process == NEMESIS:
            err = _check_nemesis(ev)
            if err:
                self.fail(lineno, err)
            self._add_nemesis(ev, extra, lineno)
            return
        if type(process) is not int:
            self.fail(lineno, f"process must be an integer or \"nemesis\", got {process!r}")
        if f not in CLIENT_FS and f not in EXTRA_CLIENT_FS:
            self.fail(lineno, f"unknown f {f!r} for a client (expected one of "
                              f"{', '.join(sorted(CLIENT_FS))})")
        value = ev["value"]
        if body is not None:
            if type_ != "invoke" and f in ("poll", "txn"):
                value = body
            else:  # not the easy case: decode and validate as usual
                value = body.decode()
                body = None
        if body is None:
            err = _check_value(f, type_, value)
            if err:
                self.fail(lineno, err)

        if type_ == "invoke":
            if process in self.open:
                prev = self.open[process]
                self.fail(lineno, f"process {process} invokes {f} while its {prev.f} "
                                  f"invoked at index {prev.invoke_index} has not completed")
            op = Op(len(self.ops), process, f, "info", value, index, time, extra=extra)
            self.open[process] = op
            self.ops.append(op)
            self.events.append(2 * op.id)
            return
        op = self.open.pop(process, None)
        if op is None:
            self.fail(lineno, f"{type_} completion of {f} by process {process} "
                              f"without an open invoke")
        if op.f != f:
            self.fail(lineno, f"completion f {f!r} does not match the invoke's "
                              f"{op.f!r} (index {op.invoke_index}) of process {process}")
        self._complete(op, type_, index, time, value, body)
        if extra:
            op.extra = {**op.extra, **extra} if op.extra else extra
        self.events.append(2 * op.id + 1)

    def _complete(self, op, type_, index, time, value, body) -> None:
        """Pair a completion with its invoke; a compact poll body stays
        undecoded (`lazy`) until somebody asks for op.value."""
        op.type = type_
        op.index = index
        op.time = time
        if value is not None:
            op._value = value
            if body is not None:
                self.lazy.append((op.id, body))

    def _add_nemesis(self, ev, extra, lineno):
        f, type_ = ev["f"], ev["type"]
        if type_ == "invoke":
            op = Op(len(self.nemesis), NEMESIS, f, "info", ev["value"], ev["index"],
                    ev["time"], extra=extra)
            self.open_nemesis[f] = op
            self.nemesis.append(op)
            return
        op = self.open_nemesis.pop(f, None)
        if op is None:  # design.md's standalone info event
            op = Op(len(self.nemesis), NEMESIS, f, type_, ev["value"], ev["index"],
                    ev["time"], extra=extra)
            self.nemesis.append(op)
        op.type = type_
        op.index = ev["index"]
        op.time = ev["time"]
        if ev["value"] is not None:
            op.value = ev["value"]

    def finish(self, polls=None) -> History:
        for process, op in sorted(self.open.items(), key=lambda kv: kv[1].invoke_index):
            self.warn(f"{self.source}: invoke of {op.f} by process {process} at index "
                      f"{op.invoke_index} never completed; counted as info")
        for op in self.open_nemesis.values():
            op.index, op.time = op.invoke_index, op.invoke_time
        end_time = self.last_time or 0
        return History(self.ops, self.nemesis, self.events, self.warnings,
                       path=str(self.source), n_lines=self.n_lines, end_time=end_time,
                       polls=polls)


def _loads(line: bytes):
    if _orjson is not None:
        return _orjson.loads(line)
    return json.loads(line)


# Poll results are most of a history's bytes; a poll completion whose result
# the compiled passes take keeps it undecoded (a LazyPoll over the file's
# bytes) and _poll_table parses all of them into one PollTable. The rest of
# such a line, its value replaced by 0, goes through the JSON decoder when
# the line is read the ordinary way. Anything else takes the ordinary path.
_POLL_INVOKE = [["poll"]]


def _poll_table(data, spans, nseg, npairs, filled=None) -> PollTable:
    """Parses the poll results (validated by the scan, with nseg keys and
    npairs pairs in all) into a PollTable. spans: (op ids, result lo,
    result hi) arrays in op id order, or a list [(op id, LazyPoll)];
    filled: scan.fill_table's result on them, if done already."""
    if isinstance(spans, list):
        spans.sort(key=_first)
        n = len(spans)
        ids = np.fromiter(map(_first, spans), dtype=np.int64, count=n)
        lo = np.fromiter((lp.lo for _, lp in spans), dtype=np.int64, count=n)
        hi = np.fromiter((lp.hi for _, lp in spans), dtype=np.int64, count=n)
    else:
        ids, lo, hi = spans
    if filled is None:
        filled = scan.fill_table(np.frombuffer(data, dtype=np.uint8), lo, hi, nseg, npairs)
    status, seg_body, seg_key, seg_count, off, val, key_lo, key_hi, key_esc, nkeys = filled
    if status != scan.OK:  # a key twice in one result: JSON keeps the last
        return _poll_table_slow(data, ids, lo, hi)
    # the keys' spellings, decoded (ASCII, the scan checked: escapes the
    # only work left); two spellings of one key become one
    escaped = key_esc[:nkeys].tolist()
    keys = [_loads(b'"' + data[a:b] + b'"') if e else data[a:b].decode("ascii")
            for a, b, e in zip(key_lo[:nkeys].tolist(), key_hi[:nkeys].tolist(), escaped)]
    if any(escaped) and len(set(keys)) < nkeys:
        key_id = {}
        remap = np.fromiter((key_id.setdefault(k, len(key_id)) for k in keys),
                            dtype=np.int32, count=nkeys)
        seg_key = remap[seg_key]
        pairs = seg_body * len(key_id) + seg_key
        if len(np.unique(pairs)) < len(pairs):  # a key twice in one result
            return _poll_table_slow(data, ids, lo, hi)
        keys = list(key_id)
    t = PollTable()
    t.keys = keys
    t.seg_op = ids[seg_body]
    t.seg_key = seg_key
    t.seg_lo = np.zeros(len(seg_count) + 1, dtype=np.int64)
    np.cumsum(seg_count, out=t.seg_lo[1:])
    t.off, t.val = off, val
    return t


def _poll_table_slow(data, ids, lo, hi) -> PollTable:
    """_poll_table by the decoder (which keeps the last of a key given twice)."""
    keys, key_id = [], {}
    seg_op, seg_key, counts, off, val = [], [], [], [], []
    for i, a, b in zip(ids.tolist(), lo.tolist(), hi.tolist()):
        for k, pairs in _loads(data[a:b]).items():
            kid = key_id.get(k)
            if kid is None:
                kid = key_id[k] = len(keys)
                keys.append(k)
            seg_op.append(i)
            seg_key.append(kid)
            counts.append(len(pairs))
            off.extend(map(_first, pairs))
            val.extend(map(_second, pairs))
    t = PollTable()
    t.keys = keys
    t.seg_op = np.array(seg_op, dtype=np.int64)
    t.seg_key = np.array(seg_key, dtype=np.int32)
    lo = np.zeros(len(counts) + 1, dtype=np.int64)
    np.cumsum(np.array(counts, dtype=np.int64), out=lo[1:])
    t.seg_lo = lo
    t.off = np.array(off, dtype=np.int64)
    t.val = np.array(val, dtype=np.int64)
    return t


def parse_lines(lines, source="<memory>") -> History:
    """Parses a list of lines (bytes or str, without newlines) as a history."""
    return parse_bytes(b"\n".join(l if type(l) is bytes else l.encode() for l in lines),
                       source)


def parse_bytes(data: bytes, source="<memory>") -> History:
    """Parses the contents of a history file."""
    buf = np.frombuffer(data, dtype=np.uint8)
    starts, ends = scan.line_bounds(buf)
    # A torn last line is only the final non-blank one: trailing blanks are
    # what a final newline leaves. That line is never read the fast way.
    n = len(starts)
    while n and not data[starts[n - 1]:ends[n - 1]].strip():
        n -= 1
    m = max(n - 1, 0)
    starts, ends = starts[:n], ends[:n]
    with no_gc():
        scanned = _parse_scanned(data, buf, starts, ends, m, source)
        if scanned is not None:
            b, spans, nseg, npairs, op_codes, filling = scanned
            n_events = len(b.events)
            first = m
            bodies = None
        else:  # the ordinary way, line by line, poll results still kept as arrays
            b, nseg, npairs = _Builder(source), 0, 0
            spans = b.lazy
            filling = None
            first = 0
            bodies = [x.tolist() + [-1] for x in scan.find_bodies(
                buf, starts[:m], ends[:m], *scan.WORDS)]
        S, E = starts.tolist(), ends.tolist()
        del starts, ends
        add_fast = b.add_fast
        loads = _orjson.loads if _orjson is not None else json.loads
        for i in range(first, n):
            if bodies is not None and bodies[2][i] >= 0:
                vlo, vhi, blo, bhi, ns, npr = (x[i] for x in bodies)
                try:
                    ev = loads(data[S[i]:vlo] + b"0" + data[vhi:E[i]])
                except ValueError:
                    pass  # the ordinary path names the error
                else:
                    k = len(b.lazy)
                    lp = LazyPoll(data, blo, bhi)
                    if not add_fast(ev, lp):
                        b.add(ev, i + 1, lp)
                    if len(b.lazy) != k:
                        nseg += ns
                        npairs += npr
                    continue
            line = data[S[i]:E[i]]
            try:
                ev = loads(line)
            except ValueError as e:
                if i == n - 1:
                    b.warn(f"{source}:{i + 1}: torn last line dropped "
                           f"({_short(line)!s})")
                    break
                if not line.strip():
                    b.fail(i + 1, "empty line")
                raise HistoryError(source, i + 1, f"invalid JSON: {e}") from None
            if not add_fast(ev):
                b.add(ev, i + 1)
        del S, E, bodies
        lazy = spans[0] if type(spans) is tuple else spans
        if filling is not None:
            filling.join()
        polls = _poll_table(data, spans, nseg, npairs, filling and filling.table) \
            if len(lazy) else None
        h = b.finish(polls)
        if scanned is not None:
            touched = {e >> 1 for e in h.events[n_events:]}
            h.op_codes = _op_codes(op_codes, h.ops, touched)
            if not any(h.ops[i].f == "send" for i in touched):
                h.send_rows = _send_rows(data, filling)
        return h


_TYPE_CODES = {"ok": 0, "info": 1, "fail": 2}
_F_CODES = {f: j for j, f in enumerate(scan.F_NAMES)}


def _op_codes(codes, ops, touched):
    """The scan's History.op_codes, with those of the ops the last line
    (read the ordinary way) made or completed (touched: their ids)."""
    n = len(codes[0])
    if len(ops) > n:
        codes = tuple(np.concatenate((c, np.zeros(len(ops) - n, c.dtype))) for c in codes)
    typ, fcode, lazy, extra, process, done_time = codes
    for i in touched:
        op = ops[i]
        typ[i] = _TYPE_CODES.get(op.type, 3)
        fcode[i] = _F_CODES.get(op.f, len(scan.F_NAMES) - 1)
        lazy[i] = op._value.__class__ is LazyPoll
        extra[i] = op.extra is not None
        process[i] = op.process
        done_time[i] = op.time if type(op.time) is int else -1
    return codes


# the scan of a big file runs in this many threads at once (its passes
# hold no GIL): one per core, two at most (the machine the harness targets)
_PARTS = max(1, min(2, os.cpu_count() or 1))


def _parse_scanned(data, buf, starts, ends, m, source):
    """The first m lines through scan.scan_lines: (a _Builder holding them,
    keys and pairs in its LazyPolls), or None when the scan cannot vouch
    for them (the caller then reads them the ordinary way, which also names
    any error exactly)."""
    if m < 1:
        return None
    (status, _, _, time, process, type_, f, vlo, vhi, kind, body_lo, body_hi, nseg, npairs,
     x_lo, x_hi, x_line, event, nops, inv, comp) = scan.scan_lines(
        buf, starts[:m], ends[:m], *scan.WORDS, parts=_PARTS if m >= 100_000 else 1)
    if status != scan.SCANNED:
        return None
    loads = _orjson.loads if _orjson is not None else json.loads
    inv, comp = inv[:nops], comp[:nops]
    # the value an op keeps: its completion's, unless that is null or missing
    keep = np.where(comp >= 0, comp, inv)
    keep = np.where(kind[keep] == scan.NULL, inv, keep)
    lazy = kind[keep] == scan.LAZY
    # the poll table's and the sends' compiled passes (they hold no GIL)
    # on the other core while this one decodes values and makes the ops
    lazy_lines = keep[lazy]
    sends = np.flatnonzero(f[inv] == scan.SEND)
    kept = keep[sends]
    filling = _Filling(buf, body_lo[lazy_lines], body_hi[lazy_lines],
                       int(nseg[lazy_lines].sum()), int(npairs[lazy_lines].sum()),
                       sends, vlo[kept], vhi[kept],
                       len(sends) > 0 and bool((kind[kept] == scan.VALID).all()))
    filling.start()
    client = event >= 0
    unchecked = np.flatnonzero(client & (kind == scan.UNCHECKED))
    need = np.zeros(m, dtype=bool)
    need[keep[~lazy]] = True
    need[unchecked] = True
    decode_lines = np.flatnonzero(need)
    del need
    try:
        decoded = loads(scan.join_spans(buf, vlo[decode_lines], vhi[decode_lines]).tobytes())
    except ValueError:
        return None
    def value_of(line):
        return decoded[int(np.searchsorted(decode_lines, line))]
    for i in unchecked.tolist():  # shapes the scan does not know: the usual check
        if _check_value(scan.F_NAMES[f[i]], scan.TYPE_NAMES[type_[i]], value_of(i)):
            return None
    for i in np.flatnonzero(client & (kind == scan.NULL)).tolist():
        if _check_value(scan.F_NAMES[f[i]], scan.TYPE_NAMES[type_[i]], None):
            return None
    # extra fields of client lines, decoded in one call
    xm = client[x_line]
    extras = []
    if xm.any():
        x_line = x_line[xm]
        try:
            extras = loads(scan.join_members(buf, x_lo[xm], x_hi[xm], x_line).tobytes())
        except ValueError:
            return None
        x_line = np.unique(x_line)  # (in order already: one per line with extras)
    values = np.empty(nops, dtype=object)
    kept = keep[~lazy]
    values[~lazy] = np.fromiter(map(decoded.__getitem__,
                                    np.searchsorted(decode_lines, kept).tolist()),
                                dtype=object, count=len(kept))
    del decoded
    lazy_ops = np.flatnonzero(lazy)
    lazy_values = new_lazy_polls(data, body_lo[lazy_lines].tolist(), body_hi[lazy_lines].tolist())
    values[lazy_ops] = np.fromiter(lazy_values, dtype=object, count=len(lazy_values))
    done = comp >= 0
    at = np.where(done, comp, 0)
    none = np.array([None], dtype=object)
    ops = new_ops(nops, id=range(nops), process=process[inv].tolist(),
                  f=_F_OBJECTS[f[inv]].tolist(),
                  type=np.where(done, _TYPE_OBJECTS[type_[at]], "info").tolist(),
                  _value=values.tolist(), invoke_index=inv.tolist(),
                  invoke_time=time[inv].tolist(),
                  index=np.where(done, comp.astype(object), none).tolist(),
                  time=np.where(done, time[at].astype(object), none).tolist(),
                  extra=repeat(None))
    del values
    # extras in file order: an invoke's, then its completion's on top
    for line, x in zip(x_line.tolist() if len(extras) else (), extras):
        op = ops[event[line] >> 1]
        op.extra = {**op.extra, **x} if op.extra else x
    b = _Builder(source)
    b.ops = ops
    b.events = array("q", event[client].tobytes())
    for o in np.flatnonzero(~done).tolist():
        b.open[ops[o].process] = ops[o]
    # nemesis events, decoded whole, in file order
    for i in np.flatnonzero(~client).tolist():
        b.expected_index = i
        b.last_time = int(time[i - 1]) if i else None
        try:
            b.add(loads(data[starts[i]:ends[i]]), i + 1)
        except (ValueError, HistoryError):  # (HistoryError is one)
            return None
    b.expected_index = m
    b.last_time = int(time[m - 1])
    b.n_lines = m
    # the poll results in op order (lazy_ops ascend)
    spans = (lazy_ops, body_lo[lazy_lines], body_hi[lazy_lines])
    # History.op_codes
    kafka_type = np.array([1, 0, 2, 1], dtype=np.int64)  # (invoke), ok, fail, info
    has_extra = np.zeros(nops, dtype=bool)
    if len(extras):
        has_extra[event[x_line] >> 1] = True
    op_codes = (np.where(done, kafka_type[type_[np.where(done, comp, 0)]], 1),
                f[inv].astype(np.int64), lazy, has_extra, process[inv],
                np.where(done, time[np.where(done, comp, 0)], -1))
    return (b, spans, filling.nseg, filling.npairs, op_codes, filling)


class _Filling(threading.Thread):
    """scan.fill_table over the poll results and scan.fill_sends over the
    send ops' values (if the scan vouched for all of them), in a thread:
    compiled without the GIL, they run on the other core while the reader
    makes the ops."""

    def __init__(self, buf, lo, hi, nseg, npairs, sends, send_lo, send_hi, with_sends):
        super().__init__(daemon=True)
        self.args = buf, lo, hi, nseg, npairs, send_lo, send_hi, with_sends
        self.nseg, self.npairs, self.sends = nseg, npairs, sends
        self.table = self.send_rows = None

    def run(self):
        buf, lo, hi, nseg, npairs, send_lo, send_hi, with_sends = self.args
        if len(lo):
            self.table = scan.fill_table(buf, lo, hi, nseg, npairs)
        if with_sends:
            self.send_rows = scan.fill_sends(buf, send_lo, send_hi)


def _send_rows(data, filling):
    """History.send_rows from the scan's pass over the send values."""
    if filling is None or filling.send_rows is None:
        return None
    value_of, spelling, off, val, k_lo, k_hi, k_esc, nk = filling.send_rows
    if nk < 0:  # (two spellings with one hash)
        return None
    names = [_loads(b'"' + data[a:b] + b'"') if e else data[a:b].decode("ascii")
             for a, b, e in zip(k_lo[:nk].tolist(), k_hi[:nk].tolist(), k_esc[:nk].tolist())]
    return filling.sends[value_of], names, spelling, off, val


_TYPE_OBJECTS = np.array(scan.TYPE_NAMES, dtype=object)
_F_OBJECTS = np.array(scan.F_NAMES, dtype=object)


def new_ops(n, **fields):
    """n Ops with these fields (every one of Op's, each an iterable), made
    at C speed: object.__new__, then each slot's descriptor over all ops
    (Op.__init__, a Python function, costs a second a million ops)."""
    ops = list(map(object.__new__, repeat(Op, n)))
    assert set(fields) == set(Op.__slots__)
    for name, values in fields.items():
        deque(map(getattr(Op, name).__set__, ops, values), maxlen=0)
    return ops


def _short(line, n=60):
    s = line.decode("utf-8", "replace") if isinstance(line, bytes) else line
    return repr(s if len(s) <= n else s[:n] + "...")


def parse_events(events, source="<memory>") -> History:
    """Builds a history from already-decoded event dicts (tests, importers)."""
    b = _Builder(source)
    with no_gc():
        for i, ev in enumerate(events):
            b.add(ev, i + 1)
        return b.finish()


def read_history(path) -> History:
    """Reads a history from a file, or from a store directory's history.jsonl."""
    path = os.fspath(path)
    if os.path.isdir(path):
        candidate = os.path.join(path, "history.jsonl")
        if not os.path.exists(candidate):
            raise HistoryError(path, None, "store directory has no history.jsonl")
        path = candidate
    try:
        with open(path, "rb") as fh:
            data = fh.read()
    except OSError as e:
        raise HistoryError(path, None, f"cannot read: {e.strerror or e}") from None
    return parse_bytes(data, source=path)
