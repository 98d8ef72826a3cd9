"""The determinism guard: while a simulated run is on, reading the wall
clock, the OS random source, an unseeded random generator, a real socket or
a real thread is a bug of the simulation (the run would not replay from its
seed). Each such call raises `NondeterminismError` (a BaseException, so no
`except Exception` in the code under test swallows it) and is recorded; the
run then fails with the offending call named.

Logging's own timestamp (`LogRecord.created`) is the one wall-clock read
allowed: it gets virtual time instead, so log lines repeat too.
"""
from __future__ import annotations

import os
import random
import socket
import sys
import threading
import time
import traceback


class NondeterminismError(BaseException):
    pass


_RANDOM_FUNCS = ("random", "randint", "randrange", "choice", "choices", "shuffle", "sample", "uniform",
                 "getrandbits", "expovariate", "gauss", "normalvariate", "triangular", "betavariate",
                 "randbytes")


class Guard:
    def __init__(self, virtual_wall):
        self.virtual_wall = virtual_wall     # () -> float, for logging's timestamps
        self.violations: list[str] = []
        self._saved: list[tuple[object, str, object]] = []

    def _violation(self, what: str):
        stack = "".join(traceback.format_stack(limit=8)[:-2])
        self.violations.append(f"{what}\n{stack}")
        raise NondeterminismError(f"the simulation called {what}, which does not replay from the seed")

    def _patch(self, owner, name: str, replacement) -> None:
        self._saved.append((owner, name, getattr(owner, name)))
        setattr(owner, name, replacement)

    def __enter__(self) -> "Guard":
        guard = self

        def wall_time():
            if sys._getframe(1).f_globals.get("__name__") == "logging":
                return guard.virtual_wall()
            guard._violation("time.time()")

        def forbidden(what):
            def call(*args, **kwargs):
                guard._violation(what)
            return call

        self._patch(time, "time", wall_time)
        for name in ("time_ns", "monotonic", "monotonic_ns", "perf_counter", "perf_counter_ns", "process_time"):
            self._patch(time, name, forbidden(f"time.{name}()"))
        self._patch(os, "urandom", forbidden("os.urandom()"))
        if hasattr(os, "getrandom"):
            self._patch(os, "getrandom", forbidden("os.getrandom()"))
        for name in _RANDOM_FUNCS:
            if hasattr(random, name):
                self._patch(random, name, forbidden(f"random.{name}() (the global, unseeded generator)"))
        seed = random.Random.seed

        def seeded_only(self_, a=None, version=2):
            if a is None:
                guard._violation("random.Random() without a seed (seeded from the OS)")
            return seed(self_, a, version)
        self._patch(random.Random, "seed", seeded_only)
        self._patch(socket, "socket", forbidden("socket.socket() (a real socket)"))
        self._patch(socket, "socketpair", forbidden("socket.socketpair() (a real socket)"))
        self._patch(socket, "create_connection", forbidden("socket.create_connection() (a real socket)"))
        self._patch(threading.Thread, "start", forbidden("threading.Thread.start() (a real thread)"))
        return self

    def __exit__(self, *exc) -> None:
        while self._saved:
            owner, name, original = self._saved.pop()
            setattr(owner, name, original)
