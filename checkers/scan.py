"""A history file's bytes, scanned by compiled passes into flat arrays.

Reading a million-operation history one line at a time through the JSON
decoder and the validating ``_Builder`` costs seconds of Python per million
lines, and decoding poll results into lists costs more than everything
else the checker does (tens of millions of ``[offset, value]`` pairs). So
the reader first tries these passes, which tokenize each line as the JSON
object it is, in any layout (any whitespace between tokens, the fields in
any order, extra fields, escapes in strings; a field given twice counts
once, the last, as in every JSON decoder), and produce, per line, its
standard fields as integers, the span of its value and of each extra
field, and how the operations pair up; per poll result, its pairs as
arrays.

Every byte of a line is either checked here or handed to the JSON decoder:
the passes check what they vouch for (the structure around the fields, a
value whose shape they know: a send's micro-ops, a poll result of integer
pairs, a key list, ``null``, ``[["poll"]]``) and leave the rest to the
reader (a value in another shape, an extra field, a nemesis event), which
decodes and validates it as usual. A file they cannot take at all (a line
out of form: a float time, a missing field, an error) is read the ordinary
way, which also names its errors.

Strings the passes vouch for without the decoder hold ASCII only, escapes
included (``\\u00e9`` is ASCII text); a raw non-ASCII byte or a surrogate
escape leaves the value to the decoder, which knows UTF-8.

Poll results kept as arrays (``LAZY`` values): ``[["poll", {...}]]`` whose
result object maps keys to lists of ``[offset, value]`` pairs of integers
of at most 18 digits, offsets >= 0.

numba compiles the passes (``cache=True`` keeps the machine code next to this
file, so only the first run on a machine pays for compiling): a byte at a
time in Python would be far slower than the decoder they replace. The token
functions (``_ws``, ``_string_end``, ``_int``, ...) serve ``model_scan`` too.
"""
from __future__ import annotations

import numpy as np
from numba import njit, types
from numba.typed import Dict

# fill_table status
OK, DUPLICATE_KEY, HASH_COLLISION = 0, 1, 2

TYPE_NAMES = ("invoke", "ok", "fail", "info")
F_NAMES = ("send", "poll", "txn", "assign", "subscribe", "crash", "debug-topic-partitions")
FIELD_NAMES = ("index", "time", "process", "type", "f", "value")
INVOKE = 0
SEND, POLL, TXN, ASSIGN, SUBSCRIBE = 0, 1, 2, 3, 4
NEMESIS_PROCESS = -(1 << 62)  # the process column of a nemesis line

# value kinds (scan_lines): checked here (and decoded by the reader if
# kept); decode and check in Python; JSON null; [["poll"]]; a poll result
# kept as arrays (body_lo/body_hi: its result object)
VALID, UNCHECKED, NULL, POLL_INVOKE, LAZY = 0, 1, 2, 3, 4

# scan_lines status
SCANNED, OUT_OF_FORM, BAD_PAIRING = 0, 1, 2

# _string_end flags
_ESCAPED, _NOT_ASCII = 1, 2

_F_INDEX, _F_TIME, _F_PROCESS, _F_TYPE, _F_F, _F_VALUE = range(6)
_ALL_FIELDS = (1 << 6) - 1


def words_table(names):
    """names as one byte array and their offsets, for _which."""
    raw = [n.encode() if isinstance(n, str) else n for n in names]
    off = np.zeros(len(raw) + 1, dtype=np.int64)
    off[1:] = np.cumsum([len(r) for r in raw])
    return np.frombuffer(b"".join(raw), dtype=np.uint8).copy(), off


# every word the passes recognise, one table: the field names, the types,
# the fs, then these
_WORD_LIST = FIELD_NAMES + TYPE_NAMES + F_NAMES + ("nemesis", "send", "poll")
WORDS = words_table(_WORD_LIST)
_W_FIELD = 0
_W_TYPE = len(FIELD_NAMES)
_W_F = _W_TYPE + len(TYPE_NAMES)
_W_NEMESIS = _W_F + len(F_NAMES)
_W_SEND = _W_NEMESIS + 1
_W_POLL = _W_NEMESIS + 2


# ------------------------------------------------------------------ tokens

@njit(cache=True)
def _ws_run(buf, p, e):
    while p < e:
        c = buf[p]
        if c != 0x20 and c != 0x09 and c != 0x0d and c != 0x0a:
            break
        p += 1
    return p


@njit(cache=True, inline='always')
def _ws(buf, p, e):
    """p past any JSON whitespace (none, mostly: one test, then a call)."""
    if p < e and buf[p] <= 0x20:  # every token starts above 0x20
        return _ws_run(buf, p, e)
    return p


@njit(cache=True, inline='always')
def _hex(c):
    if 0x30 <= c <= 0x39:
        return c - 0x30
    if 0x41 <= c <= 0x46:
        return c - 0x37
    if 0x61 <= c <= 0x66:
        return c - 0x57
    return -1


@njit(cache=True, inline='always')
def _string_end(buf, p, e):
    """(end past the closing quote, flags) of the JSON string at p, or
    (-1, 0) if there is none (raw control characters, bad escapes, no
    closing quote). flags: _ESCAPED if it holds escapes, _NOT_ASCII if it
    holds a byte >= 0x80 or a surrogate escape (for the decoder to judge)."""
    if p >= e or buf[p] != 0x22:
        return -1, 0
    p += 1
    flags = 0
    while p < e:
        c = buf[p]
        if c == 0x22:
            return p + 1, flags
        if c < 0x20:
            return -1, 0
        if c == 0x5c:
            flags |= _ESCAPED
            if p + 1 >= e:
                return -1, 0
            d = buf[p + 1]
            if d == 0x75:  # \uXXXX
                if p + 5 >= e:
                    return -1, 0
                x = 0
                for q in range(p + 2, p + 6):
                    h = _hex(buf[q])
                    if h < 0:
                        return -1, 0
                    x = x * 16 + h
                if 0xD800 <= x <= 0xDFFF:
                    flags |= _NOT_ASCII
                p += 6
                continue
            if (d == 0x22 or d == 0x5c or d == 0x2f or d == 0x62 or d == 0x66
                    or d == 0x6e or d == 0x72 or d == 0x74):
                p += 2
                continue
            return -1, 0
        if c >= 0x80:
            flags |= _NOT_ASCII
        p += 1
    return -1, 0


@njit(cache=True)
def _which(buf, lo, hi, words, off, k0, k1):
    """Index k (k0 <= k < k1) of the word equal to buf[lo:hi], or -1."""
    for k in range(k0, k1):
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
def _escape_char(d):
    if d == 0x62:
        return 0x08
    if d == 0x66:
        return 0x0c
    if d == 0x6e:
        return 0x0a
    if d == 0x72:
        return 0x0d
    if d == 0x74:
        return 0x09
    return d  # " \ /


@njit(cache=True)
def _word(buf, p, q, flags, words, off, k0, k1):
    """Index k (k0 <= k < k1) of the word (ASCII) that the JSON string
    buf[p:q] (quotes included, validated by _string_end) stands for, or -1."""
    if flags == 0:
        return _which(buf, p + 1, q - 1, words, off, k0, k1)
    if flags & _NOT_ASCII:
        return -1
    text = np.empty(q - p, dtype=np.uint8)
    n = 0
    r = p + 1
    while r < q - 1:
        c = buf[r]
        if c == 0x5c:
            d = buf[r + 1]
            if d == 0x75:
                x = 0
                for j in range(r + 2, r + 6):
                    x = x * 16 + _hex(buf[j])
                if x >= 0x80:
                    return -1
                c = x
                r += 6
            else:
                c = _escape_char(d)
                r += 2
        else:
            r += 1
        text[n] = c
        n += 1
    return _which(text, 0, n, words, off, k0, k1)


@njit(cache=True, inline='always')
def _plain_word(buf, p, e, words, off, k0, k1):
    """(k, end) if buf[p:] is the plain string of words[k] (k0 <= k < k1:
    compared by length and bytes, no escapes), else (-1, p): the quick
    test before _string_end and _word."""
    for k in range(k0, k1):
        a = off[k]
        n = off[k + 1] - a
        q = p + 1 + n
        if q < e and buf[q] == 0x22:
            same = True
            for j in range(n):
                if buf[p + 1 + j] != words[a + j]:
                    same = False
                    break
            if same:
                return k, q + 1
    return -1, p


@njit(cache=True)
def _is_word(buf, p, e, words, off, k):
    """End of the JSON string at p if it stands for words[k], else -1."""
    q, flags = _string_end(buf, p, e)
    if q < 0 or _word(buf, p, q, flags, words, off, k, k + 1) < 0:
        return -1
    return q


@njit(cache=True, inline='always')
def _number_end(buf, p, hi):
    """End of the digits of a JSON integer at p (0, or 1-9 then at most
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


@njit(cache=True, inline='always')
def _int(buf, p, e, negative_ok):
    """(value, end) of a JSON integer at p of at most 18 digits (not the
    start of a longer number or of a float), or (0, -1)."""
    if p < 0 or p >= e:
        return 0, -1
    neg = False
    if buf[p] == 0x2d:
        if not negative_ok:
            return 0, -1
        neg = True
        p += 1
    q = _number_end(buf, p, e)
    if q < 0:
        return 0, -1
    if q < e:
        c = buf[q]
        if (0x30 <= c <= 0x39) or c == 0x2e or c == 0x65 or c == 0x45:
            return 0, -1
    x = 0
    for r in range(p, q):
        x = x * 10 + (buf[r] - 0x30)
    return (-x if neg else x), q


@njit(cache=True, inline='always')
def _digits_end(buf, p, e, negative_ok):
    """End of a JSON integer at p as _int takes it (its value not
    computed), or -1."""
    if p < e and buf[p] == 0x2d and negative_ok:
        p += 1
    q = _number_end(buf, p, e)
    if q < 0:
        return -1
    if q < e:
        c = buf[q]
        if (0x30 <= c <= 0x39) or c == 0x2e or c == 0x65 or c == 0x45:
            return -1
    return q


@njit(cache=True, inline='always')
def _null_end(buf, p, e):
    if p + 4 <= e and buf[p] == 0x6e and buf[p + 1] == 0x75 and buf[p + 2] == 0x6c \
            and buf[p + 3] == 0x6c:
        return p + 4
    return -1


@njit(cache=True)
def _skip_value(buf, p, e):
    """End of the JSON value at p, found by bracket depth (whoever uses
    it validates it: a pass below, or the decoder), or -1."""
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
        elif depth == 0 and (c == 0x2c or c == 0x20 or c == 0x09 or c == 0x0d
                             or c == 0x0a):
            return p if p > start else -1
        else:
            p += 1
    if depth == 0 and p > start:
        return p  # a scalar at the end
    return -1


# ------------------------------------------------------------ value shapes

# what _value found
S_OTHER, S_NULL, S_POLL_INVOKE, S_POLL_RESULT, S_SEND, S_SEND_PAIRS, S_KEYS = range(7)


@njit(cache=True)
def _scan_body(buf, p, hi):
    """The poll result object at p: (its end, keys, pairs) if every key is
    an ASCII string mapped to a list of [offset >= 0, value] integer pairs,
    else (-1, -1, -1). A state machine, whitespace taken at the top of its
    loop: per pair, that runs faster than skipping whitespace before every
    token."""
    bad = (-1, -1, -1)
    if p >= hi or buf[p] != 0x7b:  # {
        return bad
    p += 1
    nseg = 0
    npairs = 0
    st = 0
    while p < hi:
        c = buf[p]
        if c <= 0x20:
            if c == 0x20 or c == 0x09 or c == 0x0d or c == 0x0a:
                p += 1
                continue
            return bad
        if st == 9 or st == 3:  # '[' of a pair (3: or ']' of an empty list)
            if c == 0x5b:
                # the usual [offset,value] (or json.dumps' [offset, value]) at once
                q = _digits_end(buf, p + 1, hi, False)
                if q > 0 and q < hi and buf[q] == 0x2c:
                    q += 1
                    if q < hi and buf[q] == 0x20:
                        q += 1
                    q = _digits_end(buf, q, hi, True)
                    if q > 0 and q < hi and buf[q] == 0x5d:
                        npairs += 1
                        p = q + 1
                        st = 8
                        continue
                st = 4
            elif c == 0x5d and st == 3:
                nseg += 1
                st = 10
            else:
                return bad
            p += 1
        elif st == 8:  # ',' then the next pair, or ']'
            if c == 0x2c:
                st = 9
            elif c == 0x5d:
                nseg += 1
                st = 10
            else:
                return bad
            p += 1
        elif st == 4:  # an offset
            p = _digits_end(buf, p, hi, False)
            if p < 0:
                return bad
            st = 5
        elif st == 5:  # ',' between offset and value
            if c != 0x2c:
                return bad
            p += 1
            st = 6
        elif st == 6:  # a value
            p = _digits_end(buf, p, hi, True)
            if p < 0:
                return bad
            st = 7
        elif st == 7:  # ']' closing the pair
            if c != 0x5d:
                return bad
            npairs += 1
            p += 1
            st = 8
        elif st == 10:  # ',' then the next key, or '}'
            if c == 0x2c:
                st = 11
            elif c == 0x7d:
                return p + 1, nseg, npairs
            else:
                return bad
            p += 1
        elif st == 0 or st == 11:  # a key (0: or '}' of an empty result)
            if c == 0x7d and st == 0:
                return p + 1, 0, 0
            q, flags = _string_end(buf, p, hi)
            if q < 0 or flags & _NOT_ASCII:
                return bad
            p = q
            st = 1
        elif st == 1:  # ':'
            if c != 0x3a:
                return bad
            p += 1
            st = 2
        else:  # 2: '[' of the key's list
            if c != 0x5b:
                return bad
            p += 1
            st = 3
    return bad


@njit(cache=True)
def _send_mops(buf, p, e, words, off):
    """(shape, end) of [["send", key, v], ...] at p (at least one micro-op;
    the first "send" already recognised by the caller, the others checked
    here) with keys ASCII and v an integer (S_SEND), or some v [offset|null,
    integer] (S_SEND_PAIRS); else (S_OTHER, -1)."""
    pairs = False
    p += 1  # '['
    while True:
        p = _ws(buf, p, e)
        if p >= e or buf[p] != 0x5b:
            return S_OTHER, -1
        p = _ws(buf, p + 1, e)
        # "send", spelled plainly or with escapes
        q, flags = _string_end(buf, p, e)
        if q < 0 or flags & _NOT_ASCII:
            return S_OTHER, -1
        if flags == 0:
            if q - p != 6 or buf[p + 1] != 0x73 or buf[p + 2] != 0x65 or buf[p + 3] != 0x6e \
                    or buf[p + 4] != 0x64:
                return S_OTHER, -1
        elif _word(buf, p, q, flags, words, off, _W_SEND, _W_SEND + 1) < 0:
            return S_OTHER, -1
        p = _ws(buf, q, e)
        if p >= e or buf[p] != 0x2c:
            return S_OTHER, -1
        p, flags = _string_end(buf, _ws(buf, p + 1, e), e)
        if p < 0 or flags & _NOT_ASCII:
            return S_OTHER, -1
        p = _ws(buf, p, e)
        if p >= e or buf[p] != 0x2c:
            return S_OTHER, -1
        p = _ws(buf, p + 1, e)
        if p < e and buf[p] == 0x5b:  # [offset|null, value]
            pairs = True
            q = _ws(buf, p + 1, e)
            r = _null_end(buf, q, e)
            if r < 0:
                r = _digits_end(buf, q, e, False)
            if r < 0:
                return S_OTHER, -1
            r = _ws(buf, r, e)
            if r >= e or buf[r] != 0x2c:
                return S_OTHER, -1
            r = _digits_end(buf, _ws(buf, r + 1, e), e, True)
            if r < 0:
                return S_OTHER, -1
            r = _ws(buf, r, e)
            if r >= e or buf[r] != 0x5d:
                return S_OTHER, -1
            p = r + 1
        else:
            p = _digits_end(buf, p, e, True)
            if p < 0:
                return S_OTHER, -1
        p = _ws(buf, p, e)
        if p >= e or buf[p] != 0x5d:
            return S_OTHER, -1
        p = _ws(buf, p + 1, e)
        if p < e and buf[p] == 0x2c:
            p += 1
            continue
        if p < e and buf[p] == 0x5d:
            return (S_SEND_PAIRS if pairs else S_SEND), p + 1
        return S_OTHER, -1


@njit(cache=True)
def _key_list(buf, p, e):
    """End of ["key", ...] at p (at least one key, ASCII), or -1."""
    p = _ws(buf, p + 1, e)
    while True:
        p, flags = _string_end(buf, p, e)
        if p < 0 or flags & _NOT_ASCII:
            return -1
        p = _ws(buf, p, e)
        if p < e and buf[p] == 0x2c:
            p = _ws(buf, p + 1, e)
            continue
        if p < e and buf[p] == 0x5d:
            return p + 1
        return -1


@njit(cache=True)
def _close2(buf, p, e):
    """End of ']' ']' at p (whitespace allowed), or -1."""
    p = _ws(buf, p, e)
    if p >= e or buf[p] != 0x5d:
        return -1
    p = _ws(buf, p + 1, e)
    if p >= e or buf[p] != 0x5d:
        return -1
    return p + 1


@njit(cache=True)
def _value(buf, p, e, words, off):
    """(shape, end, result lo, result hi, keys, pairs) of the JSON value at
    p: null, [["poll"]], [["poll", {result}]] (_scan_body's: its span and
    counts), [["send", ...], ...] (_send_mops'), ["key", ...], or S_OTHER
    for anything else (its end found by _skip_value, for the decoder to
    judge; -1: no value there at all)."""
    if p < e:
        c = buf[p]
        if c == 0x6e:  # n
            q = _null_end(buf, p, e)
            if q >= 0:
                return S_NULL, q, -1, -1, 0, 0
        elif c == 0x5b:  # [
            q = _ws(buf, p + 1, e)
            if q < e and buf[q] == 0x5b:
                r = _ws(buf, q + 1, e)
                rq, flags = _string_end(buf, r, e)
                if rq > 0:
                    w = _word(buf, r, rq, flags, words, off, _W_SEND, _W_POLL + 1)
                    if w == _W_POLL:
                        t = _ws(buf, rq, e)
                        if t < e and buf[t] == 0x5d:
                            end = _close2(buf, t, e)
                            if end > 0:
                                return S_POLL_INVOKE, end, -1, -1, 0, 0
                        elif t < e and buf[t] == 0x2c:
                            lo = _ws(buf, t + 1, e)
                            hi, nseg, npairs = _scan_body(buf, lo, e)
                            if hi > 0:
                                end = _close2(buf, hi, e)
                                if end > 0:
                                    return S_POLL_RESULT, end, lo, hi, nseg, npairs
                    elif w == _W_SEND:
                        shape, end = _send_mops(buf, p, e, words, off)
                        if end > 0:
                            return shape, end, -1, -1, 0, 0
            elif q < e and buf[q] == 0x22:
                end = _key_list(buf, p, e)
                if end > 0:
                    return S_KEYS, end, -1, -1, 0, 0
    return S_OTHER, _skip_value(buf, p, e), -1, -1, 0, 0


@njit(cache=True)
def _value_kind(shape, t, fc):
    """The kind (VALID, LAZY, ...) of a client line's value of that shape,
    for its type t and f fc."""
    completion = t != INVOKE
    if shape == S_NULL:
        return NULL
    if fc == SEND:
        if shape == S_SEND or (shape == S_SEND_PAIRS and completion):
            return VALID
    elif fc == POLL or fc == TXN:
        if shape == S_POLL_INVOKE:
            return POLL_INVOKE
        if shape == S_POLL_RESULT and completion:
            return LAZY
    elif fc == ASSIGN or fc == SUBSCRIBE:
        if shape == S_KEYS:
            return VALID
    return UNCHECKED


# ------------------------------------------------------------ whole lines

@njit(cache=True)
def _scan_line(buf, s, e, words, off, x_lo, x_hi, nx):
    """Tokenizes the line buf[s:e] as a JSON object (fields in any order,
    whitespace anywhere, a repeated field: its last). Returns (ok, index,
    time, process, type, f, value lo, value hi, value shape, result lo,
    result hi, keys, pairs, extra fields): the standard fields (process
    NEMESIS_PROCESS for "nemesis"; f -1 for an f not in F_NAMES), the
    value's span and what _value found in it, and the number of extra
    fields, whose spans (key and value) go into x_lo/x_hi from nx on (-1:
    no room left there). ok is False for a line out of form: not an
    object, a standard field missing or not what the passes take (then
    the ordinary reader decides)."""
    bad = (False, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0)
    p = _ws(buf, s, e)
    if p >= e or buf[p] != 0x7b:
        return bad
    p = _ws(buf, p + 1, e)
    seen = 0
    index = time = process = 0
    type_ = f = -1
    vlo = vhi = 0
    shape = S_OTHER
    blo = bhi = -1
    nseg = npairs = 0
    nextra = 0
    while True:
        k0 = p
        field, q = _plain_word(buf, p, e, words, off, _W_FIELD, _W_FIELD + 6)
        if field < 0:
            q, flags = _string_end(buf, p, e)
            if q < 0:
                return bad
            field = _word(buf, p, q, flags, words, off, _W_FIELD, _W_FIELD + 6)
        p = _ws(buf, q, e)
        if p >= e or buf[p] != 0x3a:
            return bad
        p = _ws(buf, p + 1, e)
        if field == _F_VALUE:
            shape, q, blo, bhi, nseg, npairs = _value(buf, p, e, words, off)
            if q < 0:
                return bad
            vlo, vhi = p, q
            p = q
        elif field == _F_INDEX or field == _F_TIME:
            x, p = _int(buf, p, e, False)
            if p < 0:
                return bad
            if field == _F_INDEX:
                index = x
            else:
                time = x
        elif field == _F_PROCESS:
            if p < e and buf[p] == 0x22:
                p = _is_word(buf, p, e, words, off, _W_NEMESIS)
                process = NEMESIS_PROCESS
            else:
                process, p = _int(buf, p, e, True)
            if p < 0:
                return bad
        elif field == _F_TYPE or field == _F_F:
            k0, k1 = (_W_TYPE, _W_F) if field == _F_TYPE else (_W_F, _W_NEMESIS)
            k, q = _plain_word(buf, p, e, words, off, k0, k1)
            if k < 0:
                q, flags = _string_end(buf, p, e)
                if q < 0:
                    return bad
                k = _word(buf, p, q, flags, words, off, k0, k1)
            if field == _F_TYPE:
                if k < 0:
                    return bad
                type_ = k - _W_TYPE
            else:
                f = k - _W_F if k >= 0 else -1
            p = q
        else:
            q = _skip_value(buf, p, e)
            if q < 0:
                return bad
            if nx + nextra >= len(x_lo):
                return (True, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, -1)
            x_lo[nx + nextra] = k0
            x_hi[nx + nextra] = q
            nextra += 1
            p = q
        if field >= 0:
            seen |= 1 << field
        p = _ws(buf, p, e)
        if p < e and buf[p] == 0x2c:
            p = _ws(buf, p + 1, e)
            continue
        if p < e and buf[p] == 0x7d and _ws(buf, p + 1, e) == e:
            break
        return bad
    if seen != _ALL_FIELDS:
        return bad
    return (True, index, time, process, type_, f, vlo, vhi, shape, blo, bhi, nseg, npairs,
            nextra)


@njit(cache=True)
def _grow(a, n):
    b = np.empty(max(2 * len(a), n), dtype=a.dtype)
    b[:len(a)] = a
    return b


@njit(cache=True)
def line_bounds(buf):
    """(starts, ends) of the lines of buf (split at newlines; the last
    line is whatever follows the last newline), in one pass and without a
    mask of the whole buffer."""
    n = 1
    for c in buf:
        if c == 0x0a:
            n += 1
    starts = np.empty(n, dtype=np.int64)
    ends = np.empty(n, dtype=np.int64)
    starts[0] = 0
    j = 0
    for p in range(len(buf)):
        if buf[p] == 0x0a:
            ends[j] = p
            j += 1
            starts[j] = p + 1
    ends[n - 1] = len(buf)
    return starts, ends


@njit(cache=True, nogil=True)
def scan_part(buf, starts, ends, lo, hi, words, off, index, time, process, type_, f, vlo,
              vhi, kind, body_lo, body_hi, nseg, npairs):
    """The lines lo..hi-1 tokenized (_scan_line) into the given arrays:
    standard fields, value span and kind (LAZY: body_lo/body_hi, nseg,
    npairs). No GIL: the reader runs two parts at once, one on each core.
    Returns (first line out of form, or hi; extra field spans lo, hi and
    their lines)."""
    x_lo = np.empty(16, dtype=np.int64)
    x_hi = np.empty(16, dtype=np.int64)
    x_line = np.empty(16, dtype=np.int64)
    nx = 0
    for i in range(lo, hi):
        while True:
            (ok, ix, tm, pr, t, fc, p, q, shape, blo, bhi, ns, npr,
             nextra) = _scan_line(buf, starts[i], ends[i], words, off, x_lo, x_hi, nx)
            if nextra >= 0:
                break
            x_lo = _grow(x_lo, 0)
            x_hi = _grow(x_hi, 0)
        if not ok:
            return i, x_lo[:nx], x_hi[:nx], x_line[:nx]
        index[i] = ix
        time[i] = tm
        process[i] = pr
        vlo[i] = p
        vhi[i] = q
        type_[i] = t
        f[i] = fc
        if nextra:
            if len(x_line) < len(x_lo):
                x_line = _grow(x_line, len(x_lo))
            x_line[nx:nx + nextra] = i
            nx += nextra
        if pr == NEMESIS_PROCESS or fc < 0:
            kind[i] = UNCHECKED
            continue
        k = _value_kind(shape, t, fc)
        kind[i] = k
        if k == LAZY:
            body_lo[i] = blo
            body_hi[i] = bhi
            nseg[i] = ns
            npairs[i] = npr
    return hi, x_lo[:nx], x_hi[:nx], x_line[:nx]


@njit(cache=True)
def pair_lines(index, time, process, type_, f, bad):
    """The checks across lines and the pairing of invokes with completions
    (each process's next completion, with the same f) of lines scan_part
    tokenized, the first ``bad`` of them (the rest are out of form).
    Returns (status, bad line, op of each line (2*op for an invoke, 2*op +
    1 for a completion, -1 for a nemesis line), number of ops, the ops'
    invoke and completion lines (-1: open at the end))."""
    n = len(index)
    event = np.empty(n, dtype=np.int64)
    inv_line = np.empty(n, dtype=np.int64)
    comp_line = np.empty(n, dtype=np.int64)
    open_ops = Dict.empty(key_type=types.int64, value_type=types.int64)
    nops = 0
    for i in range(n):
        if i >= bad or index[i] != i or (i > 0 and time[i] < time[i - 1]):
            return OUT_OF_FORM, i, event, nops, inv_line, comp_line
        pr = process[i]
        if pr == NEMESIS_PROCESS:
            event[i] = -1
            continue
        fc = f[i]
        if fc < 0:  # an unknown f: the ordinary path names it
            return OUT_OF_FORM, i, event, nops, inv_line, comp_line
        if type_[i] == INVOKE:
            if pr in open_ops:
                return BAD_PAIRING, i, event, nops, inv_line, comp_line
            open_ops[pr] = nops
            inv_line[nops] = i
            comp_line[nops] = -1
            event[i] = 2 * nops
            nops += 1
        else:
            if pr not in open_ops:
                return BAD_PAIRING, i, event, nops, inv_line, comp_line
            op = open_ops[pr]
            del open_ops[pr]
            if f[inv_line[op]] != fc:
                return BAD_PAIRING, i, event, nops, inv_line, comp_line
            comp_line[op] = i
            event[i] = 2 * op + 1
    return SCANNED, -1, event, nops, inv_line, comp_line


def scan_lines(buf, starts, ends, words, off, parts=1):
    """Every line's standard fields, value span and kind, extra fields, and
    the pairing of invokes with completions: scan_part over the lines
    (parts: that many at once, in threads) then pair_lines.

    Returns (status, bad line, index, time, process, type, f, value lo,
    value hi, value kind, result lo, result hi (LAZY values: the poll
    result object), keys and pairs in it, extra field spans (lo, hi, line),
    op of the line (2*op for an invoke, 2*op + 1 for a completion, -1 for
    a nemesis line), number of ops, the ops' invoke and completion lines
    (-1: open at the end))."""
    import threading
    n = len(starts)
    cols = (np.empty(n, dtype=np.int64), np.empty(n, dtype=np.int64),
            np.empty(n, dtype=np.int64), np.empty(n, dtype=np.int8),
            np.empty(n, dtype=np.int8), np.empty(n, dtype=np.int64),
            np.empty(n, dtype=np.int64), np.empty(n, dtype=np.int8),
            np.full(n, -1, dtype=np.int64), np.full(n, -1, dtype=np.int64),
            np.zeros(n, dtype=np.int64), np.zeros(n, dtype=np.int64))
    bounds = np.linspace(0, n, max(1, parts) + 1).astype(np.int64).tolist()
    results = [None] * (len(bounds) - 1)

    def run(j):
        results[j] = scan_part(buf, starts, ends, bounds[j], bounds[j + 1], words, off, *cols)
    threads = [threading.Thread(target=run, args=(j,)) for j in range(1, len(results))]
    for t in threads:
        t.start()
    run(0)
    for t in threads:
        t.join()
    bad = n
    for j, (first_bad, _, _, _) in enumerate(results):
        if first_bad < bounds[j + 1]:
            bad = first_bad
            break
    x_lo, x_hi, x_line = (np.concatenate([r[k] for r in results]) for k in (1, 2, 3))
    index, time, process, type_, f, vlo, vhi, kind, body_lo, body_hi, nseg, npairs = cols
    status, bad_line, event, nops, inv_line, comp_line = pair_lines(index, time, process,
                                                                    type_, f, bad)
    return (status, bad_line, index, time, process, type_, f, vlo, vhi, kind, body_lo,
            body_hi, nseg, npairs, x_lo, x_hi, x_line, event, nops, inv_line, comp_line)


@njit(cache=True)
def find_bodies(buf, starts, ends, words, off):
    """For each line [starts[i], ends[i]) that is a poll (or txn)
    completion whose value is a poll result _scan_body takes: the span of
    its value and of its result object, and the keys and pairs in it (-1
    spans for other lines). For the ordinary reader, which then decodes
    the rest of the line."""
    n = len(starts)
    vlo = np.full(n, -1, dtype=np.int64)
    vhi = np.full(n, -1, dtype=np.int64)
    body_lo = np.full(n, -1, dtype=np.int64)
    body_hi = np.full(n, -1, dtype=np.int64)
    nseg = np.zeros(n, dtype=np.int64)
    npairs = np.zeros(n, dtype=np.int64)
    x_lo = np.empty(64, dtype=np.int64)
    x_hi = np.empty(64, dtype=np.int64)
    for i in range(n):
        (ok, _, _, pr, t, fc, p, q, shape, blo, bhi, ns, npr,
         nextra) = _scan_line(buf, starts[i], ends[i], words, off, x_lo, x_hi, 0)
        if ok and nextra >= 0 and pr != NEMESIS_PROCESS and fc >= 0 \
                and _value_kind(shape, t, fc) == LAZY:
            vlo[i] = p
            vhi[i] = q
            body_lo[i] = blo
            body_hi[i] = bhi
            nseg[i] = ns
            npairs[i] = npr
    return vlo, vhi, body_lo, body_hi, nseg, npairs


# ------------------------------------------------------------ poll tables

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


@njit(cache=True, nogil=True)
def fill_table(buf, body_lo, body_hi, nseg_total, npairs_total):
    """Parses the result objects buf[body_lo[b]:body_hi[b]] (validated by
    _scan_body), in the given order, into one segment per (result, key):
    its key id (keys numbered by first appearance of their spelling, the
    bytes between the quotes), pair count, and the pairs' offsets and
    values. Returns (status, seg_body, seg_key, seg_count, off, val,
    key_lo, key_hi, key_escaped, n_keys); status DUPLICATE_KEY when a
    result holds a spelling twice (JSON keeps the last: the caller decodes
    instead). Spellings with escapes may stand for the same key: the
    caller decodes them.

    The results are valid, so one loop over their bytes by bracket depth
    does: a string at depth 1 is a key, '[' at depth 2 opens a pair, the
    numbers in it are its offset then its value, ']' at depth 2 closes a
    key's list; whitespace, ':' and ',' need no attention."""
    seg_body = np.empty(nseg_total, dtype=np.int64)
    seg_key = np.empty(nseg_total, dtype=np.int32)
    seg_count = np.empty(nseg_total, dtype=np.int64)
    off = np.empty(npairs_total, dtype=np.int64)
    val = np.empty(npairs_total, dtype=np.int64)
    key_lo = np.empty(nseg_total, dtype=np.int64)
    key_hi = np.empty(nseg_total, dtype=np.int64)
    key_esc = np.zeros(nseg_total, dtype=np.bool_)
    last_body = np.full(nseg_total, -1, dtype=np.int64)
    ids = Dict.empty(key_type=types.int64, value_type=types.int64)
    nkeys = 0
    s = 0
    r = 0
    for b in range(len(body_lo)):
        p = body_lo[b] + 1
        hi = body_hi[b] - 1  # the closing '}'
        depth = 1
        first = True  # the next number of a pair is its offset
        r0 = r
        while p < hi:
            c = buf[p]
            if c == 0x5b:  # [
                depth += 1
                p += 1
                if depth == 3 and 0x30 <= buf[p] <= 0x39:
                    # a pair as [offset,value] (or json.dumps' [offset, value]):
                    # at once; else one token at a time below
                    o, q = _parse_number(buf, p)
                    if buf[q] == 0x2c:
                        q += 1
                        if buf[q] == 0x20:
                            q += 1
                        if buf[q] == 0x2d or 0x30 <= buf[q] <= 0x39:
                            v, q = _parse_number(buf, q)
                            if buf[q] == 0x5d:
                                off[r] = o
                                val[r] = v
                                r += 1
                                depth = 2
                                p = q + 1
            elif c == 0x5d:  # ]
                depth -= 1
                if depth == 2:
                    r += 1
                    first = True
                elif depth == 1:  # the end of a key's list
                    seg_body[s] = b
                    seg_count[s] = r - r0
                    s += 1
                p += 1
            elif c == 0x22:  # a key
                p += 1
                k0 = p
                esc = False
                h = np.uint64(14695981039346656037)
                while buf[p] != 0x22:
                    if buf[p] == 0x5c:  # an escape: its next byte is never the end
                        esc = True
                        h = (h ^ np.uint64(buf[p])) * np.uint64(1099511628211)
                        p += 1
                    h = (h ^ np.uint64(buf[p])) * np.uint64(1099511628211)
                    p += 1
                k1 = p
                p += 1
                hk = np.int64(h)
                if hk not in ids:
                    kid = nkeys
                    ids[hk] = kid
                    key_lo[kid] = k0
                    key_hi[kid] = k1
                    key_esc[kid] = esc
                    nkeys += 1
                else:
                    kid = ids[hk]
                    a0 = key_lo[kid]
                    if key_hi[kid] - a0 != k1 - k0:
                        return HASH_COLLISION, seg_body, seg_key, seg_count, off, val, \
                            key_lo, key_hi, key_esc, nkeys
                    for q in range(k1 - k0):
                        if buf[a0 + q] != buf[k0 + q]:
                            return HASH_COLLISION, seg_body, seg_key, seg_count, off, val, \
                                key_lo, key_hi, key_esc, nkeys
                if last_body[kid] == b:
                    return DUPLICATE_KEY, seg_body, seg_key, seg_count, off, val, \
                        key_lo, key_hi, key_esc, nkeys
                last_body[kid] = b
                seg_key[s] = kid
                r0 = r
            elif c == 0x2d or (0x30 <= c <= 0x39):  # a number of a pair
                x, p = _parse_number(buf, p)
                if first:
                    off[r] = x
                    first = False
                else:
                    val[r] = x
            else:
                p += 1
    return OK, seg_body, seg_key, seg_count, off, val, key_lo, key_hi, key_esc, nkeys


@njit(cache=True, nogil=True)
def fill_sends(buf, lo, hi):
    """The send micro-ops of the values buf[lo[b]:hi[b]] (validated by
    _send_mops: [["send", key, v], ...]), in the given order, as rows: the
    value they are in, their key's spelling id (spellings numbered by first
    appearance), offset (-1: none, or null) and value. Returns (row value,
    row spelling, row offset, row value, spelling lo, spelling hi,
    spelling escaped, n spellings; -1: two spellings with one hash). One
    loop by bracket depth, as fill_table: in a micro-op (depth 2) the
    second string is the key and a number the value; in [offset, value]
    (depth 3) the first is the offset."""
    n = 0
    for b in range(len(lo)):  # rows: one per micro-op, a '[' at depth 2
        depth = 0
        p = lo[b]
        while p < hi[b]:
            c = buf[p]
            if c == 0x22:
                p += 1
                while buf[p] != 0x22:
                    if buf[p] == 0x5c:
                        p += 1
                    p += 1
            elif c == 0x5b:
                depth += 1
                if depth == 2:
                    n += 1
            elif c == 0x5d:
                depth -= 1
            p += 1
    r_val_of = np.empty(n, dtype=np.int64)
    r_key = np.empty(n, dtype=np.int64)
    r_off = np.full(n, -1, dtype=np.int64)
    r_v = np.empty(n, dtype=np.int64)
    k_lo = np.empty(n, dtype=np.int64)
    k_hi = np.empty(n, dtype=np.int64)
    k_esc = np.zeros(n, dtype=np.bool_)
    ids = Dict.empty(key_type=types.int64, value_type=types.int64)
    nk = 0
    r = -1
    for b in range(len(lo)):
        depth = 0
        p = lo[b]
        strings = 0
        items = 0
        while p < hi[b]:
            c = buf[p]
            if c == 0x5b:
                depth += 1
                if depth == 2:
                    r += 1
                    r_val_of[r] = b
                    strings = 0
                elif depth == 3:
                    items = 0
                p += 1
            elif c == 0x5d:
                depth -= 1
                p += 1
            elif c == 0x22:
                p += 1
                k0 = p
                esc = False
                h = np.uint64(14695981039346656037)
                while buf[p] != 0x22:
                    if buf[p] == 0x5c:
                        esc = True
                        h = (h ^ np.uint64(buf[p])) * np.uint64(1099511628211)
                        p += 1
                    h = (h ^ np.uint64(buf[p])) * np.uint64(1099511628211)
                    p += 1
                strings += 1
                if strings == 2:  # the key ("send" came first)
                    hk = np.int64(h)
                    if hk not in ids:
                        kid = nk
                        ids[hk] = kid
                        k_lo[kid] = k0
                        k_hi[kid] = p
                        k_esc[kid] = esc
                        nk += 1
                    else:
                        kid = ids[hk]
                        a0 = k_lo[kid]
                        if k_hi[kid] - a0 != p - k0:
                            return r_val_of, r_key, r_off, r_v, k_lo, k_hi, k_esc, -1
                        for q in range(p - k0):
                            if buf[a0 + q] != buf[k0 + q]:
                                return r_val_of, r_key, r_off, r_v, k_lo, k_hi, k_esc, -1
                    r_key[r] = kid
                p += 1
            elif c == 0x6e:  # null: an unknown offset
                items += 1
                p += 4
            elif c == 0x2d or (0x30 <= c <= 0x39):
                x, p = _parse_number(buf, p)
                if depth == 3:
                    items += 1
                    if items == 1:
                        r_off[r] = x
                    else:
                        r_v[r] = x
                else:
                    r_v[r] = x
            else:
                p += 1
    return r_val_of, r_key, r_off, r_v, k_lo, k_hi, k_esc, nk


# ------------------------------------------------------------ for the decoder

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


@njit(cache=True)
def join_members(buf, lo, hi, group):
    """The JSON text [{m,m,...},{m,...},...] of the object members
    buf[lo[j]:hi[j]], one object per run of equal group[j]: the extra
    fields of every line that has some, for one call of the decoder."""
    n = len(lo)
    size = 2
    for j in range(n):
        size += hi[j] - lo[j] + 3
    out = np.empty(size, dtype=np.uint8)
    out[0] = 0x5b
    p = 1
    for j in range(n):
        new = j == 0 or group[j] != group[j - 1]
        if new:
            if j:
                out[p] = 0x7d
                out[p + 1] = 0x2c
                p += 2
            out[p] = 0x7b
            p += 1
        else:
            out[p] = 0x2c
            p += 1
        for q in range(lo[j], hi[j]):
            out[p] = buf[q]
            p += 1
    if n:
        out[p] = 0x7d
        p += 1
    out[p] = 0x5d
    return out[:p + 1]
