"""The simulator's event loop: asyncio with virtual time, simulated
processes, and executors that run inline.

- Time: `loop.time()` is virtual. When nothing is ready, the clock jumps to
  the next timer; it never waits for real time. (looptime does the same for
  tests; here the loop owns the clock outright.)
- Processes: every simulated process (a broker incarnation, a client) has
  a `SimProcess` carried in a context variable, so every callback and task it
  schedules is tagged with it. A paused process's callbacks are held back
  until it resumes (SIGSTOP); a crashed one's are dropped for good (SIGKILL:
  no `finally` block runs, nothing more is scheduled). Its tasks are kept
  referenced, so that their coroutines are not closed by the garbage
  collector mid-run (which would run their `finally` blocks); they are
  closed, silently, when the run ends.
- Executors: `run_in_executor` runs the function inline, on the loop, inside
  an `ExecutorJob` that simulated disks and S3 charge latency to; the caller
  sees the result once that latency has passed. Each executor keeps its
  thread count (a one-thread WAL executor still serialises its jobs). Work
  whose durability depends on the call returning (an fsync) is committed
  only when the job completes, so a crash in between loses it as a real one
  would.
- The network: `create_server` / `create_connection` go to the simulated
  network (`net.SimNetwork`), so asyncio streams (the Kafka server, the
  cluster RPC) run unchanged over simulated connections.

Order: asyncio runs ready callbacks in the order they were scheduled and
timers by time (ties in scheduling order); nothing here depends on real time
or on thread scheduling, so a run is a function of its seed.
"""
from __future__ import annotations

import asyncio
import collections
import contextvars
import heapq
import itertools
import logging

log = logging.getLogger("highwater.sim")

PROC: contextvars.ContextVar = contextvars.ContextVar("highwater_sim_process", default=None)

RUNNING, PAUSED, DEAD = "running", "paused", "dead"


class SimDeadlock(RuntimeError):
    """Nothing is ready and no timer is pending: the simulation cannot go on."""


class SimLivelock(RuntimeError):
    """Callbacks keep running while virtual time stands still (a busy loop)."""


class SimProcess:
    """One simulated OS process on a simulated machine (`node`): a broker
    incarnation, or a client. Its callbacks run only while it is running."""

    def __init__(self, loop: "SimLoop", node: str, name: str):
        self.loop = loop
        self.node = node              # the machine: network address, disk mounts, wall clock
        self.name = name              # for logs: n1#2, c3
        self.pid = next(loop._pids)   # numbered per run: a run's numbers never depend on earlier runs
        self.state = RUNNING
        self.held: list = []          # callbacks that came due while paused
        self.context = contextvars.Context()
        self.context.run(PROC.set, self)
        self.on_crash: list = []      # called when it crashes (sockets closed, locks released)

    def spawn(self, coro, name: str | None = None) -> asyncio.Task:
        """Start a task inside this process."""
        return self.loop.create_task(coro, name=name, context=self.context)

    def call_soon(self, fn, *args):
        return self.loop.call_soon(fn, *args, context=self.context)

    def call_at(self, when: float, fn, *args):
        return self.loop.call_at(when, fn, *args, context=self.context)

    @property
    def alive(self) -> bool:
        return self.state != DEAD

    def pause(self) -> None:
        if self.state == RUNNING:
            self.state = PAUSED

    def resume(self) -> None:
        if self.state == PAUSED:
            self.state = RUNNING
            held, self.held = self.held, []
            self.loop._ready.extend(held)

    def crash(self) -> None:
        """SIGKILL: nothing of it runs again."""
        if self.state == DEAD:
            return
        self.state = DEAD
        self.held = []
        # its tasks, kept referenced: dropped, they would be closed by the garbage
        # collector at some arbitrary later moment, running their finally blocks
        self.loop.graveyard.extend(t for t in asyncio.all_tasks(self.loop) if getattr(t, "_sim_proc", None) is self)
        for fn in self.on_crash:
            fn()
        self.on_crash = []

    def __repr__(self) -> str:
        return f"<SimProcess {self.name} {self.state}>"


class SimTask(asyncio.Task):
    """A task whose hash is its creation number, not its address, so that
    sets of tasks iterate in the same order in every run."""

    def __init__(self, coro, *, loop, **kwargs):
        self._sim_proc = None
        self._sim_number = next(loop._task_numbers)   # before __init__: it adds the task to a weak set
        super().__init__(coro, loop=loop, **kwargs)

    def __hash__(self) -> int:
        return self._sim_number


class ExecutorJob:
    """One blocking call running inline. Simulated devices charge it latency
    (`charge`) and register work that completes only when it returns
    (`on_return`: e.g. an fsync making writes durable)."""

    __slots__ = ("latency", "on_return", "process")

    def __init__(self, process):
        self.latency = 0.0
        self.on_return: list = []
        self.process = process

    def charge(self, seconds: float) -> None:
        self.latency += seconds


class _Slots:
    """An executor's threads, as a counting semaphore over virtual time."""

    def __init__(self, n: int):
        self.free = n
        self.waiters: collections.deque = collections.deque()


class SimLoop(asyncio.BaseEventLoop):
    def __init__(self, network=None, handoff=None):
        super().__init__()
        self._now = 0.0
        self._clock_resolution = 1e-9
        self.network = network
        self.handoff = handoff or (lambda: 0.0)   # seconds a job waits for its thread to pick it up
        self.graveyard: list = []
        self.current_job: ExecutorJob | None = None
        self._slots: dict[tuple, _Slots] = {}
        self._executors: dict[tuple, object] = {}   # keep executors alive while their id is a key
        self.steps = 0
        self._burying = False
        self._task_names = 0
        self._last_now = -1.0
        self._still = 0
        self._task_numbers = itertools.count()
        self._pids = itertools.count(1)

    # -- the clock ---------------------------------------------------------
    def time(self) -> float:
        return self._now

    # -- the scheduler -----------------------------------------------------
    def _process_events(self, event_list) -> None:  # no selector: nothing to process
        pass

    def _write_to_self(self) -> None:
        pass

    def _run_once(self) -> None:
        sched = self._scheduled
        if self._timer_cancelled_count:
            while sched and sched[0]._cancelled:
                self._timer_cancelled_count -= 1
                heapq.heappop(sched)._scheduled = False
            if len(sched) > 512 and self._timer_cancelled_count * 2 > len(sched):
                live = [h for h in sched if not h._cancelled]
                for h in sched:
                    if h._cancelled:
                        h._scheduled = False
                heapq.heapify(live)
                self._scheduled = sched = live
                self._timer_cancelled_count = 0
        ready = self._ready
        if not ready and not self._stopping:
            if not sched:
                raise SimDeadlock("no callback is ready and no timer is pending")
            when = sched[0]._when
            if when > self._now:
                self._now = when       # nothing to do until then: jump
        # a timer fires when its time has come, not a little before: a loop that
        # waits out "the rest" of a deadline would otherwise spin for ever with
        # the clock standing still (real time always moves on)
        end = self._now
        pop = heapq.heappop
        while sched and sched[0]._when <= end:
            h = pop(sched)
            h._scheduled = False
            ready.append(h)
        popleft = ready.popleft
        steps = 0
        for _ in range(len(ready)):
            h = popleft()
            if h._cancelled:
                continue
            proc = h._context.get(PROC)
            if proc is not None and proc.state is not RUNNING:
                if proc.state is PAUSED:
                    proc.held.append(h)
                continue            # dead: dropped
            steps += 1
            h._run()
        self.steps += steps
        if end == self._last_now:
            self._still += steps
            if self._still > 1_000_000:
                raise SimLivelock(f"a million callbacks ran with the virtual clock standing at {end:.6f}: "
                                  f"something spins without waiting")
        else:
            self._last_now, self._still = end, 0

    # -- tasks ---------------------------------------------------------------
    def create_task(self, coro, *, name=None, context=None):
        self._check_closed()
        if self._burying:   # a finally block closing at the end of the run: nothing more runs
            coro.close()
            dead = self.create_future()
            dead.cancel()
            return dead
        if name is None:   # asyncio's default names count across runs; these count within one
            self._task_names += 1
            name = f"Task-{self._task_names}"
        task = SimTask(coro, loop=self, name=name, context=context)
        proc = PROC.get() if context is None else context.get(PROC)
        task._sim_proc = proc
        if proc is not None and proc.state == DEAD:
            self.graveyard.append(task)
        return task

    # -- executors -------------------------------------------------------------
    def run_in_executor(self, executor, func, *args):
        self._check_closed()
        fut = self.create_future()
        # per process: a module-level executor is one per OS process in reality,
        # and a crashed process's threads must not hold up anyone else's jobs
        proc = PROC.get()
        key = (id(executor), proc.pid if proc is not None else 0)
        slots = self._slots.get(key)
        if slots is None:
            n = getattr(executor, "_max_workers", None) or 8
            slots = self._slots[key] = _Slots(n)
            self._executors[key] = executor

        self.create_task(self._job(slots, fut, func, args))
        return fut

    async def _job(self, slots: _Slots, fut: asyncio.Future, func, args) -> None:
        if slots.free > 0 and not slots.waiters:
            slots.free -= 1
        else:
            turn = self.create_future()
            slots.waiters.append(turn)
            await turn
        try:
            handoff = self.handoff()
            if handoff > 0:
                await asyncio.sleep(handoff)
            job = ExecutorJob(PROC.get())
            outer, self.current_job = self.current_job, job
            try:
                result, error = func(*args), None
            except BaseException as e:  # noqa: B036 - passed on to the caller, as a thread would
                result, error = None, e
            finally:
                self.current_job = outer
            if job.latency > 0:
                await asyncio.sleep(job.latency)
            for done in job.on_return:
                done()
            if fut.cancelled():
                return
            if error is not None:
                fut.set_exception(error)
            else:
                fut.set_result(result)
        finally:
            # hand the thread to the next job (also when this one's process died:
            # then nothing of it runs any more, and neither do its waiters')
            while slots.waiters:
                turn = slots.waiters.popleft()
                if not turn.done():
                    turn.set_result(None)
                    break
            else:
                slots.free += 1

    def charge(self, seconds: float) -> None:
        """Latency for the blocking call running now (if any)."""
        job = self.current_job
        if job is not None:
            job.charge(seconds)

    def on_return(self, fn) -> bool:
        """Run fn when the blocking call running now returns to its caller;
        False (and nothing registered) when no call is running."""
        job = self.current_job
        if job is None:
            return False
        job.on_return.append(fn)
        return True

    # -- the network -----------------------------------------------------------
    async def create_server(self, protocol_factory, host=None, port=None, **kwargs):
        return self.network.listen(PROC.get(), protocol_factory, host, port)

    async def create_connection(self, protocol_factory, host=None, port=None, **kwargs):
        return await self.network.connect(PROC.get(), protocol_factory, host, port)

    async def getaddrinfo(self, *args, **kwargs):
        raise OSError("no name resolution in the simulation")

    # -- the end ---------------------------------------------------------------
    def bury(self) -> None:
        """Close every coroutine left (dead processes', and all still
        pending at the end of a run) without running anything on the loop."""
        self._burying = True
        pending = list(self.graveyard)
        self.graveyard = []
        pending += [t for t in asyncio.all_tasks(self) if not t.done()]
        for task in pending:
            coro = task.get_coro()
            try:
                coro.close()
            except BaseException:  # noqa: B036 - a finally that awaited: nothing to do about it
                pass
            # the task itself stays pending; mark it so asyncio does not log it as destroyed pending
            task._log_destroy_pending = False
        self._ready.clear()
        self._scheduled.clear()
