"""Jepsen's Kafka queue workload: unique increasing integers sent to a few keys
and polled back.

A key is a topic-partition: key `k` is topic `hw-<k div 2>`, partition
`k mod 2` (Jepsen's mapping). Values are 1, 2, 3, … per key, written as
decimal ASCII. Keys retire after a capped number of writes and fresh keys
take their place, so every run covers new partitions as well as old ones.
"""
from __future__ import annotations

import json
import random
import threading
from dataclasses import dataclass

PARTITIONS_PER_TOPIC = 2


def key_topic_partition(key: str) -> tuple[str, int]:
    k = int(key)
    return f"hw-{k // PARTITIONS_PER_TOPIC}", k % PARTITIONS_PER_TOPIC


def topic_partition_key(topic: str, partition: int) -> str:
    return str(int(topic[3:]) * PARTITIONS_PER_TOPIC + partition)


def max_offsets(history_lines) -> dict[str, int]:
    """The highest offset of each key any ok operation of a history (JSON
    Lines) reported: where the final polls must read up to."""
    best: dict[str, int] = {}
    for line in history_lines:
        e = json.loads(line)
        if e["type"] != "ok" or e["f"] not in ("send", "poll"):
            continue
        for mop in e["value"]:
            if mop[0] == "send" and mop[2][0] is not None:
                best[mop[1]] = max(best.get(mop[1], -1), mop[2][0])
            elif mop[0] == "poll":
                for key, pairs in mop[1].items():
                    for off, _ in pairs:
                        best[key] = max(best.get(key, -1), off)
    return best


@dataclass
class Op:
    f: str
    value: list
    extra: dict | None = None


class QueueGenerator:
    """Thread-safe source of operations for all workers.

    Half the operations send, half poll (Jepsen's mix). Each key takes at
    most `max_writes_per_key` values; then the next unused key replaces it.
    Writes spread over the active keys uniformly or, with key_dist="zipf",
    by rank (the oldest active key hottest).
    """

    def __init__(self, rng: random.Random, active_keys: int = 4, max_writes_per_key: int = 256,
                 on_new_key=None, key_dist: str = "uniform", produce_only: bool = False, send_batch: int = 1):
        self.rng = rng
        self.key_dist = key_dist
        # The throughput workload: only sends, `send_batch` values to one key
        # per operation; the final polls still read everything back.
        self.produce_only = produce_only
        self.send_batch = send_batch
        self.max_writes = max_writes_per_key
        self._lock = threading.Lock()
        self._next_key = 0
        self.active: list[str] = []
        self.next_value: dict[str, int] = {}
        self.written_keys: list[str] = []
        self.key_generation = 0  # bumps whenever the active set changes
        self._on_new_key = on_new_key or (lambda key: None)
        for _ in range(active_keys):
            self._activate_key()

    def _activate_key(self) -> None:
        key = str(self._next_key)
        self._next_key += 1
        self._on_new_key(key)
        self.active.append(key)
        self.next_value[key] = 1
        self.written_keys.append(key)
        self.key_generation += 1

    def next_op(self) -> Op:
        with self._lock:
            if not self.produce_only and self.rng.random() < 0.5:
                return Op("poll", [["poll"]])
            key = self._choose_key()
            mops = []
            for _ in range(self.send_batch):
                value = self.next_value[key]
                self.next_value[key] = value + 1
                mops.append(["send", key, value])
                if value >= self.max_writes:
                    self.active.remove(key)
                    self._activate_key()
                    break
            return Op("send", mops)

    def _choose_key(self) -> str:
        """Uniform, or Zipf-like (weight 1/rank): a few hot keys take most
        writes while the cold ones still get some, as in real topics."""
        if self.key_dist == "zipf":
            weights = [1.0 / (rank + 1) for rank in range(len(self.active))]
            return self.rng.choices(self.active, weights)[0]
        return self.rng.choice(self.active)

    def assignment(self) -> tuple[int, list[str]]:
        with self._lock:
            return self.key_generation, sorted(self.active, key=int)
