"""Shrinking a failing run's fault schedule: delta debugging (ddmin) over its
faults, then shorter faults, then BUGGIFY off; a smaller schedule is kept
only if the run still fails the same way (one of the original anomalies).

Every candidate is one simulated run from the same seed, so the other random
streams (workload, network, disk, S3) stay as they were; what changes is only
what the schedule changes. The result is a schedule to replay with
`--schedule`."""
from __future__ import annotations

from dataclasses import replace
from typing import Callable


class Shrinker:
    def __init__(self, seed: int, options, anomalies: list[str], run: Callable, budget: int = 40,
                 say: Callable[[str], None] = lambda s: None):
        self.seed = seed
        self.options = options
        self.target = set(anomalies)
        self.run = run              # (seed, options) -> SimResult
        self.budget = budget
        self.say = say
        self.runs = 0

    def fails(self, schedule: list, buggify: bool) -> bool:
        if self.runs >= self.budget:
            return False
        self.runs += 1
        r = self.run(self.seed, replace(self.options, schedule=schedule, buggify=buggify))
        hit = r.valid is False and (not self.target or bool(self.target & set(r.anomalies)))
        self.say(f"  shrink run {self.runs}: {len(schedule)} faults{'' if buggify else ', no BUGGIFY'}: "
                 f"{'still fails' if hit else 'passes'} ({', '.join(r.anomalies) or r.valid})")
        return hit

    def shrink(self, schedule: list) -> tuple[list, bool]:
        """(smallest failing schedule found, whether BUGGIFY is still needed)."""
        buggify = self.options.buggify
        current = list(schedule)
        # 1. ddmin over the faults
        n = 2
        while len(current) >= 1 and self.runs < self.budget:
            if len(current) == 1:
                if self.fails([], buggify):
                    current = []
                break
            chunk = max(1, len(current) // n)
            reduced = False
            for i in range(0, len(current), chunk):
                candidate = current[:i] + current[i + chunk:]
                if self.fails(candidate, buggify):
                    current = candidate
                    n = max(n - 1, 2)
                    reduced = True
                    break
            if not reduced:
                if chunk == 1:
                    break
                n = min(len(current), n * 2)
        # 2. shorter faults
        for i in range(len(current)):
            if self.runs >= self.budget:
                break
            f = current[i]
            if f["for"] > 1.0:
                shorter = dict(f, **{"for": round(f["for"] / 2, 3)})
                candidate = current[:i] + [shorter] + current[i + 1:]
                if self.fails(candidate, buggify):
                    current = candidate
        # 3. without BUGGIFY
        if buggify and self.runs < self.budget and self.fails(current, False):
            buggify = False
        return current, buggify
