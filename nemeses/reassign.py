"""The `reassign` fault: move partitions between live brokers while clients
write and read them (AutoMQ's seconds-long reassignment: the old owner
uploads its not-yet-uploaded delta and lets go, the new owner opens the
stream at the committed end). Through `target.reassign(moves)` and
`target.partition_owners()`. A move is over when it returns, so the heal
does nothing: what it checks is everything that happens around the move.
"""
from __future__ import annotations

import random

from nemeses.base import Fault

DEFAULT_MOVES = 4


class ReassignFault(Fault):
    name = "reassign"
    requires = "reassign"

    def __init__(self, db, *, moves: int = DEFAULT_MOVES, rng: random.Random | None = None):
        super().__init__(db)
        if moves < 1:
            raise ValueError(f"moves must be at least 1, got {moves}")
        self.moves = moves
        self.rng = rng or random.Random()

    def start(self, targets):
        """Move up to `moves` of the partitions the targets lead (else any) to
        other live brokers; returns the moves asked and what came of them."""
        owners = self.db.partition_owners()          # {(topic, partition): node name or None}
        live = self.db.live_brokers()                 # {node name: node id}
        if len(live) < 2:
            return {"moves": [], "skipped": "fewer than two live brokers"}
        led = sorted(tp for tp, owner in owners.items() if owner in targets) or \
            sorted(tp for tp, owner in owners.items() if owner in live)
        chosen = self.rng.sample(led, min(self.moves, len(led)))
        moves = []
        for topic, partition in chosen:
            others = sorted(n for n in live if n != owners[(topic, partition)])
            dest = self.rng.choice(others)
            moves.append([topic, partition, live[dest]])
        result = self.db.reassign(moves) if moves else {"moved": [], "errors": []}
        return {"moves": moves, "moved": len(result.get("moved", [])), "errors": result.get("errors", [])}

    def stop(self, targets):
        pass
