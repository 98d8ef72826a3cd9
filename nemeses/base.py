"""The fault interface: start on targets, stop (heal) the same targets."""
from __future__ import annotations

import random


class FaultUnsupported(RuntimeError):
    """The chosen target cannot take this fault; the message says why."""


class Fault:
    name: str = ""

    def __init__(self, db):
        self.db = db

    def check_supported(self) -> None:
        """Raise FaultUnsupported with the reason if self.db cannot take it."""

    def start(self, targets: list[str]) -> dict:
        """Inject the fault; return its parameters for the history."""
        raise NotImplementedError

    def stop(self, targets: list[str]) -> None:
        """Heal it. Must be safe to call on targets already healed."""
        raise NotImplementedError


def choose_targets(spec: str, nodes: list[str], rng: random.Random) -> list[str]:
    """`one`, `minority`, `majority`, `all` of the nodes (primaries: see the
    cluster issue; on a single node every spec means that node)."""
    nodes = sorted(nodes)
    n = len(nodes)
    if spec == "one" or spec == "primaries":
        count = 1
    elif spec == "minority":
        count = max(1, (n - 1) // 2)
    elif spec == "majority":
        count = n // 2 + 1
    elif spec == "all":
        count = n
    else:
        raise ValueError(f"unknown nemesis target spec {spec!r} (one, minority, majority, all, primaries)")
    return sorted(rng.sample(nodes, min(count, n)))
