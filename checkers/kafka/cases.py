"""The anomaly cases (Jepsen's Kafka analysis, see ``notes/jepsen-kafka.md``),
each a function of an Analysis returning its witnesses: the reference
walks over lists, and the cases that need no walk of their own. The array
backend (``cases_tables``) walks its tables instead for the cases marked
so in ``checkers.kafka.Backend``; tests hold the two equal.

Witnesses name ops by ``Op.ref()``: process, type, f, index (of the
completion line, so one can grep the history), time."""
from __future__ import annotations

from collections.abc import Sequence
from itertools import chain, filterfalse, repeat
from operator import itemgetter

from ..util import distribution, downsample, sort_key
from .extract import TXN_FS, Analysis

_second = itemgetter(1)


def ref(a, i):
    """Op i's reference, for witnesses."""
    return a.history.ops[i].ref()


class Cases(Sequence):
    """Witnesses found as rows of an integer array, made into dicts only
    when read (``build(*row)``): a broken system can give millions of cases
    of one type, of which the result shows the first few and the count."""

    __slots__ = ("rows", "build")

    def __init__(self, rows, build):
        self.rows, self.build = rows, build

    def __len__(self):
        return len(self.rows)

    def __getitem__(self, j):
        if isinstance(j, slice):
            return [self.build(*r) for r in self.rows[j].tolist()]
        return self.build(*self.rows[j].tolist())


def ops_writing(a: Analysis, at_least=1, reading=False):
    """(op id, a.writes[op id]) of the ops with at least that many sends
    (and some reads, if reading), in op order."""
    for i, w in enumerate(a.writes):
        if w is not None and len(w) >= at_least and (
                not reading or a.reads[i] is not None):
            yield i, w


def duplicate_cases(a: Analysis):
    out = []
    for k in sorted(a.orders, key=sort_key):
        vo = a.orders[k]
        if len(vo.first_index) == sum(map(len, vo.values)):
            continue  # every value at exactly one offset
        where = {}
        for o, vs in zip(vo.offsets, vo.values):
            for v in vs:
                where.setdefault(v, []).append(o)
        for v, offs in where.items():
            if len(offs) > 1:
                out.append({"key": k, "value": v, "count": len(offs), "offsets": offs})
    return out


def g1a_cases(a: Analysis):
    """An ok read of a value whose send failed (aborted read)."""
    out = []
    bad = {k: a.ok_reads[k] & fk.keys() for k, fk in a.failed.items()
           if k in a.ok_reads}
    bad = {k: vs for k, vs in bad.items() if vs}
    if not bad:
        return out
    return a.backend.g1a(a, bad)


def g1a_reads(a: Analysis, bad):
    """g1a_cases' walk: every ok read of a (key, value) in bad
    ({key: values}), in op, key and read order."""
    out = []
    ops = a.history.ops
    for i, r in enumerate(a.reads):
        if r is None or ops[i].type != "ok":
            continue
        for k, pairs in r.items():
            bk = bad.get(k)
            if not bk:
                continue
            fk = a.failed[k]
            for _, v in pairs:
                if v in bk:
                    w = fk[v]
                    out.append({"key": k, "value": v, "writer": ref(a, w),
                                "reader": ref(a, i)})
    return out


def garbage_read_cases(a: Analysis):
    """An ok read of a value nobody sent (Elle's garbage read)."""
    out = []
    for k, vs in a.ok_reads.items():
        wk = a.writer_of.get(k, {})
        for v in vs:
            if v not in wk:
                out.append({"key": k, "value": v,
                            "reader": ref(a, a.first_reader[k][v])})
    out.sort(key=lambda e: (sort_key(e["key"]), e["value"]))
    return out


def precommitted_read_cases(a: Analysis):
    """An op that read a value it sent itself."""
    out = []
    for i, w in a.backend.ops_writing(a, reading=True):
        r = a.reads[i]
        by_key = {}
        for k, _, v in w:
            by_key.setdefault(k, set()).add(v)
        for k in sorted(by_key, key=sort_key):
            if k in r:
                bad = by_key[k] & {v for _, v in r[k]}
                if bad:
                    out.append({"op": ref(a, i), "key": k, "value": min(bad)})
    return out


def lost_write_cases(a: Analysis):
    """Jepsen's lost-write: bound = largest *earliest* index of any value an
    ok op read; committed values whose *last* index <= bound that no ok op
    read are lost."""
    out = []
    for k in sorted(a.ok_reads, key=sort_key):
        vs = a.ok_reads[k]
        vo = a.orders.get(k)
        if vo is None:
            continue
        fi = vo.first_index
        bound = max(map(fi.get, vs, repeat(-1)), default=-1)
        if bound < 0:
            continue
        wk = a.writer_of.get(k, {})
        frk = a.first_reader.get(k, {})
        max_read = None
        for v in vo.values[bound]:
            r = frk.get(v)
            if r is not None:
                max_read = ref(a, r)
                break
        # values no ok op read whose last appearance is at or below bound,
        # in index order (each once; the passes at C speed: most were read)
        unread = dict.fromkeys(filterfalse(vs.__contains__,
                                           chain.from_iterable(vo.values[:bound + 1])))
        for v in unread:
            if vo.last_index[v] > bound:
                continue
            w = wk.get(v)
            if w is None:
                continue  # garbage: reported as garbage-read if read ok
            if not a.committed[w]:
                continue
            out.append({"key": k, "value": v, "index": fi[v],
                        "max_read_index": bound, "writer": ref(a, w),
                        "max_read": max_read})
    return out


def pair_case(kind, k, v1, v2, vo, max_skipped, op_field):
    """skip / nonmonotonic classification of a consecutive pair of values."""
    i1 = vo.by_value.get(v1) if vo else None
    i2 = vo.by_value.get(v2) if vo else None
    if i1 is None or i2 is None:
        return None
    delta = i2 - i1
    if delta > 1:
        skipped = vo.by_index[i1 + 1:i2]
        case = {"type": "skip", "key": k, "values": [v1, v2], "delta": delta,
                "skipped": skipped[:max_skipped]}
        if len(skipped) > max_skipped:
            case["skipped_count"] = len(skipped)
    elif delta < 1:
        case = {"type": "nonmonotonic", "key": k, "values": [v1, v2], "delta": delta}
    else:
        return None
    case.update(op_field)
    return case


def int_poll_cases(a: Analysis, max_skipped=32):
    """Skips and backward steps between consecutive reads of a key inside
    one op (keys in the op's rebalance log are exempt)."""
    skips, nonmono = [], []
    orders = a.orders
    for i, r in enumerate(a.reads):
        if r is None:
            continue
        exempt = a.rebalanced.get(i, ())
        for k, pairs in r.items():
            if len(pairs) < 2 or k in exempt:
                continue
            vo = orders.get(k)
            if vo is None:
                continue
            bv = vo.by_value
            idx = list(map(bv.get, map(_second, pairs)))
            first = idx[0]
            if first is not None and idx == list(range(first, first + len(idx))):
                continue  # the common case: consecutive indices
            _int_poll_steps(a, i, k, map(_second, pairs), vo, max_skipped, skips, nonmono)
    return strip(skips), strip(nonmono)


def _int_poll_steps(a, i, k, values, vo, max_skipped, skips, nonmono) -> None:
    """Within one poll of op i, each step between consecutive values of key
    k whose version-order indices are not +1 is a skip or a reordering."""
    bv = vo.by_value
    prev_i = prev_v = None
    for v in values:
        iv = bv.get(v)
        if prev_i is not None and iv is not None and iv - prev_i != 1:
            c = pair_case("int-poll", k, prev_v, v, vo, max_skipped, {"op": ref(a, i)})
            (skips if c["type"] == "skip" else nonmono).append(c)
        prev_i, prev_v = iv, v


def int_send_cases(a: Analysis, max_skipped=32):
    skips, nonmono = [], []
    orders = a.orders
    for i, w in a.backend.ops_writing(a, 2):
        by_key = {}
        for k, _, v in w:
            by_key.setdefault(k, []).append(v)
        for k, vs in by_key.items():
            if len(vs) < 2:
                continue
            vo = orders.get(k)
            if vo is None:
                continue
            for v1, v2 in zip(vs, vs[1:]):
                c = pair_case("int-send", k, v1, v2, vo, max_skipped,
                               {"op": ref(a, i)})
                if c is not None:
                    (skips if c["type"] == "skip" else nonmono).append(c)
    return strip(skips), strip(nonmono)


def strip(cases):
    for c in cases:
        del c["type"]
    return cases


def _by_process(ops):
    procs = {}
    for op in ops:
        procs.setdefault(op.process, []).append(op)
    return procs


def poll_cases(a: Analysis, max_skipped=32):
    """Per process: an op's first read of k against the previous ok op's last
    read of k. assign/subscribe keep only the keys they name; an assign with
    seek_to_beginning, or a crash (fresh client), forgets everything;
    fail/info polls are checked but do not move the position."""
    skips, nonmono = [], []
    ops = a.history.ops
    orders = a.orders
    for process, pops in _by_process(ops).items():
        last = {}  # k -> (op id, last value read)
        for op in pops:
            f = op.f
            if f in ("assign", "subscribe"):
                if op.type != "fail" and isinstance(op.value, list):
                    if op.extra and op.extra.get("seek_to_beginning"):
                        last = {}  # an explicit rewind, not a nonmonotonic poll
                        continue
                    keep = set(op.value)
                    last = {k: x for k, x in last.items() if k in keep}
                continue
            if f == "crash":
                last = {}
                continue
            r = a.reads[op.id]
            if r is None:
                continue
            for k, pairs in r.items():
                if not pairs:
                    continue
                prev = last.get(k)
                if prev is None:
                    continue
                vo = orders.get(k)
                i1 = vo.by_value.get(prev[1]) if vo else None
                i2 = vo.by_value.get(pairs[0][1]) if vo else None
                if i1 is not None and i2 is not None and i2 - i1 != 1:
                    c = pair_case("poll", k, prev[1], pairs[0][1], vo, max_skipped,
                                   {"ops": [ref(a, prev[0]), op.ref()]})
                    (skips if c["type"] == "skip" else nonmono).append(c)
            if op.type == "ok":
                for k, pairs in r.items():
                    if pairs:
                        last[k] = (op.id, pairs[-1][1])
    return strip(skips), strip(nonmono)


def nonmonotonic_send_cases(a: Analysis):
    """Per process: an op's first send to k lands at or before the previous
    (ok or info) op's last send to k."""
    out = []
    ops = a.history.ops
    orders = a.orders
    for process, pops in _by_process(ops).items():
        last = {}
        for op in pops:
            if op.type == "fail":
                continue
            f = op.f
            if f in ("assign", "subscribe"):
                if isinstance(op.value, list):
                    keep = set(op.value)
                    last = {k: x for k, x in last.items() if k in keep}
                continue
            w = a.writes[op.id]
            if w is None:
                continue
            firsts, lasts = {}, {}
            for k, _, v in w:
                firsts.setdefault(k, v)
                lasts[k] = v
            for k, v2 in firsts.items():
                prev = last.get(k)
                vo = orders.get(k)
                if prev is None or vo is None:
                    continue
                i1, i2 = vo.by_value.get(prev[1]), vo.by_value.get(v2)
                if i1 is not None and i2 is not None and i2 - i1 < 1:
                    out.append({"key": k, "values": [prev[1], v2], "delta": i2 - i1,
                                "ops": [ref(a, prev[0]), op.ref()]})
            for k, v in lasts.items():
                last[k] = (op.id, v)
    return out


def unseen_and_lag(a: Analysis, series_points=1000):
    """Walks ok completions in realtime order. Returns (final unseen witness
    or None, series [(time, {k: count})], lag distribution result).

    unseen: values of ok sends no ok read has seen (yet). lag: for each ok
    send, from its ack to the completion of the first ok poll that returned
    it (clipped at 0: a poll may see a value before its send is acked)."""
    ops = a.history.ops
    writes, reads = a.writes, a.reads
    unseen = {}       # k -> {v: ack time} of ok sends no ok read has seen yet
    polled = {}       # k -> set of values seen by ok reads so far
    lags = {}         # k -> [lag ns]
    series = []
    # one snapshot of the unseen counts per time step, not per op
    step = max(1, a.history.end_time // max(1, series_points))
    next_snapshot = 0
    changed = False
    t = 0
    for e in a.history.events:
        if not e & 1:
            continue
        op = ops[e >> 1]
        if op.type != "ok" or op.f not in TXN_FS:
            continue
        t = op.time
        r = reads[op.id]
        if r is not None:
            for k, pairs in r.items():
                if not pairs:
                    continue
                pk = polled.get(k)
                if pk is None:
                    pk = polled[k] = set()
                new = set(map(_second, pairs))
                new -= pk
                if not new:
                    continue
                pk |= new
                uk = unseen.get(k)
                if uk:
                    seen_now = [v for v in new if v in uk]
                    if seen_now:
                        lk = lags.setdefault(k, [])
                        for v in seen_now:
                            lk.append(max(0, t - uk.pop(v)))
                        changed = True
        w = writes[op.id]
        if w is not None:
            for k, _, v in w:
                pk = polled.get(k)
                if pk is not None and v in pk:
                    lags.setdefault(k, []).append(0)
                    continue
                unseen.setdefault(k, {})[v] = t
                changed = True
        if changed and t >= next_snapshot:
            series.append((t, {k: len(u) for k, u in unseen.items() if u}))
            next_snapshot = t + step
            changed = False
    if changed:
        series.append((t, {k: len(u) for k, u in unseen.items() if u}))
    return unseen_result(unseen, series, lags, series_points)


def unseen_result(unseen, series, lags, series_points):
    series = downsample(series, series_points)
    final = {k: s for k, s in unseen.items() if s}
    witness = None
    if final:
        keys = sorted(final, key=sort_key)
        witness = {"unseen": {k: len(final[k]) for k in keys},
                   "messages": {k: sorted(final[k])[:32] for k in keys},
                   "time": series[-1][0] if series else None}
    all_lags = [x for xs in lags.values() for x in xs]
    lag = {"unit": "s",
           "all": distribution(all_lags, 1e-9),
           "by_key": {k: distribution(lags[k], 1e-9) for k in sorted(lags, key=sort_key)}}
    return witness, series, lag
