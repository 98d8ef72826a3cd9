"""The deterministic simulator (harness/sim): the whole reference cluster in
one process, replayed bit for bit from its seed."""
from __future__ import annotations

import asyncio
import errno
import os
import random
import socket
import subprocess
import sys
import time
import uuid
from dataclasses import replace
from pathlib import Path

import pytest

from harness.sim.disk import SimDisk, SimVolumes
from harness.sim.guard import Guard, NondeterminismError
from harness.sim.loop import SimLoop, SimProcess
from harness.sim.net import SimNetwork
from harness.sim.world import SimOptions, run_seed

ROOT = Path(__file__).resolve().parent.parent
SHORT = SimOptions(sim_time=16.0, final_time_limit=15.0, log_level="INFO", interval=2.0)


# --- determinism ---------------------------------------------------------------

@pytest.mark.timeout(120)
def test_two_runs_of_a_seed_give_the_same_history_and_log_byte_for_byte():
    a = run_seed(11, SHORT)
    b = run_seed(11, SHORT)
    assert a.error is None and a.history and a.log
    assert a.history == b.history
    assert a.log == b.log
    assert a.schedule == b.schedule and a.schedule, "faults were injected"
    other = run_seed(12, SHORT)
    assert other.history != a.history      # the seed matters


@pytest.mark.timeout(180)
def test_a_seed_replays_byte_for_byte_in_another_process(tmp_path):
    """The CLI pins PYTHONHASHSEED and prints the digest of history + log;
    another process, started afresh, must print the same."""
    def digest():
        out = subprocess.run([sys.executable, "-m", "harness.cli", "sim", "--seed", "5", "--sim-time", "12s",
                              "--store", str(tmp_path)], cwd=ROOT, capture_output=True, text=True, timeout=150)
        assert out.returncode in (0, 3), out.stdout + out.stderr
        line = next(l for l in out.stdout.splitlines() if l.startswith("seed"))
        return line.split("digest")[1].strip()
    first, second = digest(), digest()
    assert first == second and len(first) == 12
    env = dict(os.environ, PYTHONHASHSEED="0")
    code = ("from harness.sim.world import run_seed, SimOptions;"
            "print(run_seed(5, SimOptions(sim_time=12.0, log_level='WARNING')).digest[:12])")
    here = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=150,
                          env=env)
    assert here.stdout.strip() == first, here.stderr[-2000:]


# --- the guard ---------------------------------------------------------------------

def test_guard_refuses_wall_clock_os_randomness_sockets_and_threads():
    import logging
    with Guard(lambda: 123.0) as guard:
        for call in (time.time, time.monotonic, time.perf_counter, lambda: os.urandom(4), random.random,
                     lambda: random.choice([1, 2]), lambda: random.Random(), uuid.uuid4,
                     lambda: socket.socket(), lambda: __import__("threading").Thread(target=print).start()):
            with pytest.raises(NondeterminismError):
                call()
        random.Random(7).random()                       # a seeded generator is fine
        record = logging.LogRecord("x", logging.INFO, __file__, 1, "m", None, None)
        assert record.created == 123.0                  # logging gets virtual time
    assert len(guard.violations) == 10
    time.time(), os.urandom(1), random.random()         # restored


@pytest.mark.timeout(120)
@pytest.mark.parametrize("leak", ["clock", "uuid"])
def test_a_simulated_run_that_reads_the_os_fails(monkeypatch, leak):
    """Reference code that bypasses the seams (reads the OS clock, draws a
    uuid from os.urandom) makes the run fail, naming the call."""
    if leak == "clock":
        import reference.protocol.handlers.fetch as fetch
        monkeypatch.setattr(fetch, "clock", time)       # fetch.handle now calls time.monotonic()
        expected = "time.monotonic()"
    else:
        import reference.storage.engine as engine
        monkeypatch.setattr(engine, "ids", uuid)        # create_topic now calls uuid.uuid4()
        expected = "os.urandom()"
    r = run_seed(3, replace(SHORT, faults=[]))
    assert r.error is not None and expected in r.error
    assert r.valid == "unknown"


# --- finding bugs, shrinking ------------------------------------------------------------

@pytest.mark.timeout(240)
def test_the_simulator_finds_a_planted_bug_and_shrinks_its_schedule():
    from harness.sim.shrink import Shrinker
    options = SimOptions(sim_time=20.0, bug="skip-wal-replay")
    for seed in range(1, 30):
        r = run_seed(seed, options)
        if r.valid is False:
            break
    else:
        pytest.fail("skip-wal-replay not found in 29 seeds")
    assert set(r.anomalies) & {"lost-write", "inconsistent-offsets", "unseen"}, r.anomalies
    again = run_seed(seed, options)
    assert again.digest == r.digest
    shrinker = Shrinker(seed, replace(options, schedule=r.schedule), r.anomalies, run_seed, budget=12)
    small, buggify = shrinker.shrink(r.schedule)
    assert len(small) <= len(r.schedule)
    confirm = run_seed(seed, replace(options, schedule=small, buggify=buggify))
    assert confirm.valid is False and set(confirm.anomalies) & set(r.anomalies)
    clean = run_seed(seed, replace(options, bug=None))
    assert clean.valid is True, (clean.anomalies, clean.results.get("checkers", {}).get("workload"))


# --- the simulated edges -------------------------------------------------------------------

def _sim(rng_seed=1):
    loop = SimLoop()
    net = SimNetwork(loop, random.Random(rng_seed))
    loop.network = net
    return loop, net


def test_virtual_time_jumps_and_paused_processes_wait():
    loop, _ = _sim()
    events = []
    a = SimProcess(loop, "m1", "a")
    b = SimProcess(loop, "m2", "b")

    async def tick(name):
        for _ in range(3):
            await asyncio.sleep(10)
            events.append((name, loop.time()))

    async def main():
        ta, tb = a.spawn(tick("a")), b.spawn(tick("b"))
        await asyncio.sleep(15)
        b.pause()
        await asyncio.sleep(30)
        b.resume()
        await asyncio.gather(ta, tb)

    started = time.perf_counter()
    loop.run_until_complete(SimProcess(loop, "h", "h").spawn(main()))
    assert time.perf_counter() - started < 1.0          # 45 virtual seconds, no waiting
    assert ("a", 30.0) in events and ("b", 10.0) in events
    assert [t for n, t in events if n == "b"][1:] == [45.0, 55.0]   # held while paused, then on


def test_network_partition_holds_bytes_until_heal_and_a_crash_closes_connections():
    loop, net = _sim()
    server_proc, client_proc, harness = (SimProcess(loop, "s", "s"), SimProcess(loop, "c", "c"),
                                         SimProcess(loop, "h", "h"))
    got = []

    async def serve(reader, writer):
        while data := await reader.read(100):
            got.append((data, loop.time()))
            writer.write(data.upper())

    async def main():
        await server_proc.spawn(asyncio.start_server(serve, "s", 1))

        async def client():
            reader, writer = await asyncio.open_connection("s", 1)
            writer.write(b"one")
            assert await reader.read(10) == b"ONE"
            net.partition("c", "s")
            writer.write(b"two")
            return reader, writer
        reader, writer = await client_proc.spawn(client())
        await asyncio.sleep(5)
        assert [d for d, _ in got] == [b"one"]            # held by the partition
        net.heal()
        await asyncio.sleep(1)
        assert [d for d, _ in got] == [b"one", b"two"] and got[1][1] >= 5
        server_proc.crash()

        async def after():
            assert await reader.read(10) == b"TWO"
            assert await reader.read(10) == b""           # the dead process's kernel closed it
            with pytest.raises(ConnectionRefusedError):
                await asyncio.open_connection("s", 1)     # nothing listens there any more
        await client_proc.spawn(after())
    loop.run_until_complete(harness.spawn(main()))


def test_disk_fsync_is_durable_only_when_it_returns_and_power_loss_drops_the_rest():
    loop, _ = _sim()
    disk = SimDisk(loop, random.Random(3))
    volumes = SimVolumes(disk, random.Random(4))
    disk.create("v1")
    node = SimProcess(loop, "n1", "n1")
    harness = SimProcess(loop, "h", "h")
    path = "/sim/mnt/n1/v1/wal"

    async def work():
        fd = await loop.run_in_executor(None, disk.open, path, os.O_RDWR | os.O_CREAT)
        await loop.run_in_executor(None, lambda: (disk.pwrite(fd, b"A" * 4096, 0), disk.fsync(fd)))
        await loop.run_in_executor(None, disk.fsync_directory, "/sim/mnt/n1/v1")
        await loop.run_in_executor(None, disk.pwrite, fd, b"B" * 4096, 4096)   # never synced
        return fd

    async def main():
        volumes.attach("v1", "n1")
        fd = await node.spawn(work())
        assert disk.volumes["v1"].names["wal"].read(0, 8192) == b"A" * 4096 + b"B" * 4096  # page cache
        node.crash()
        disk.lose_unsynced("n1")
        f = disk.volumes["v1"].names["wal"]
        assert f.read(0, 4096) == b"A" * 4096
        assert f.dirty == {}
        volumes.detach("v1", "n1")
        with pytest.raises(OSError) as e:
            disk.pread(fd, 10, 0)
        assert e.value.errno in (errno.EIO, errno.EBADF)
        volumes.attach("v1", "n2")

        async def elsewhere():
            fd2 = disk.open("/sim/mnt/n2/v1/wal", os.O_RDWR)
            disk.lock_exclusive(fd2)
            fd3 = disk.open("/sim/mnt/n2/v1/wal", os.O_RDWR)
            with pytest.raises(BlockingIOError):
                disk.lock_exclusive(fd3)
            with pytest.raises(OSError):
                disk.open("/sim/mnt/n1/v1/wal", os.O_RDWR)   # not this machine's path
            return disk.pread(fd2, 4, 0)
        assert await SimProcess(loop, "n2", "n2").spawn(elsewhere()) == b"AAAA"
    loop.run_until_complete(harness.spawn(main()))


def test_a_crash_during_a_slow_fsync_loses_the_write_on_power_loss():
    loop, _ = _sim()
    disk = SimDisk(loop, random.Random(5))
    disk.create("v1")
    disk.attach("v1", "n1")
    disk.volumes["v1"].slow = 10.0          # every operation takes 10 virtual seconds more
    node = SimProcess(loop, "n1", "n1")

    async def work():
        fd = await loop.run_in_executor(None, disk.open, "/sim/mnt/n1/v1/f", os.O_RDWR | os.O_CREAT)
        await loop.run_in_executor(None, lambda: (disk.pwrite(fd, b"C" * 4096, 0), disk.fsync(fd)))

    async def main():
        node.spawn(work())
        await asyncio.sleep(15)              # open returned; the fsync is still running
        node.crash()
        f = disk.volumes["v1"].names["f"]
        assert f.dirty and not f.blocks      # written, never made durable
        disk.rng = random.Random(1)          # a generator that drops the block (no tearing)
        disk.rng.random = lambda: 0.9
        disk.lose_unsynced("n1")
        assert "f" not in disk.volumes["v1"].names   # its name was never made durable either
    loop.run_until_complete(SimProcess(loop, "h", "h").spawn(main()))


# --- CI: a few hundred seeds ---------------------------------------------------------------

@pytest.mark.timeout(300)
def test_ci_the_clean_reference_passes_a_few_hundred_simulated_seeds():
    """Every fault the simulator has, BUGGIFY on, 200 seeds of 20 virtual
    seconds each (plus recovery and final reads), in two processes: all
    valid. Deterministic: a failure here replays with the command printed."""
    out = subprocess.run([sys.executable, "-m", "harness.cli", "sim", "--seed", "100000", "--seeds", "200",
                          "--sim-time", "20s", "--jobs", "2", "--quiet", "--keep-going", "--no-shrink",
                          "--store", "/tmp/highwater-sim-ci"],
                         cwd=ROOT, capture_output=True, text=True, timeout=290)
    assert out.returncode == 0, out.stdout[-4000:] + out.stderr[-4000:]
    assert "200 seeds: 200 valid" in out.stdout, out.stdout[-2000:]
