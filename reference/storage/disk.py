"""The WAL's file I/O, behind one seam: the OS, or the simulator's disk.

`WalFile` (and the node's wait for its volume) call `disk.io.<op>` instead
of `os`/`fcntl` directly, with the same arguments, results and errors
(OSError with an errno: EIO from a detached volume, BlockingIOError from a
held lock). Outside simulation `io` is `OsDisk`, a direct pass-through. The
deterministic simulator (`harness/sim`) installs a simulated disk: volumes
attached to nodes, a page cache that a crash may lose or tear, EIO, slow
I/O. `WalDevice` (raw block devices, O_DIRECT) talks to the OS directly and
is not simulated.
"""
from __future__ import annotations

import fcntl
import os
import stat
from pathlib import Path


class OsDisk:
    """Pass-through to the operating system."""

    open = staticmethod(os.open)
    close = staticmethod(os.close)
    pread = staticmethod(os.pread)
    pwrite = staticmethod(os.pwrite)
    fsync = staticmethod(os.fsync)
    fdatasync = staticmethod(os.fdatasync)
    ftruncate = staticmethod(os.ftruncate)
    rename = staticmethod(os.rename)

    @staticmethod
    def fsize(fd: int) -> int:
        return os.fstat(fd).st_size

    @staticmethod
    def lock_exclusive(fd: int) -> None:
        """An exclusive, non-blocking lock; BlockingIOError if held elsewhere."""
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)

    @staticmethod
    def size(path) -> int | None:
        """The file's size, or None if there is no such file."""
        try:
            return Path(path).stat().st_size
        except FileNotFoundError:
            return None

    @staticmethod
    def is_dir(path) -> bool:
        return Path(path).is_dir()

    @staticmethod
    def is_block_device(path) -> bool:
        return stat.S_ISBLK(Path(path).stat().st_mode)

    @staticmethod
    def volume_label(path) -> str | None:
        """The volume id labelled at a mount point (`reference.volumes.base`)."""
        from reference.volumes.base import label_of
        return label_of(path)

    @staticmethod
    def mkdir(path) -> None:
        Path(path).mkdir(parents=True, exist_ok=True)

    @staticmethod
    def fsync_directory(path) -> None:
        """Make a directory's entries (a file just created or renamed) durable."""
        fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


io = OsDisk()


def install(disk) -> None:
    global io
    io = disk


def restore() -> None:
    global io
    io = OsDisk()
