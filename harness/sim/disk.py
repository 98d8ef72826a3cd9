"""Simulated volumes: what the WAL sees of a disk (`reference.storage.disk`'s
interface), and a volume provider for the controller.

A volume is attached to at most one machine; machine N reaches volume V at
`/sim/mnt/N/V` (the FUSE provider's layout). Each file keeps durable 4 KiB
blocks and a page cache of dirty ones:

- a write lands in the page cache; fsync/fdatasync makes what the file had
  dirty at the call durable *when the call returns* (so a crash during a
  slow fsync may lose it), and a directory fsync makes names durable;
- a process crash (SIGKILL) loses nothing: the page cache belongs to the
  machine, and reads see it;
- `lose_unsynced` (power loss of the machine) and `detach` drop the page
  cache: every dirty block is lost or, torn, reaches the disk anyway, each
  on its own; names not made durable disappear;
- after `detach`, every I/O of that attachment fails with EIO, descriptors
  opened before included; `disk-error` fails a share of I/O with EIO;
  `disk-slow` adds latency. Latency is charged to the blocking call running
  (the simulator's executors run it inline).
- one exclusive lock per file (flock), released when its descriptor closes
  or its process dies.
"""
from __future__ import annotations

import errno
import os
import random
from dataclasses import dataclass, field

from harness.sim.loop import PROC
from reference.volumes.base import Attachment, VolumeError, VolumeProvider

BLOCK = 4096
ZERO = bytes(BLOCK)
MNT = "/sim/mnt"


def _eio(what: str) -> OSError:
    return OSError(errno.EIO, f"Input/output error ({what})")


class SimFile:
    __slots__ = ("blocks", "dirty", "size", "durable_size", "lock_fd")

    def __init__(self):
        self.blocks: dict[int, bytes] = {}
        self.dirty: dict[int, bytes] = {}
        self.size = 0
        self.durable_size = 0
        self.lock_fd: int | None = None

    def read(self, offset: int, n: int) -> bytes:
        end = min(offset + n, self.size)
        if end <= offset:
            return b""
        out = bytearray()
        b = offset // BLOCK
        while b * BLOCK < end:
            data = self.dirty.get(b)
            if data is None:
                data = self.blocks.get(b, ZERO)
            lo = max(offset, b * BLOCK) - b * BLOCK
            hi = min(end, (b + 1) * BLOCK) - b * BLOCK
            out += data[lo:hi]
            b += 1
        return bytes(out)

    def write(self, offset: int, data) -> int:
        data = bytes(data)
        pos, i = offset, 0
        while i < len(data):
            b = pos // BLOCK
            lo = pos - b * BLOCK
            take = min(BLOCK - lo, len(data) - i)
            if lo == 0 and take == BLOCK:
                block = data[i:i + BLOCK]
            else:
                old = self.dirty.get(b)
                if old is None:
                    old = self.blocks.get(b, ZERO)
                block = old[:lo] + data[i:i + take] + old[lo + take:]
            self.dirty[b] = block
            pos += take
            i += take
        self.size = max(self.size, offset + len(data))
        return len(data)

    def snapshot(self):
        return dict(self.dirty), self.size

    def commit(self, snap) -> None:
        dirty, size = snap
        for b, data in dirty.items():
            self.blocks[b] = data
            if self.dirty.get(b) is data:
                del self.dirty[b]
        self.durable_size = size

    def truncate(self, size: int) -> None:
        self.size = size
        for b in [b for b in self.dirty if b * BLOCK >= size]:
            del self.dirty[b]

    def lose_cache(self, rng: random.Random, torn: bool) -> dict:
        """Power loss: each dirty block is lost, or (torn) reaches the disk."""
        kept = lost = 0
        for b, data in sorted(self.dirty.items()):
            if torn and rng.random() < 0.5:
                self.blocks[b] = data
                kept += 1
            else:
                lost += 1
        self.dirty = {}
        self.size = self.durable_size
        return {"blocks_lost": lost, "blocks_torn_in": kept}


@dataclass
class SimVolume:
    id: str
    names: dict = field(default_factory=dict)          # name -> SimFile (what a directory listing shows now)
    durable_names: dict = field(default_factory=dict)  # after the last directory fsync
    attached: str | None = None                        # machine
    generation: int = 0                                # bumped by detach: older descriptors get EIO
    error_rate: float = 0.0
    slow: float = 0.0                                  # extra seconds per operation
    ops: int = 0


@dataclass
class _Fd:
    volume: SimVolume
    generation: int
    name: str
    file: SimFile
    pid: int


class SimDisk:
    """Every simulated volume, and the `reference.storage.disk` interface."""

    def __init__(self, loop, rng: random.Random):
        self.loop = loop
        self.rng = rng
        self.volumes: dict[str, SimVolume] = {}
        self.fds: dict[int, _Fd] = {}
        self._next_fd = 100
        self._watched: set[int] = set()
        self.write_latency = rng.uniform(10e-6, 60e-6)     # per 4 KiB written
        self.sync_latency = rng.uniform(200e-6, 3e-3)      # an fsync on a network block device
        self.read_latency = rng.uniform(20e-6, 200e-6)

    # -- volumes --------------------------------------------------------------
    def create(self, volume_id: str) -> SimVolume:
        v = self.volumes[volume_id] = SimVolume(volume_id)
        return v

    def mount_point(self, volume_id: str, node: str) -> str:
        return f"{MNT}/{node}/{volume_id}"

    def attach(self, volume_id: str, node: str) -> None:
        v = self.volumes[volume_id]
        if v.attached not in (None, node):
            raise VolumeError(f"volume {volume_id} is attached to {v.attached}; detach it first")
        v.attached = node

    def detach(self, volume_id: str, node: str) -> dict | None:
        v = self.volumes[volume_id]
        if v.attached != node:
            return None
        v.attached = None
        v.generation += 1
        return self._lose(v, torn=True)

    def lose_unsynced(self, node: str) -> dict:
        """Power loss on a machine: the page cache of every volume attached there."""
        out = {}
        for v in self.volumes.values():
            if v.attached == node:
                out[v.id] = self._lose(v, torn=True)
        return out

    def _lose(self, v: SimVolume, torn: bool) -> dict:
        summary = {"blocks_lost": 0, "blocks_torn_in": 0, "names_lost": []}
        for name, f in v.names.items():
            s = f.lose_cache(self.rng, torn)
            summary["blocks_lost"] += s["blocks_lost"]
            summary["blocks_torn_in"] += s["blocks_torn_in"]
        summary["names_lost"] = sorted(set(v.names) - set(v.durable_names))
        v.names = dict(v.durable_names)
        return summary

    # -- paths and descriptors -------------------------------------------------------
    def _machine(self) -> str | None:
        proc = PROC.get()
        return proc.node if proc is not None else None

    def _resolve(self, path) -> tuple[SimVolume, str]:
        """(volume, file name) for a path on this machine; OSError otherwise."""
        parts = str(path).split("/")
        # ['', 'sim', 'mnt', node, volume, name?]
        if len(parts) < 5 or parts[1] != "sim" or parts[2] != "mnt":
            raise OSError(errno.ENOENT, f"no such file or directory (not a simulated volume): {path}")
        node, vid = parts[3], parts[4]
        name = "/".join(parts[5:])
        here = self._machine()
        if here is not None and here != node:
            raise OSError(errno.ENOENT, f"{path}: no such path on machine {here}")
        v = self.volumes.get(vid)
        if v is None:
            raise OSError(errno.ENOENT, f"{path}: no such volume")
        if v.attached != node:
            raise _eio(f"{vid} is not attached to {node}")
        return v, name

    def _op(self, v: SimVolume, what: str, latency: float) -> None:
        v.ops += 1
        self.loop.charge(latency + v.slow)
        if v.error_rate and self.rng.random() < v.error_rate:
            raise _eio(f"disk-error fault on {v.id}: {what}")

    def _fd(self, fd: int) -> _Fd:
        f = self.fds.get(fd)
        if f is None:
            raise OSError(errno.EBADF, "Bad file descriptor")
        if f.generation != f.volume.generation:
            raise _eio(f"{f.volume.id} was detached under this descriptor")
        return f

    def _watch(self, proc) -> None:
        if proc is None or proc.pid in self._watched:
            return
        self._watched.add(proc.pid)

        def crashed(pid=proc.pid):
            for fd in [fd for fd, f in self.fds.items() if f.pid == pid]:
                self._release(fd)
        proc.on_crash.append(crashed)

    def _release(self, fd: int) -> None:
        f = self.fds.pop(fd, None)
        if f is not None and f.file.lock_fd == fd:
            f.file.lock_fd = None

    # -- the reference.storage.disk interface -----------------------------------------
    def open(self, path, flags, mode=0o777) -> int:
        v, name = self._resolve(path)
        self._op(v, "open", self.read_latency)
        f = v.names.get(name)
        if f is None:
            if not flags & os.O_CREAT:
                raise FileNotFoundError(errno.ENOENT, f"No such file or directory: {path}")
            f = v.names[name] = SimFile()
        elif flags & os.O_CREAT and flags & os.O_EXCL:
            raise FileExistsError(errno.EEXIST, f"File exists: {path}")
        if flags & os.O_TRUNC:
            f.truncate(0)
        fd = self._next_fd
        self._next_fd += 1
        proc = PROC.get()
        self.fds[fd] = _Fd(v, v.generation, name, f, proc.pid if proc is not None else 0)
        self._watch(proc)
        return fd

    def close(self, fd: int) -> None:
        if fd not in self.fds:
            raise OSError(errno.EBADF, "Bad file descriptor")
        self._release(fd)

    def pread(self, fd: int, n: int, offset: int) -> bytes:
        f = self._fd(fd)
        self._op(f.volume, "read", self.read_latency * (1 + n // (64 * 1024)))
        return f.file.read(offset, n)

    def pwrite(self, fd: int, data, offset: int) -> int:
        f = self._fd(fd)
        self._op(f.volume, "write", self.write_latency * (1 + len(data) // BLOCK))
        return f.file.write(offset, data)

    def _sync(self, fd: int) -> None:
        f = self._fd(fd)
        self._op(f.volume, "fsync", self.sync_latency)
        snap, file, gen, v = f.file.snapshot(), f.file, f.generation, f.volume

        def durable():
            if v.generation == gen:      # a detach in between: the cache it had is gone
                file.commit(snap)
        if not self.loop.on_return(durable):
            durable()

    def fsync(self, fd: int) -> None:
        self._sync(fd)

    def fdatasync(self, fd: int) -> None:
        self._sync(fd)

    def ftruncate(self, fd: int, size: int) -> None:
        f = self._fd(fd)
        self._op(f.volume, "truncate", self.write_latency)
        f.file.truncate(size)

    def rename(self, src, dst) -> None:
        v, a = self._resolve(src)
        v2, b = self._resolve(dst)
        if v is not v2:
            raise OSError(errno.EXDEV, "Invalid cross-device link")
        self._op(v, "rename", self.write_latency)
        if a not in v.names:
            raise FileNotFoundError(errno.ENOENT, f"No such file or directory: {src}")
        v.names[b] = v.names.pop(a)

    def fsize(self, fd: int) -> int:
        return self._fd(fd).file.size

    def lock_exclusive(self, fd: int) -> None:
        """flock is the kernel's: a lock taken through an attachment that has
        been detached since is gone with it (another machine's kernel never
        knew of it)."""
        f = self._fd(fd)
        holder = self.fds.get(f.file.lock_fd) if f.file.lock_fd is not None else None
        if holder is not None and f.file.lock_fd != fd and holder.generation == holder.volume.generation:
            raise BlockingIOError(errno.EWOULDBLOCK, "Resource temporarily unavailable")
        f.file.lock_fd = fd

    def size(self, path) -> int | None:
        try:
            v, name = self._resolve(path)
        except OSError as e:
            if e.errno == errno.ENOENT:
                return None
            raise
        self._op(v, "stat", self.read_latency)
        f = v.names.get(name)
        return None if f is None else f.size

    def is_dir(self, path) -> bool:
        try:
            v, name = self._resolve(path)
        except OSError:
            return False
        return name == ""

    def is_block_device(self, path) -> bool:
        self._resolve(path)
        return False

    def volume_label(self, path) -> str | None:
        """A volume shows its label only where it is attached."""
        try:
            v, name = self._resolve(path)
        except OSError:
            return None
        return v.id if name == "" else None

    def mkdir(self, path) -> None:
        v, name = self._resolve(path)
        if name:
            raise OSError(errno.EPERM, f"{path}: subdirectories are not simulated")

    def fsync_directory(self, path) -> None:
        v, name = self._resolve(path)
        self._op(v, "fsync dir", self.sync_latency)
        names, gen = dict(v.names), v.generation

        def durable():
            if v.generation == gen:
                v.durable_names = names
        if not self.loop.on_return(durable):
            durable()


class SimVolumes(VolumeProvider):
    """The volume provider the simulated controller drives (like the FUSE
    provider: a detach fences I/O at once)."""

    fences_io = True
    supported_faults = ("detach", "lose-unsynced", "disk-slow", "disk-error")

    def __init__(self, disk: SimDisk, rng: random.Random):
        self.disk = disk
        self.rng = rng
        self.attach_latency = rng.choice([0.01, 0.05, 0.5, 2.0])   # FUSE-like to EBS-like
        self.detaches = 0

    def attach(self, volume_id: str, node: str) -> Attachment:
        if volume_id not in self.disk.volumes:
            raise VolumeError(f"volume {volume_id} does not exist")
        self.disk.loop.charge(self.attach_latency * self.rng.uniform(0.5, 1.5))
        self.disk.attach(volume_id, node)
        return Attachment(volume_id, node, self.disk.mount_point(volume_id, node))

    def detach(self, volume_id: str, node: str) -> None:
        if volume_id not in self.disk.volumes:
            raise VolumeError(f"volume {volume_id} does not exist")
        self.disk.loop.charge(self.attach_latency * self.rng.uniform(0.5, 1.5))
        if self.disk.detach(volume_id, node) is not None:
            self.detaches += 1

    def attachment(self, volume_id: str) -> Attachment | None:
        v = self.disk.volumes.get(volume_id)
        if v is None or v.attached is None:
            return None
        return Attachment(volume_id, v.attached, self.disk.mount_point(volume_id, v.attached))
