"""The `clock` fault: skew or strobe the targeted nodes' wall clocks through
`target.clock(node)` (a `nemeses.clock.NodeClock`); the heal sets them true."""
from __future__ import annotations

import random

from nemeses.base import Fault

MODES = ("skew", "strobe", "mixed")


class ClockFault(Fault):
    name = "clock"
    requires = "clock"

    def __init__(self, db, *, mode: str = "mixed", max_skew: float = 300.0, min_skew: float = 1.0,
                 strobe_interval: float = 1.0, rng: random.Random | None = None):
        super().__init__(db)
        if mode not in MODES:
            raise ValueError(f"unknown clock mode {mode!r}; known: {', '.join(MODES)}")
        if not 0 <= min_skew <= max_skew:
            raise ValueError(f"need 0 <= min_skew <= max_skew, got {min_skew}, {max_skew}")
        if strobe_interval <= 0:
            raise ValueError(f"strobe interval must be > 0, got {strobe_interval}")
        self.mode, self.max_skew, self.min_skew = mode, max_skew, min_skew
        self.strobe_interval = strobe_interval
        self.rng = rng or random.Random()

    def start(self, targets):
        mode = self.rng.choice(("skew", "strobe")) if self.mode == "mixed" else self.mode
        offsets = {}
        for t in targets:
            offset = self.rng.choice((-1, 1)) * self.rng.uniform(self.min_skew, self.max_skew)
            offsets[t] = round(offset, 3)
            clock = self.db.clock(t)
            if mode == "skew":
                clock.set_offset(offsets[t])
            else:
                clock.strobe(0.0, offsets[t], self.strobe_interval)
        params = {"mode": mode, "offsets": offsets}
        if mode == "strobe":
            params["interval"] = self.strobe_interval
        return params

    def stop(self, targets):
        for t in targets:
            self.db.clock(t).reset()
