"""The array backend's representation: every op's reads and sends as flat
arrays (``ReadTable``, over the reader's ``history.PollTable``), per-op
columns, and ``extract_tables``, which builds from them the indexes the
reference extraction (``extract``) builds from lists.

Why numba: the walks over the table go over tens of millions of read rows
and millions of ops, in order, with state (first reader, last read per
process and key, unseen values). In Python that is seconds per walk; numpy
needs a dozen passes and temporaries of hundreds of MB for each. A compiled
loop (``@njit(cache=True)``: the machine code is cached next to this file,
and ``checkers.warmup`` compiles it at setup) does one pass, in the list
version's order, so its results are the same by construction.
"""
from __future__ import annotations

from array import array
from itertools import chain, compress, repeat
from operator import attrgetter, is_, itemgetter

import numpy as np
from numba import njit

from ..history import History, LazyPoll
from .extract import Analysis, op_mops, rebalanced_keys

_first = itemgetter(0)
_second = itemgetter(1)
_third = itemgetter(2)

# Per-op columns (op_columns) as small ints, for the array code.
OK, INFO, FAIL = 0, 1, 2
_TYPE_CODE = {"ok": OK, "info": INFO, "fail": FAIL}
SEND, POLL, TXN, ASSIGN, SUBSCRIBE, CRASH, OTHER_F = range(7)
_F_CODE = {"send": SEND, "poll": POLL, "txn": TXN, "assign": ASSIGN,
           "subscribe": SUBSCRIBE, "crash": CRASH}
# (type, f, class of the value, extra is None) -> type code << 3 | f code,
# | 64 if the value is a LazyPoll, | 128 if the op has extra fields
_OP_CODE = {(t, f, c, x): tc << 3 | fc | (64 if c is LazyPoll else 0) | (0 if x else 128)
            for t, tc in _TYPE_CODE.items() for f, fc in _F_CODE.items()
            for c in (list, LazyPoll, type(None)) for x in (True, False)}
_get_type, _get_f, _get_process, get_time = (attrgetter("type"), attrgetter("f"),
                                              attrgetter("process"), attrgetter("time"))
get_value, _get_extra = attrgetter("_value"), attrgetter("extra")


def op_columns(ops, int_processes=False, codes=None):
    """(type code, f code, lazy, has extra, process number) of every op as
    arrays: lazy if its value is a LazyPoll, has extra if its ``extra`` is
    not None; process numbers count in order of first appearance.

    Touching a million ops costs ~0.1 s per pass (memory latency), so the
    array code takes these columns instead of walking the ops again, and
    they come from the reader's History.op_codes (codes) or from two
    passes at C speed: one through _OP_CODE, one for the processes (as
    they are if int_processes: the reader made them ints)."""
    n = len(ops)
    if codes is not None:
        typ, fcode, lazy, has_extra, p = codes[:5]
        return (typ, fcode, lazy, has_extra) + (_process_numbers(p),)
    code = np.frombuffer(bytes(map(_OP_CODE.get, zip(
        map(_get_type, ops), map(_get_f, ops), map(type, map(get_value, ops)),
        map(is_, map(_get_extra, ops), repeat(None))), repeat(255))), dtype=np.uint8).copy()
    for i in np.flatnonzero(code == 255).tolist():  # other fs, types, values
        op = ops[i]
        code[i] = (_TYPE_CODE.get(op.type, 3) << 3 | _F_CODE.get(op.f, OTHER_F) |
                   (64 if op._value.__class__ is LazyPoll else 0) |
                   (0 if op.extra is None else 128))
    cols = ((code >> 3) & 3, code & 7, (code & 64) != 0, (code & 128) != 0)
    p = None
    if int_processes:
        try:
            p = np.fromiter(map(_get_process, ops), dtype=np.int64, count=n)
        except OverflowError:
            pass
    if p is not None:
        return cols + (_process_numbers(p),)
    procs = list(map(_get_process, ops))
    number = {p: j for j, p in enumerate(dict.fromkeys(procs))}
    return cols + (np.fromiter(map(number.__getitem__, procs), dtype=np.int64, count=n),)


def _process_numbers(p):
    """Integer processes numbered 0, 1, ... in order of first appearance."""
    n = len(p)
    if not n or int(p.max()) - int(p.min()) <= 4 * n:
        return _dense_numbers(p, p.min() if n else 0)
    u, first, inv = np.unique(p, return_index=True, return_inverse=True)
    number = np.empty(len(u), dtype=np.int64)
    number[np.argsort(first)] = np.arange(len(u))
    return number[inv]


@njit(cache=True)
def _dense_numbers(p, pmin):
    """p's values numbered 0, 1, ... in order of first appearance (their
    range is small: numbers through a dense array)."""
    span = 0
    for x in p:
        span = max(span, x - pmin + 1)
    number = np.full(span, -1, dtype=np.int64)
    out = np.empty(len(p), dtype=np.int64)
    m = 0
    for j in range(len(p)):
        x = p[j] - pmin
        if number[x] < 0:
            number[x] = m
            m += 1
        out[j] = number[x]
    return out


class _ReadsView:
    """``a.reads`` over a ReadTable: ``view[i]`` is op i's reads as
    {key: [[offset, value], ...]} (or None), built on demand."""

    def __init__(self, tab, n):
        self.tab, self.n = tab, n

    def __len__(self):
        return self.n

    def __getitem__(self, i):
        t = self.tab
        s0, s1 = t.op_lo[i], t.op_lo[i + 1]
        if s0 == s1:
            return None
        out = {}
        for s in range(s0, s1):
            out[t.keys[int(t.seg_key[s])]] = t.pairs(s)
        return out

    def __iter__(self):
        for i in range(self.n):
            yield self[i]


class _WritesView:
    """``a.writes`` over a ReadTable's sends: ``view[i]`` is op i's sends
    as [(key, offset or None, value), ...] (or None), built on demand (from
    Python lists made on first use: cycle witnesses ask for thousands)."""

    def __init__(self, tab, n):
        self.tab, self.n = tab, n
        self.lists = None

    def __len__(self):
        return self.n

    def __getitem__(self, i):
        if self.lists is None:
            t = self.tab
            keys = t.keys
            self.lists = (t.op_send.tolist(), [keys[k] for k in t.s_key.tolist()],
                          [o if o >= 0 else None for o in t.s_off.tolist()], t.s_val.tolist())
        lo, ks, offs, vals = self.lists
        j0, j1 = lo[i], lo[i + 1]
        if j0 == j1:
            return None
        return list(zip(ks[j0:j1], offs[j0:j1], vals[j0:j1]))

    def __iter__(self):
        for i in range(self.n):
            yield self[i]


@njit(cache=True)
def _merge_rows(order, lo, off, val, x_lo, x_off, x_val):
    """The rows of the segments ``order`` (< len(lo) - 1: the poll table's,
    else the decoded reads' after them) as one table: (lo, off, val)."""
    nseg = len(lo) - 1
    new_lo = np.zeros(len(order) + 1, dtype=np.int64)
    for s in range(len(order)):
        j = order[s]
        if j < nseg:
            new_lo[s + 1] = new_lo[s] + lo[j + 1] - lo[j]
        else:
            new_lo[s + 1] = new_lo[s] + x_lo[j - nseg + 1] - x_lo[j - nseg]
    new_off = np.empty(new_lo[-1], dtype=np.int64)
    new_val = np.empty(new_lo[-1], dtype=np.int64)
    for s in range(len(order)):
        j = order[s]
        r0, r1 = new_lo[s], new_lo[s + 1]
        if j < nseg:
            new_off[r0:r1] = off[lo[j]:lo[j + 1]]
            new_val[r0:r1] = val[lo[j]:lo[j + 1]]
        else:
            j -= nseg
            new_off[r0:r1] = x_off[x_lo[j]:x_lo[j + 1]]
            new_val[r0:r1] = x_val[x_lo[j]:x_lo[j + 1]]
    return new_lo, new_off, new_val


@njit(cache=True)
def _scan_segment(off, val, shift, r0, r1, i, base, okr, row_code, first_op, first_off,
                  multi, ok):
    """_kv_scan over the rows r0:r1 of one segment, stored in off/val from
    row shift on."""
    for r in range(r0, r1):
        c = base + val[r - shift]
        o = off[r - shift]
        row_code[r] = c
        if first_op[c] < 0:
            first_op[c] = i
            first_off[c] = o
        elif o != first_off[c]:
            multi[c] = True
        if okr:
            ok[c] = True


@njit(cache=True)
def _kv_scan(seg_op, seg_key, lo, off, val, tail_off, tail_val, okop, vmin, vspan, nkeys):
    """One pass over the read rows: each row's dense (key, value) code, and
    per code the op and offset of its first row (rows are in op order: the
    first reader), whether it was also read at another offset, and whether
    an ok op read it (first_op -1: never read)."""
    ncode = nkeys * vspan
    first_op = np.full(ncode, -1, dtype=np.int64)
    first_off = np.zeros(ncode, dtype=np.int64)
    multi = np.zeros(ncode, dtype=np.bool_)
    ok = np.zeros(ncode, dtype=np.bool_)
    n = len(off)
    row_code = np.empty(n + len(tail_off), dtype=np.int32)
    for s in range(len(seg_op)):
        i = seg_op[s]
        base = seg_key[s] * vspan - vmin
        if lo[s] < n:
            _scan_segment(off, val, 0, lo[s], lo[s + 1], i, base, okop[i], row_code,
                          first_op, first_off, multi, ok)
        else:
            _scan_segment(tail_off, tail_val, n, lo[s], lo[s + 1], i, base, okop[i],
                          row_code, first_op, first_off, multi, ok)
    return row_code, first_op, first_off, multi, ok


@njit(cache=True)
def _remap(a, table):
    """a[r] = table[a[r]], in place (no second array of tens of millions)."""
    for r in range(len(a)):
        a[r] = table[a[r]]


@njit(cache=True)
def _rows_in(row_kv, off, tail_off, wanted):
    """(kv, offset) of the rows whose kv group is wanted (few)."""
    m = 0
    for r in range(len(row_kv)):
        if wanted[row_kv[r]]:
            m += 1
    kv = np.empty(m, dtype=np.int64)
    o = np.empty(m, dtype=np.int64)
    m = 0
    for r in range(len(row_kv)):
        if wanted[row_kv[r]]:
            kv[m] = row_kv[r]
            o[m] = off[r] if r < len(off) else tail_off[r - len(off)]
            m += 1
    return kv, o


@njit(cache=True)
def _first_index(codes, ncodes):
    """First position of each code in codes (len(codes): absent)."""
    first = np.full(ncodes, len(codes), dtype=np.int64)
    for j in range(len(codes) - 1, -1, -1):
        first[codes[j]] = j
    return first


class ReadTable:
    """Every op's reads as flat arrays (history.PollTable's layout, plus the
    reads of ops whose value was decoded), with the per-(key, value) and
    per-(key, offset, value) groups the anomaly functions need, per-op
    columns (``typ``, ``fcode``, ``proc``, ``okop``: see op_columns), and
    (after add_sends) the sends as flat arrays over the same key ids.

    Rows: offsets and values, and ``row_kv`` their (key, value) group;
    segment s (one per op and key read) holds rows ``lo[s]:lo[s + 1]`` of
    op ``seg_op[s]``, key ``keys[seg_key[s]]``; op i's segments are
    ``op_lo[i]:op_lo[i + 1]`` (a list; ``op_seg``: the same as an array).
    The offsets and values are stored as the poll table's arrays
    ``off``/``val`` followed by ``tail_off``/``tail_val`` (the reads of
    decoded ops after all of them, if any; ``rows`` reads them).
    (key, value) groups ``kv_*`` are sorted by key id and value;
    ``t_kv``/``t_off`` the distinct (group, offset) read, sorted. ``u_*``:
    the (key, value) universe of reads and sends (see add_sends)."""

    @classmethod
    def build(cls, history):
        P = history.polls
        ops = history.ops
        n = len(ops)
        typ, fcode, lazy, has_extra, proc = op_columns(ops, int_processes=True,
                                                       codes=history.op_codes)
        keys = list(P.keys)
        key_id = {k: i for i, k in enumerate(keys)}
        x_op, x_key, x_cnt, x_off, x_val = [], [], [], [], []
        # poll/txn ops whose reads are not in the poll table: those whose
        # value the reader decoded (a send's value holds no poll: the
        # reader checked that). Not "whose value is not a LazyPoll now": a
        # LazyPoll decoded since (by another checker) has its reads in the
        # table already.
        in_table = lazy.copy()
        in_table[P.seg_op] = True
        decoded = np.flatnonzero(((fcode == POLL) | (fcode == TXN)) & ~in_table).tolist()
        for i in decoded:
            op = ops[i]
            _, r = op_mops(op)
            if not r:
                continue
            for k, pairs in r.items():
                for o, v in pairs:
                    if type(o) is not int or type(v) is not int or o < 0 \
                            or not -2**62 < v < 2**62:
                        return None
                kid = key_id.get(k)
                if kid is None:
                    if type(k) is not str:
                        return None
                    kid = key_id[k] = len(keys)
                    keys.append(k)
                x_op.append(op.id)
                x_key.append(kid)
                x_cnt.append(len(pairs))
                x_off.extend(map(_first, pairs))
                x_val.extend(map(_second, pairs))
        seg_op, seg_key, lo, off, val = P.seg_op, P.seg_key, P.seg_lo, P.off, P.val
        tail_off = tail_val = np.zeros(0, dtype=np.int64)
        if x_op:  # merge the decoded reads in, in op order
            x_lo = np.zeros(len(x_cnt) + 1, dtype=np.int64)
            np.cumsum(x_cnt, out=x_lo[1:])
            x_off = np.array(x_off, dtype=np.int64)
            x_val = np.array(x_val, dtype=np.int64)
            all_op = np.concatenate((seg_op, np.array(x_op, dtype=np.int64)))
            all_key = np.concatenate((seg_key, np.array(x_key, dtype=np.int32)))
            if not len(seg_op) or x_op[0] > seg_op[-1]:
                # all after the poll table's (often: the last op's, alone):
                # their rows go after its rows, in other arrays (copying
                # hundreds of MB of fresh memory costs ~0.5 s)
                lo = np.concatenate((lo, lo[-1] + x_lo[1:]))
                tail_off, tail_val = x_off, x_val
            else:
                order = np.argsort(all_op, kind="stable")
                all_op, all_key = all_op[order], all_key[order]
                lo, off, val = _merge_rows(order, lo, off, val, x_lo, x_off, x_val)
            seg_op, seg_key = all_op, all_key
        t = cls()
        t.keys, t.key_id = keys, key_id
        t.n = n
        t.decoded = decoded
        t.has_extra = has_extra
        t.extra_ops = np.flatnonzero(has_extra & (fcode <= TXN)).tolist()
        t.typ, t.fcode, t.proc = typ, fcode, proc
        t.okop = okop = typ == OK
        t.seg_op, t.seg_key, t.lo = seg_op, seg_key, lo
        t.off, t.val, t.tail_off, t.tail_val = off, val, tail_off, tail_val
        vs = [int(f(x)) for x in (val, tail_val) if len(x) for f in (np.min, np.max)]
        vmin, vmax = (min(vs), max(vs)) if vs else (0, 0)
        vspan = vmax - vmin + 1
        nkeys = len(keys)
        if nkeys * vspan > 1 << 24:  # too sparse for dense (key, value) arrays
            return None
        # (key, value) groups through dense arrays indexed by a code (numpy's
        # unique sorts or hashes tens of millions of rows: seconds)
        row_kv, first_op, first_off, multi, ok = _kv_scan(
            seg_op, seg_key, lo, off, val, tail_off, tail_val, okop, vmin, vspan, nkeys)
        present = first_op >= 0
        ukv = np.flatnonzero(present)
        _remap(row_kv, (np.cumsum(present, dtype=np.int32) - 1))
        nkv = len(ukv)
        t.row_kv = row_kv
        t.kv_key = ukv // vspan
        t.kv_val = ukv % vspan + vmin
        t.kv_first, t.kv_ok = first_op[ukv], ok[ukv]
        # the distinct (group, offset) pairs read: one per group, but all
        # offsets of the values read at several
        t_kv, t_off = np.arange(nkv, dtype=np.int64), first_off[ukv]
        mm = multi[ukv]
        if mm.any():
            ck, co = _rows_in(row_kv, off, tail_off, mm)
            o = np.lexsort((co, ck))
            ck, co = ck[o], co[o]
            new = np.ones(len(ck), dtype=bool)
            new[1:] = (ck[1:] != ck[:-1]) | (co[1:] != co[:-1])
            t_kv = np.concatenate((t_kv[~mm], ck[new]))
            t_off = np.concatenate((t_off[~mm], co[new]))
            o = np.lexsort((t_off, t_kv))
            t_kv, t_off = t_kv[o], t_off[o]
        t.t_kv, t.t_off = t_kv, t_off
        t.op_seg = np.searchsorted(seg_op, np.arange(n + 1))
        t.op_lo = t.op_seg.tolist()
        return t

    def add_sends(self, s_op, s_key, s_off, s_val):
        """The sends as flat arrays (op order; offset -1: unknown; key ids
        extend ``keys``), and the (key, value) universe ``u_key``/``u_val``
        of everything read or sent, sorted: ``kv2u``/``s2u`` map read
        groups and sends into it, ``u_ok``: read by an ok op, ``u_writer``:
        the last op that sent it (-1: none)."""
        self.s_op, self.s_key, self.s_off, self.s_val = s_op, s_key, s_off, s_val
        self.op_send = np.searchsorted(s_op, np.arange(self.n + 1))
        nkv = len(self.kv_key)
        allk = np.concatenate((self.kv_key, s_key))
        allv = np.concatenate((self.kv_val, s_val))
        o = np.lexsort((allv, allk))
        sk, sv = allk[o], allv[o]
        new = np.ones(len(o), dtype=bool)
        new[1:] = (sk[1:] != sk[:-1]) | (sv[1:] != sv[:-1])
        uid = np.empty(len(o), dtype=np.int64)
        uid[o] = np.cumsum(new) - 1
        self.kv2u, self.s2u = uid[:nkv], uid[nkv:]
        self.u_key, self.u_val = sk[new], sv[new]
        nu = len(self.u_key)
        self.u_ok = np.zeros(nu, dtype=bool)
        self.u_ok[self.kv2u] = self.kv_ok
        self.u_writer = np.full(nu, -1, dtype=np.int64)
        np.maximum.at(self.u_writer, self.s2u, s_op)

    def reads_view(self):
        return _ReadsView(self, self.n)

    def _key_groups(self, key_arr):
        """[(key id, lo, hi)] of runs of a key-sorted array."""
        if not len(key_arr):
            return []
        b = np.flatnonzero(key_arr[1:] != key_arr[:-1]) + 1
        starts = np.concatenate(([0], b)).tolist()
        ends = np.concatenate((b, [len(key_arr)])).tolist()
        ks = key_arr[starts].tolist()
        return list(zip(ks, starts, ends))

    def group_dicts(self, kid, vals, ids):
        """{key: {value: id}} of parallel arrays, keys and values in order of
        first appearance, later ids winning (as dict assignments in order)."""
        o = np.argsort(kid, kind="stable")
        groups = self._key_groups(kid[o])
        groups.sort(key=lambda g: o[g[1]])
        vs, xs = vals[o], ids[o]
        return {self.keys[k]: dict(zip(vs[lo:hi].tolist(), xs[lo:hi].tolist()))
                for k, lo, hi in groups}

    def first_reader_ok_reads(self):
        fr, okr = {}, {}
        keys = self.keys
        vals, first, ok = self.kv_val, self.kv_first, self.kv_ok
        for kid, lo, hi in self._key_groups(self.kv_key):
            k = keys[kid]
            fr[k] = dict(zip(vals[lo:hi].tolist(), first[lo:hi].tolist()))
            m = ok[lo:hi]
            if m.any():
                okr[k] = set(vals[lo:hi][m].tolist())
        return fr, okr

    def key_order(self):
        """Ids of the keys read (even only empty), in order of first appearance."""
        first = _first_index(self.seg_key, len(self.keys))
        u = np.flatnonzero(first < len(self.seg_key))
        return u[np.argsort(first[u])].tolist()

    def rows(self, column, s):
        """Segment s's offsets (column "off") or values ("val"), a list."""
        a, tail = (self.off, self.tail_off) if column == "off" else (self.val, self.tail_val)
        lo, hi = int(self.lo[s]), int(self.lo[s + 1])
        if lo >= len(a):
            return tail[lo - len(a):hi - len(a)].tolist()
        return a[lo:hi].tolist()

    def value_at(self, r):
        """The value read at row r (of the main or the tail arrays)."""
        n = len(self.val)
        return int(self.val[r] if r < n else self.tail_val[r - n])

    def pairs(self, s):
        return [[o, v] for o, v in zip(self.rows("off", s), self.rows("val", s))]


def _send_rows(ops, ids, keys, key_id):
    """(op, key id, offset (-1: unknown), value) arrays of every send
    micro-op of the send ops ids (in order), keys new to key_id added to
    it and to keys in order of first appearance (OverflowError: a value
    int64 cannot hold; the reference extraction then)."""
    values = list(map(get_value, map(ops.__getitem__, ids.tolist())))
    if None in values:
        values = [v or () for v in values]
    counts = np.fromiter(map(len, values), dtype=np.int64, count=len(values))
    mops = list(chain.from_iterable(values))
    del values
    names = list(map(_second, mops))
    vs = list(map(_third, mops))
    del mops
    for k in dict.fromkeys(names):
        if k not in key_id:
            key_id[k] = len(keys)
            keys.append(k)
    n = len(vs)
    kid = np.fromiter(map(key_id.__getitem__, names), dtype=np.int64, count=n)
    del names
    pair = np.fromiter(map(is_, map(type, vs), repeat(list)), dtype=bool, count=n)
    pairs = list(compress(vs, pair))
    plain = list(compress(vs, ~pair))
    del vs
    offs = list(map(_first, pairs))
    if None in offs:
        offs = [-1 if o is None else o for o in offs]
    pvals = list(map(_second, pairs))
    # (ints, the reader checked: np.fromiter refuses those int64 cannot hold)
    off = np.full(n, -1, dtype=np.int64)
    val = np.empty(n, dtype=np.int64)
    off[pair] = np.fromiter(offs, dtype=np.int64, count=len(offs))
    val[pair] = np.fromiter(pvals, dtype=np.int64, count=len(pvals))
    val[~pair] = np.fromiter(plain, dtype=np.int64, count=len(plain))
    return np.repeat(ids.astype(np.int64), counts), kid, off, val


def extract_tables(history: History) -> Analysis | None:
    """extract over a ReadTable: the reads and the sends as flat arrays
    (None if they cannot all be: the reference extraction then), and the
    indexes from arrays over the (key, value) universe (see
    ReadTable.add_sends)."""
    if history.polls is None:
        return None
    tab = ReadTable.build(history)
    if tab is None:
        return None
    a = Analysis(history)
    a.tab = tab
    ops = history.ops
    n = len(ops)
    fcode = tab.fcode
    a.has_subscribe = bool((fcode == SUBSCRIBE).any())
    a.has_txn = bool((fcode == TXN).any())
    # The sends, into flat arrays: those of send ops by C-speed passes over
    # all their micro-ops at once (_send_rows; a Python loop costs seconds
    # a million sends), then those of the (decoded) txn ops, rarer, one by
    # one. The reader validated them (string keys, int values, offsets int
    # >= 0 or null: -1 here); the int64 arrays refuse anything else that
    # could come (TypeError, OverflowError: the list path then).
    keys, key_id = tab.keys, tab.key_id
    txns = [i for i in tab.decoded if fcode[i] == TXN]
    try:
        if history.send_rows is not None:  # (the reader's)
            s_op, names, spelling, off, val = history.send_rows
            for k in names:  # (spellings in order of first appearance)
                if k not in key_id:
                    key_id[k] = len(keys)
                    keys.append(k)
            rows = (s_op, np.array([key_id[k] for k in names], dtype=np.int64)[spelling],
                    off, val)
        else:
            rows = _send_rows(ops, np.flatnonzero(fcode == SEND), keys, key_id)
        t_op, t_key, t_off, t_val = array("q"), array("q"), array("q"), array("q")
        for i in txns:
            for m in ops[i]._value or ():  # as op_mops' writes
                if m[0] == "send":
                    k, v = m[1], m[2]
                    kid = key_id.get(k)
                    if kid is None:
                        kid = key_id[k] = len(keys)
                        keys.append(k)
                    if v.__class__ is list:
                        o = v[0]
                        t_off.append(-1 if o is None else o)
                        t_val.append(v[1])
                    else:
                        t_off.append(-1)
                        t_val.append(v)
                    t_op.append(i)
                    t_key.append(kid)
    except (TypeError, OverflowError):
        return None
    s_op, s_key, s_off, s_val = (np.concatenate((r, np.frombuffer(t, dtype=np.int64)))
                                 if len(t) else r
                                 for r, t in zip(rows, (t_op, t_key, t_off, t_val)))
    if txns:  # into op order (stable: an op's sends keep theirs)
        o = np.argsort(s_op, kind="stable")
        s_op, s_key, s_off, s_val = s_op[o], s_key[o], s_off[o], s_val[o]
    rebalanced = {}
    for i in tab.extra_ops:
        if ops[i].extra.get("rebalance_log"):
            rebalanced[i] = rebalanced_keys(ops[i])
    tab.add_sends(s_op, s_key, s_off, s_val)
    a.writes, a.reads = _WritesView(tab, n), tab.reads_view()
    a.rebalanced = rebalanced
    # later writers win, as in Jepsen
    a.writer_of = tab.group_dicts(s_key, s_val, s_op)
    fm = tab.typ[s_op] == FAIL
    a.failed = tab.group_dicts(s_key[fm], s_val[fm], s_op[fm])
    a.first_reader, a.ok_reads = tab.first_reader_ok_reads()
    # committed (see extract): ok, or info with a value an ok op read
    typ = tab.typ
    committed = np.zeros(n, dtype=bool)
    committed[s_op] = typ[s_op] == OK
    hit = (typ[s_op] == INFO) & tab.u_ok[tab.s2u]
    committed[s_op[hit]] = True
    tab.committed = committed
    a.committed = bytearray(committed.view(np.uint8).tobytes())
    return a
