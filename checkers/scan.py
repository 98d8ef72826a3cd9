"""A history file's bytes, scanned by compiled passes into flat arrays.

Reading a million-operation history one line at a time through the JSON
decoder and the validating ``_Builder`` costs seconds of Python per million
lines, and decoding poll results into lists costs more than everything
else the checker does (tens of millions of ``[offset, value]`` pairs). So
the reader first tries these passes, which take a file written in the
canonical compact form (what ``json.dumps(..., separators=(",", ":"))``
writes with the fields in the design's order: ``{"index":..,"time":..,
"process":..,"type":"..","f":"..","value":..}`` plus any extra fields) and
produce, per line, its standard fields as integers, the span of its value,
and how the operations pair up; per canonical poll result, its pairs as
arrays. Whatever they do not vouch for (a value not in a canonical shape, an
extra field, a nemesis event) is decoded and validated by the reader as
usual; a file they cannot take at all (an error, a line out of form) is read
the ordinary way, which also names its errors.

Canonical poll results (``find_bodies``): no backslash in the line; the line
ends in ``,"value":[["poll",{...}]]}``; the result object has keys of
printable ASCII without quote or backslash, each mapped to a list of
``[offset, value]`` pairs of integers without leading zeros, of at most 18
digits, offsets >= 0.

numba compiles the passes (``cache=True`` keeps the machine code next to this
file, so only the first run on a machine pays for compiling): a byte at a
time in Python would be far slower than the decoder they replace.
"""
from __future__ import annotations

import numpy as np
from numba import njit, types
from numba.typed import Dict

MARK = b',"value":[["poll",{'
_MARK = np.frombuffer(MARK, dtype=np.uint8)
_END = np.frombuffer(b"}]]}", dtype=np.uint8)

# fill_table status
OK, DUPLICATE_KEY, HASH_COLLISION = 0, 1, 2

TYPE_NAMES = ("invoke", "ok", "fail", "info")
F_NAMES = ("send", "poll", "txn", "assign", "subscribe", "crash", "debug-topic-partitions")
INVOKE = 0
SEND, POLL, TXN, ASSIGN, SUBSCRIBE = 0, 1, 2, 3, 4
NEMESIS_PROCESS = -(1 << 62)  # the process column of a nemesis line

# value kinds (scan_lines): checked here; decode and check in Python;
# JSON null; [["poll"]]
VALID, UNCHECKED, NULL, POLL_INVOKE = 0, 1, 2, 3

# scan_lines status
SCANNED, OUT_OF_FORM, BAD_PAIRING = 0, 1, 2


def _words(names):
    """names as one byte array and their offsets, for _which."""
    raw = [n.encode() if isinstance(n, str) else n for n in names]
    off = np.zeros(len(raw) + 1, dtype=np.int64)
    off[1:] = np.cumsum([len(r) for r in raw])
    return np.frombuffer(b"".join(raw), dtype=np.uint8).copy(), off


_TYPES = _words(TYPE_NAMES)
_FS = _words(F_NAMES)
# the fixed parts of a canonical line, in order (see _L_*)
_LITERALS = _words([b'{"index":', b',"time":', b',"process":', b',"type":"', b'","f":"',
                    b'","value":', b'"nemesis"', b'[["poll"]]', b'null', b'["send","'])
_L_INDEX, _L_TIME, _L_PROCESS, _L_TYPE, _L_F, _L_VALUE, _L_NEMESIS, _L_POLL_INVOKE, \
    _L_NULL, _L_SEND = range(10)


@njit(cache=True)
def _key_char(c):
    return c == 0x20 or c == 0x21 or (0x23 <= c <= 0x5b) or (0x5d <= c <= 0x7e)


@njit(cache=True)
def _number_end(buf, p, hi):
    """End of a canonical non-negative integer at p (0, or 1-9 then at most
    17 more digits), or -1."""
    if p >= hi:
        return -1
    c = buf[p]
    if c == 0x30:
        return p + 1
    if c < 0x31 or c > 0x39:
        return -1
    q = p + 1
    while q < hi and q - p < 18 and 0x30 <= buf[q] <= 0x39:
        q += 1
    return q


@njit(cache=True)
def _scan_body(buf, p, hi):
    """Validates the result object buf[p:hi]; (keys, pairs) or (-1, -1)."""
    if p >= hi or buf[p] != 0x7b:  # {
        return -1, -1
    p += 1
    nseg = 0
    npairs = 0
    if p < hi and buf[p] == 0x7d:  # {}
        return (0, 0) if p + 1 == hi else (-1, -1)
    while True:
        if p >= hi or buf[p] != 0x22:  # "
            return -1, -1
        p += 1
        while p < hi and buf[p] != 0x22:
            if not _key_char(buf[p]):
                return -1, -1
            p += 1
        p += 1
        if p + 1 >= hi or buf[p] != 0x3a or buf[p + 1] != 0x5b:  # :[
            return -1, -1
        p += 2
        if p < hi and buf[p] == 0x5d:  # ]
            p += 1
        else:
            while True:
                if p >= hi or buf[p] != 0x5b:  # [
                    return -1, -1
                p = _number_end(buf, p + 1, hi)
                if p < 0 or p >= hi or buf[p] != 0x2c:  # ,
                    return -1, -1
                p += 1
                if p < hi and buf[p] == 0x2d:  # -
                    p += 1
                p = _number_end(buf, p, hi)
                if p < 0 or p >= hi or buf[p] != 0x5d:  # ]
                    return -1, -1
                p += 1
                npairs += 1
                if p < hi and buf[p] == 0x2c:
                    p += 1
                    continue
                if p < hi and buf[p] == 0x5d:
                    p += 1
                    break
                return -1, -1
        nseg += 1
        if p < hi and buf[p] == 0x2c:
            p += 1
            continue
        if p < hi and buf[p] == 0x7d:
            return (nseg, npairs) if p + 1 == hi else (-1, -1)
        return -1, -1


@njit(cache=True)
def find_bodies(buf, starts, ends, mark, end):
    """For each line [starts[i], ends[i]): the start of its result object if
    it is a canonical poll completion line, else -1; with the number of
    keys and of pairs in that result."""
    n = len(starts)
    body = np.full(n, -1, dtype=np.int64)
    nseg = np.zeros(n, dtype=np.int64)
    npairs = np.zeros(n, dtype=np.int64)
    m = len(mark)
    for i in range(n):
        s = starts[i]
        e = ends[i]
        if e - s < m + 4:
            continue
        if (buf[e - 4] != end[0] or buf[e - 3] != end[1] or buf[e - 2] != end[2]
                or buf[e - 1] != end[3]):
            continue
        # The first mark of the line: a valid result cannot hold one (its
        # lists start with a digit, not "poll"), so if this one is not the
        # last, the result does not validate and the line is read the
        # ordinary way, which is only slower.
        j = s + 1
        last = e - 3 - m
        while j <= last:
            if buf[j] == mark[0]:
                k = 1
                while k < m and buf[j + k] == mark[k]:
                    k += 1
                if k == m:
                    break
            j += 1
        if j > last:
            continue
        bad = False
        for p in range(s, j):
            if buf[p] == 0x5c:  # a backslash: JSON escapes are the decoder's job
                bad = True
                break
        if bad:
            continue
        ns, npr = _scan_body(buf, j + m - 1, e - 3)
        if ns < 0:
            continue
        body[i] = j + m - 1
        nseg[i] = ns
        npairs[i] = npr
    return body, nseg, npairs


@njit(cache=True)
def _parse_number(buf, p):
    neg = False
    if buf[p] == 0x2d:
        neg = True
        p += 1
    x = 0
    while 0x30 <= buf[p] <= 0x39:
        x = x * 10 + (buf[p] - 0x30)
        p += 1
    return (-x if neg else x), p


@njit(cache=True)
def fill_table(buf, body_lo, body_hi, nseg_total, npairs_total):
    """Parses the (validated) result objects buf[body_lo[b]:body_hi[b]], in
    the given order, into one segment per (result, key): its key id (keys
    numbered by first appearance), pair count, and the pairs' offsets and
    values. Returns (status, seg_body, seg_key, seg_count, off, val,
    key_lo, key_hi, n_keys); status DUPLICATE_KEY when a result holds a key
    twice (JSON keeps the last: the caller decodes instead)."""
    seg_body = np.empty(nseg_total, dtype=np.int64)
    seg_key = np.empty(nseg_total, dtype=np.int32)
    seg_count = np.empty(nseg_total, dtype=np.int64)
    off = np.empty(npairs_total, dtype=np.int64)
    val = np.empty(npairs_total, dtype=np.int64)
    key_lo = np.empty(nseg_total, dtype=np.int64)
    key_hi = np.empty(nseg_total, dtype=np.int64)
    last_body = np.full(nseg_total, -1, dtype=np.int64)
    ids = Dict.empty(key_type=types.int64, value_type=types.int64)
    nkeys = 0
    s = 0
    r = 0
    for b in range(len(body_lo)):
        p = body_lo[b] + 1  # at a key's opening quote, or at the closing '}'
        hi = body_hi[b]
        while p < hi - 1:
            p += 1
            k0 = p
            h = np.uint64(14695981039346656037)
            while buf[p] != 0x22:
                h = (h ^ np.uint64(buf[p])) * np.uint64(1099511628211)
                p += 1
            k1 = p
            hk = np.int64(h)
            if hk not in ids:
                kid = nkeys
                ids[hk] = kid
                key_lo[kid] = k0
                key_hi[kid] = k1
                nkeys += 1
            else:
                kid = ids[hk]
                a0 = key_lo[kid]
                if key_hi[kid] - a0 != k1 - k0:
                    return HASH_COLLISION, seg_body, seg_key, seg_count, off, val, \
                        key_lo, key_hi, nkeys
                for q in range(k1 - k0):
                    if buf[a0 + q] != buf[k0 + q]:
                        return HASH_COLLISION, seg_body, seg_key, seg_count, off, val, \
                            key_lo, key_hi, nkeys
            if last_body[kid] == b:
                return DUPLICATE_KEY, seg_body, seg_key, seg_count, off, val, \
                    key_lo, key_hi, nkeys
            last_body[kid] = b
            p = k1 + 3  # past '":['
            r0 = r
            while buf[p] == 0x5b:  # [offset,value]
                o, p = _parse_number(buf, p + 1)
                v, p = _parse_number(buf, p + 1)
                off[r] = o
                val[r] = v
                r += 1
                p += 1  # ']'
                if buf[p] == 0x2c:
                    p += 1
            p += 1  # the list's ']'
            seg_body[s] = b
            seg_key[s] = kid
            seg_count[s] = r - r0
            s += 1
            if buf[p] == 0x2c:  # another key
                p += 1
    return OK, seg_body, seg_key, seg_count, off, val, key_lo, key_hi, nkeys


# ------------------------------------------------------------ whole lines

@njit(cache=True)
def _lit(buf, p, e, words, off, k):
    """p past the literal words[k] at p, or -1."""
    a = off[k]
    n = off[k + 1] - a
    if p < 0 or p + n > e:
        return -1
    for q in range(n):
        if buf[p + q] != words[a + q]:
            return -1
    return p + n


@njit(cache=True)
def _which(buf, lo, hi, words, off):
    """Index of the word equal to buf[lo:hi], or -1."""
    for k in range(len(off) - 1):
        a = off[k]
        if off[k + 1] - a != hi - lo:
            continue
        same = True
        for q in range(hi - lo):
            if buf[lo + q] != words[a + q]:
                same = False
                break
        if same:
            return k
    return -1


@njit(cache=True)
def _int(buf, p, e, negative_ok):
    """(value, end) of a canonical integer at p (at most 18 digits), or (0, -1)."""
    if p < 0:
        return 0, -1
    neg = False
    if negative_ok and p < e and buf[p] == 0x2d:
        neg = True
        p += 1
    q = _number_end(buf, p, e)
    if q < 0 or (q < e and 0x30 <= buf[q] <= 0x39):
        return 0, -1
    x = 0
    for r in range(p, q):
        x = x * 10 + (buf[r] - 0x30)
    return (-x if neg else x), q


@njit(cache=True)
def _string_end(buf, p, e):
    """End of a plain string at p (printable ASCII, no escapes), or -1."""
    if p >= e or buf[p] != 0x22:
        return -1
    p += 1
    while p < e and buf[p] != 0x22:
        if not _key_char(buf[p]):
            return -1
        p += 1
    return p + 1 if p < e else -1


@njit(cache=True)
def _skip_value(buf, p, e):
    """End of the JSON value at p, found by bracket depth (the decoder
    validates it later), or -1."""
    depth = 0
    start = p
    while p < e:
        c = buf[p]
        if c == 0x22:  # a string, escapes and all
            p += 1
            while p < e and buf[p] != 0x22:
                if buf[p] == 0x5c:
                    p += 1
                p += 1
            p += 1
            if depth == 0:
                return p if p <= e else -1
        elif c == 0x5b or c == 0x7b:
            depth += 1
            p += 1
        elif c == 0x5d or c == 0x7d:
            if depth == 0:
                return p if p > start else -1  # the end of a scalar
            depth -= 1
            p += 1
            if depth == 0:
                return p
        elif c == 0x2c and depth == 0:
            return p if p > start else -1
        else:
            p += 1
    return -1


@njit(cache=True)
def _send_value(buf, p, e, completion, words, off):
    """True if buf[p:e] is [["send","key",v], ...] (at least one) with v an
    integer, or for a completion also [offset|null, integer]."""
    if p >= e or buf[p] != 0x5b:
        return False
    p += 1
    while True:
        p = _lit(buf, p, e, words, off, _L_SEND)
        if p < 0:
            return False
        p = _string_end(buf, p - 1, e)  # (the literal ends in the key's quote)
        if p < 0 or p >= e or buf[p] != 0x2c:
            return False
        p += 1
        if p < e and buf[p] == 0x5b:
            if not completion:
                return False
            q = _lit(buf, p + 1, e, words, off, _L_NULL)
            if q < 0:
                _, q = _int(buf, p + 1, e, False)
            if q < 0 or q >= e or buf[q] != 0x2c:
                return False
            _, q = _int(buf, q + 1, e, True)
            if q < 0 or q >= e or buf[q] != 0x5d:
                return False
            p = q + 1
        else:
            _, p = _int(buf, p, e, True)
            if p < 0:
                return False
        if p >= e or buf[p] != 0x5d:
            return False
        p += 1
        if p < e and buf[p] == 0x2c:
            p += 1
            continue
        return p == e - 1 and buf[p] == 0x5d


@njit(cache=True)
def _key_list(buf, p, e):
    """True if buf[p:e] is ["key", ...] (at least one key)."""
    if p >= e or buf[p] != 0x5b:
        return False
    p += 1
    while True:
        p = _string_end(buf, p, e)
        if p < 0 or p >= e:
            return False
        if buf[p] == 0x2c:
            p += 1
            continue
        return p == e - 1 and buf[p] == 0x5d


@njit(cache=True)
def scan_lines(buf, starts, ends, body, words, off, type_words, type_off,
               f_words, f_off):
    """Every line's standard fields, value span and kind, and the pairing of
    invokes with completions (each process's next completion, with the
    same f). body: find_bodies' result for these lines.

    Returns (status, bad line, index, time, process, type, f, value lo,
    value hi, value kind, has extra fields, op of the line (2*op for an
    invoke, 2*op + 1 for a completion, -1 for a nemesis line), number of
    ops, the ops' invoke and completion lines (-1: open at the end))."""
    n = len(starts)
    index = np.empty(n, dtype=np.int64)
    time = np.empty(n, dtype=np.int64)
    process = np.empty(n, dtype=np.int64)
    type_ = np.empty(n, dtype=np.int8)
    f = np.empty(n, dtype=np.int8)
    vlo = np.empty(n, dtype=np.int64)
    vhi = np.empty(n, dtype=np.int64)
    kind = np.empty(n, dtype=np.int8)
    extra = np.zeros(n, dtype=np.bool_)
    event = np.empty(n, dtype=np.int64)
    inv_line = np.empty(n, dtype=np.int64)
    comp_line = np.empty(n, dtype=np.int64)
    open_ops = Dict.empty(key_type=types.int64, value_type=types.int64)
    nops = 0
    for i in range(n):
        s = starts[i]
        e = ends[i]
        p = _lit(buf, s, e, words, off, _L_INDEX)
        index[i], p = _int(buf, p, e, False)
        p = _lit(buf, p, e, words, off, _L_TIME)
        time[i], p = _int(buf, p, e, False)
        p = _lit(buf, p, e, words, off, _L_PROCESS)
        q = _lit(buf, p, e, words, off, _L_NEMESIS)
        if q >= 0:
            process[i] = NEMESIS_PROCESS
            p = q
        else:
            process[i], p = _int(buf, p, e, True)
        p = _lit(buf, p, e, words, off, _L_TYPE)
        if p < 0:
            return OUT_OF_FORM, i, index, time, process, type_, f, vlo, vhi, kind, \
                extra, event, nops, inv_line, comp_line
        q = p
        while q < e and buf[q] != 0x22 and buf[q] != 0x5c:
            q += 1
        t = _which(buf, p, q, type_words, type_off)
        p = _lit(buf, q, e, words, off, _L_F)
        if p < 0 or t < 0:
            return OUT_OF_FORM, i, index, time, process, type_, f, vlo, vhi, kind, \
                extra, event, nops, inv_line, comp_line
        q = p
        while q < e and buf[q] != 0x22 and buf[q] != 0x5c:
            q += 1
        fc = _which(buf, p, q, f_words, f_off)
        p = _lit(buf, q, e, words, off, _L_VALUE)
        if p < 0 or index[i] != i or (i > 0 and time[i] < time[i - 1]):
            return OUT_OF_FORM, i, index, time, process, type_, f, vlo, vhi, kind, \
                extra, event, nops, inv_line, comp_line
        type_[i] = t
        f[i] = fc
        vlo[i] = p
        if body[i] >= 0 and p + 9 == body[i]:  # [["poll",{...}]]: validated
            q = e - 1
        else:
            q = _skip_value(buf, p, e)
        if q < 0 or q >= e:
            return OUT_OF_FORM, i, index, time, process, type_, f, vlo, vhi, kind, \
                extra, event, nops, inv_line, comp_line
        vhi[i] = q
        if buf[q] == 0x2c:
            extra[i] = True
            if buf[e - 1] != 0x7d:
                return OUT_OF_FORM, i, index, time, process, type_, f, vlo, vhi, kind, \
                    extra, event, nops, inv_line, comp_line
        elif not (buf[q] == 0x7d and q == e - 1):
            return OUT_OF_FORM, i, index, time, process, type_, f, vlo, vhi, kind, \
                extra, event, nops, inv_line, comp_line
        if process[i] == NEMESIS_PROCESS:
            event[i] = -1
            kind[i] = UNCHECKED
            continue
        if fc < 0:  # an unknown f: the ordinary path names it
            return OUT_OF_FORM, i, index, time, process, type_, f, vlo, vhi, kind, \
                extra, event, nops, inv_line, comp_line
        # the value's kind
        completion = t != INVOKE
        k = UNCHECKED
        if _lit(buf, p, e, words, off, _L_NULL) == q:
            k = NULL
        elif fc == SEND:
            if _send_value(buf, p, q, completion, words, off):
                k = VALID
        elif fc == POLL or fc == TXN:
            if _lit(buf, p, e, words, off, _L_POLL_INVOKE) == q:
                k = POLL_INVOKE
            elif completion and body[i] >= 0:
                k = VALID  # a canonical result (find_bodies)
        elif fc == ASSIGN or fc == SUBSCRIBE:
            if _key_list(buf, p, q):
                k = VALID
        kind[i] = k
        # pairing
        pr = process[i]
        if t == INVOKE:
            if pr in open_ops:
                return BAD_PAIRING, i, index, time, process, type_, f, vlo, vhi, kind, \
                    extra, event, nops, inv_line, comp_line
            open_ops[pr] = nops
            inv_line[nops] = i
            comp_line[nops] = -1
            event[i] = 2 * nops
            nops += 1
        else:
            if pr not in open_ops:
                return BAD_PAIRING, i, index, time, process, type_, f, vlo, vhi, kind, \
                    extra, event, nops, inv_line, comp_line
            op = open_ops[pr]
            del open_ops[pr]
            if f[inv_line[op]] != fc:
                return BAD_PAIRING, i, index, time, process, type_, f, vlo, vhi, kind, \
                    extra, event, nops, inv_line, comp_line
            comp_line[op] = i
            event[i] = 2 * op + 1
    return SCANNED, -1, index, time, process, type_, f, vlo, vhi, kind, extra, event, \
        nops, inv_line, comp_line


@njit(cache=True)
def join_spans(buf, lo, hi):
    """The JSON text [buf[lo[0]:hi[0]],buf[lo[1]:hi[1]],...]: one call of the
    decoder instead of one per value."""
    n = len(lo)
    size = 2 + max(n - 1, 0)
    for i in range(n):
        size += hi[i] - lo[i]
    out = np.empty(size, dtype=np.uint8)
    out[0] = 0x5b
    p = 1
    for i in range(n):
        if i:
            out[p] = 0x2c
            p += 1
        for q in range(lo[i], hi[i]):
            out[p] = buf[q]
            p += 1
    out[p] = 0x5d
    return out
