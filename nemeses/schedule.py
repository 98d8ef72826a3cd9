"""Running faults on a schedule while the workload runs.

Every `interval`, one fault starts on chosen targets, then is healed after the
same interval. No fault starts unless there is time left to heal it and see
the system take writes again before the workload ends: a run whose last heal
is never followed by a write proves nothing about recovery.

Each nemesis operation is recorded as Jepsen records it: an `invoke` when it
is requested, an `info` when it took effect (same `f`, same `value.id`). A
heal takes effect when the fault is undone (the process started, the rule
removed), not when the node serves again: recovery is measured from the
heal's invoke.
"""
from __future__ import annotations

import json
import logging
import random
import threading
import time

from nemeses.base import Fault, choose_targets

log = logging.getLogger(__name__)


class NemesisSchedule:
    def __init__(self, faults: list[Fault], nodes: list[str], history, log_path, *,
                 interval: float, targets: str, rng: random.Random, time_limit: float,
                 settle: float = 3.0, primaries=None, plan: list[dict] | None = None):
        self.faults = faults
        self.nodes = nodes
        self.history = history
        self.log_path = log_path
        self.interval = interval
        self.targets_spec = targets
        self.rng = rng
        self.time_limit = time_limit
        self.settle = settle
        self.primaries = primaries          # () -> list of node names, asked at each fault
        # A recorded schedule to follow instead of choosing (replay): faults
        # at the same offsets from the test's start, on the same targets.
        self.plan = sorted(plan, key=lambda p: p["start_s"]) if plan is not None else None
        self.active: dict[int, tuple[Fault, list[str], dict]] = {}
        self.executed = 0
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._next_id = 1
        self._lock = threading.RLock()
        self._log = open(log_path, "a", encoding="utf-8")
        self.error: BaseException | None = None

    def start(self) -> None:
        if not self.faults:
            return
        self._deadline = time.monotonic() + self.time_limit
        run = self._run if self.plan is None else self._follow_plan
        self._thread = threading.Thread(target=run, name="nemesis", daemon=True)
        self._thread.start()

    def _record(self, type_: str, f: str, value: dict, **extra) -> None:
        event = self.history.append("nemesis", type_, f, value, **extra)
        self._log.write(json.dumps({**event, "wall_time": time.time()}) + "\n")
        self._log.flush()

    def _run(self) -> None:
        try:
            while not self._stop.wait(self.interval):
                remaining = self._deadline - time.monotonic()
                if remaining < self.interval + self.settle:
                    return
                fault = self.faults[self.executed % len(self.faults)]
                self.start_fault(fault, self._choose(fault))
                if self._stop.wait(self.interval):
                    return
                self.heal_all()
        except BaseException as e:  # surfaced by the runner; the run is then not trusted
            log.exception("nemesis")
            self.error = e

    def _follow_plan(self) -> None:
        """Replay: each planned fault starts and heals at its recorded offset
        (seconds since the history began)."""
        by_name = {f.name: f for f in self.faults}
        events = sorted([(p["start_s"], 0, i, p) for i, p in enumerate(self.plan)] +
                        [(p["stop_s"], 1, i, p) for i, p in enumerate(self.plan) if p.get("stop_s") is not None])
        ids: dict[int, int] = {}
        try:
            for at, kind, i, p in events:
                if self._stop.wait(max(0.0, at - self.history.now() / 1e9)):
                    return
                if kind == 0:
                    ids[i] = self.start_fault(by_name[p["fault"]], list(p["targets"]))
                elif i in ids:
                    self.heal(ids.pop(i))
        except BaseException as e:
            log.exception("nemesis (replaying a plan)")
            self.error = e

    def heal(self, fault_id: int) -> None:
        with self._lock:
            entry = self.active.pop(fault_id, None)
            if entry is None:
                return
            fault, targets, value = entry
            self._record("invoke", f"stop-{fault.name}", value)
            try:
                fault.stop(targets)
            except BaseException as e:
                self._record("info", f"stop-{fault.name}", value, error=repr(e))
                raise
            self._record("info", f"stop-{fault.name}", value)

    def _choose(self, fault: Fault) -> list[str]:
        primaries = None
        if self.targets_spec in ("primaries", "controller") and self.primaries is not None:
            try:
                primaries = self.primaries()
            except Exception as e:  # fall back to any node, and say so
                log.warning("asking the target for its primaries: %r", e)
        return choose_targets(self.targets_spec, self.nodes, self.rng, primaries)

    def start_fault(self, fault: Fault, targets: list[str], params: dict | None = None) -> int:
        """Inject one fault now (invoke, then info once in force); returns its id."""
        with self._lock:
            fault_id = self._next_id
            self._next_id += 1
            value = {"fault": fault.name, "id": fault_id, "targets": targets}
            self._record("invoke", f"start-{fault.name}", value)
            self.active[fault_id] = (fault, targets, value)
            try:
                done = fault.start(targets) or {}
            except BaseException as e:
                self._record("info", f"start-{fault.name}", value, error=repr(e))
                raise
            self.executed += 1
            self._record("info", f"start-{fault.name}", {**value, **done})
            return fault_id

    def heal_all(self) -> None:
        errors = []
        for fault_id in sorted(self.active, reverse=True):
            try:
                self.heal(fault_id)
            except BaseException as e:
                errors.append(e)
        if errors:
            raise errors[0]

    def stop(self) -> None:
        """Stop scheduling and heal whatever is still active."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
        try:
            self.heal_all()
        finally:
            self._log.close()


def recorded_plan(events) -> list[dict]:
    """The fault schedule a run executed, from its nemesis events (history or
    nemesis.jsonl lines, as dicts): [{fault, targets, start_s, stop_s}], each
    time the offset of the operation's invoke from the test's start. A lone
    `info` (older histories) stands for its own invoke."""
    plan: dict = {}
    seen_invoke = set()
    for e in events:
        if e.get("process") != "nemesis":
            continue
        f, v = e.get("f", ""), e.get("value") or {}
        key = (v.get("fault"), v.get("id"))
        phase = "start" if f.startswith("start-") else "stop" if f.startswith("stop-") else None
        if phase is None or (e.get("type") == "info" and (phase, key) in seen_invoke):
            continue
        seen_invoke.add((phase, key))
        if phase == "start":
            plan[key] = {"fault": v.get("fault"), "targets": list(v.get("targets") or []),
                         "start_s": e["time"] / 1e9, "stop_s": None}
        elif key in plan:
            plan[key]["stop_s"] = e["time"] / 1e9
    return sorted(plan.values(), key=lambda p: p["start_s"])
