"""The volume faults against a real broker: `python -m reference.broker` on
a FUSE volume, SeaweedFS behind it, kafka-python in front.

The lose-unsynced test is the one that could not exist before: SIGKILL keeps
the page cache, so a broker without its WAL fdatasync passed every kill test.
Here the same run is made twice, once with the real broker (nothing
acknowledged is lost) and once with `os.fdatasync` removed from the broker
process (acknowledged records are lost): the fault tells the two apart."""
from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest

from harness.ports import free_port
from nemeses.volume import BadSectorFault, DetachFault, DiskErrorFault, DiskSlowFault, LoseUnsyncedFault
from reference.volumes.local import force_cleanup, start_service

pytestmark = pytest.mark.skipif(not os.path.exists("/dev/fuse") or shutil.which("fusermount3") is None,
                                reason="needs /dev/fuse and fusermount3 (Debian package fuse3)")

TOPIC = "wal"
RECORDS = 150
# The broker with its WAL's fdatasync removed: the planted bug of this test.
NO_FDATASYNC = ("import os, runpy, sys; os.fdatasync = lambda fd: None; "
                "sys.argv[0] = 'reference.broker'; runpy.run_module('reference.broker', run_name='__main__')")


class FuseBrokerTarget:
    """A one-node target whose broker keeps its WAL on a local FUSE volume:
    the controls the volume nemeses ask for (process and volume), nothing else."""

    name = "fuse-broker"

    def __init__(self, run_dir: Path, vols, s3_endpoint: str, bucket: str, *, fdatasync: bool = True,
                 broker_args: tuple[str, ...] = ()):
        self.run_dir, self.vols = run_dir, vols
        self.s3_endpoint, self.bucket = s3_endpoint, bucket
        self.fdatasync = fdatasync
        self.broker_args = broker_args
        self.port = free_port()
        self.process: subprocess.Popen | None = None
        self.log_path = run_dir / "broker.log"
        vols.create("n1")
        self.volume_path = vols.attach("n1", "n1").path

    node_names = ["n1"]

    @property
    def bootstrap_servers(self) -> str:
        return f"127.0.0.1:{self.port}"

    def unsupported(self, control: str) -> str | None:
        return None if control in ("process", "volume") else f"{self.name} does not offer {control}"

    def volume(self, node: str):
        return self.vols.control("n1", node)

    def start_node(self, node: str) -> None:
        if self.process is not None and self.process.poll() is None:
            return
        launcher = ["-m", "reference.broker"] if self.fdatasync else ["-c", NO_FDATASYNC]
        with open(self.log_path, "ab") as out:
            self.process = subprocess.Popen(
                [sys.executable, *launcher, "--node-id", "1", "--listen", self.bootstrap_servers,
                 "--volume", self.volume_path, "--s3-endpoint", self.s3_endpoint, "--bucket", self.bucket,
                 "--wal-capacity", "8MiB", "--upload-interval", "10m", "--upload-bytes", "256MiB",
                 *self.broker_args],
                stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, start_new_session=True,
                env={**os.environ, "PYTHONUNBUFFERED": "1"})
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"broker exited with {self.process.returncode}: {self.log_tail()}")
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=0.5):
                    return
            except OSError:
                time.sleep(0.05)
        raise RuntimeError(f"broker did not listen within 60 s: {self.log_tail()}")

    def kill_node(self, node: str) -> None:
        if self.process is not None and self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGKILL)
            self.process.wait()

    def died_on_their_own(self) -> dict[str, int]:
        code = self.process.poll() if self.process is not None else None
        return {"n1": code} if code is not None and code >= 0 else {}

    def log_tail(self) -> str:
        return self.log_path.read_text(errors="replace")[-3000:] if self.log_path.exists() else ""

    def teardown(self) -> None:
        self.kill_node("n1")


@pytest.fixture
def volume_service():
    root = Path(tempfile.mkdtemp(prefix="hwv-"))
    handle = start_service(root)
    try:
        yield handle
    finally:
        handle.stop()
        force_cleanup(root)
        shutil.rmtree(root, ignore_errors=True)


def _produce(bootstrap: str, values) -> dict[int, int]:
    """Send each value, one at a time, acks=all; value -> acknowledged offset."""
    from kafka import KafkaProducer
    # a send gives up (delivery timeout) before .get() does, so nothing is pending at close
    producer = KafkaProducer(bootstrap_servers=bootstrap, acks="all", request_timeout_ms=5000, max_block_ms=10000,
                             delivery_timeout_ms=8000)
    try:
        return {v: producer.send(TOPIC, value=str(v).encode(), partition=0).get(20).offset for v in values}
    finally:
        try:
            producer.close(timeout=2)
        except Exception:  # a send still pending on a broker that went away
            pass


def _consume(bootstrap: str) -> dict[int, int]:
    """Every record of the partition: offset -> value."""
    from kafka import KafkaConsumer, TopicPartition
    consumer = KafkaConsumer(bootstrap_servers=bootstrap, group_id=None, enable_auto_commit=False,
                             auto_offset_reset="earliest", request_timeout_ms=15000)
    tp = TopicPartition(TOPIC, 0)
    try:
        consumer.assign([tp])
        consumer.seek_to_beginning(tp)
        end = consumer.end_offsets([tp])[tp]
        got: dict[int, int] = {}
        deadline = time.monotonic() + 30
        while consumer.position(tp) < end and time.monotonic() < deadline:
            for records in consumer.poll(timeout_ms=500).values():
                got.update((r.offset, int(r.value)) for r in records)
        return got
    finally:
        consumer.close()


def _lost(target, acked: dict[int, int]) -> dict[int, int]:
    """Acknowledged values (value -> offset) not read back at their offset."""
    got = _consume(target.bootstrap_servers)
    return {v: off for v, off in acked.items() if got.get(off) != v}


def _assert_nothing_lost(target, acked: dict[int, int]) -> None:
    lost = _lost(target, acked)
    assert not lost, f"{len(lost)} acknowledged records lost: {sorted(lost.items())[:5]}"


def _create_topic(bootstrap: str) -> None:
    from kafka.admin import KafkaAdminClient, NewTopic
    admin = KafkaAdminClient(bootstrap_servers=bootstrap)
    try:
        admin.create_topics([NewTopic(TOPIC, 1, 1)])
    finally:
        admin.close()


def _make_wal_entry_durable(target: FuseBrokerTarget) -> None:
    """The WAL file's name must be durable too. Today's WAL does not fsync its
    directory after creating the file (a storage defect of issue 10, being
    fixed in wal.py), so lose-unsynced would take the whole WAL file away;
    until that lands, the test fsyncs the volume's root once the broker has
    created it. Harmless after the fix."""
    if target.vols.status("n1")["fs"]["pending_entries"]:
        fd = os.open(target.volume_path, os.O_RDONLY | os.O_DIRECTORY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


def _lose_unsynced_run(tmp_path, vols, s3_bucket, *, fdatasync: bool):
    endpoint, bucket = s3_bucket
    target = FuseBrokerTarget(tmp_path, vols, endpoint, bucket, fdatasync=fdatasync)
    try:
        target.start_node("n1")
        _make_wal_entry_durable(target)
        _create_topic(target.bootstrap_servers)
        acked = _produce(target.bootstrap_servers, range(RECORDS))
        before = _consume(target.bootstrap_servers)           # through the FUSE volume, before the fault
        assert {off: v for v, off in acked.items()} == before

        fault = LoseUnsyncedFault(target)
        fault.check_supported()
        params = fault.start(["n1"])
        assert target.process.poll() == -signal.SIGKILL
        fault.stop(["n1"])

        return acked, _lost(target, acked), params
    finally:
        target.teardown()


@pytest.mark.timeout(180)
def test_lose_unsynced_kill_and_restart_loses_no_acknowledged_write(tmp_path, volume_service, s3_bucket):
    acked, lost, params = _lose_unsynced_run(tmp_path, volume_service.client, s3_bucket, fdatasync=True)
    assert len(acked) == RECORDS
    assert not lost, f"{len(lost)} acknowledged records lost, e.g. {sorted(lost.items())[:5]}; fault {params}"


@pytest.mark.timeout(180)
def test_lose_unsynced_catches_a_broker_without_its_wal_fdatasync(tmp_path, volume_service, s3_bucket):
    """The same run with the WAL's fdatasync removed from the broker process:
    every acknowledged record lived only in the volume's (FUSE) page cache."""
    acked, lost, params = _lose_unsynced_run(tmp_path, volume_service.client, s3_bucket, fdatasync=False)
    assert len(acked) == RECORDS
    assert params["lost"]["n1"]["lost_bytes"] > 0, params
    assert len(lost) == RECORDS, f"only {len(lost)} of {RECORDS} acknowledged records lost; fault {params}"


@pytest.mark.timeout(180)
def test_detach_disk_error_and_disk_slow_on_a_live_broker(tmp_path, volume_service, s3_bucket):
    """detach: the broker's WAL answers EIO, its produce fails rather than
    being acknowledged; the heal re-attaches and restarts it, and everything
    acknowledged is still there. disk-error on every sync: same. disk-slow:
    each acknowledged produce waits for the slowed fdatasync."""
    endpoint, bucket = s3_bucket
    vols = volume_service.client
    target = FuseBrokerTarget(tmp_path, vols, endpoint, bucket)
    try:
        target.start_node("n1")
        _make_wal_entry_durable(target)
        _create_topic(target.bootstrap_servers)
        acked = _produce(target.bootstrap_servers, range(50))

        for fault in (DetachFault(target), DiskErrorFault(target, {"rate": 1.0, "ops": ["sync"]})):
            fault.check_supported()
            fault.start(["n1"])
            with pytest.raises(Exception):
                _produce(target.bootstrap_servers, [10_000])      # never acknowledged
            # a node whose WAL fails drops its engine rather than limp on: it
            # acknowledges nothing until the heal restarts it on its volume
            deadline = time.monotonic() + 30
            while "Input/output error" not in target.log_tail() and time.monotonic() < deadline:
                time.sleep(0.1)
            assert "Input/output error" in target.log_tail()
            assert "halted" in target.log_tail() or target.process.poll() is not None
            fault.stop(["n1"])
            assert vols.attachment("n1").node == "n1"
            acked.update(_produce(target.bootstrap_servers, range(len(acked), len(acked) + 20)))

        slow = DiskSlowFault(target, {"distribution": "fixed", "ms": 150, "ops": ["sync"]})
        slow.start(["n1"])
        t = time.perf_counter()
        acked.update(_produce(target.bootstrap_servers, range(len(acked), len(acked) + 5)))
        assert time.perf_counter() - t >= 5 * 0.150
        slow.stop(["n1"])

        _assert_nothing_lost(target, acked)
    finally:
        target.teardown()


def _bad_sector_run(tmp_path, vols, s3_bucket, broker_args=()):
    """40 acknowledged records (each its own group commit), then the
    bad-sector fault: returns the target, what was acknowledged, the fault
    and its recorded parameters."""
    endpoint, bucket = s3_bucket
    target = FuseBrokerTarget(tmp_path, vols, endpoint, bucket, broker_args=broker_args)
    target.start_node("n1")
    _make_wal_entry_durable(target)
    _create_topic(target.bootstrap_servers)
    acked = _produce(target.bootstrap_servers, range(40))
    fault = BadSectorFault(target)
    fault.check_supported()
    return target, acked, fault, fault.start(["n1"])


@pytest.mark.timeout(180)
def test_bad_sector_the_broker_refuses_to_serve_until_healed_and_then_loses_nothing(tmp_path, volume_service,
                                                                                     s3_bucket):
    """A synced block in the middle of the WAL reads EIO, and the broker is
    restarted onto it: recovery cannot read acknowledged records and refuses
    (exit 3), which the fault records. The heal clears the sector and
    starts the broker: every acknowledged record is back at its offset."""
    target, acked, fault, params = _bad_sector_run(tmp_path, volume_service.client, s3_bucket)
    try:
        assert params["sectors"]["n1"]["file"] == "/wal", params
        assert params["node"]["n1"].startswith("exited with code 3 during its start"), params
        assert "Refusing to serve" in target.log_tail() and "unreadable" in target.log_tail()
        fault.stop(["n1"])
        _assert_nothing_lost(target, acked)
    finally:
        target.teardown()


@pytest.mark.timeout(180)
def test_bad_sector_with_serve_after_gap_the_broker_serves_and_reuses_an_acknowledged_offset(
        tmp_path, volume_service, s3_bucket):
    """The planted bug: the same fault, but the broker serves past the
    unreadable record, and the next produce is acknowledged at an offset
    already acknowledged to another value before the fault."""
    target, acked, fault, params = _bad_sector_run(tmp_path, volume_service.client, s3_bucket,
                                                   ("--bug", "serve-after-gap"))
    try:
        assert params["node"]["n1"] == "serving", params
        reused = _produce(target.bootstrap_servers, [10_000])[10_000]
        assert reused in set(acked.values()), (reused, max(acked.values()))
    finally:
        fault.stop(["n1"])
        target.teardown()
