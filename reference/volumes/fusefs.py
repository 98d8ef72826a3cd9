"""One FUSE attachment of a local volume: a file system over a backing
directory, with the volume faults built in. One process per attachment
(`python -m reference.volumes.fusefs`), started and driven by the volume
service in `local.py` over its stdin/stdout (the control channel below).

What it models
--------------

*The backing directory is the disk.* Whatever is in it survives anything
that happens to processes. This process is the disk's controller and the
node's page cache:

- **Pass-through** (lazy off): every write goes straight to the backing file;
  fsync is passed on (fdatasync / fsync of the backing file).
- **Lazy** (lazy on, as Jepsen's LazyFS): writes that were not fsynced live
  only in this process. File data and size are kept per file as an overlay of
  written extents over the backing file, and reach it on the file's fsync /
  fdatasync. Directory entries (create, mkdir, unlink, rmdir, rename) are
  applied to the backing directory at once but journaled; they become durable
  when their parent directory is fsynced (POSIX: fsync of a new file does not
  make its name durable). `crash` drops every overlay and undoes the
  journaled entries that were not made durable, newest first, so the volume
  holds exactly what was fsynced. Unlinked files wait in a hidden trash
  directory of the backing until the unlink is durable, so the undo can bring
  them back. Times, modes and owners are not modeled (always durable).
- **Detach** (`kill` on the control channel): the attachment is dead; every
  operation on it answers EIO, on descriptors opened before as well as new
  opens, for as long as the mount stays (the service keeps a dead mount in
  place until the volume is attached to that node again, so a process
  restarted there gets EIO instead of silently writing to the empty mount
  point). In lazy mode the unsynced state is dropped first: a force-detached
  EBS volume loses the old host's page cache too.
- **Crash** also invalidates every open descriptor (it belonged to the
  "machine" that crashed): their next I/O answers EIO.
- **Slow disk**: each operation of the chosen classes sleeps first, a fixed
  time or a draw from a distribution.
- **Failing disk**: a fraction of the operations of the chosen classes
  (default: writes and syncs) fail with EIO and do nothing. A failed fsync
  leaves the data unsynced (a retry writes it; Linux's "fsyncgate" behaviour,
  where the kernel forgets dirty pages after a failed writeback, is not
  modeled).
- **Bad sector** (a latent sector error): a 4 KiB block that was written
  *and synced* earlier reads back EIO from now on, until healed; its bytes
  are untouched, writes still succeed. The file system remembers the recent
  synced writes of each file (merged per sync: one group commit is one
  extent) and damages the first block of the most recent one that has
  `behind` later synced writes of the same file beyond it, so the damage
  lands in the middle of a log, with acknowledged data after it.

Operation classes: `read` (read), `write` (write, truncate), `sync` (fsync,
fdatasync, fsyncdir), `meta` (everything else: lookups, open, create,
readdir, rename, unlink, ...).

The kernel is kept out of the way so that every operation reaches this
process: `direct_io` (no page cache), and attribute, entry and negative
lookup caching off.

Control channel (JSON Lines)
----------------------------

The parent writes one JSON object per line to the process's stdin and reads
one JSON object per line from the file descriptor given by `--control-fd`
(default: the original stdout; fd 1 itself is pointed at stderr so no library
can corrupt the channel). The first line out is `{"ready": true, "pid": P}`
once the kernel has mounted the file system (or `{"ready": false, "error":
...}`). Then each request gets exactly one response, in order:
`{"ok": true, ...}` or `{"ok": false, "error": MESSAGE}`.

    {"op": "status"}                  -> {"ok", "dead", "lazy", "generation", "unsynced_bytes",
                                          "unsynced_files", "pending_entries", "slow", "errors", "counts"}
    {"op": "kill"}                    detach: dead from now on (lazy: unsynced state dropped first)
    {"op": "crash"}                   drop what was not fsynced; open descriptors answer EIO from now on
    {"op": "sync"}                    make everything durable (as if every file and directory were fsynced)
    {"op": "lazy", "on": BOOL}        switch lazy mode (off: everything is made durable first)
    {"op": "slow", "spec": SPEC|null} delay operations; SPEC: see DelaySpec.from_json
    {"op": "errors", "spec": SPEC|null}  fail operations; SPEC: see ErrorSpec.from_json
    {"op": "bad_sector", "behind": N} -> {"ino", "file", "offset", "length"}: damage a synced block (above)
    {"op": "bad_sectors", "blocks": [{"ino", "offset", ...}]}  exactly these blocks read EIO ([] heals)
    {"op": "exit"}                    dead from now on; the parent unmounts (lazily), and the process
                                      exits when the kernel lets go (no descriptor left open on it)

EOF on stdin means the parent is gone: the process goes dead, unmounts its
mount (if the mount at the path is still its own) and exits once no
descriptor is open on it.
"""
from __future__ import annotations

import argparse
import bisect
import errno
import json
import logging
import os
import random
import stat
import subprocess
import sys
import threading
import time
from collections import deque
from dataclasses import dataclass, field

log = logging.getLogger("highwater.volume")

TRASH = ".highwater-trash"        # unlinked files whose unlink is not durable yet (lazy mode)
OP_CLASSES = ("read", "write", "sync", "meta")
SECTOR = 4096                     # the unit a bad sector damages (a page: what the kernel reads at least)
SYNCED_HISTORY = 64               # recent synced writes remembered per file, for the bad-sector fault


# --------------------------------------------------------------------------
# Fault specifications (plain data, shared with the service and the nemeses)
# --------------------------------------------------------------------------

@dataclass(frozen=True)
class DelaySpec:
    """How long each operation of `ops` waits. `distribution`:
    fixed (`ms`), uniform (`min_ms`..`max_ms`), exponential (mean `ms`),
    pareto (scale `ms`, shape `alpha`: a long tail), each capped at `max_ms`
    if given."""
    distribution: str = "fixed"
    ms: float = 0.0
    min_ms: float = 0.0
    max_ms: float | None = None
    alpha: float = 1.5
    ops: tuple[str, ...] = ("read", "write", "sync")
    seed: int | None = None

    @classmethod
    def from_json(cls, d: dict) -> "DelaySpec":
        known = {"distribution", "ms", "min_ms", "max_ms", "alpha", "ops", "seed"}
        unknown = set(d) - known
        if unknown:
            raise ValueError(f"disk-slow: unknown parameters {sorted(unknown)} (known: {sorted(known)})")
        spec = cls(**{**d, "ops": tuple(d.get("ops", cls.ops))})
        spec.validate()
        return spec

    def validate(self) -> None:
        if self.distribution not in ("fixed", "uniform", "exponential", "pareto"):
            raise ValueError(f"disk-slow: unknown distribution {self.distribution!r} "
                             "(fixed, uniform, exponential, pareto)")
        _check_ops("disk-slow", self.ops)
        if self.ms < 0 or self.min_ms < 0 or (self.max_ms is not None and self.max_ms < 0):
            raise ValueError("disk-slow: delays must not be negative")
        if self.distribution == "uniform" and (self.max_ms is None or self.max_ms < self.min_ms):
            raise ValueError("disk-slow: uniform needs min_ms <= max_ms")
        if self.distribution == "pareto" and self.alpha <= 0:
            raise ValueError("disk-slow: pareto needs alpha > 0")

    def to_json(self) -> dict:
        return {"distribution": self.distribution, "ms": self.ms, "min_ms": self.min_ms,
                "max_ms": self.max_ms, "alpha": self.alpha, "ops": list(self.ops), "seed": self.seed}

    def draw_ms(self, rng: random.Random) -> float:
        if self.distribution == "fixed":
            ms = self.ms
        elif self.distribution == "uniform":
            ms = rng.uniform(self.min_ms, self.max_ms)
        elif self.distribution == "exponential":
            ms = rng.expovariate(1.0 / self.ms) if self.ms > 0 else 0.0
        else:
            ms = self.ms * rng.paretovariate(self.alpha)
        if self.max_ms is not None and self.distribution != "uniform":
            ms = min(ms, self.max_ms)
        return ms


@dataclass(frozen=True)
class ErrorSpec:
    """A fraction `rate` (0..1) of the operations of `ops` fail with EIO."""
    rate: float
    ops: tuple[str, ...] = ("write", "sync")
    seed: int | None = None

    @classmethod
    def from_json(cls, d: dict) -> "ErrorSpec":
        known = {"rate", "ops", "seed"}
        unknown = set(d) - known
        if unknown or "rate" not in d:
            raise ValueError(f"disk-error: needs 'rate'; unknown parameters {sorted(unknown)}")
        spec = cls(rate=float(d["rate"]), ops=tuple(d.get("ops", cls.ops)), seed=d.get("seed"))
        if not 0.0 <= spec.rate <= 1.0:
            raise ValueError(f"disk-error: rate {spec.rate} is not within 0..1")
        _check_ops("disk-error", spec.ops)
        return spec

    def to_json(self) -> dict:
        return {"rate": self.rate, "ops": list(self.ops), "seed": self.seed}


def _check_ops(fault: str, ops) -> None:
    bad = [o for o in ops if o not in OP_CLASSES]
    if bad or not ops:
        raise ValueError(f"{fault}: ops must be a non-empty subset of {list(OP_CLASSES)}, got {list(ops)}")


# --------------------------------------------------------------------------
# Unsynced file data: an overlay of extents over the backing file
# --------------------------------------------------------------------------

class Overlay:
    """What one file holds beyond its backing file since its last sync:
    written extents (sorted, disjoint, never touching) and its size. Backing
    bytes at or past `floor` were truncated away and read as zeros."""

    def __init__(self, fd: int):
        self.fd = fd                      # our own descriptor on the backing file, for the sync
        self.lock = threading.Lock()
        size = os.fstat(fd).st_size
        self.size = size
        self.floor = size
        self.starts: list[int] = []
        self.datas: list[bytearray] = []
        self.dropped = False              # crash / detach threw it away; late writers must fail
        self.dirty = False                # written or truncated since the last sync

    @property
    def unsynced_bytes(self) -> int:
        return sum(len(d) for d in self.datas)

    def write(self, off: int, data: bytes) -> None:
        self.dirty = True
        end = off + len(data)
        starts, datas = self.starts, self.datas
        i = bisect.bisect_right(starts, off) - 1
        if i < 0 or starts[i] + len(datas[i]) < off:
            i += 1                        # no extent reaches `off`: the first candidate is the next one
        j = i
        while j < len(starts) and starts[j] <= end:
            j += 1                        # extents i..j-1 overlap or touch [off, end]
        if i == j:
            starts.insert(i, off)
            datas.insert(i, bytearray(data))
        else:
            if starts[i] <= off:          # the common case (appends): grow the first extent in place
                base, merged, rest = starts[i], datas[i], range(i + 1, j)
            else:
                base, merged, rest = off, bytearray(), range(i, j)
            for k in rest:                # gaps between them lie inside the write, which comes last
                _place(merged, base, starts[k], datas[k])
            _place(merged, base, off, data)
            starts[i:j] = [base]
            datas[i:j] = [merged]
        if end > self.size:
            self.size = end

    def truncate(self, length: int) -> None:
        self.dirty = True
        self.size = length
        self.floor = min(self.floor, length)
        while self.starts and self.starts[-1] >= length:
            self.starts.pop()
            self.datas.pop()
        if self.starts:
            last = len(self.starts) - 1
            over = self.starts[last] + len(self.datas[last]) - length
            if over > 0:
                del self.datas[last][len(self.datas[last]) - over:]

    def read(self, off: int, length: int) -> bytes:
        length = min(length, self.size - off)
        if length <= 0:
            return b""
        end = off + length
        backing_end = min(end, self.floor)
        if backing_end > off:
            got = os.pread(self.fd, backing_end - off, off)
            buf = bytearray(got)
            buf.extend(bytes(length - len(buf)))
        else:
            buf = bytearray(length)
        i = max(0, bisect.bisect_right(self.starts, off) - 1)
        while i < len(self.starts) and self.starts[i] < end:
            s, d = self.starts[i], self.datas[i]
            lo, hi = max(s, off), min(s + len(d), end)
            if hi > lo:
                buf[lo - off:hi - off] = d[lo - s:hi - s]
            i += 1
        return bytes(buf)

    def flush(self, datasync: bool, real_sync: bool) -> None:
        """Make it durable: the backing file becomes what the file is now."""
        backing = os.fstat(self.fd).st_size
        if self.floor < backing:
            os.ftruncate(self.fd, self.floor)
            backing = self.floor
        if self.size != backing:
            os.ftruncate(self.fd, self.size)
        for s, d in zip(self.starts, self.datas):
            view = memoryview(d)
            pos = s
            while view:
                n = os.pwrite(self.fd, view, pos)
                view, pos = view[n:], pos + n
        if real_sync:
            (os.fdatasync if datasync else os.fsync)(self.fd)
        self.starts, self.datas = [], []
        self.floor = self.size
        self.dirty = False


# --------------------------------------------------------------------------
# Directory entries not yet durable (lazy mode)
# --------------------------------------------------------------------------

@dataclass
class EntryChange:
    """One namespace change, with how to undo it. `dirs`: the parent
    directories whose fsync makes it durable."""
    kind: str                       # create | unlink | rename
    path: str
    new_path: str | None = None     # rename target
    trash: str | None = None        # unlink: where the file waits; rename: the replaced target
    dirs: frozenset = field(default_factory=frozenset)


def _place(buf: bytearray, base: int, pos: int, data) -> None:
    rel = pos - base
    if rel > len(buf):
        buf.extend(bytes(rel - len(buf)))
    buf[rel:rel + len(data)] = data


def _parent(path: str) -> str:
    return os.path.dirname(path.rstrip("/")) or "/"


# --------------------------------------------------------------------------
# The file system
# --------------------------------------------------------------------------

@dataclass
class Handle:
    fd: int
    ino: int
    generation: int
    flags: int


def _eio() -> OSError:
    return OSError(errno.EIO, os.strerror(errno.EIO))


def build_operations_class():
    """The mfusepy Operations subclass (built lazily so that importing this
    module for its specs does not need libfuse)."""
    import mfusepy

    class VolumeFS(mfusepy.Operations):
        use_ns = True

        def __init__(self, backing: str, *, lazy: bool = False, real_sync: bool = True):
            self.backing = os.path.realpath(backing)
            self.lazy = lazy
            self.real_sync = real_sync
            self.dead = False
            self.generation = 1
            self._mutex = threading.RLock()           # handles, overlays, journal
            self.handles: dict[int, Handle] = {}
            self.next_fh = 1
            self.overlays: dict[int, Overlay] = {}  # by backing inode
            self.journal: list[EntryChange] = []
            self.trash_seq = 0
            self.slow: DelaySpec | None = None
            self.slow_rng = random.Random()
            self.errors: ErrorSpec | None = None
            self.error_rng = random.Random()
            self.counts = {c: 0 for c in OP_CLASSES}
            self.injected = {"errors": 0, "delays": 0, "delay_ms_total": 0.0, "bad_sector_reads": 0}
            # for the bad-sector fault: what each file (by backing inode) wrote since its last
            # sync, the writes its syncs made durable (sequence, start, end), and the damage
            self.unsynced_writes: dict[int, list[tuple[int, int]]] = {}
            self.synced_writes: dict[int, deque] = {}
            self.sync_seq = 0
            self.paths: dict[int, str] = {}
            self.bad_blocks: dict[int, set[int]] = {}
            self.on_ready = None
            # files left in the trash by an earlier process were unlinked and never restored: gone
            _remove(os.path.join(self.backing, TRASH))
            os.makedirs(os.path.join(self.backing, TRASH))

        # ---- plumbing -----------------------------------------------------------
        def init_with_config(self, conn_info, config):
            if config is not None:
                config.entry_timeout = 0
                config.negative_timeout = 0
                config.attr_timeout = 0
                config.direct_io = 1
                config.use_ino = 1
            if self.on_ready is not None:
                threading.Thread(target=self.on_ready, daemon=True).start()

        def _real(self, path: str) -> str:
            if path == "/" + TRASH or path.startswith("/" + TRASH + "/"):
                raise OSError(errno.ENOENT, "hidden")
            return self.backing + path if path != "/" else self.backing

        def _enter(self, op_class: str, fh: int | None = None) -> Handle | None:
            """Every operation starts here: dead attachment, stale descriptor,
            injected delay and error, in that order."""
            if self.dead:
                raise _eio()
            handle = None
            if fh is not None and fh != 0:
                handle = self.handles.get(fh)
                if handle is None or handle.generation != self.generation:
                    raise _eio()
            self.counts[op_class] += 1
            slow = self.slow
            if slow is not None and op_class in slow.ops:
                ms = slow.draw_ms(self.slow_rng)
                self.injected["delays"] += 1
                self.injected["delay_ms_total"] += ms
                if ms > 0:
                    time.sleep(ms / 1000.0)
                if self.dead:
                    raise _eio()
            errs = self.errors
            if errs is not None and op_class in errs.ops and self.error_rng.random() < errs.rate:
                self.injected["errors"] += 1
                raise _eio()
            return handle

        def _overlay(self, ino: int, fd: int | None = None, path: str | None = None) -> Overlay:
            """The inode's overlay, made on first need (caller holds self._mutex)."""
            ov = self.overlays.get(ino)
            if ov is None:
                own = os.dup(fd) if fd is not None else os.open(path, os.O_RDWR)
                ov = Overlay(own)
                self.overlays[ino] = ov
            return ov

        def _stat(self, st: os.stat_result) -> dict:
            size = st.st_size
            ov = self.overlays.get(st.st_ino) if stat.S_ISREG(st.st_mode) else None
            if ov is not None:
                size = ov.size
            return {"st_mode": st.st_mode, "st_ino": st.st_ino, "st_nlink": st.st_nlink,
                    "st_uid": st.st_uid, "st_gid": st.st_gid, "st_size": size,
                    "st_blocks": (size + 511) // 512, "st_blksize": 4096,
                    "st_atime": st.st_atime_ns, "st_mtime": st.st_mtime_ns, "st_ctime": st.st_ctime_ns}

        # ---- attributes and directories ------------------------------------------
        def getattr(self, path, fh=None):
            handle = self._enter("meta", fh)
            with self._mutex:
                st = os.fstat(handle.fd) if handle is not None else os.lstat(self._real(path))
                return self._stat(st)

        def access(self, path, amode):
            self._enter("meta")
            os.stat(self._real(path))
            return 0

        def statfs(self, path):
            self._enter("meta")
            sv = os.statvfs(self.backing)
            return {k: getattr(sv, k) for k in ("f_bsize", "f_frsize", "f_blocks", "f_bfree", "f_bavail",
                                                "f_files", "f_ffree", "f_favail", "f_flag", "f_namemax")}

        def opendir(self, path):
            self._enter("meta")
            real = self._real(path)
            if not os.path.isdir(real):
                raise OSError(errno.ENOTDIR, "not a directory")
            return 0

        def readdir(self, path, fh):
            self._enter("meta")
            real = self._real(path)
            here = os.lstat(real)
            # use_ino is on: every entry needs its real inode (glibc hides d_ino 0)
            out = [(".", {"st_mode": here.st_mode, "st_ino": here.st_ino}, 0),
                   ("..", {"st_mode": stat.S_IFDIR, "st_ino": 1}, 0)]
            with os.scandir(real) as it:
                for e in it:
                    if path == "/" and e.name == TRASH:
                        continue
                    st = e.stat(follow_symlinks=False)
                    out.append((e.name, {"st_mode": st.st_mode, "st_ino": st.st_ino}, 0))
            return out

        def releasedir(self, path, fh):
            return 0

        def fsyncdir(self, path, datasync, fh):
            self._enter("sync")
            with self._mutex:
                if self.lazy:
                    self._commit_dir(path)
                if self.real_sync:
                    fd = os.open(self._real(path), os.O_RDONLY | os.O_DIRECTORY)
                    try:
                        os.fsync(fd)
                    finally:
                        os.close(fd)
            return 0

        def chmod(self, path, mode):
            self._enter("meta")
            os.chmod(self._real(path), mode)
            return 0

        def chown(self, path, uid, gid):
            self._enter("meta")
            os.chown(self._real(path), uid, gid, follow_symlinks=False)
            return 0

        def utimens(self, path, times=None):
            self._enter("meta")
            if times is None:
                os.utime(self._real(path), follow_symlinks=False)
            else:
                os.utime(self._real(path), ns=(int(times[0]), int(times[1])), follow_symlinks=False)
            return 0

        # ---- namespace ----------------------------------------------------------
        def _journal(self, change: EntryChange) -> None:
            if self.lazy:
                self.journal.append(change)

        def _to_trash(self, real: str) -> str:
            self.trash_seq += 1
            dest = os.path.join(self.backing, TRASH, f"{self.generation}.{self.trash_seq}")
            os.rename(real, dest)
            return dest

        def mkdir(self, path, mode):
            self._enter("meta")
            with self._mutex:
                os.mkdir(self._real(path), mode)
                self._journal(EntryChange("create", path, dirs=frozenset([_parent(path)])))
            return 0

        def rmdir(self, path):
            self._enter("meta")
            with self._mutex:
                real = self._real(path)
                if not self.lazy:
                    os.rmdir(real)
                    return 0
                if os.listdir(real):
                    raise OSError(errno.ENOTEMPTY, os.strerror(errno.ENOTEMPTY))
                trash = self._to_trash(real)
                self._journal(EntryChange("unlink", path, trash=trash, dirs=frozenset([_parent(path)])))
            return 0

        def unlink(self, path):
            self._enter("meta")
            with self._mutex:
                real = self._real(path)
                if not self.lazy:
                    os.unlink(real)
                    return 0
                if os.path.isdir(real) and not os.path.islink(real):
                    raise OSError(errno.EISDIR, os.strerror(errno.EISDIR))
                trash = self._to_trash(real)
                self._journal(EntryChange("unlink", path, trash=trash, dirs=frozenset([_parent(path)])))
            return 0

        def rename(self, old, new, flags=0):
            self._enter("meta")
            RENAME_NOREPLACE, RENAME_EXCHANGE = 1, 2
            if flags & RENAME_EXCHANGE or flags & ~RENAME_NOREPLACE:
                raise OSError(errno.EINVAL, "rename flags other than RENAME_NOREPLACE are not supported")
            with self._mutex:
                real_old, real_new = self._real(old), self._real(new)
                exists = os.path.lexists(real_new)
                if exists and flags & RENAME_NOREPLACE:
                    raise OSError(errno.EEXIST, os.strerror(errno.EEXIST))
                if not self.lazy:
                    os.rename(real_old, real_new)
                    return 0
                os.lstat(real_old)  # ENOENT before touching the target
                replaced = None
                if exists:
                    if os.path.isdir(real_new) and os.listdir(real_new):
                        raise OSError(errno.ENOTEMPTY, os.strerror(errno.ENOTEMPTY))
                    if os.path.isdir(real_new) != os.path.isdir(real_old):
                        raise OSError(errno.EISDIR if os.path.isdir(real_new) else errno.ENOTDIR, "type mismatch")
                    replaced = self._to_trash(real_new)
                os.rename(real_old, real_new)
                self._journal(EntryChange("rename", old, new_path=new, trash=replaced,
                                          dirs=frozenset([_parent(old), _parent(new)])))
            return 0

        def symlink(self, target, source):
            raise OSError(errno.EPERM, "symlinks are not supported on highwater volumes")

        def link(self, target, source):
            raise OSError(errno.EPERM, "hard links are not supported on highwater volumes")

        def mknod(self, path, mode, dev):
            raise OSError(errno.EPERM, "device nodes are not supported on highwater volumes")

        # ---- files --------------------------------------------------------------
        def _new_handle(self, fd: int, flags: int) -> int:
            with self._mutex:
                fh = self.next_fh
                self.next_fh += 1
                self.handles[fh] = Handle(fd, os.fstat(fd).st_ino, self.generation, flags)
                return fh

        def create(self, path, mode, flags=os.O_RDWR):
            self._enter("meta")
            with self._mutex:
                real = self._real(path)
                existed = os.path.lexists(real)
                fd = os.open(real, os.O_RDWR | os.O_CREAT | (flags & os.O_EXCL), mode)
                if not existed:
                    self._journal(EntryChange("create", path, dirs=frozenset([_parent(path)])))
                return self._new_handle(fd, flags)

        def open(self, path, flags):
            self._enter("meta")
            real = self._real(path)
            try:  # always read-write: a later sync of this inode's overlay may write through it
                fd = os.open(real, os.O_RDWR)
            except OSError:
                fd = os.open(real, os.O_RDONLY)
            fh = self._new_handle(fd, flags)
            if flags & os.O_TRUNC:
                self.truncate(path, 0, fh)
            return fh

        def read(self, path, size, offset, fh):
            handle = self._enter("read", fh)
            bad = self.bad_blocks.get(handle.ino)
            if bad and any(offset < b + SECTOR and b < offset + size for b in bad):
                self.injected["bad_sector_reads"] += 1
                raise _eio()
            with self._mutex:
                ov = self.overlays.get(handle.ino)
            if ov is None:
                return os.pread(handle.fd, size, offset)
            with ov.lock:
                if ov.dropped:
                    raise _eio()
                return ov.read(offset, size)

        def write(self, path, data, offset, fh):
            handle = self._enter("write", fh)
            with self._mutex:
                self.unsynced_writes.setdefault(handle.ino, []).append((offset, offset + len(data)))
                self.paths[handle.ino] = path
            if not self.lazy:
                n = os.pwrite(handle.fd, data, offset)
                if handle.flags & os.O_DSYNC:  # O_SYNC includes O_DSYNC's bit
                    self._sync_handle(handle, datasync=(handle.flags & os.O_SYNC) != os.O_SYNC)
                return n
            with self._mutex:
                if handle.generation != self.generation:
                    raise _eio()
                ov = self._overlay(handle.ino, fd=handle.fd)
            with ov.lock:
                if ov.dropped:
                    raise _eio()
                ov.write(offset, data)
            if handle.flags & os.O_DSYNC:
                self._sync_handle(handle, datasync=(handle.flags & os.O_SYNC) != os.O_SYNC)
            return len(data)

        def truncate(self, path, length, fh=None):
            handle = self._enter("write", fh)
            if not self.lazy:
                if handle is not None:
                    os.ftruncate(handle.fd, length)
                else:
                    os.truncate(self._real(path), length)
                return 0
            with self._mutex:
                if handle is not None:
                    ov = self._overlay(handle.ino, fd=handle.fd)
                else:
                    real = self._real(path)
                    ov = self._overlay(os.stat(real).st_ino, path=real)
            with ov.lock:
                if ov.dropped:
                    raise _eio()
                ov.truncate(length)
            return 0

        def fallocate(self, path, mode, offset, length, fh):
            raise OSError(errno.EOPNOTSUPP, "fallocate is not supported on highwater volumes")

        def flush(self, path, fh):
            self._enter("meta", fh)
            return 0

        def _sync_handle(self, handle: Handle, datasync: bool) -> None:
            with self._mutex:
                ov = self.overlays.get(handle.ino)
            if ov is None:
                if self.real_sync:
                    (os.fdatasync if datasync else os.fsync)(handle.fd)
                self._note_synced(handle.ino)
                return
            with ov.lock:
                if ov.dropped:
                    raise _eio()
                ov.flush(datasync, self.real_sync)
            self._note_synced(handle.ino)

        def _note_synced(self, ino: int) -> None:
            """The file's writes since its last sync are durable: remember
            them as synced writes, touching ones merged (one group commit,
            split by the kernel into several FUSE writes, is one extent)."""
            with self._mutex:
                pending = sorted(self.unsynced_writes.pop(ino, ()))
                merged: list[list[int]] = []
                for start, end in pending:
                    if merged and start <= merged[-1][1]:
                        merged[-1][1] = max(merged[-1][1], end)
                    else:
                        merged.append([start, end])
                history = self.synced_writes.setdefault(ino, deque(maxlen=SYNCED_HISTORY))
                for start, end in merged:
                    self.sync_seq += 1
                    history.append((self.sync_seq, start, end))

        def mark_bad_sector(self, behind: int) -> dict:
            """Damage the first block of the most recent synced write that
            has at least `behind` later synced writes of its file beyond it
            (at higher offsets): a latent sector error in the middle of a
            log, with acknowledged data after it. ValueError if no write
            qualifies yet."""
            if behind < 1:
                raise ValueError(f"bad-sector: behind must be at least 1, got {behind}")
            with self._mutex:
                best = None
                for ino, history in self.synced_writes.items():
                    items = list(history)
                    for i, (seq, start, end) in enumerate(items):
                        later = sum(1 for _, s2, _ in items[i + 1:] if s2 >= end)
                        if later >= behind and (best is None or seq > best[0]):
                            best = (seq, ino, start)
                if best is None:
                    raise ValueError(f"bad-sector: no synced write has {behind} later synced writes of its file "
                                     "beyond it yet (nothing to damage in the middle of a log)")
                _, ino, start = best
                block = start // SECTOR * SECTOR
                self.bad_blocks.setdefault(ino, set()).add(block)
                return {"ino": ino, "file": self.paths.get(ino), "offset": block, "length": SECTOR}

        def set_bad_blocks(self, blocks: list[dict]) -> None:
            """Exactly these blocks read EIO from now on (a new attachment of
            a damaged volume; [] heals)."""
            with self._mutex:
                bad: dict[int, set[int]] = {}
                for b in blocks:
                    bad.setdefault(int(b["ino"]), set()).add(int(b["offset"]) // SECTOR * SECTOR)
                self.bad_blocks = bad

        def fsync(self, path, datasync, fh):
            handle = self._enter("sync", fh)
            self._sync_handle(handle, bool(datasync))
            return 0

        def release(self, path, fh):
            with self._mutex:
                handle = self.handles.pop(fh, None)
                if handle is not None:
                    os.close(handle.fd)
                    ov = self.overlays.get(handle.ino)
                    # a clean overlay of a file nobody has open holds nothing but a descriptor
                    if ov is not None and not ov.dirty and not any(h.ino == handle.ino for h in self.handles.values()):
                        with ov.lock:
                            if not ov.dirty:
                                del self.overlays[handle.ino]
                                ov.dropped = True
                                os.close(ov.fd)
            return 0

        # ---- durability control (from the control channel) ------------------------
        def _commit_dir(self, path: str) -> None:
            """fsync of directory `path`: its journaled entry changes become durable."""
            keep = []
            for change in self.journal:
                if path in change.dirs:
                    if change.trash is not None:
                        _remove(change.trash)
                else:
                    keep.append(change)
            self.journal = keep

        def sync_all(self) -> None:
            with self._mutex:
                for ov in list(self.overlays.values()):
                    with ov.lock:
                        if not ov.dropped:
                            ov.flush(False, self.real_sync)
                for ino in list(self.unsynced_writes):
                    self._note_synced(ino)
                for change in self.journal:
                    if change.trash is not None:
                        _remove(change.trash)
                self.journal = []

        def crash(self) -> dict:
            """Drop what was not made durable; descriptors opened before answer EIO."""
            with self._mutex:
                self.generation += 1
                lost_bytes = 0
                lost_files = 0
                for ov in self.overlays.values():
                    with ov.lock:
                        lost_bytes += ov.unsynced_bytes
                        lost_files += ov.dirty
                        ov.dropped = True
                        os.close(ov.fd)
                self.overlays = {}
                self.unsynced_writes = {}
                undone = 0
                for change in reversed(self.journal):
                    undone += self._undo(change)
                self.journal = []
                return {"lost_bytes": lost_bytes, "lost_files": lost_files, "undone_entries": undone}

        def _undo(self, change: EntryChange) -> int:
            try:
                if change.kind == "create":
                    _remove(self.backing + change.path)
                elif change.kind == "unlink":
                    real = self.backing + change.path
                    if not os.path.lexists(real):
                        os.rename(change.trash, real)
                elif change.kind == "rename":
                    real_old, real_new = self.backing + change.path, self.backing + change.new_path
                    if os.path.lexists(real_new) and not os.path.lexists(real_old):
                        os.rename(real_new, real_old)
                    if change.trash is not None and not os.path.lexists(real_new):
                        os.rename(change.trash, real_new)
                return 1
            except OSError as e:  # a later durable change moved things: keep what is there
                log.warning("crash: could not undo %s of %s: %s", change.kind, change.path, e)
                return 0

        def kill(self) -> dict:
            with self._mutex:
                dropped = self.crash() if self.lazy else {}
                self.dead = True
                return dropped

        def set_lazy(self, on: bool) -> None:
            with self._mutex:
                if self.lazy and not on:
                    self.sync_all()
                    for ov in self.overlays.values():
                        os.close(ov.fd)
                    self.overlays = {}
                self.lazy = on

        def status(self) -> dict:
            with self._mutex:
                return {"dead": self.dead, "lazy": self.lazy, "generation": self.generation,
                        "unsynced_bytes": sum(o.unsynced_bytes for o in self.overlays.values()),
                        "unsynced_files": sum(o.dirty for o in self.overlays.values()), "pending_entries": len(self.journal),
                        "open_handles": len(self.handles),
                        "slow": self.slow.to_json() if self.slow else None,
                        "errors": self.errors.to_json() if self.errors else None,
                        "counts": dict(self.counts), "injected": dict(self.injected),
                        "bad_blocks": [{"ino": ino, "file": self.paths.get(ino), "offset": b}
                                       for ino, blocks in self.bad_blocks.items() for b in sorted(blocks)]}

    class VolumeFUSE(mfusepy.FUSE):
        # mfusepy drops rename's flags; RENAME_NOREPLACE must not silently replace
        def rename_fuse_3(self, old, new, flags):
            return self.operations.rename(old.decode(self.encoding, self.errors),
                                          new.decode(self.encoding, self.errors), flags)

    return VolumeFS, VolumeFUSE


def _remove(path: str) -> None:
    import shutil
    try:
        if os.path.isdir(path) and not os.path.islink(path):
            shutil.rmtree(path)
        else:
            os.unlink(path)
    except FileNotFoundError:
        pass


# --------------------------------------------------------------------------
# The process: FUSE in the main thread, the control channel in another
# --------------------------------------------------------------------------

def lazy_unmount(mountpoint: str) -> bool:
    """Detach the mount from the tree; descriptors still open keep reaching
    the process that served it. True if it was mounted."""
    r = subprocess.run(["fusermount3", "-u", "-z", mountpoint], capture_output=True, text=True)
    if r.returncode == 0:
        return True
    r2 = subprocess.run(["umount", "-l", mountpoint], capture_output=True, text=True)
    return r2.returncode == 0


def _serve_control(fs, mountpoint: str, inp, out) -> None:
    def reply(obj):
        out.write(json.dumps(obj) + "\n")
        out.flush()

    own_dev = _mount_dev(mountpoint)   # to tell our mount from a later one at the same path
    for line in inp:
        line = line.strip()
        if not line:
            continue
        try:
            req = json.loads(line)
            op = req.get("op")
            if op == "status":
                reply({"ok": True, **fs.status()})
            elif op == "kill":
                reply({"ok": True, **fs.kill()})
            elif op == "crash":
                reply({"ok": True, **fs.crash()})
            elif op == "sync":
                fs.sync_all()
                reply({"ok": True})
            elif op == "lazy":
                fs.set_lazy(bool(req["on"]))
                reply({"ok": True})
            elif op == "slow":
                spec = None if req.get("spec") is None else DelaySpec.from_json(req["spec"])
                fs.slow = spec
                fs.slow_rng = random.Random(spec.seed if spec else None)
                reply({"ok": True})
            elif op == "errors":
                spec = None if req.get("spec") is None else ErrorSpec.from_json(req["spec"])
                fs.errors = spec
                fs.error_rng = random.Random(spec.seed if spec else None)
                reply({"ok": True})
            elif op == "bad_sector":
                reply({"ok": True, **fs.mark_bad_sector(int(req.get("behind", 2)))})
            elif op == "bad_sectors":
                fs.set_bad_blocks(list(req.get("blocks") or []))
                reply({"ok": True})
            elif op == "exit":
                # the parent unmounts (it may mount a new attachment here right after:
                # an unmount from this process could hit that one)
                fs.dead = True
                reply({"ok": True})
                return
            else:
                reply({"ok": False, "error": f"unknown op {op!r}"})
        except Exception as e:  # a bad request gets an answer, never kills the file system
            reply({"ok": False, "error": f"{type(e).__name__}: {e}"})
    # EOF: the parent is gone. Unmount if the mount there is still ours; descriptors
    # still open keep getting EIO from this process until they are closed.
    fs.dead = True
    if own_dev is not None and _mount_dev(mountpoint) == own_dev:
        lazy_unmount(mountpoint)


def _mount_dev(mountpoint: str) -> str | None:
    """major:minor of the file system mounted at `mountpoint` (the top one),
    from /proc/self/mountinfo: no system call reaches the file system itself."""
    real = os.path.realpath(mountpoint)
    found = None
    try:
        with open("/proc/self/mountinfo") as f:
            for line in f:
                parts = line.split()
                if parts[4].replace("\\040", " ") == real:
                    found = parts[2]
    except OSError:
        return None
    return found


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description="Serve one attachment of a highwater local volume over FUSE.")
    p.add_argument("--backing", required=True, help="the volume's backing directory (the 'disk')")
    p.add_argument("--mountpoint", required=True)
    p.add_argument("--lazy", action="store_true", help="keep unsynced writes in this process (LazyFS)")
    p.add_argument("--no-real-sync", action="store_true",
                   help="do not fsync the backing files (faster; the backing then only survives process crashes)")
    p.add_argument("--name", default="highwater", help="fsname shown in /proc/mounts")
    args = p.parse_args(argv)
    logging.basicConfig(stream=sys.stderr, level=logging.WARNING,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    # the control channel gets the real stdout; fd 1 goes to stderr so no library can corrupt it
    control_out = os.fdopen(os.dup(1), "w", buffering=1)
    os.dup2(2, 1)
    sys.stdout = sys.stderr

    VolumeFS, VolumeFUSE = build_operations_class()
    fs = VolumeFS(args.backing, lazy=args.lazy, real_sync=not args.no_real_sync)

    def ready():
        control_out.write(json.dumps({"ready": True, "pid": os.getpid()}) + "\n")
        control_out.flush()
        _serve_control(fs, args.mountpoint, sys.stdin, control_out)

    fs.on_ready = ready
    try:
        VolumeFUSE(fs, args.mountpoint, foreground=True, nothreads=False, fsname=args.name,
                   subtype="highwater")
    except Exception as e:
        try:
            control_out.write(json.dumps({"ready": False, "error": f"mount failed: {e}"}) + "\n")
            control_out.flush()
        except OSError:
            pass
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
