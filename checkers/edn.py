"""Importing Jepsen ``history.edn`` files (``--format edn``).

A small EDN reader (the subset Jepsen writes: maps, vectors, lists, sets,
keywords, symbols, strings, numbers, nil/true/false, characters, tagged
literals such as ``#jepsen.history.Op{...}`` or ``#inst "..."``, comments
and ``#_`` discards), then a conversion of Jepsen's Kafka ops into
design.md's history events: keywords become strings, integer keys their
decimal strings, ``:nemesis`` ops with ``:start-x`` / ``:stop-x`` become
``start-x`` / ``stop-x`` with ``{"fault", "id", "targets"}``.
"""
from __future__ import annotations

import os
import re

from .history import CLIENT_FS, EXTRA_CLIENT_FS, HistoryError, parse_events


class Keyword(str):
    """An EDN keyword, e.g. :ok -> Keyword("ok")."""

    __slots__ = ()

    def __repr__(self):
        return ":" + self


class Symbol(str):
    __slots__ = ()


class Tagged:
    __slots__ = ("tag", "value")

    def __init__(self, tag, value):
        self.tag, self.value = tag, value


_TOKEN = re.compile(r'''
    (?P<ws>[\s,]+|;[^\n]*)
  | (?P<str>"(?:[^"\\]|\\.)*")
  | (?P<open>\#\{|[\[\(\{])
  | (?P<close>[\]\)\}])
  | (?P<discard>\#_)
  | (?P<tag>\#[A-Za-z][\w.\-/*+!?$%&=<>]*)
  | (?P<char>\\(?:newline|space|tab|return|formfeed|backspace|u[0-9a-fA-F]{4}|.))
  | (?P<atom>[^\s,;"\[\]\(\)\{\}]+)
''', re.VERBOSE | re.DOTALL)

_INT = re.compile(r"[+-]?\d+N?$")
_FLOAT = re.compile(r"[+-]?\d+(\.\d*)?([eE][+-]?\d+)?M?$")
_CHARS = {"newline": "\n", "space": " ", "tab": "\t", "return": "\r",
          "formfeed": "\f", "backspace": "\b"}
_ESCAPES = {"n": "\n", "t": "\t", "r": "\r", '"': '"', "\\": "\\", "b": "\b", "f": "\f"}


class EdnError(ValueError):
    pass


def _atom(tok):
    if tok == "nil":
        return None
    if tok == "true":
        return True
    if tok == "false":
        return False
    if tok[0] == ":":
        return Keyword(tok[1:])
    if _INT.match(tok):
        return int(tok.rstrip("N"))
    if _FLOAT.match(tok):
        return float(tok.rstrip("M"))
    if "/" in tok and _INT.match(tok.split("/")[0]):
        n, d = tok.split("/")
        return int(n) / int(d)
    return Symbol(tok)


def _string(tok):
    body = tok[1:-1]
    if "\\" not in body:
        return body
    out, i = [], 0
    while i < len(body):
        c = body[i]
        if c == "\\":
            n = body[i + 1]
            if n == "u":
                out.append(chr(int(body[i + 2:i + 6], 16)))
                i += 6
                continue
            out.append(_ESCAPES.get(n, n))
            i += 2
            continue
        out.append(c)
        i += 1
    return "".join(out)


def _hashable(x):
    if isinstance(x, list):
        return tuple(_hashable(y) for y in x)
    if isinstance(x, dict):
        return tuple(sorted((repr(k), _hashable(v)) for k, v in x.items()))
    return x


def read_all(text: str):
    """Every top-level EDN form in text, as Python values (maps -> dict,
    vectors/lists -> list, sets -> set, keywords -> Keyword)."""
    forms = []
    stack = []     # [(kind, items, line)]
    pending = []   # per nesting level: tags / discards waiting for a value
    pending.append([])
    line = 1
    pos = 0
    n = len(text)

    def emit(value):
        # apply waiting tags/discards at this level, innermost first
        while pending[-1]:
            kind, arg = pending[-1].pop()
            if kind == "discard":
                return
            value = Tagged(arg, value) if arg not in _TRANSPARENT_TAGS else value
        if stack:
            stack[-1][1].append(value)
        else:
            forms.append(value)

    while pos < n:
        m = _TOKEN.match(text, pos)
        if m is None:
            raise EdnError(f"line {line}: cannot read {text[pos:pos + 20]!r}")
        kind = m.lastgroup
        tok = m.group()
        pos = m.end()
        if kind == "ws":
            line += tok.count("\n")
            continue
        if kind == "str":
            line += tok.count("\n")
            emit(_string(tok))
        elif kind == "open":
            stack.append((tok, [], line))
            pending.append([])
        elif kind == "close":
            if not stack:
                raise EdnError(f"line {line}: unexpected {tok!r}")
            opener, items, _ = stack.pop()
            pending.pop()
            if {"[": "]", "(": ")", "{": "}", "#{": "}"}[opener] != tok:
                raise EdnError(f"line {line}: {opener!r} closed by {tok!r}")
            if opener == "{":
                if len(items) % 2:
                    raise EdnError(f"line {line}: map with an odd number of forms")
                value = {_hashable(items[i]): items[i + 1] for i in range(0, len(items), 2)}
            elif opener == "#{":
                value = {_hashable(x) for x in items}
            else:
                value = items
            emit(value)
        elif kind == "discard":
            pending[-1].append(("discard", None))
        elif kind == "tag":
            pending[-1].append(("tag", tok[1:]))
        elif kind == "char":
            body = tok[1:]
            emit(_CHARS.get(body, chr(int(body[1:], 16)) if len(body) == 5 and body[0] == "u"
                            else body))
        else:
            emit(_atom(tok))
    if stack:
        raise EdnError(f"line {stack[-1][2]}: {stack[-1][0]!r} never closed")
    return forms


# Tags whose value we take as is: records are maps, #inst is its string.
_TRANSPARENT_TAGS = None  # set below: every tag is transparent for our use


class _All:
    def __contains__(self, _):
        return True


_TRANSPARENT_TAGS = _All()


# ---------------------------------------------------------- Jepsen -> ours

def _name(x):
    return str(x) if isinstance(x, (Keyword, Symbol)) else x


def _key(k):
    """Jepsen's integer keys become their decimal strings."""
    if isinstance(k, bool):
        return str(k).lower()
    if isinstance(k, (int, Keyword, Symbol)):
        return str(k)
    return k


def _mop(m):
    if not isinstance(m, list) or not m:
        return m
    f = _name(m[0])
    if f == "send":
        v = m[2] if len(m) > 2 else None
        return ["send", _key(m[1]), list(v) if isinstance(v, list) else v]
    if f == "poll":
        if len(m) < 2 or m[1] is None:
            return ["poll"]
        return ["poll", {_key(k): [list(p) for p in (pairs or [])]
                         for k, pairs in m[1].items()}]
    return [f] + list(m[1:])


_EXTRA = {"seek-to-beginning?": "seek_to_beginning", "rebalance-log": "rebalance_log",
          "error": "error", "poll-ms": "poll_ms"}


def _jsonable(x):
    if isinstance(x, dict):
        return {str(_name(k)): _jsonable(v) for k, v in x.items()}
    if isinstance(x, (list, tuple, set, frozenset)):
        return [_jsonable(v) for v in x]
    if isinstance(x, Tagged):
        return _jsonable(x.value)
    if isinstance(x, (Keyword, Symbol)):
        return str(x)
    return x


def convert(ops, warnings=None):
    """Jepsen op maps -> design.md event dicts (re-indexed in order)."""
    warnings = warnings if warnings is not None else []
    events = []
    fault_ids = {}   # fault -> id of the open fault
    next_id = 0
    dropped = {}
    for op in ops:
        if isinstance(op, Tagged):
            op = op.value
        if not isinstance(op, dict):
            raise EdnError(f"op {len(events)}: not a map: {op!r:.80}")
        g = {str(_name(k)): v for k, v in op.items()}
        type_ = _name(g.get("type"))
        f = _name(g.get("f"))
        process = g.get("process")
        time = g.get("time", 0)
        if _name(process) == "nemesis" or isinstance(process, Keyword):
            fs = str(f or "")
            if not (fs.startswith("start-") or fs.startswith("stop-")):
                dropped[fs] = dropped.get(fs, 0) + 1
                continue
            fault = fs.split("-", 1)[1]
            if type_ == "invoke":
                continue  # the info completion carries the event
            if fs.startswith("start-"):
                next_id += 1
                fault_ids[fault] = next_id
                fid = next_id
            else:
                fid = fault_ids.pop(fault, None)
                if fid is None:
                    next_id += 1
                    fid = next_id
            v = g.get("value")
            targets = [str(_name(t)) for t in v] if isinstance(v, (list, set)) else (
                [] if v is None else [str(_name(_jsonable(v)))])
            events.append({"index": len(events), "time": time, "process": "nemesis",
                           "type": "info", "f": fs,
                           "value": {"fault": fault, "id": fid, "targets": targets}})
            continue
        if f not in CLIENT_FS and f not in EXTRA_CLIENT_FS:
            dropped[str(f)] = dropped.get(str(f), 0) + 1
            continue
        value = g.get("value")
        if f in ("send", "poll", "txn"):
            value = [_mop(m) for m in value] if isinstance(value, list) else value
        elif f in ("assign", "subscribe"):
            value = [_key(k) for k in value] if isinstance(value, (list, set)) else value
        else:
            value = _jsonable(value)
        ev = {"index": len(events), "time": time, "process": process, "type": type_,
              "f": f, "value": value}
        for k, name in _EXTRA.items():
            if k in g and g[k] is not None:
                x = _jsonable(g[k])
                if name == "rebalance_log" and isinstance(x, list):
                    x = [{**e, "keys": [_key(k2) for k2 in e.get("keys", [])]}
                         if isinstance(e, dict) else e for e in x]
                ev[name] = x
        events.append(ev)
    for f, n in sorted(dropped.items()):
        warnings.append(f"dropped {n} op(s) with f {f!r} (not part of the Kafka workload)")
    return events


def read_edn_history(path):
    """A Jepsen history.edn (file, or a Jepsen store directory holding one)
    as a History."""
    path = os.fspath(path)
    if os.path.isdir(path):
        path = os.path.join(path, "history.edn")
    try:
        with open(path, encoding="utf-8") as fh:
            text = fh.read()
    except OSError as e:
        raise HistoryError(path, None, f"cannot read: {e.strerror or e}") from None
    try:
        forms = read_all(text)
        if len(forms) == 1 and isinstance(forms[0], list):
            forms = forms[0]  # one vector of ops
        warnings = []
        events = convert(forms, warnings)
    except EdnError as e:
        raise HistoryError(path, None, f"EDN: {e}") from None
    h = parse_events(events, source=path)
    h.warnings[:0] = warnings
    return h
