"""A node's process on a host reached over SSH (a remote machine from an
inventory, or a network namespace of this machine), with the interface of
harness.db.local_process.LocalProcess, so a target drives local and remote
nodes with the same code: start, signal, pause, resume, kill, stop,
exited_by_itself. The process runs detached on the host (SshNode's
background processes: a pid file, its output in the node's procs/ log)."""
from __future__ import annotations

import signal as signals
import time
from pathlib import Path

from harness.remote.ssh import SshNode

NAME = "broker"


class RemoteProcess:
    """`argv`: a list (no shell) or a string (an sh script); `proc_name`: its
    name among the host's background processes (NAME.pid, NAME.out in the
    workdir's procs/), unique per workdir."""

    def __init__(self, name: str, node: SshNode, argv: list[str] | str, env: dict | None = None,
                 cwd: str | None = None, proc_name: str = NAME):
        self.name = name
        self.node = node
        self.argv = argv
        self.env = env or {}
        self.cwd = cwd
        self.proc_name = proc_name
        self.starts = 0
        self.killed_by_us = False
        self._started = False

    @property
    def log_path(self) -> Path:
        """Where its output is on the host (the same file here for namespaces)."""
        return Path(str(self.node.procdir / f"{self.proc_name}.out"))

    @property
    def pid(self) -> int | None:
        if not self._started or not self.node.alive(self.proc_name):
            return None
        return self.node.pid(self.proc_name)

    def start(self) -> None:
        if self._started and self.node.alive(self.proc_name):
            return
        self.killed_by_us = False
        self.node.start_background(self.proc_name, self.argv, env=self.env, cwd=self.cwd)
        self._started = True
        self.starts += 1

    def signal(self, sig: int) -> bool:
        if not self._started:
            return False
        return self.node.signal(self.proc_name, sig, wait=None)

    def pause(self, timeout: float = 5.0) -> None:
        if self._started:
            self.node.pause(self.proc_name, wait=timeout)

    def resume(self) -> None:
        if self._started:
            self.node.resume(self.proc_name)

    def kill(self) -> None:
        self.killed_by_us = True
        if self._started:
            self.node.kill(self.proc_name)

    def stop(self, grace: float = 3.0) -> None:
        self.killed_by_us = True
        if not self._started or not self.node.alive(self.proc_name):
            return
        self.node.signal(self.proc_name, signals.SIGCONT, wait=None)   # a paused process cannot act on SIGTERM
        self.node.signal(self.proc_name, signals.SIGTERM, wait=None)
        deadline = time.monotonic() + grace
        while time.monotonic() < deadline and self.node.alive(self.proc_name):
            time.sleep(0.1)
        if self.node.alive(self.proc_name):
            self.kill()

    def exited_by_itself(self) -> int | None:
        if not self._started or self.killed_by_us or self.node.alive(self.proc_name):
            return None
        code = self.node.exit_status(self.proc_name)
        return code if code is not None else -signals.SIGKILL
