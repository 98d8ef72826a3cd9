"""Extraction, the reference way: each op's sends [(key, offset, value)]
and reads {key: [[offset, value], ...]} from its decoded value, and the
indexes the anomaly cases share (writer of each value, failed sends, values
read by ok ops, first reader, which sends must have committed). The array
backend (``tables``) extracts the same indexes from flat arrays; tests
hold the two equal."""
from __future__ import annotations

from operator import itemgetter

from ..history import History

_second = itemgetter(1)

TXN_FS = ("send", "poll", "txn")


class Analysis:
    """The indexes the stages share. ``writes[i]`` / ``reads[i]``: op i's
    sends [(key, offset or None, value)] and reads {key: [[offset, value],
    ...]} (None: none); ``writer_of`` / ``failed``: {key: {value: op id}}
    of every send / of failed ones (later writers win, as in Jepsen);
    ``ok_reads``: {key: values read by ok ops}; ``first_reader``: {key:
    {value: first op (invoke order) that read it}}; ``committed[i]``: op
    i's sends must have taken effect; ``orders`` / ``inconsistent``: the
    version orders (``orders``); ``rebalanced``: {op id: keys in its
    rebalance log}; ``tab``: the ReadTable (TABLES) or None (LISTS);
    ``backend``: the one that built it (see checkers.kafka)."""

    __slots__ = ("history", "writes", "reads", "writer_of", "failed",
                 "ok_reads", "first_reader", "committed", "orders",
                 "inconsistent", "has_subscribe", "has_txn", "rebalanced", "tab",
                 "backend")

    def __init__(self, history):
        self.history = history


def op_mops(op):
    """(writes, reads) of one send/poll/txn op: writes as [(k, offset, v)],
    reads as {k: [[offset, v], ...]} concatenated over its poll mops (the
    decoded JSON itself when there is one poll mop: no copy)."""
    writes = None
    reads = None
    shared = False
    value = op.value
    if not value:
        return None, None
    for m in value:
        kind = m[0]
        if kind == "send":
            v = m[2]
            if writes is None:
                writes = []
            if type(v) is list:
                writes.append((m[1], v[0], v[1]))
            else:
                writes.append((m[1], None, v))
        elif len(m) > 1 and m[1]:
            if reads is None:
                reads = m[1]
                shared = True
                continue
            if shared:  # copy before merging a second poll mop into it
                reads = {k: list(ps) for k, ps in reads.items()}
                shared = False
            for k, pairs in m[1].items():
                lst = reads.get(k)
                if lst is None:
                    reads[k] = list(pairs)
                else:
                    lst.extend(pairs)
    return writes, reads


def rebalanced_keys(op):
    """The keys named in op's rebalance log."""
    ks = set()
    for ev in op.extra["rebalance_log"]:
        if isinstance(ev, dict):
            ks.update(ev.get("keys") or ())
    return ks


def extract(history: History) -> Analysis:
    """The indexes of the reference analysis, from the ops' decoded values
    (lazy poll values are decoded here)."""
    ops = history.ops
    a = Analysis(history)
    a.tab = None
    n = len(ops)
    writes = [None] * n
    reads = [None] * n
    writer_of = {}     # k -> {v: op id}; later writers win, as in Jepsen
    failed = {}        # k -> {v: op id} of failed sends
    ok_reads = {}      # k -> set of values read by ok ops
    first_reader = {}  # k -> {v: op id} first op (invoke order) that read v
    has_subscribe = has_txn = False
    rebalanced = {}
    for op in ops:
        f = op.f
        if f not in TXN_FS:
            if f == "subscribe":
                has_subscribe = True
            continue
        if f == "txn":
            has_txn = True
        w, r = op_mops(op)
        i = op.id
        if w:
            writes[i] = w
            ok = op.type != "fail"
            for k, _, v in w:
                d = writer_of.get(k)
                if d is None:
                    d = writer_of[k] = {}
                d[v] = i
                if not ok:
                    fd = failed.get(k)
                    if fd is None:
                        fd = failed[k] = {}
                    fd[v] = i
        if r:
            reads[i] = r
            okr = op.type == "ok"
            for k, pairs in r.items():
                if not pairs:
                    continue
                vals = set(map(_second, pairs))
                fr = first_reader.get(k)
                if fr is None:
                    fr = first_reader[k] = dict.fromkeys(vals, i)
                else:
                    new = vals.difference(fr)  # C speed (dict fast path): most were read before
                    if new:
                        fr.update(dict.fromkeys(new, i))
                if okr:
                    s = ok_reads.get(k)
                    if s is None:
                        ok_reads[k] = vals
                    else:
                        s |= vals
        if op.extra and op.extra.get("rebalance_log"):
            rebalanced[op.id] = rebalanced_keys(op)
    a.writes, a.reads = writes, reads
    a.writer_of, a.failed, a.ok_reads = writer_of, failed, ok_reads
    a.first_reader = first_reader
    a.has_subscribe, a.has_txn = has_subscribe, has_txn
    a.rebalanced = rebalanced
    # committed[i]: op i's sends must have taken effect (ok, or info and one
    # of its values was read by an ok op): Jepsen's must-have-committed?
    committed = bytearray(n)
    for i, w in enumerate(writes):
        if w is None:
            continue
        t = ops[i].type
        if t == "ok":
            committed[i] = 1
        elif t == "info":
            for k, _, v in w:
                s = ok_reads.get(k)
                if s is not None and v in s:
                    committed[i] = 1
                    break
    a.committed = committed
    return a
