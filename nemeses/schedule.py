"""Running faults on a schedule while the workload runs.

Every `interval`, one fault starts on chosen targets, then is healed after the
same interval. No fault starts unless there is time left to heal it and see
the system take writes again before the workload ends: a run whose last heal
is never followed by a write proves nothing about recovery.
"""
from __future__ import annotations

import json
import random
import threading
import time

from nemeses.base import Fault, choose_targets


class NemesisSchedule:
    def __init__(self, faults: list[Fault], nodes: list[str], history, log_path, *,
                 interval: float, targets: str, rng: random.Random, time_limit: float,
                 settle: float = 3.0, primaries=None):
        self.faults = faults
        self.primaries = primaries  # () -> node names (the target's primaries()), for targets "primaries"
        self.nodes = nodes
        self.history = history
        self.log_path = log_path
        self.interval = interval
        self.targets_spec = targets
        self.rng = rng
        self.time_limit = time_limit
        self.settle = settle
        self.active: dict[int, tuple[Fault, list[str]]] = {}
        self.executed = 0
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._next_id = 1
        self._lock = threading.Lock()
        self._log = open(log_path, "a", encoding="utf-8")
        self.error: BaseException | None = None

    def start(self) -> None:
        if not self.faults:
            return
        self._deadline = time.monotonic() + self.time_limit
        self._thread = threading.Thread(target=self._run, name="nemesis", daemon=True)
        self._thread.start()

    def _record(self, f: str, value: dict) -> None:
        event = self.history.append("nemesis", "info", f, value)
        self._log.write(json.dumps({**event, "wall_time": time.time()}) + "\n")
        self._log.flush()

    def _run(self) -> None:
        try:
            while not self._stop.wait(self.interval):
                remaining = self._deadline - time.monotonic()
                if remaining < self.interval + self.settle:
                    return
                fault = self.faults[self.executed % len(self.faults)]
                targets = None
                if self.targets_spec == "primaries" and self.primaries is not None:
                    found = self.primaries()  # the controller, then the nodes leading the most partitions
                    targets = [self.rng.choice(found)] if found else None
                targets = targets or choose_targets(self.targets_spec, self.nodes, self.rng)
                self._start_fault(fault, targets)
                if self._stop.wait(self.interval):
                    return
                self.heal_all()
        except BaseException as e:  # surfaced by the runner; the run is then not trusted
            self.error = e

    def _start_fault(self, fault: Fault, targets: list[str]) -> None:
        with self._lock:
            fault_id = self._next_id
            self._next_id += 1
            params = fault.start(targets)
            self.active[fault_id] = (fault, targets)
            self.executed += 1
            self._record(f"start-{fault.name}", {"fault": fault.name, "id": fault_id, "targets": targets, **params})

    def heal_all(self) -> None:
        with self._lock:
            for fault_id, (fault, targets) in sorted(self.active.items()):
                fault.stop(targets)
                self._record(f"stop-{fault.name}", {"fault": fault.name, "id": fault_id, "targets": targets})
            self.active.clear()

    def stop(self) -> None:
        """Stop scheduling and heal whatever is still active."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
        self.heal_all()
        self._log.close()
