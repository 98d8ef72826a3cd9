"""A generic (register / cas-register / kv) history file's lines as
columns, by compiled passes (checkers.scan's tokens: any JSON layout):
process, type, f, value shape and integers, time, index. What they do not
validate themselves they mark for the decoder (``unchecked``);
``model_history._check_lines`` makes operations of the columns."""
from __future__ import annotations

import numpy as np
from numba import njit

from . import scan

TYPES = ("invoke", "ok", "fail", "info")  # (codes: positions)
FS = ("read", "write", "cas", "append")

# the words of a generic history's lines (checkers.scan's tokens read them)
WORDS = scan.words_table(("process", "type", "f", "value", "time", "index")
                    + TYPES + FS + ("nemesis",))
_W_TYPE, _W_F, _W_NEMESIS = 6, 6 + len(TYPES), 6 + len(TYPES) + len(FS)
# value shapes: null, an integer, [x, y], [x, [y, z]] (x, y, z integers
# or null), anything else
V_NULL, V_INT, V_PAIR, V_NESTED, V_OTHER = range(5)
NULL = np.iinfo(np.int64).min  # null, in the value columns


@njit(cache=True)
def _scalar(buf, p, e):
    """(value, end) of an integer or null at p (NULL for null), or (0, -1)."""
    q = scan._null_end(buf, p, e)
    if q >= 0:
        return NULL, q
    return scan._int(buf, p, e, True)


@njit(cache=True)
def _model_value(buf, p, e):
    """(shape, x, y, z, end) of the JSON value at p (end -1: none)."""
    if p < e and buf[p] == 0x5b:  # [
        x, q = _scalar(buf, scan._ws(buf, p + 1, e), e)
        if q >= 0:
            q = scan._ws(buf, q, e)
            if q < e and buf[q] == 0x2c:
                r = scan._ws(buf, q + 1, e)
                if r < e and buf[r] == 0x5b:
                    y, r = _scalar(buf, scan._ws(buf, r + 1, e), e)
                    if r >= 0:
                        r = scan._ws(buf, r, e)
                        if r < e and buf[r] == 0x2c:
                            z, r = _scalar(buf, scan._ws(buf, r + 1, e), e)
                            if r >= 0:
                                r = scan._ws(buf, r, e)
                                if r < e and buf[r] == 0x5d:
                                    r = scan._ws(buf, r + 1, e)
                                    if r < e and buf[r] == 0x5d:
                                        return V_NESTED, x, y, z, r + 1
                else:
                    y, r = _scalar(buf, r, e)
                    if r >= 0:
                        r = scan._ws(buf, r, e)
                        if r < e and buf[r] == 0x5d:
                            return V_PAIR, x, y, 0, r + 1
    else:
        x, q = _scalar(buf, p, e)
        if q >= 0:
            return (V_NULL if x == NULL else V_INT), x, 0, 0, q
    return V_OTHER, 0, 0, 0, scan._skip_value(buf, p, e)


@njit(cache=True)
def scan_events(buf, starts, ends, words, off):
    """Each line of a generic history as columns: (ok, nemesis, process,
    type code, f code (-1: another f), value shape, x, y, z, time, index,
    unchecked; time and index: the line's position where absent;
    unchecked: the line holds something these passes did not validate (a
    value of another shape, another field, a string not among the words),
    for the decoder to). ok False if a line is not an object with a
    process (an integer, or "nemesis") and a value, a client line without
    a type, or a time or index not an integer: the ordinary reading
    decides those."""
    n = len(starts)
    nem = np.zeros(n, dtype=np.bool_)
    proc = np.zeros(n, dtype=np.int64)
    typ = np.full(n, -1, dtype=np.int64)
    fc = np.full(n, -1, dtype=np.int64)
    shape = np.full(n, V_OTHER, dtype=np.int64)
    vx = np.zeros(n, dtype=np.int64)
    vy = np.zeros(n, dtype=np.int64)
    vz = np.zeros(n, dtype=np.int64)
    time = np.arange(n, dtype=np.int64)
    index = np.arange(n, dtype=np.int64)
    unchecked = np.zeros(n, dtype=np.bool_)
    for i in range(n):
        e = ends[i]
        p = scan._ws(buf, starts[i], e)
        if p >= e or buf[p] != 0x7b:
            return False, nem, proc, typ, fc, shape, vx, vy, vz, time, index, unchecked
        p = scan._ws(buf, p + 1, e)
        seen = 0
        while p < e and buf[p] != 0x7d:
            field, q = scan._plain_word(buf, p, e, words, off, 0, 6)
            if field < 0:
                q, flags = scan._string_end(buf, p, e)
                if q < 0:
                    return False, nem, proc, typ, fc, shape, vx, vy, vz, time, index, unchecked
                field = scan._word(buf, p, q, flags, words, off, 0, 6)
            p = scan._ws(buf, q, e)
            if p >= e or buf[p] != 0x3a:
                return False, nem, proc, typ, fc, shape, vx, vy, vz, time, index, unchecked
            p = scan._ws(buf, p + 1, e)
            if field == 0:  # process
                if p < e and buf[p] == 0x22:
                    q = scan._is_word(buf, p, e, words, off, _W_NEMESIS)
                    nem[i] = True
                else:
                    x, q = scan._int(buf, p, e, True)
                    proc[i] = x
                    nem[i] = False
            elif field == 1 or field == 2:  # type, f
                k0, k1 = (_W_TYPE, _W_F) if field == 1 else (_W_F, _W_NEMESIS)
                k, q = scan._plain_word(buf, p, e, words, off, k0, k1)
                if k < 0:
                    q, flags = scan._string_end(buf, p, e)
                    if q >= 0:
                        k = scan._word(buf, p, q, flags, words, off, k0, k1)
                    else:
                        q = scan._skip_value(buf, p, e)
                    if k < 0:
                        unchecked[i] = True
                if field == 1:
                    typ[i] = k - k0 if k >= 0 else -1
                else:
                    fc[i] = k - k0 if k >= 0 else -1
            elif field == 3:  # value
                sh, x, y, z, q = _model_value(buf, p, e)
                shape[i] = sh
                vx[i] = x
                vy[i] = y
                vz[i] = z
                if sh == V_OTHER:
                    unchecked[i] = True
            elif field == 4 or field == 5:  # time, index
                x, q = scan._int(buf, p, e, True)
                if field == 4:
                    time[i] = x
                else:
                    index[i] = x
            else:
                q = scan._skip_value(buf, p, e)
                unchecked[i] = True
            if q < 0:
                return False, nem, proc, typ, fc, shape, vx, vy, vz, time, index, unchecked
            if field >= 0:
                seen |= 1 << field
            p = scan._ws(buf, q, e)
            if p < e and buf[p] == 0x2c:
                p = scan._ws(buf, p + 1, e)
                if p >= e or buf[p] != 0x22:  # (another member must follow)
                    return False, nem, proc, typ, fc, shape, vx, vy, vz, time, index, \
                        unchecked
            elif p >= e or buf[p] != 0x7d:
                return False, nem, proc, typ, fc, shape, vx, vy, vz, time, index, unchecked
        if p >= e or scan._ws(buf, p + 1, e) != e or (seen & 9) != 9 or \
                (not nem[i] and (seen & 2) == 0):
            return False, nem, proc, typ, fc, shape, vx, vy, vz, time, index, unchecked
    return True, nem, proc, typ, fc, shape, vx, vy, vz, time, index, unchecked
