"""Sequential specifications for the linearizability search, Porcupine's
way: a model is ``init`` (a hashable state), ``step(state, input, output)
-> (legal, state')``, optionally ``partition(ops) -> [ops, ...]``
(P-compositionality: each part is checked on its own) and ``encode(ops)``
(the part as integer arrays for the compiled search, ``checkers.wgl``;
None when its states cannot be numbered in advance: the Python search
then takes it).

- ``register``: ``("write", v)``, ``("read", None)`` with output the value
  read.
- ``cas-register``: also ``("cas", (old, new))``, legal when the value is
  old.
- ``kv``: one register per key (inputs ``(f, key, value)``): read, write,
  cas, and ``append``, which concatenates strings (Porcupine's kv model;
  an absent key is the empty string to an append, and a read of ``""``
  also matches an absent key, as Porcupine's gets do).
- ``independent`` (``Independent(model)``): Jepsen's independent checker,
  a register or cas-register per key (inputs ``(f, key, value)``).
- ``log``: one Kafka partition (see ``Log``).
"""
from __future__ import annotations

from collections import namedtuple

import numpy as np

Operation = namedtuple("Operation", "call ret input output ref")
Operation.__new__.__defaults__ = (None,)


def _numbered(ops, init):
    """(init, kind, a, b): int64 arrays of register-family operations (f,
    v, output, also_init) as (WRITE, -1, v), (READ, output, -1 or 0 if it
    may also see the initial state), (CAS, old, new) over state numbers
    (init is 0), or None when a value cannot be numbered (unhashable)."""
    from .wgl import CAS, READ, WRITE
    ids = {init: 0}
    number = ids.setdefault
    n = len(ops)
    kind = np.empty(n, dtype=np.int64)
    a = np.full(n, -1, dtype=np.int64)
    b = np.full(n, -1, dtype=np.int64)
    try:
        for j, (f, v, out, also_init) in enumerate(ops):
            if f == "write":
                kind[j] = WRITE
                b[j] = number(v, len(ids))
            elif f == "read":
                kind[j] = READ
                a[j] = number(out, len(ids))
                if also_init:
                    b[j] = 0
            elif f == "cas":
                kind[j] = CAS
                a[j] = number(v[0], len(ids))
                b[j] = number(v[1], len(ids))
            else:
                return None
    except TypeError:  # unhashable
        return None
    return 0, kind, a, b


class Register:
    name = "register"
    init = None
    fs = ("read", "write")

    def step(self, state, inp, out):
        f, v = inp
        if f == "write":
            return True, v
        return out == state, state          # read: output is the value read

    def blind(self, inp):
        """A write: legal in any state, its effect independent of it."""
        return inp[0] == "write"

    def read_only(self, inp):
        """A read, or a cas from a value to itself: changes no state it is
        legal in."""
        return inp[0] == "read" or (inp[0] == "cas" and inp[1][0] == inp[1][1])

    def encode(self, ops):
        return _numbered([(o.input[0], o.input[1], o.output, False) for o in ops], self.init)


class CasRegister(Register):
    name = "cas-register"
    fs = ("read", "write", "cas")

    def step(self, state, inp, out):
        f, v = inp
        if f == "cas":
            old, new = v
            return (state == old, new) if state == old else (False, state)
        return Register.step(self, state, inp, out)


_CAS = CasRegister()


class KV:
    """A register per key (inputs (f, key, value)) with Porcupine's append."""
    name = "kv"
    init = None
    fs = ("read", "write", "cas", "append")

    def step(self, state, inp, out):
        f, _, v = inp
        if f == "append":
            if state is None:
                return True, v
            if type(state) is not str:
                return False, state
            return True, state + v
        if f == "read" and out == "" and state is None:
            return True, state
        return _CAS.step(state, (f, v), out)

    def blind(self, inp):
        return inp[0] == "write"

    def read_only(self, inp):
        return inp[0] == "read" or (inp[0] == "cas" and inp[2][0] == inp[2][1])

    def partition(self, ops):
        by_key = {}
        for op in ops:
            by_key.setdefault(op.input[1], []).append(op)
        return list(by_key.values())

    def encode(self, ops):
        """Without appends, a cas-register with reads of "" that also match
        the absent key; with them, None (their states are strings made in
        the search)."""
        return _numbered([(o.input[0], o.input[2], o.output,
                           o.input[0] == "read" and o.output == "") for o in ops], self.init)


class Independent:
    """Jepsen's independent checker: the model per key, inputs (f, key,
    value) of its (f, value)."""

    def __init__(self, model):
        self.model = model
        self.name = model.name
        self.init = model.init
        self.fs = model.fs

    def step(self, state, inp, out):
        f, _, v = inp
        return self.model.step(state, (f, v), out)

    partition = KV.partition

    def blind(self, inp):
        return hasattr(self.model, "blind") and self.model.blind((inp[0], inp[2]))

    def read_only(self, inp):
        return hasattr(self.model, "read_only") and self.model.read_only((inp[0], inp[2]))

    def encode(self, ops):
        return _numbered([(o.input[0], o.input[2], o.output, False) for o in ops], self.init)


class Log:
    """One Kafka partition: an append-only tuple of values.
    ``("append", value, offset|None)`` appends (and must land at the
    reported offset), ``("read", [(offset, value), ...])`` must match the
    log at that moment, and ``("read-end", start, [(offset, value), ...])``
    is a read to the end: exactly the log's slice from ``start`` to its
    end at that moment, so it must include every append acknowledged
    before the read began (the search linearizes those first)."""
    name = "log"
    init = ()

    def read_only(self, inp):
        return inp[0] != "append"

    def step(self, state, inp, out):
        if inp[0] == "append":
            _, v, offset = inp
            if offset is not None and offset != len(state):
                return False, state
            return True, state + (v,)
        n = len(state)
        if inp[0] == "read-end":
            _, start, pairs = inp
            if start + len(pairs) != n:
                return False, state      # missed (or invented) the tail
            for j, (o, v) in enumerate(pairs):
                if (o is not None and o != start + j) or state[start + j] != v:
                    return False, state
            return True, state
        pairs = inp[1]
        for o, v in pairs:
            if o is None:
                if v not in state:
                    return False, state
            elif o >= n or state[o] != v:
                return False, state
        return True, state


MODELS = {m.name: m for m in (Register(), CasRegister(), KV(), Log())}
