"""The fault interface: start on targets, stop (heal) the same targets.

A fault names the one *control* it needs from the target (`requires`, one of
`harness.db.base.CONTROLS`: process, pause, network, s3_proxy, volume,
clock, reassign, lose_unsynced); the target says whether it offers it
(`target.unsupported(control)` is None, or the reason it does not). That is
the only capability check: a fault is never refused by probing for methods.
"""
from __future__ import annotations

import random


class FaultUnsupported(RuntimeError):
    """The chosen target cannot take this fault; the message says why."""


class Fault:
    name: str = ""
    requires: str = ""      # the target control this fault drives

    def __init__(self, db):
        self.db = db

    def check_supported(self) -> None:
        """Raise FaultUnsupported with the reason if self.db cannot take it."""
        if not self.requires:
            return
        unsupported = getattr(self.db, "unsupported", None)
        reason = unsupported(self.requires) if unsupported else f"target offers no {self.requires} control"
        if reason:
            raise FaultUnsupported(f"fault {self.name!r} needs {self.requires}: {reason}")

    def start(self, targets: list[str]) -> dict:
        """Inject the fault; return its parameters for the history."""
        raise NotImplementedError

    def stop(self, targets: list[str]) -> None:
        """Heal it. Must be safe to call on targets already healed."""
        raise NotImplementedError


TARGET_SPECS = ("one", "minority", "majority", "all", "primaries", "controller")


def choose_targets(spec: str, nodes: list[str], rng: random.Random,
                   primaries: list[str] | None = None) -> list[str]:
    """`one`, `minority`, `majority`, `all` of the nodes, or `primaries`: the
    nodes whose loss hurts most (the controller, the leaders of the most
    partitions), as the target reports them at that moment; one of them is
    chosen, so successive faults move between them as roles move; or
    `controller`: the first of the primaries (a target lists its controller
    first), the node holding the role at that moment."""
    nodes = sorted(nodes)
    n = len(nodes)
    if spec == "controller":
        candidates = [p for p in (primaries or []) if p in nodes]
        return candidates[:1] or [rng.choice(nodes)]
    if spec == "primaries":
        candidates = [p for p in (primaries or []) if p in nodes] or nodes
        return [rng.choice(sorted(candidates))]
    if spec == "one":
        count = 1
    elif spec == "minority":
        count = max(1, (n - 1) // 2)
    elif spec == "majority":
        count = n // 2 + 1
    elif spec == "all":
        count = n
    else:
        raise ValueError(f"unknown nemesis target spec {spec!r} ({', '.join(TARGET_SPECS)})")
    return sorted(rng.sample(nodes, min(count, n)))
