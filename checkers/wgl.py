"""Wing & Gong's linearizability search with Lowe's memoisation, compiled.

The same search as ``linearizable._search`` (which stays the reference and
serves the models this one cannot encode), over arrays: one partition's
operations as (kind, a, b) triples on integer states (a model's ``encode``
interns its values), its call and return events in time order as a doubly
linked list of positions, the stack of linearized operations, and a cache
of the (linearized set, state) pairs already explored, each keyed by two
64-bit Zobrist hashes of the set (one xor per step, instead of copying a
bitset) and the state. Two different sets with the same 128-bit key would
make the search skip a branch it should have tried (never accept a history
it should reject); with a few million entries the chance of that is about
2^-87.

It takes the same canonical linearizations as the Python search (see
``linearizable._search``): no indeterminate operation that changes
nothing, none followed at once by a write; and the same forced moves (a
determinate read the state allows goes first, alone).

The kernel runs a bounded number of steps per call and keeps everything it
needs in arrays, so the caller checks its clock between calls (numba has
none) and a search over its time budget ends in "unknown".

numba compiles the kernel once per machine (``cache=True``; setup.sh runs
``python -m checkers.warmup``).
"""
from __future__ import annotations

import time

import numpy as np
from numba import njit

# operation kinds of the register family (register, cas-register, kv)
WRITE, READ, CAS = 0, 1, 2
# search status
RUNNING, LINEARIZABLE, NOT_LINEARIZABLE, OUT_OF_STATES = 0, 1, 2, 3

# registers of a paused search (regs)
_ENTRY, _STATE, _DEPTH, _REMAINING, _DONE, _BEST_DONE, _BEST_LEN, _CANNOT, _NCACHE, \
    _BEST_SAME, _STEPS, _FRESH = range(12)

_STEPS_PER_CALL = 1 << 20
# in the cache key of a state whose last operation was indeterminate
_AFTER_INFO = np.uint64(0x9E3779B97F4A7C15)


@njit(cache=True)
def _step(kind, a, b, state):
    """(legal, next state) of an operation on a register-family state:
    a write of b; a read of a (or of b, if b >= 0: a read that may also
    see the empty state); a compare-and-set from a to b."""
    if kind == WRITE:
        return True, b
    if kind == READ:
        return state == a or (b >= 0 and state == b), state
    if state == a:
        return True, b
    return False, state


@njit(cache=True)
def _insert(t1, t2, ts, h1, h2, state):
    """Adds (h1, h2, state) to the open-addressing table t1/t2/ts (its
    size a power of two; a slot is empty where ts is -1) unless it is
    there; True if added. The keys sit in the slots: a probe costs one
    cache miss, not two."""
    mask = len(t1) - 1
    j = np.int64(h1 & np.uint64(mask))
    while True:
        if ts[j] < 0:
            t1[j] = h1
            t2[j] = h2
            ts[j] = state
            return True
        if t1[j] == h1 and t2[j] == h2 and ts[j] == state:
            return False
        j = (j + 1) & mask


@njit(cache=True)
def _rehash(t1, t2, ts, size):
    """The table in one of the given size."""
    n1 = np.empty(size, dtype=np.uint64)
    n2 = np.empty(size, dtype=np.uint64)
    ns = np.full(size, -1, dtype=np.int64)
    for j in range(len(t1)):
        if ts[j] >= 0:
            _insert(n1, n2, ns, t1[j], t2[j], ts[j])
    return n1, n2, ns


@njit(cache=True)
def search(ev_op, ev_ret, ret_pos, kind, a, b, cls, z1, z2, zc1, zc2, width, cnt, nxt, prv,
           regs, hs, stk_entry, stk_state, stk_op, stk_forced, best, t1, t2, ts, max_steps,
           max_states):
    """Runs the search from where regs/hs left it for at most max_steps
    steps. Events are positions 0..n-1 (ev_op: the operation, ev_ret: a
    return, else a call; ret_pos: the position of an operation's return,
    -1 for an indeterminate one) in the list nxt/prv whose head is n.
    The set linearized is hashed as: z1/z2[op] for each determinate op in
    it; for each class g of indeterminate ops (cls[op], see
    linearizable.info_classes), zc1/zc2[g * width + c] for the count c of
    them in it (cnt[g]; zc[g * width] is 0). The cache: the table
    t1/t2/ts (_insert). The longest prefix found is kept in best as the
    search goes (only the part the stack changed since is copied: the
    stack's regs[_BEST_SAME] first entries are still best's). Returns
    (status, t1, t2, ts): the table, grown if it had to be (the caller
    keeps it for the next call)."""
    head = len(ev_op)
    entry = regs[_ENTRY]
    state = regs[_STATE]
    depth = regs[_DEPTH]
    remaining = regs[_REMAINING]
    ndone = regs[_DONE]
    ncache = regs[_NCACHE]
    h1 = hs[0]
    h2 = hs[1]
    after_info = depth > 0 and ret_pos[stk_op[depth - 1]] < 0
    same = regs[_BEST_SAME]
    fresh = regs[_FRESH] != 0
    status = RUNNING
    steps = 0
    while True:
        if remaining == 0 or entry == -1:
            status = LINEARIZABLE
            break
        steps += 1
        if steps > max_steps:
            break
        exhausted = False
        if fresh:
            # a forced move (see linearizable._search): a determinate read
            # (or cas from a value to itself) the state allows goes first,
            # alone
            fresh = False
            p = nxt[head]
            found = -1
            while p != -1 and not ev_ret[p]:
                o = ev_op[p]
                if ret_pos[o] >= 0 and (kind[o] == READ or (kind[o] == CAS and a[o] == b[o])):
                    ok, new_state = _step(kind[o], a[o], b[o], state)
                    if ok:
                        found = p
                        break
                p = nxt[p]
            if found >= 0:
                o = ev_op[found]
                n1 = h1 ^ z1[o]
                n2 = h2 ^ z2[o]
                if ncache >= max_states:
                    status = OUT_OF_STATES
                    break
                if 2 * (ncache + 1) > len(t1):
                    t1, t2, ts = _rehash(t1, t2, ts, 2 * len(t1))
                if _insert(t1, t2, ts, n1, n2, state):
                    ncache += 1
                    stk_entry[depth] = found
                    stk_state[depth] = state
                    stk_op[depth] = o
                    stk_forced[depth] = True
                    depth += 1
                    h1 = n1
                    h2 = n2
                    after_info = False
                    nxt[prv[found]] = nxt[found]
                    if nxt[found] != -1:
                        prv[nxt[found]] = prv[found]
                    r = ret_pos[o]
                    nxt[prv[r]] = nxt[r]
                    if nxt[r] != -1:
                        prv[nxt[r]] = prv[r]
                    remaining -= 1
                    ndone += 1
                    entry = nxt[head]
                    fresh = True
                    continue
                exhausted = True  # (explored from here before: nothing)
        if not exhausted:
            op = ev_op[entry]
            if not ev_ret[entry]:
                indeterminate = ret_pos[op] < 0
                if after_info and kind[op] == WRITE:
                    ok = False  # (see the module's doc: canonical linearizations)
                else:
                    ok, new_state = _step(kind[op], a[op], b[op], state)
                    if indeterminate and new_state == state:
                        ok = False
                if ok:
                    g = cls[op]
                    if g < 0:
                        n1 = h1 ^ z1[op]
                        n2 = h2 ^ z2[op]
                    else:
                        c = g * width + cnt[g]
                        n1 = h1 ^ zc1[c] ^ zc1[c + 1]
                        n2 = h2 ^ zc2[c] ^ zc2[c + 1]
                    if indeterminate:  # the key says the next may not be blind
                        n1 ^= _AFTER_INFO
                    if ncache >= max_states:
                        status = OUT_OF_STATES
                        break
                    if 2 * (ncache + 1) > len(t1):
                        t1, t2, ts = _rehash(t1, t2, ts, 2 * len(t1))
                    if _insert(t1, t2, ts, n1, n2, new_state):
                        ncache += 1
                        stk_entry[depth] = entry
                        stk_state[depth] = state
                        stk_op[depth] = op
                        stk_forced[depth] = False
                        depth += 1
                        state = new_state
                        h1 = n1 ^ _AFTER_INFO if indeterminate else n1
                        h2 = n2
                        after_info = indeterminate
                        if g >= 0:
                            cnt[g] += 1
                        # lift the call (and the return) out of the list
                        nxt[prv[entry]] = nxt[entry]
                        if nxt[entry] != -1:
                            prv[nxt[entry]] = prv[entry]
                        r = ret_pos[op]
                        if r >= 0:
                            nxt[prv[r]] = nxt[r]
                            if nxt[r] != -1:
                                prv[nxt[r]] = prv[r]
                            remaining -= 1
                            ndone += 1
                        entry = nxt[head]
                        fresh = True
                        continue
                entry = nxt[entry]
                continue
            # op returned without being linearized: backtrack
            if ndone >= regs[_BEST_DONE]:
                regs[_BEST_DONE] = ndone
                same = min(same, depth)
                best[same:depth] = stk_op[same:depth]
                same = depth
                regs[_BEST_LEN] = depth
                regs[_CANNOT] = op
        # back to the last state with moves left (past forced moves)
        while True:
            if depth == 0:
                status = NOT_LINEARIZABLE
                break
            depth -= 1
            if depth < same:
                same = depth
            entry = stk_entry[depth]
            state = stk_state[depth]
            j = stk_op[depth]
            after_info = depth > 0 and ret_pos[stk_op[depth - 1]] < 0
            g = cls[j]
            if g < 0:
                h1 ^= z1[j]
                h2 ^= z2[j]
            else:
                c = g * width + cnt[g]
                h1 ^= zc1[c] ^ zc1[c - 1]
                h2 ^= zc2[c] ^ zc2[c - 1]
                cnt[g] -= 1
            r = ret_pos[j]
            if r >= 0:
                if nxt[r] != -1:
                    prv[nxt[r]] = r
                nxt[prv[r]] = r
                remaining += 1
                ndone -= 1
            if nxt[entry] != -1:
                prv[nxt[entry]] = entry
            nxt[prv[entry]] = entry
            if not stk_forced[depth]:
                break
        if status == NOT_LINEARIZABLE:
            break
        entry = nxt[entry]
    regs[_ENTRY] = entry
    regs[_STATE] = state
    regs[_DEPTH] = depth
    regs[_REMAINING] = remaining
    regs[_DONE] = ndone
    regs[_NCACHE] = ncache
    regs[_BEST_SAME] = same
    regs[_STEPS] += steps
    regs[_FRESH] = 1 if fresh else 0
    hs[0] = h1
    hs[1] = h2
    return status, t1, t2, ts


def _keys(n):
    """Two arrays of n random 64-bit keys (the same every time)."""
    rng = np.random.default_rng(20_130_613)
    return (rng.integers(0, 2**64, size=n, dtype=np.uint64, endpoint=False),
            rng.integers(0, 2**64, size=n, dtype=np.uint64, endpoint=False))


def run(ev_op, ev_ret, ret_pos, kind, a, b, init, cls, sizes, deadline, max_states):
    """The search over one encoded partition (cls, sizes: its classes of
    indeterminate operations, linearizable.info_classes), within the
    deadline (time.monotonic()) and max_states cache entries. Returns
    (verdict, info): True with {"order": op indices}; False with
    {"prefix": op indices, "cannot_place": op index}; "unknown" with
    {"reason", "states"} (as ``linearizable._search``)."""
    n_ev = len(ev_op)
    n_ops = len(kind)
    nxt = np.empty(n_ev + 1, dtype=np.int64)
    prv = np.empty(n_ev + 1, dtype=np.int64)
    nxt[:n_ev] = np.arange(1, n_ev + 1)
    if n_ev:
        nxt[n_ev - 1] = -1
    nxt[n_ev] = 0 if n_ev else -1
    prv[:n_ev] = np.arange(-1, n_ev - 1)
    if n_ev:
        prv[0] = n_ev
    prv[n_ev] = -1
    regs = np.zeros(12, dtype=np.int64)
    regs[_FRESH] = 1
    regs[_ENTRY] = nxt[n_ev]
    regs[_STATE] = init
    regs[_REMAINING] = int((ret_pos >= 0).sum())
    regs[_CANNOT] = -1
    hs = np.zeros(2, dtype=np.uint64)
    stk_entry = np.empty(n_ops, dtype=np.int64)
    stk_state = np.empty(n_ops, dtype=np.int64)
    stk_op = np.empty(n_ops, dtype=np.int64)
    stk_forced = np.empty(n_ops, dtype=np.bool_)
    best = np.empty(n_ops, dtype=np.int64)
    size = 1 << max(6, int(2 * n_ops).bit_length())
    table = (np.empty(size, dtype=np.uint64), np.empty(size, dtype=np.uint64),
             np.full(size, -1, dtype=np.int64))
    width = max(sizes, default=0) + 1
    z1, z2 = _keys(n_ops + len(sizes) * width)
    zc1, zc2 = z1[n_ops:].copy(), z2[n_ops:].copy()
    zc1[::width] = 0
    zc2[::width] = 0
    cls = np.asarray(cls, dtype=np.int64)
    cnt = np.zeros(len(sizes), dtype=np.int64)
    while True:
        status, *table = search(ev_op, ev_ret, ret_pos, kind, a, b, cls, z1, z2, zc1, zc2,
                                width, cnt, nxt, prv, regs, hs, stk_entry, stk_state, stk_op,
                                stk_forced, best, *table, _STEPS_PER_CALL, max_states)
        if status == LINEARIZABLE:
            return True, {"order": stk_op[:regs[_DEPTH]].tolist()}
        if status == NOT_LINEARIZABLE:
            return False, {"prefix": best[:regs[_BEST_LEN]].tolist(),
                           "cannot_place": int(regs[_CANNOT])}
        if status == OUT_OF_STATES or time.monotonic() > deadline:
            return "unknown", {"reason": "budget exhausted", "states": int(regs[_NCACHE])}


# ------------------------------------------------------- a cheap first pass

_NEVER = np.iinfo(np.int64).max


@njit(cache=True)
def stale_read(kind, a, b, call, ret, done, init):
    """A read the register family cannot explain, found without searching:
    every operation that could have set the value it returned (write, cas
    from another value; the initial state) was followed by one that
    definitely set another value (or, a cas, found it), which completed
    before the read began (a stale read: what
    Jepsen's etcd tests found). A cas that succeeded reads its old value
    too. Reads that may also see the empty state (b >= 0) are left alone.

    Returns (reader, last writer, overwriter) op indices, the reader with
    the earliest return (writer -1: the initial state; both -1: nobody
    ever set the value), or (-1, -1, -1). Sound: a history with such a
    read is not linearizable; complete only for that kind of violation
    (the search decides the rest)."""
    n = len(kind)
    nv = init + 1
    for j in range(n):
        nv = max(nv, a[j] + 1, b[j] + 1)
    # definite setters (done writes and cases) by call: for each suffix the
    # earliest-returning one, and the earliest-returning one of another
    # value than that one's
    setter = np.empty(n, dtype=np.int64)
    ns = 0
    for j in range(n):
        if done[j] and kind[j] != READ:
            setter[ns] = j
            ns += 1
    setter = setter[:ns]
    setter = setter[np.argsort(call[setter], kind="mergesort")]
    s_call = call[setter]
    r1 = np.full(ns + 1, _NEVER, dtype=np.int64)
    o1 = np.full(ns + 1, -1, dtype=np.int64)
    r2 = np.full(ns + 1, _NEVER, dtype=np.int64)
    o2 = np.full(ns + 1, -1, dtype=np.int64)
    for k in range(ns - 1, -1, -1):
        j = setter[k]
        r1[k] = r1[k + 1]
        o1[k] = o1[k + 1]
        r2[k] = r2[k + 1]
        o2[k] = o2[k + 1]
        if ret[j] < r1[k]:
            if o1[k] >= 0 and b[o1[k]] != b[j]:
                r2[k] = r1[k]
                o2[k] = o1[k]
            r1[k] = ret[j]
            o1[k] = j
        elif ret[j] < r2[k] and b[j] != b[o1[k]]:
            r2[k] = ret[j]
            o2[k] = j
    # candidates per value: the indeterminate ones' earliest call; the
    # determinate ones by call with the running latest return
    first_info = np.full(nv, _NEVER, dtype=np.int64)
    cand = np.empty(n, dtype=np.int64)
    nc = 0
    for j in range(n):
        if kind[j] == WRITE or (kind[j] == CAS and a[j] != b[j]):  # (cas(v, v) sets nothing)
            if done[j]:
                cand[nc] = j
                nc += 1
            elif call[j] < first_info[b[j]]:
                first_info[b[j]] = call[j]
    cand = cand[:nc]
    cand = cand[np.argsort(call[cand], kind="mergesort")]
    cand = cand[np.argsort(b[cand], kind="mergesort")]  # by value, then call
    c_val = b[cand]
    c_call = call[cand]
    c_max = np.empty(nc, dtype=np.int64)   # latest return so far in the value's run
    c_arg = np.empty(nc, dtype=np.int64)
    for k in range(nc):
        if k == 0 or c_val[k] != c_val[k - 1] or ret[cand[k]] > c_max[k - 1]:
            c_max[k] = ret[cand[k]]
            c_arg[k] = cand[k]
        else:
            c_max[k] = c_max[k - 1]
            c_arg[k] = c_arg[k - 1]
    lo = np.searchsorted(c_val, np.arange(nv))
    hi = np.searchsorted(c_val, np.arange(nv), side="right")
    best = (-1, -1, -1)
    best_ret = _NEVER
    for r in range(n):
        if not done[r] or (kind[r] == READ and b[r] >= 0) or kind[r] == WRITE:
            continue
        v = a[r]
        if first_info[v] <= ret[r] or ret[r] >= best_ret:
            continue
        # the candidates of v called before r returned
        # (one called when r returns may come first: calls before returns)
        k = lo[v] + np.searchsorted(c_call[lo[v]:hi[v]], ret[r], side="right")
        if k > lo[v]:
            latest, writer = c_max[k - 1], c_arg[k - 1]
        elif v == init:
            latest, writer = -_NEVER, -1
        else:  # nobody ever set it
            best, best_ret = (r, -1, -1), ret[r]
            continue
        # the earliest-returning definite setter of another value called
        # after the latest candidate returned
        p = np.searchsorted(s_call, latest, side="right")
        if o1[p] >= 0 and b[o1[p]] != v:
            end, over = r1[p], o1[p]
        else:
            end, over = r2[p], o2[p]
        if over >= 0 and end < call[r]:
            best, best_ret = (r, writer, over), ret[r]
    return best


# a violation found by stale_read still gets the search's witness if the
# search finds it within this many states (the same answer every time)
WITNESS_STATES = 20_000


def check(ev_op, ev_ret, ret_pos, kind, a, b, init, cls, sizes, call, ret, done, deadline,
          max_states):
    """run, after the cheap first pass (stale_read; call, ret, done: the
    operations' times as int64, None to skip it). A stale read makes the
    history not linearizable whatever the search's budget: its witness is
    the search's if the search finishes within WITNESS_STATES, else
    {"prefix": [], "cannot_place": the read, "stale": {"writer",
    "overwriter"}} (op indices, -1 for none)."""
    if call is not None:
        r, w, x = stale_read(kind, a, b, call, ret, done, init)
        if r >= 0:
            verdict, info = run(ev_op, ev_ret, ret_pos, kind, a, b, init, cls, sizes,
                                deadline, min(max_states, WITNESS_STATES))
            if verdict != "unknown":
                return verdict, info
            return False, {"prefix": [], "cannot_place": int(r),
                           "stale": {"writer": int(w), "overwriter": int(x)}}
    return run(ev_op, ev_ret, ret_pos, kind, a, b, init, cls, sizes, deadline, max_states)
