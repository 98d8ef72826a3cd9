"""One test run, start to finish: set up the cluster, run the workload with
faults for --time-limit, heal everything, wait for recovery, run the final
polls, check the history, write results, tear down, and leave nothing
running — also when interrupted with Ctrl-C."""
from __future__ import annotations

import logging
import math
import random
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

from harness.history import HistoryWriter
from harness.workloads.clients import client_class
from harness.workloads.kafka_python_client import ClientCrashed, create_topics
from harness.workloads.queue import QueueGenerator, key_topic_partition, max_offsets
from nemeses import build_faults
from nemeses.schedule import NemesisSchedule

log = logging.getLogger(__name__)


@dataclass
class Worker:
    """One logical client thread. A crashed client is replaced, and its
    replacement takes a new process number (process + concurrency)."""
    slot: int
    concurrency: int
    process: int = 0
    client: object | None = None   # one of harness.workloads.clients
    key_generation: int = -1
    read_keys: set = field(default_factory=set)   # keys its client read records of since it took its keys

    def __post_init__(self):
        self.process = self.slot


class Run:
    def __init__(self, options: dict, run_dir: Path, db, progress=None):
        self.o = options
        self.run_dir = run_dir
        self.db = db
        self.rng = random.Random(options["seed"])
        self.history = HistoryWriter(run_dir / "history.jsonl")
        self.progress = progress
        self.stop_workload = threading.Event()
        self.errors: list[str] = []
        self.final_short: list[dict] = []    # per worker: keys its final polls did not read to their targets
        self.created_topics: set[str] = set()
        self._topic_lock = threading.Lock()
        self.client_class = client_class(options["client"])
        # One consumer group per run, for --sub-via subscribe.
        self.group_id = f"highwater-{options['seed']}"

    # --- topics ---------------------------------------------------------------
    def ensure_topics(self, keys) -> None:
        topics = sorted({key_topic_partition(k)[0] for k in keys} - self.created_topics)
        if not topics:
            return
        with self._topic_lock:
            topics = [t for t in topics if t not in self.created_topics]
            if topics:
                create_topics(self.db.bootstrap_servers, topics)
                self.created_topics.update(topics)

    def _on_new_key(self, key: str) -> None:
        try:
            self.ensure_topics([key])
        except Exception as e:  # sends to it will fail or be indeterminate, and say so
            log.warning("creating the topic for key %s: %s", key, e)

    # --- workers --------------------------------------------------------------
    def new_client(self):
        return self.client_class(self.db.bootstrap_servers, request_timeout=self.o["request_timeout"],
                                 group_id=self.group_id)

    def _ensure_client(self, w: Worker) -> bool:
        if w.client is not None:
            return True
        try:
            w.client = self.new_client()
            w.key_generation = -1
            return True
        except Exception as e:
            log.warning("worker %d: client start failed: %s", w.slot, e)
            return False

    def crash(self, w: Worker) -> None:
        if w.client is not None:
            w.client.close()
        w.client = None
        w.read_keys = set()
        w.process += w.concurrency

    def invoke_assign(self, w: Worker, keys: list[str], seek_to_beginning: bool = False) -> bool:
        extra = {"seek_to_beginning": True} if seek_to_beginning else {}
        self.history.append(w.process, "invoke", "assign", keys, **extra)
        try:
            w.client.assign(keys, seek_to_beginning=seek_to_beginning)
        except Exception as e:
            self.history.append(w.process, "fail", "assign", keys, error=repr(e), **extra)
            return False
        self.history.append(w.process, "ok", "assign", keys, **extra)
        w.read_keys = set()
        return True

    def invoke_subscribe(self, w: Worker, keys: list[str]) -> bool:
        self.history.append(w.process, "invoke", "subscribe", keys)
        try:
            w.client.subscribe(keys)
        except Exception as e:
            self.history.append(w.process, "fail", "subscribe", keys, error=repr(e))
            return False
        self.history.append(w.process, "ok", "subscribe", keys)
        w.read_keys = set()
        return True

    def step(self, w: Worker, generator: QueueGenerator) -> None:
        if not self._ensure_client(w):
            time.sleep(0.5)
            return
        generation, keys = generator.assignment()
        if generation != w.key_generation:
            # Jepsen's :sub-via: each (re)assignment picks assign or subscribe.
            via = self.rng.choice(self.o["sub_via"])
            done = self.invoke_subscribe(w, keys) if via == "subscribe" else self.invoke_assign(w, keys)
            if done:
                w.key_generation = generation
            return
        op = generator.next_op()
        self.history.append(w.process, "invoke", op.f, op.value)
        try:
            if op.f == "send":
                type_, value = w.client.send(op.value)
            else:
                type_, value = w.client.poll()
        except ClientCrashed as e:
            self.history.append(w.process, "info", op.f, self._indeterminate(op), error=str(e))
            self.crash(w)
            return
        except Exception as e:
            # A poll that raised returned nothing; a send that raised may have been written.
            type_ = "fail" if op.f == "poll" else "info"
            self.history.append(w.process, type_, op.f, self._indeterminate(op), error=repr(e))
            self.crash(w)
            return
        extra = {}
        if op.f == "poll":
            rebalances = w.client.take_rebalance_log()
            if rebalances:  # keys a rebalance moved are exempt from int-poll checks
                extra["rebalance_log"] = rebalances
            if type_ == "ok" and self.o.get("reads_to_end"):
                # Asked inside the operation: a key whose end is reached is a
                # read to the end at some moment of it, which must hold every
                # send acknowledged before the poll began (the log model).
                # A key it read before and got nothing of now is a read to
                # the end too if its position is the end: an empty slice at
                # that offset (to_end_at), which a stale leader fails alike.
                read = [k for k, pairs in value[0][1].items() if pairs]
                idle = sorted(w.read_keys - set(read), key=int)
                at_end = w.client.ends_reached_now(read + idle) if read or idle else {}
                to_end = [k for k in read if k in at_end]
                if to_end:
                    extra["to_end"] = sorted(to_end, key=int)
                empty_at = {k: at_end[k] for k in idle if k in at_end}
                if empty_at:
                    extra["to_end_at"] = empty_at
                w.read_keys.update(read)
        self.history.append(w.process, type_, op.f, value, **extra)

    @staticmethod
    def _indeterminate(op) -> list:
        if op.f == "send":
            return [["send", k, [None, v]] for _, k, v in op.value]
        return op.value

    def worker_loop(self, w: Worker, generator: QueueGenerator, per_worker_rate: float) -> None:
        interval = 1.0 / per_worker_rate if per_worker_rate > 0 else 0.0
        next_at = time.monotonic()
        while not self.stop_workload.is_set():
            try:
                self.step(w, generator)
            except Exception as e:  # the harness's own bug: record it, keep the run honest
                log.exception("worker %d", w.slot)
                self.errors.append(f"worker {w.slot}: {e!r}")
                self.crash(w)
            # Poisson arrivals at the configured rate, without bursts to catch up.
            next_at = max(next_at + self.rng.expovariate(1.0 / interval), time.monotonic()) if interval else 0
            delay = next_at - time.monotonic()
            if delay > 0:
                self.stop_workload.wait(delay)

    # --- final polls ------------------------------------------------------------
    def final_polls(self, w: Worker, keys: list[str], targets: dict[str, int], deadline: float) -> None:
        """Jepsen's final phase: a fresh client, assigned to every key written,
        from the beginning, polling until it reaches the highest offsets seen."""
        self.crash(w)
        while time.monotonic() < deadline and not self._ensure_client(w):
            time.sleep(0.5)
        if w.client is None:
            self.errors.append(f"worker {w.slot}: no client for the final polls")
            return
        if not self.invoke_assign(w, keys, seek_to_beginning=True):
            self.errors.append(f"worker {w.slot}: final assign failed")
            return
        reached: dict[str, int] = {}
        while time.monotonic() < deadline:
            self.history.append(w.process, "invoke", "poll", [["poll"]])
            try:
                type_, value = w.client.poll()
            except Exception as e:
                self.history.append(w.process, "fail", "poll", [["poll"]], error=repr(e))
                continue
            # Nothing is written any more, so a key this poll read up to the
            # high watermark was read to the end of its log: the log model
            # then requires every acked send to be in it (to_end).
            read = [k for k, pairs in value[0][1].items() if pairs]
            to_end = w.client.read_to_end(read) if type_ == "ok" and read else []
            self.history.append(w.process, type_, "poll", value,
                                **({"to_end": sorted(to_end, key=int)} if to_end else {}))
            for key, pairs in value[0][1].items():
                if pairs:
                    reached[key] = max(reached.get(key, -1), max(o for o, _ in pairs))
            if all(reached.get(k, -1) >= off for k, off in targets.items()):
                return
        missing = {k: (reached.get(k, -1), off) for k, off in targets.items() if reached.get(k, -1) < off}
        log.warning("worker %d: final polls ended before reaching %s", w.slot, missing)
        self.final_short.append(missing)

    # --- the run ----------------------------------------------------------------
    def execute(self) -> dict:
        o = self.o
        expected_sends = o["rate"] * o["time_limit"] * (o.get("send_batch", 1) if o.get("workload") == "produce"
                                                        else 0.5)
        pool = o["keys"] + math.ceil(expected_sends / o["max_writes_per_key"]) + 2
        self.ensure_topics(str(k) for k in range(pool))
        produce = o.get("workload") == "produce"
        generator = QueueGenerator(self.rng, o["keys"], o["max_writes_per_key"], on_new_key=self._on_new_key,
                                   key_dist=o["key_dist"], produce_only=produce,
                                   send_batch=o.get("send_batch", 1) if produce else 1)
        faults = build_faults(o["nemesis"], self.db, rng=random.Random(o["seed"] + 2),
                              options=o.get("nemesis_options"))
        schedule = NemesisSchedule(faults, list(self.db.node_names), self.history, self.run_dir / "nemesis.jsonl",
                                   interval=o["nemesis_interval"], targets=o["nemesis_targets"],
                                   rng=random.Random(o["seed"] + 1), time_limit=o["time_limit"],
                                   primaries=self.db.primaries, plan=o.get("nemesis_plan"))
        workers = [Worker(i, o["concurrency"]) for i in range(o["concurrency"])]
        threads = [threading.Thread(target=self.worker_loop, args=(w, generator, o["rate"] / o["concurrency"]),
                                    name=f"worker-{w.slot}", daemon=True) for w in workers]
        if self.progress:
            self.progress.phase("workload", o["time_limit"])
        for t in threads:
            t.start()
        schedule.start()
        try:
            self._wait(o["time_limit"])
        finally:
            self.stop_workload.set()
            for t in threads:
                t.join(o["request_timeout"] * 4 + 5)
            if self.progress:
                self.progress.phase("heal", None)
            schedule.stop()
        if schedule.error is not None:
            self.errors.append(f"nemesis: {schedule.error!r}")
        crashed = self.db.died_on_their_own()
        down = set()
        for name, code in sorted(crashed.items()):
            log.error("node %s exited by itself with code %s; restarting it for the final polls", name, code)
            if self.progress:
                self.progress.say(f"[red]node {name} exited by itself (code {code})[/red]")
            try:
                self.db.start_node(name)
            except Exception as e:
                self.errors.append(f"restarting {name} after it exited by itself: {e}")
                down.add(name)
        if self.progress:
            self.progress.phase("recovery wait", o["recovery_wait"])
        time.sleep(o["recovery_wait"])
        targets = self._max_offsets()
        keys = sorted(generator.written_keys, key=int)
        if self.progress:
            self.progress.phase("final polls", o["final_time_limit"])
        deadline = time.monotonic() + o["final_time_limit"]
        nobody_up = bool(down) and down >= set(self.db.node_names)
        if nobody_up:
            # Every node refused to come back: nothing could answer a final
            # poll, so none is made; every key falls short of its target.
            log.error("no node is up for the final polls (%s would not start)", ", ".join(sorted(down)))
            self.errors.append(f"final polls skipped: no node would start ({', '.join(sorted(down))})")
        final_threads = [] if nobody_up else [
            threading.Thread(target=self.final_polls, args=(w, keys, targets, deadline), daemon=True)
            for w in workers]
        for t in final_threads:
            t.start()
        for t in final_threads:
            t.join(o["final_time_limit"] + o["request_timeout"] * 4 + 5)
        for w in workers:
            self.crash(w)
        self.history.close()
        info = {"faults_executed": schedule.executed, "harness_errors": self.errors,
                "nodes_exited_by_themselves": crashed}
        if nobody_up:
            info["final_polls_short"] = {k: {"reached": -1, "target": targets[k]} for k in sorted(targets, key=int)}
        elif self.final_short and len(self.final_short) == len(final_threads):
            # No worker's final polls read these keys as far as the run had
            # acknowledged or read them: what lies beyond was never re-read.
            short = set.intersection(*(set(m) for m in self.final_short))
            info["final_polls_short"] = {k: {"reached": max(m[k][0] for m in self.final_short),
                                             "target": self.final_short[0][k][1]} for k in sorted(short, key=int)}
        try:
            info["target"] = self.db.run_info()
        except Exception as e:  # a view of the run, never part of the verdict
            log.warning("target run info: %r", e)
        return info

    def _wait(self, seconds: float) -> None:
        end = time.monotonic() + seconds
        while (left := end - time.monotonic()) > 0:
            time.sleep(min(left, 0.5))
            if self.progress:
                self.progress.tick(self.history.counts)

    def _max_offsets(self) -> dict[str, int]:
        """The highest offset of each key any ok operation reported."""
        with open(self.history.path, encoding="utf-8") as f:
            return max_offsets(f)
