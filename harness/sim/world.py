"""One simulated run: the reference cluster (`reference.broker`'s own node
and Kafka wiring, the real storage engine, controller and handlers) on
simulated machines, a Jepsen-style queue workload of Kafka clients, a fault
schedule, and the history they make, checked by the same checkers as a real
run. Everything is a function of the seed (and of an explicit schedule, when
one is given): run it again and the history and the log are the same bytes.
"""
from __future__ import annotations

import asyncio
import hashlib
import io
import json
import logging
import random
import time as _time
import uuid
from dataclasses import dataclass, field

from harness.sim import faults as F
from harness.sim.client import ClientCrashed, SimKafkaClient
from harness.sim.disk import SimDisk, SimVolumes
from harness.sim.guard import Guard, NondeterminismError
from harness.sim.loop import PROC, SimDeadlock, SimLivelock, SimLoop, SimProcess
from harness.sim.net import SimNetwork
from harness.sim.s3 import ENDPOINT, S3Faults, SimBucket, SimS3Client
from harness.workloads.queue import QueueGenerator, key_topic_partition, max_offsets

log = logging.getLogger("highwater.sim")

KAFKA_PORT = 9092
RPC_PORT = 9093
WALL_EPOCH = 1_700_000_000.0     # the simulated wall clock at virtual time 0
HARNESS = "harness"


@dataclass
class SimOptions:
    nodes: int = 3
    sim_time: float = 30.0            # workload with faults (virtual seconds)
    faults: list = field(default_factory=lambda: list(F.FAULTS))
    interval: float = 5.0             # about how long each fault lasts
    keys: int = 4
    concurrency: int = 4
    rate: float = 30.0                # operations per virtual second, all workers together
    max_writes_per_key: int = 64
    recovery_wait: float = 5.0
    final_time_limit: float = 30.0
    request_timeout: float = 5.0
    session_timeout: float = 3.0
    heartbeat_interval: float = 0.5
    bug: str | None = None
    buggify: bool = True
    schedule: list | None = None      # an explicit fault schedule (replay, shrinking); None: drawn from the seed
    log_level: str = "INFO"
    check: bool = True


@dataclass
class SimResult:
    seed: int
    valid: object                     # True, False, "unknown"
    anomalies: list
    history: bytes
    log: bytes
    schedule: list
    results: dict
    stats: dict
    error: str | None = None

    @property
    def digest(self) -> str:
        return hashlib.sha256(self.history + b"\0" + self.log).hexdigest()


class BuggifyPolicy:
    """FoundationDB's rule: each point is enabled for a run with some
    probability; an enabled point fires with some probability each time."""

    def __init__(self, rng: random.Random, enabled: bool):
        self.rng = rng
        self.enabled = enabled
        self.points: dict[str, float] = {}
        self.fired: dict[str, int] = {}

    def _chance(self, name: str) -> float:
        p = self.points.get(name)
        if p is None:
            p = self.points[name] = (self.rng.choice([0.01, 0.05, 0.2]) if self.rng.random() < 0.25 else 0.0)
        return p

    def fire(self, name: str) -> bool:
        if not self.enabled:
            return False
        p = self._chance(name)
        if p and self.rng.random() < p:
            self.fired[name] = self.fired.get(name, 0) + 1
            return True
        return False

    def delay(self, name: str) -> float:
        if not self.fire(name):
            return 0.0
        return self.rng.choice([0.01, 0.1, 0.5, 2.0, 5.0]) * self.rng.random()


class History:
    """The history, as design.md's JSON lines, on virtual time."""

    def __init__(self, loop: SimLoop):
        self.loop = loop
        self.lines: list[str] = []
        self.index = 0

    def append(self, process, type_: str, f: str, value, **extra) -> dict:
        event = {"index": self.index, "time": int(round(self.loop.time() * 1e9)), "process": process,
                 "type": type_, "f": f, "value": value}
        event.update(extra)
        self.lines.append(json.dumps(event, separators=(",", ":")))
        self.index += 1
        return event

    def data(self) -> bytes:
        return ("\n".join(self.lines) + "\n").encode() if self.lines else b""


class LogCapture(logging.Handler):
    """Log lines with virtual time and the simulated process that wrote them."""

    def __init__(self, loop: SimLoop):
        super().__init__()
        self.loop = loop
        self.out = io.StringIO()

    def emit(self, record: logging.LogRecord) -> None:
        try:
            proc = PROC.get()
            msg = record.getMessage()
            if record.exc_info:
                msg += "\n" + "".join(logging.Formatter().formatException(record.exc_info))
            self.out.write(f"{self.loop.time():12.6f} {proc.name if proc else '-':8} {record.levelname[0]} "
                           f"{record.name}: {msg}\n")
        except NondeterminismError:
            raise
        except Exception:
            self.handleError(record)


class SimNode:
    def __init__(self, world: "World", index: int):
        self.world = world
        self.node_id = index
        self.name = f"n{index}"
        self.volume_id = f"v{index}"
        self.proc: SimProcess | None = None
        self.agent = None
        self.side = None
        self.incarnation = 0
        self.exits = 0

    @property
    def up(self) -> bool:
        return self.proc is not None and self.proc.alive

    def start(self) -> None:
        if self.up:
            return
        self.incarnation += 1
        self.agent = self.side = None
        self.proc = SimProcess(self.world.loop, self.name, f"{self.name}#{self.incarnation}")
        self.proc.spawn(self._main(self.proc), name=f"main-{self.proc.name}")

    def crash(self) -> None:
        if self.proc is not None:
            self.proc.crash()

    async def _main(self, proc: SimProcess) -> None:
        from reference import broker
        from reference.storage.s3io import ObjectStore
        w = self.world
        args = w.broker_args(self)
        client = SimS3Client(w.bucket, w.loop, w.rngs["s3"], w.s3_faults[self.name], w.s3_timeout, w.s3_latency)
        store = ObjectStore(ENDPOINT, "sim", client=client)
        try:
            agent = await broker.start_cluster_node(args, store=store, volumes=w.volumes)
            self.agent = agent
            self.side = await broker.start_kafka_side(args, agent.engine, agent)
        except (Exception, SystemExit) as e:
            # the process exits; its supervisor starts it again a little later
            log.error("node %s exited: %r; restarting", proc.name, e)
            self.exits += 1
            proc.crash()
            w.harness.call_at(w.loop.time() + w.rngs["sched"].uniform(0.5, 3.0), self.start)


class World:
    def __init__(self, seed: int, options: SimOptions):
        self.seed = seed
        self.o = options
        self.rngs = {name: random.Random(f"highwater-sim/{seed}/{name}") for name in (
            "net", "disk", "volumes", "s3", "ids", "buggify", "config", "faults", "workload", "sched", "exec")}
        self.loop = SimLoop()
        self.net = SimNetwork(self.loop, self.rngs["net"])
        self.loop.network = self.net
        ex = self.rngs["exec"]
        self.loop.handoff = lambda: ex.uniform(5e-6, 100e-6)
        self.disk = SimDisk(self.loop, self.rngs["disk"])
        self.volumes = SimVolumes(self.disk, self.rngs["volumes"])
        self.bucket = SimBucket()
        cfg = self.rngs["config"]
        self.s3_timeout = cfg.choice([2.0, 5.0, 10.0])
        self.s3_latency = cfg.choice([0.002, 0.01, 0.03])
        self.storage_flags = [
            "--wal-capacity", cfg.choice(["256KiB", "1MiB", "4MiB"]),
            "--cache-size", cfg.choice(["1MiB", "4MiB", "16MiB"]),
            "--upload-bytes", cfg.choice(["16KiB", "64KiB", "256KiB"]),
            "--upload-interval", cfg.choice(["500ms", "2s", "10s"]),
            "--block-cache-size", cfg.choice(["64KiB", "1MiB"]),
        ]
        self.nodes = [SimNode(self, i + 1) for i in range(options.nodes)]
        self.s3_faults = {n.name: S3Faults() for n in self.nodes}
        self.skew = {n.name: 0.0 for n in self.nodes}
        self.history = History(self.loop)
        self.harness = SimProcess(self.loop, HARNESS, HARNESS)
        self.buggify = BuggifyPolicy(self.rngs["buggify"], options.buggify)
        # faults while the workload runs; after the last heal the workload goes
        # on for a tail long enough to show the cluster recovered (an ok send
        # after every heal): detection, a failover's volume moves, reopening
        self.schedule = options.schedule if options.schedule is not None else F.generate(
            self.rngs["faults"], options.faults, [n.name for n in self.nodes], 1.0, max(1.0, options.sim_time - 1.0),
            options.interval)
        self.tail = 3 * options.session_timeout + 6 * 1.5 * self.volumes.attach_latency + 5.0
        self.workers: list[Worker] = []
        self.stopping = False
        self.fault_ids = 0
        self.notes: list[str] = []

    # -- configuration ---------------------------------------------------------------
    def broker_args(self, node: SimNode):
        import argparse
        from reference import broker
        parser = argparse.ArgumentParser()
        broker.add_arguments(parser)
        return parser.parse_args([
            "--node-id", str(node.node_id), "--listen", f"{node.name}:{KAFKA_PORT}",
            "--rpc-listen", f"{node.name}:{RPC_PORT}", "--volume", self.disk.mount_point(node.volume_id, node.name),
            "--volume-id", node.volume_id, "--node-name", node.name,
            "--s3-endpoint", ENDPOINT, "--bucket", "sim",
            "--session-timeout", f"{self.o.session_timeout}s", "--heartbeat-interval", f"{self.o.heartbeat_interval}s",
            "--default-partitions", "2", *self.storage_flags])

    # -- clocks and ids --------------------------------------------------------------
    def monotonic(self) -> float:
        return 10_000.0 + self.loop.time()

    def wall(self) -> float:
        proc = PROC.get()
        skew = self.skew.get(proc.node, 0.0) if proc is not None else 0.0
        return WALL_EPOCH + self.loop.time() + skew

    def uuid4(self) -> uuid.UUID:
        return uuid.UUID(int=self.rngs["ids"].getrandbits(128), version=4)

    # -- the run ---------------------------------------------------------------------
    def run(self) -> SimResult:
        from reference import bugs, buggify, clock, ids
        from reference.storage import disk
        real_start = _time.perf_counter()
        capture = LogCapture(self.loop)
        capture.setLevel(getattr(logging, self.o.log_level.upper(), logging.INFO))
        root = logging.getLogger()
        saved_level, saved_handlers = root.level, root.handlers[:]
        root.handlers = [capture]
        root.setLevel(capture.level)
        clock.install(self.monotonic, self.wall)
        ids.install(self.uuid4)
        disk.install(self.disk)
        buggify.install(self.buggify)
        bugs.disable_all()
        error = None
        guard = Guard(self.wall)
        try:
            if self.o.bug:
                bugs.enable([self.o.bug])
            asyncio.set_event_loop(self.loop)
            with guard:
                main = self.harness.spawn(self._main(), name="harness")
                try:
                    self.loop.run_until_complete(main)
                except SimDeadlock as e:
                    error = f"simulation deadlock: {e}"
                except SimLivelock as e:
                    error = f"simulation livelock: {e}"
                except NondeterminismError as e:
                    error = str(e)
                except Exception as e:   # the harness side gave up (e.g. the cluster never came up)
                    error = f"{type(e).__name__}: {e}"
                finally:
                    root.handlers = [logging.NullHandler()]   # what closing the leftovers says is no part of the run
                    self.loop.bury()
            if guard.violations:   # first: whatever else went wrong may be its consequence
                error = "nondeterminism: " + guard.violations[0] + (f"\n(then: {error})" if error else "")
        finally:
            asyncio.set_event_loop(None)
            self.loop.close()
            bugs.disable_all()
            buggify.restore()
            disk.restore()
            ids.restore()
            clock.restore()
            root.handlers = saved_handlers
            root.setLevel(saved_level)
        real = _time.perf_counter() - real_start
        history = self.history.data()
        results = {}
        valid, anomalies = "unknown", []
        if error is None and self.o.check:
            results = self.check(history)
            valid = results.get("valid")
            anomalies = [a for a in results.get("anomaly_types", []) if a not in results.get("allowed", [])]
        elif error is not None:
            results = {"valid": "unknown", "error": error}
        stats = {"sim_seconds": round(self.loop.time(), 3), "real_seconds": round(real, 3),
                 "steps": self.loop.steps, "events": self.history.index,
                 "s3_puts": self.bucket.puts, "s3_gets": self.bucket.gets, "net_connects": self.net.connects,
                 "detaches": self.volumes.detaches, "buggify": dict(sorted(self.buggify.fired.items())),
                 "restarts": {n.name: n.incarnation - 1 for n in self.nodes}}
        return SimResult(self.seed, valid, anomalies, history, capture.out.getvalue().encode(), self.schedule,
                         results, stats, error)

    def check(self, history: bytes) -> dict:
        from checkers import check_history
        from checkers.history import parse_bytes
        h = parse_bytes(history, source=f"sim seed {self.seed}")
        return check_history(h, checkers=("kafka", "recovery"),
                             options={"recovery_bound_s": None, "require_activity": True, "parallel": False})

    async def _main(self) -> None:
        o = self.o
        for n in self.nodes:
            self.disk.create(n.volume_id)
            self.disk.attach(n.volume_id, n.name)
        for n in self.nodes:
            n.start()
        bootstrap = [(n.name, KAFKA_PORT) for n in self.nodes]
        rng = self.rngs["workload"]
        expected_sends = o.rate * o.sim_time * 0.5
        pool = o.keys + int(expected_sends / o.max_writes_per_key) + 2
        await self._create_topics(bootstrap, [str(k) for k in range(pool)])
        generator = QueueGenerator(rng, o.keys, o.max_writes_per_key)
        self.workers = [Worker(self, i, bootstrap, generator) for i in range(o.concurrency)]
        start = self.loop.time()
        tasks = [w.proc.spawn(w.loop(o.rate / o.concurrency), name=f"worker-{w.slot}") for w in self.workers]
        nemesis = self.harness.spawn(self._nemesis(start), name="nemesis")
        last_heal = max([f["at"] + f["for"] for f in self.schedule], default=0.0)
        await asyncio.sleep(max(o.sim_time, last_heal) + self.tail)
        self.stopping = True
        await asyncio.wait(tasks, timeout=o.request_timeout * 4 + 5)
        nemesis.cancel()
        await self._heal_all()
        self.buggify.enabled = False   # the final reads run on a healed, quiet cluster (as FoundationDB's checks do)
        await asyncio.sleep(o.recovery_wait)
        targets = self._max_offsets()
        keys = sorted(generator.written_keys, key=int)
        deadline = self.loop.time() + o.final_time_limit
        finals = [w.proc.spawn(w.final_polls(keys, targets, deadline)) for w in self.workers]
        await asyncio.wait(finals, timeout=o.final_time_limit + o.request_timeout * 4 + 5)
        for w in self.workers:
            w.crash()

    async def _create_topics(self, bootstrap, keys) -> None:
        topics = sorted({key_topic_partition(k)[0] for k in keys})
        admin = SimKafkaClient(bootstrap, "admin", self.o.request_timeout)
        for attempt in range(200):
            try:
                await admin.create_topics(topics)
                admin.close()
                return
            except (ConnectionError, OSError, asyncio.TimeoutError) as e:
                if attempt % 20 == 19:
                    log.info("creating topics: %r; retrying", e)
                await asyncio.sleep(0.5)
        admin.close()
        raise RuntimeError("the cluster never accepted CreateTopics")

    # -- the nemesis -------------------------------------------------------------------
    async def _nemesis(self, start: float) -> None:
        self.active: list = []
        for fault in self.schedule:
            at = start + fault["at"]
            if at > self.loop.time():
                await asyncio.sleep(at - self.loop.time())
            self.fault_ids += 1
            value = {"fault": fault["fault"], "id": self.fault_ids, "targets": list(fault["targets"]),
                     **fault.get("params", {})}
            self.history.append("nemesis", "invoke", f"start-{fault['fault']}", value)
            self.active.append((fault, value))
            await self._inject(fault)
            self.history.append("nemesis", "info", f"start-{fault['fault']}", value)
            if fault["for"] > 0:
                await asyncio.sleep(fault["for"])
            await self._heal_one(fault, value)

    async def _heal_one(self, fault, value) -> None:
        if (fault, value) not in self.active:
            return
        self.active.remove((fault, value))
        self.history.append("nemesis", "invoke", f"stop-{fault['fault']}", value)
        await self._heal(fault)
        self.history.append("nemesis", "info", f"stop-{fault['fault']}", value)

    async def _heal_all(self) -> None:
        for fault, value in list(getattr(self, "active", [])):
            await self._heal_one(fault, value)

    def _node(self, name: str) -> SimNode:
        return next(n for n in self.nodes if n.name == name)

    async def _inject(self, fault: dict) -> None:
        kind, p = fault["fault"], fault.get("params", {})
        targets = [self._node(t) for t in fault["targets"] if any(n.name == t for n in self.nodes)]
        if kind in ("kill", "lose-unsynced"):
            for n in targets:
                n.crash()
                if kind == "lose-unsynced":
                    lost = self.disk.lose_unsynced(n.name)
                    log.info("nemesis: %s lost its page cache: %s", n.name, lost)
        elif kind == "pause":
            for n in targets:
                if n.proc is not None:
                    n.proc.pause()
        elif kind == "partition":
            self._partition(targets, p.get("shape", "isolate"))
        elif kind == "detach":
            for n in targets:
                self.disk.detach(n.volume_id, n.name)
        elif kind == "disk-slow":
            for n in targets:
                self.disk.volumes[n.volume_id].slow = p.get("delay_s", 0.5)
        elif kind == "disk-error":
            for n in targets:
                self.disk.volumes[n.volume_id].error_rate = p.get("rate", 0.3)
        elif kind.startswith("s3-"):
            for n in targets:
                f = self.s3_faults[n.name]
                if kind == "s3-slow":
                    f.latency = p.get("delay_s", 1.0)
                else:
                    setattr(f, {"s3-error": "error_rate", "s3-reset": "reset_rate", "s3-hang": "hang_rate",
                                "s3-ambiguous": "ambiguous_rate"}[kind], p.get("rate", 0.3))
        elif kind == "clock":
            for n in targets:
                self.skew[n.name] = p.get("skew_s", 30.0)
        elif kind == "net-slow":
            for n in targets:
                self.net.slow[n.name] = p.get("delay_s", 0.1)
        elif kind == "reassign":
            await self._reassign(p.get("moves", 1))

    async def _heal(self, fault: dict) -> None:
        kind = fault["fault"]
        targets = [self._node(t) for t in fault["targets"] if any(n.name == t for n in self.nodes)]
        if kind in ("kill", "lose-unsynced"):
            for n in targets:
                n.start()
        elif kind == "pause":
            for n in targets:
                if n.proc is not None:
                    n.proc.resume()
        elif kind == "partition":
            self.net.heal()
        elif kind == "detach":
            for n in targets:
                if self.disk.volumes[n.volume_id].attached is None:
                    self.disk.attach(n.volume_id, n.name)
        elif kind == "disk-slow":
            for n in targets:
                self.disk.volumes[n.volume_id].slow = 0.0
        elif kind == "disk-error":
            for n in targets:
                self.disk.volumes[n.volume_id].error_rate = 0.0
        elif kind.startswith("s3-"):
            for n in targets:
                self.s3_faults[n.name].__init__()
        elif kind == "clock":
            for n in targets:
                self.skew[n.name] = 0.0
        elif kind == "net-slow":
            for n in targets:
                self.net.slow[n.name] = 0.0

    def _partition(self, targets: list[SimNode], shape: str) -> None:
        names = [n.name for n in self.nodes]
        clients = [w.machine for w in self.workers]
        for t in targets:
            if shape == "clients":
                for c in clients:
                    self.net.partition(t.name, c)
            elif shape == "split":
                rng = self.rngs["sched"]
                others = [x for x in names if x != t.name]
                side = {t.name} | set(rng.sample(others, max(0, (len(names) - 1) // 2 - 1)))
                for a in sorted(side):
                    for b in names:
                        if b not in side:
                            self.net.partition(a, b)
            else:
                for b in names + clients:
                    if b != t.name:
                        self.net.partition(t.name, b)

    async def _reassign(self, moves: int) -> None:
        from reference.cluster import rpc as R
        from reference.cluster.lease import LEASE_KEY, Lease
        cur = self.bucket.objects.get(LEASE_KEY)
        if cur is None:
            return
        lease = Lease.from_body(cur[0], cur[1])
        live = [n.node_id for n in self.nodes if n.up]
        if not live:
            return
        rng = self.rngs["sched"]
        plan = []
        for _ in range(moves):
            k = str(rng.randrange(max(1, self.o.keys * 2)))
            t, p = key_topic_partition(k)
            plan.append([t, p, rng.choice(live)])
        address = lease.rpc
        for _ in range(3):   # the lease may name a node that is not (or no longer) the controller: follow its hint
            client = R.RpcClient(address, connect_timeout=1.0)
            try:
                r = await client.call("reassign", {"moves": plan}, 30.0)
                log.info("nemesis: reassign %s: %s", plan, r)
                return
            except R.RpcError as e:
                log.info("nemesis: reassign %s at %s: %r", plan, address, e)
                if e.code != R.NOT_CONTROLLER or not e.message or e.message == address:
                    return
                address = e.message
            except Exception as e:
                log.info("nemesis: reassign %s at %s failed: %r", plan, address, e)
                return
            finally:
                await client.close()

    def _max_offsets(self) -> dict[str, int]:
        return max_offsets(self.history.lines)


class Worker:
    """One logical client (Jepsen's worker), on its own client machine."""

    def __init__(self, world: World, slot: int, bootstrap, generator: QueueGenerator):
        self.world = world
        self.slot = slot
        self.process = slot
        self.machine = f"c{slot}"
        self.proc = SimProcess(world.loop, self.machine, self.machine)
        self.bootstrap = bootstrap
        self.generator = generator
        self.client: SimKafkaClient | None = None
        self.key_generation = -1

    def new_client(self) -> SimKafkaClient:
        return SimKafkaClient(self.bootstrap, f"worker-{self.slot}-{self.process}", self.world.o.request_timeout)

    def crash(self) -> None:
        if self.client is not None:
            self.client.close()
        self.client = None
        self.process += self.world.o.concurrency

    async def invoke_assign(self, keys, seek_to_beginning=False) -> bool:
        h = self.world.history
        extra = {"seek_to_beginning": True} if seek_to_beginning else {}
        h.append(self.process, "invoke", "assign", keys, **extra)
        self.client.assign(keys, seek_to_beginning=seek_to_beginning)
        h.append(self.process, "ok", "assign", keys, **extra)
        return True

    async def step(self) -> None:
        h = self.world.history
        if self.client is None:
            self.client = self.new_client()
            self.key_generation = -1
        generation, keys = self.generator.assignment()
        if generation != self.key_generation:
            if await self.invoke_assign(keys):
                self.key_generation = generation
            return
        op = self.generator.next_op()
        h.append(self.process, "invoke", op.f, op.value)
        try:
            if op.f == "send":
                type_, value = await self.client.send(op.value)
            else:
                type_, value = await self.client.poll()
        except ClientCrashed as e:
            h.append(self.process, "info", op.f, self._indeterminate(op), error=str(e))
            self.crash()
            return
        except (ConnectionError, OSError, asyncio.TimeoutError) as e:
            type_ = "fail" if op.f == "poll" else "info"
            h.append(self.process, type_, op.f, self._indeterminate(op), error=repr(e))
            self.crash()
            return
        h.append(self.process, type_, op.f, value)

    @staticmethod
    def _indeterminate(op) -> list:
        if op.f == "send":
            return [["send", k, [None, v]] for _, k, v in op.value]
        return op.value

    async def loop(self, rate: float) -> None:
        rng = self.world.rngs["workload"]
        while not self.world.stopping:
            await self.step()
            if rate > 0:
                await asyncio.sleep(rng.expovariate(rate))

    async def final_polls(self, keys, targets, deadline) -> None:
        w = self.world
        self.crash()
        self.client = self.new_client()
        await self.invoke_assign(keys, seek_to_beginning=True)
        reached: dict[str, int] = {}
        while w.loop.time() < deadline:
            w.history.append(self.process, "invoke", "poll", [["poll"]])
            try:
                type_, value = await self.client.poll()
            except (ConnectionError, OSError, asyncio.TimeoutError) as e:
                w.history.append(self.process, "fail", "poll", [["poll"]], error=repr(e))
                await asyncio.sleep(0.1)
                continue
            read = [k for k, pairs in value[0][1].items() if pairs]
            to_end = self.client.read_to_end(read) if read else []
            w.history.append(self.process, type_, "poll", value,
                             **({"to_end": sorted(to_end, key=int)} if to_end else {}))
            for key, pairs in value[0][1].items():
                if pairs:
                    reached[key] = max(reached.get(key, -1), max(o for o, _ in pairs))
            if all(reached.get(k, -1) >= off for k, off in targets.items()):
                return
            if not read:
                await asyncio.sleep(0.05)


def run_seed(seed: int, options: SimOptions | None = None) -> SimResult:
    return World(seed, options or SimOptions()).run()
