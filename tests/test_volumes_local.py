"""The local volume provider, observed from outside: real FUSE mounts served
by a real volume service, real system calls on them."""
from __future__ import annotations

import errno
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest

from reference.volumes.base import VolumeError
from reference.volumes.local import LocalVolumes, force_cleanup, start_service

pytestmark = pytest.mark.skipif(not os.path.exists("/dev/fuse") or shutil.which("fusermount3") is None,
                                reason="needs /dev/fuse and fusermount3 (Debian package fuse3)")


def _names(path) -> list[str]:
    """A volume's entries, without the label every volume carries."""
    from reference.volumes.base import VOLUME_LABEL
    return sorted(n for n in os.listdir(path) if n != VOLUME_LABEL)


@pytest.fixture
def service():
    # a short root: the control socket's path must fit AF_UNIX's 108 bytes
    root = Path(tempfile.mkdtemp(prefix="hwv-"))
    handle = start_service(root)
    try:
        yield handle
    finally:
        handle.stop()
        force_cleanup(root)
        shutil.rmtree(root, ignore_errors=True)


@pytest.fixture
def vols(service) -> LocalVolumes:
    return service.client


def _expect_eio(fn, *args):
    with pytest.raises(OSError) as info:
        fn(*args)
    assert info.value.errno == errno.EIO, f"{fn.__name__}: expected EIO, got {info.value!r}"


def _fsync_dir(path):
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _close_quietly(fd):
    try:
        os.close(fd)
    except OSError:  # closing a descriptor of a dead attachment answers EIO (its flush); it is closed anyway
        pass


def _mounted(path) -> bool:
    with open("/proc/self/mounts") as f:
        return any(line.split()[1] == str(path) for line in f)


# --------------------------------------------------------------------------
# detach / attach
# --------------------------------------------------------------------------

@pytest.mark.timeout(60)
def test_detach_answers_eio_on_open_descriptors_and_new_opens_and_reattach_heals(vols):
    vols.create("v1")
    att = vols.attach("v1", "n1")
    assert _mounted(att.path)
    wal = os.path.join(att.path, "wal")
    fd = os.open(wal, os.O_RDWR | os.O_CREAT, 0o644)
    os.pwrite(fd, b"durable", 0)
    os.fdatasync(fd)
    _fsync_dir(att.path)

    vols.detach("v1", "n1")
    assert vols.attachment("v1") is None
    # the descriptor opened before the detach
    _expect_eio(os.pread, fd, 7, 0)
    _expect_eio(os.pwrite, fd, b"more", 7)
    _expect_eio(os.fdatasync, fd)
    _expect_eio(os.fstat, fd)
    # and everything new on the old mount
    _expect_eio(os.open, wal, os.O_RDONLY)
    _expect_eio(os.listdir, att.path)
    _expect_eio(os.open, os.path.join(att.path, "new"), os.O_RDWR | os.O_CREAT)

    again = vols.attach("v1", "n1")
    assert again.path == att.path and _mounted(again.path)
    with open(wal, "rb") as f:
        assert f.read() == b"durable"
    # the old descriptor stays dead: it belonged to the old attachment
    _expect_eio(os.pread, fd, 7, 0)
    _close_quietly(fd)


@pytest.mark.timeout(60)
def test_a_volume_is_attached_to_one_node_at_a_time_and_its_data_moves_with_it(vols):
    vols.create("v1")
    a = vols.attach("v1", "n1")
    assert vols.attach("v1", "n1") == a          # idempotent for the same node
    with pytest.raises(VolumeError, match="attached to n1"):
        vols.attach("v1", "n2")
    with open(os.path.join(a.path, "f"), "wb") as f:
        f.write(b"from n1")
        f.flush()
        os.fsync(f.fileno())
    _fsync_dir(a.path)
    vols.detach("v1", "n2")                     # not attached there: a no-op
    assert vols.attachment("v1").node == "n1"
    vols.detach("v1", "n1")
    b = vols.attach("v1", "n2")
    assert b.node == "n2" and b.path != a.path
    with open(os.path.join(b.path, "f"), "rb") as f:
        assert f.read() == b"from n1"
    _expect_eio(os.listdir, a.path)             # n1's dead mount is still there, answering EIO
    vols.unmount("v1", "n1")
    assert not _mounted(a.path)


@pytest.mark.timeout(60)
def test_several_processes_drive_the_same_service(service, vols):
    """The harness, the controller (a broker process) and a CLI are all clients."""
    vols.create("v1")
    att = vols.attach("v1", "n1")
    fd = os.open(os.path.join(att.path, "f"), os.O_RDWR | os.O_CREAT, 0o644)
    out = subprocess.run([sys.executable, "-m", "reference.volumes.local", "call", str(service.root), "detach",
                          "volume=v1", "node=n1"], capture_output=True, text=True, timeout=30)
    assert out.returncode == 0, out.stderr
    assert json.loads(out.stdout)["detached"] is True
    _expect_eio(os.pwrite, fd, b"x", 0)
    _close_quietly(fd)
    bad = subprocess.run([sys.executable, "-m", "reference.volumes.local", "call", str(service.root), "attach",
                          "volume=nope", "node=n1"], capture_output=True, text=True, timeout=30)
    assert bad.returncode == 1 and "no volume 'nope'" in bad.stderr


@pytest.mark.timeout(60)
def test_bad_requests_get_clear_errors_and_the_service_lives_on(vols):
    vols.create("v1")
    for op, params, message in [
        ("frobnicate", {}, "unknown op"),
        ("attach", {"volume": "../etc", "node": "n1"}, "bad volume name"),
        ("attach", {"volume": "v1", "node": ""}, "bad node name"),
        ("slow", {"volume": "v1", "spec": {"distribution": "zipf"}}, "unknown distribution"),
        ("slow", {"volume": "v1", "spec": {"ms": 5, "colour": "red"}}, "unknown parameters"),
        ("errors", {"volume": "v1", "spec": {"rate": 1.5}}, "not within 0..1"),
        ("errors", {"volume": "v1", "spec": {"rate": 0.1, "ops": ["seek"]}}, "ops must be"),
        ("crash", {"volume": "missing"}, "no volume"),
    ]:
        with pytest.raises(VolumeError, match=message):
            vols.request(op, **params)
    assert vols.attach("v1", "n1").node == "n1"


# --------------------------------------------------------------------------
# lose-unsynced
# --------------------------------------------------------------------------

def _write_file(path, data: bytes, *, sync: bool):
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    os.pwrite(fd, data, 0)
    if sync:
        os.fsync(fd)
    return fd


@pytest.mark.timeout(60)
def test_crash_drops_what_was_not_fsynced_and_keeps_what_was(service, vols):
    backing = vols.create("v1")
    m = vols.attach("v1", "n1").path
    synced = _write_file(os.path.join(m, "synced"), b"A" * 5000, sync=True)
    _fsync_dir(m)                                            # its name is durable too
    os.mkdir(os.path.join(m, "dir"))                         # never made durable
    os.pwrite(synced, b"B" * 3000, 5000)                     # grows it, not synced
    os.pwrite(synced, b"C" * 10, 0)                          # overwrites synced bytes, not synced
    unsynced = _write_file(os.path.join(m, "unsynced"), b"lost", sync=False)
    data_only = _write_file(os.path.join(m, "dir", "data-only"), b"data", sync=True)  # entry never synced
    assert os.path.getsize(os.path.join(m, "synced")) == 8000
    assert _names(m) == ["dir", "synced", "unsynced"]

    result = vols.crash("v1")
    assert result["attached"] and result["lost_bytes"] >= 3010 and result["undone_entries"] >= 3

    with open(os.path.join(m, "synced"), "rb") as f:
        assert f.read() == b"A" * 5000                       # data and size as last fsynced
    assert _names(m) == ["synced"]               # unsynced entries are gone (dir was never synced)
    assert sorted(p.name for p in backing.iterdir() if not p.name.startswith(".")) == ["synced"]
    for fd in (synced, unsynced, data_only):                 # descriptors of the crashed "machine"
        _expect_eio(os.pread, fd, 1, 0)
        _close_quietly(fd)


@pytest.mark.timeout(60)
def test_crash_keeps_new_entries_whose_directory_was_fsynced(vols):
    vols.create("v1")
    m = vols.attach("v1", "n1").path
    os.mkdir(os.path.join(m, "d"))
    _fsync_dir(m)
    fd = _write_file(os.path.join(m, "d", "new"), b"x" * 4096, sync=True)
    _fsync_dir(os.path.join(m, "d"))
    os.close(fd)
    vols.crash("v1")
    assert os.listdir(os.path.join(m, "d")) == ["new"]
    assert os.path.getsize(os.path.join(m, "d", "new")) == 4096


@pytest.mark.timeout(60)
def test_crash_undoes_unsynced_unlink_rename_and_truncate(vols):
    vols.create("v1")
    m = vols.attach("v1", "n1").path
    for name in ("a", "b", "c"):
        os.close(_write_file(os.path.join(m, name), name.encode() * 100, sync=True))
    _fsync_dir(m)
    os.unlink(os.path.join(m, "a"))
    os.rename(os.path.join(m, "b"), os.path.join(m, "c"))    # replaces c
    os.truncate(os.path.join(m, "c"), 10)
    assert _names(m) == ["c"] and os.path.getsize(os.path.join(m, "c")) == 10
    vols.crash("v1")
    assert _names(m) == ["a", "b", "c"]
    for name in ("a", "b", "c"):
        with open(os.path.join(m, name), "rb") as f:
            assert f.read() == name.encode() * 100


@pytest.mark.timeout(60)
def test_detach_in_lazy_mode_loses_the_old_hosts_unsynced_writes(vols):
    vols.create("v1")
    m = vols.attach("v1", "n1").path
    fd = _write_file(os.path.join(m, "f"), b"synced", sync=True)
    _fsync_dir(m)
    os.pwrite(fd, b"UNSYNCED", 0)
    vols.detach("v1", "n1")
    _close_quietly(fd)
    m2 = vols.attach("v1", "n2").path
    with open(os.path.join(m2, "f"), "rb") as f:
        assert f.read() == b"synced"


@pytest.mark.timeout(60)
def test_pass_through_mode_writes_straight_to_the_backing(vols):
    backing = vols.create("v1", lazy=False)
    m = vols.attach("v1", "n1").path
    fd = _write_file(os.path.join(m, "f"), b"no cache", sync=False)
    assert (backing / "f").read_bytes() == b"no cache"
    assert vols.crash("v1")["lost_bytes"] == 0
    _close_quietly(fd)
    assert (backing / "f").read_bytes() == b"no cache"
    vols.set_lazy("v1", True)                               # switchable at run time
    fd = _write_file(os.path.join(m, "f"), b"in memory", sync=False)
    assert (backing / "f").read_bytes() == b"no cache"
    os.close(fd)


# --------------------------------------------------------------------------
# disk-slow, disk-error
# --------------------------------------------------------------------------

def _sync_latencies(path, n=15) -> list[float]:
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        out = []
        for i in range(n):
            os.pwrite(fd, b"x" * 4096, i * 4096)
            t = time.perf_counter()
            os.fdatasync(fd)
            out.append(time.perf_counter() - t)
        return out
    finally:
        os.close(fd)


@pytest.mark.timeout(90)
def test_a_slowed_volume_takes_the_added_latency(vols):
    vols.create("v1")
    m = vols.attach("v1", "n1").path
    f = os.path.join(m, "f")
    base = statistics.median(_sync_latencies(f))
    vols.set_slow("v1", {"distribution": "fixed", "ms": 80, "ops": ["sync"]})
    slowed = _sync_latencies(f, n=8)
    assert min(slowed) >= 0.080, f"every fdatasync waits >= 80 ms: {slowed}"
    assert statistics.median(slowed) >= base + 0.075
    assert vols.status("v1")["fs"]["injected"]["delays"] >= 8
    vols.set_slow("v1", {"distribution": "uniform", "min_ms": 30, "max_ms": 60, "ops": ["write"], "seed": 1})
    fd = os.open(f, os.O_RDWR)
    t = time.perf_counter()
    for i in range(5):
        os.pwrite(fd, b"y", i)
    assert time.perf_counter() - t >= 5 * 0.030
    os.close(fd)
    vols.set_slow("v1", None)
    after = statistics.median(_sync_latencies(f))
    assert after < 0.080, f"healed: median fdatasync {after * 1000:.1f} ms"


@pytest.mark.timeout(90)
def test_the_error_fault_fails_the_given_fraction_of_writes_and_syncs(vols):
    vols.create("v1")
    m = vols.attach("v1", "n1").path
    fd = os.open(os.path.join(m, "f"), os.O_RDWR | os.O_CREAT, 0o644)
    vols.set_errors("v1", {"rate": 0.3, "seed": 7})
    n, failed_writes, failed_syncs, reads_failed = 300, 0, 0, 0
    for i in range(n):
        try:
            os.pwrite(fd, b"z" * 512, i * 512)
        except OSError as e:
            assert e.errno == errno.EIO
            failed_writes += 1
        try:
            os.fdatasync(fd)
        except OSError as e:
            assert e.errno == errno.EIO
            failed_syncs += 1
        try:
            os.pread(fd, 16, 0)
        except OSError:
            reads_failed += 1
    # binomial(300, 0.3): mean 90, sd ~7.9; 4.5 sd either side
    assert 55 <= failed_writes <= 125, failed_writes
    assert 55 <= failed_syncs <= 125, failed_syncs
    assert reads_failed == 0                           # reads were not among the chosen ops
    vols.set_errors("v1", None)
    for i in range(50):
        os.pwrite(fd, b"ok", i)
        os.fdatasync(fd)
    os.close(fd)


@pytest.mark.timeout(60)
def test_a_bad_sector_is_a_synced_block_in_the_middle_of_a_file_that_reads_eio_until_healed(vols):
    """Four 8 KiB appends, each synced (a log's group commits), and a fifth
    never synced: the fault damages the first block of the most recent
    synced write with two synced writes beyond it (the second append). That
    block reads EIO, on an open descriptor and a new one, alone or as part
    of a larger read; every other block reads as written. The damage stays
    with the volume across a re-attach, and the heal clears it."""
    vols.create("v1")
    m = vols.attach("v1", "n1").path
    path = os.path.join(m, "log")
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    _fsync_dir(m)                                    # its name survives the detach below
    chunks = [bytes([65 + i]) * 8192 for i in range(5)]
    for i, chunk in enumerate(chunks):
        os.pwrite(fd, chunk, i * 8192)
        if i < 4:
            os.fdatasync(fd)
    where = vols.mark_bad_sector("v1", behind=2)
    assert (where["file"], where["offset"], where["length"]) == ("/log", 8192, 4096), where
    _expect_eio(os.pread, fd, 100, 8192 + 50)
    _expect_eio(os.pread, fd, 16384, 0)              # a larger read that covers it
    for good in (0, 4096, 12288, 16384, 24576, 32768):
        assert os.pread(fd, 4096, good) == chunks[good // 8192][:4096], good
    fd2 = os.open(path, os.O_RDONLY)
    _expect_eio(os.pread, fd2, 4096, 8192)
    os.close(fd2)
    os.pwrite(fd, b"w" * 4096, 8192)                 # writes still succeed; the sector still fails reads
    os.fdatasync(fd)
    _expect_eio(os.pread, fd, 4096, 8192)
    status = vols.status("v1")["fs"]
    assert status["injected"]["bad_sector_reads"] >= 4 and status["bad_blocks"][0]["offset"] == 8192
    os.close(fd)
    vols.detach("v1", "n1")
    m = vols.attach("v1", "n1").path
    fd = os.open(os.path.join(m, "log"), os.O_RDONLY)
    _expect_eio(os.pread, fd, 4096, 8192)            # a place on the disk: it follows the volume
    vols.heal_bad_sectors("v1")
    assert os.pread(fd, 4096, 8192) == b"w" * 4096
    assert os.pread(fd, 4096, 0) == chunks[0][:4096]
    os.close(fd)


@pytest.mark.timeout(60)
def test_a_bad_sector_needs_a_synced_write_with_later_synced_writes_beyond_it(vols):
    """Unsynced writes never count, nor later writes before it in the file
    (a header rewritten at the front), and the most recent qualifying
    write wins."""
    vols.create("v1")
    m = vols.attach("v1", "n1").path
    fd = os.open(os.path.join(m, "log"), os.O_RDWR | os.O_CREAT, 0o644)
    os.pwrite(fd, b"a" * 4096, 0)
    os.fdatasync(fd)
    os.pwrite(fd, b"b" * 4096, 4096)                 # never synced
    with pytest.raises(VolumeError, match="no synced write has 1 later synced writes"):
        vols.mark_bad_sector("v1", behind=1)
    for i in range(2, 4):
        os.pwrite(fd, bytes([97 + i]) * 4096, i * 4096)
        os.fdatasync(fd)
    os.pwrite(fd, b"h" * 4096, 0)                    # a header rewritten at the front: not beyond anything
    os.fdatasync(fd)
    # the second sync made [4096, 12288) durable at once: one extent, with [12288, 16384) beyond it
    assert vols.mark_bad_sector("v1", behind=1)["offset"] == 4096
    os.close(fd)


@pytest.mark.timeout(60)
def test_fault_settings_follow_the_volume_to_its_next_attachment(vols):
    vols.create("v1")
    vols.attach("v1", "n1")
    vols.set_errors("v1", {"rate": 1.0, "ops": ["write"]})
    vols.detach("v1", "n1")
    m = vols.attach("v1", "n2").path
    fd = os.open(os.path.join(m, "f"), os.O_RDWR | os.O_CREAT, 0o644)
    _expect_eio(os.pwrite, fd, b"x", 0)
    os.close(fd)
    assert vols.list()["v1"]["errors"]["rate"] == 1.0


@pytest.mark.timeout(60)
def test_stopping_the_service_unmounts_everything():
    root = Path(tempfile.mkdtemp(prefix="hwv-"))
    handle = start_service(root)
    try:
        vols = handle.client
        vols.create("v1")
        vols.create("v2")
        a = vols.attach("v1", "n1")
        b = vols.attach("v2", "n2")
        vols.detach("v2", "n2")                         # a dead mount, still mounted
        assert _mounted(a.path) and _mounted(b.path)
        handle.proc.kill()                              # even a SIGKILLed service leaves no mount behind
        handle.proc.wait()
        deadline = time.monotonic() + 20
        while (_mounted(a.path) or _mounted(b.path)) and time.monotonic() < deadline:
            time.sleep(0.05)
        assert not _mounted(a.path) and not _mounted(b.path)
    finally:
        handle.stop()
        force_cleanup(root)
        shutil.rmtree(root, ignore_errors=True)


@pytest.mark.timeout(60)
def test_detach_heal_leaves_a_volume_that_failover_moved(vols):
    """VolumeControl.reattach (the detach fault's heal) attaches the volume to
    its node again, unless it was moved meanwhile: the cluster owns it then."""
    vols.create("v1")
    vols.attach("v1", "n1")
    control = vols.control("v1", "n1")
    control.detach()
    assert control.reattach().node == "n1"
    control.detach()
    vols.attach("v1", "n2")                           # what a failover does
    assert control.reattach() is None
    assert vols.attachment("v1").node == "n2"


def test_volume_faults_are_refused_on_a_target_without_the_controls():
    from nemeses.base import FaultUnsupported
    from nemeses.volume import FAULTS

    class ProcessOnly:
        name = "process-only"
        node_names = ["n1"]

        def unsupported(self, control):
            return None if control == "process" else f"{self.name} has no {control} control"

    for name, cls in FAULTS.items():
        with pytest.raises(FaultUnsupported, match=f"{name}: process-only has no volume control"):
            cls(ProcessOnly()).check_supported()
    with pytest.raises(FaultUnsupported, match="does not declare the controls"):
        FAULTS["detach"](object()).check_supported()


@pytest.mark.timeout(60)
def test_open_provider_names_a_local_service(service):
    from reference.volumes import open_provider
    provider = open_provider(f"local:{service.root}")
    provider.create("v1")
    assert provider.attach("v1", "n1").path.endswith("/mnt/n1/v1")
    with pytest.raises(ValueError, match="expected local:ROOT, ec2:CONFIG.json or directory:ROOT"):
        open_provider("nfs:/x")


@pytest.mark.timeout(60)
def test_detach_heal_leaves_a_volume_that_failover_takes_between_look_and_attach(vols):
    """The race CI met: the heal saw the volume free, then the failover
    attached it elsewhere before the heal's attach (VolumeError)."""
    from reference.volumes.base import VolumeControl

    class FailoverFirst:
        """The provider, with a failover's attach just before the heal's."""
        def __getattr__(self, name):
            return getattr(vols, name)

        def attach(self, volume_id, node):
            vols.attach(volume_id, "n2")
            return vols.attach(volume_id, node)

    vols.create("v2")
    vols.attach("v2", "n1")
    control = VolumeControl(FailoverFirst(), "v2", "n1")
    control.detach()
    assert control.reattach() is None
    assert vols.attachment("v2").node == "n2"

