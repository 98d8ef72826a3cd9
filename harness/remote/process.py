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
    def __init__(self, name: str, node: SshNode, argv: list[str], env: dict | None = None):
        self.name = name
        self.node = node
        self.argv = argv
        self.env = env or {}
        self.starts = 0
        self.killed_by_us = False
        self._started = False

    @property
    def log_path(self) -> Path:
        """Where its output is on the host (the same file here for namespaces)."""
        return Path(str(self.node.procdir / f"{NAME}.out"))

    @property
    def pid(self) -> int | None:
        if not self._started or not self.node.alive(NAME):
            return None
        return self.node.pid(NAME)

    def start(self) -> None:
        if self._started and self.node.alive(NAME):
            return
        self.killed_by_us = False
        self.node.start_background(NAME, self.argv, env=self.env)
        self._started = True
        self.starts += 1

    def signal(self, sig: int) -> bool:
        if not self._started:
            return False
        return self.node.signal(NAME, sig, wait=None)

    def pause(self, timeout: float = 5.0) -> None:
        if self._started:
            self.node.pause(NAME, wait=timeout)

    def resume(self) -> None:
        if self._started:
            self.node.resume(NAME)

    def kill(self) -> None:
        self.killed_by_us = True
        if self._started:
            self.node.kill(NAME)

    def stop(self, grace: float = 3.0) -> None:
        self.killed_by_us = True
        if not self._started or not self.node.alive(NAME):
            return
        self.node.signal(NAME, signals.SIGCONT, wait=None)   # a paused process cannot act on SIGTERM
        self.node.signal(NAME, signals.SIGTERM, wait=None)
        deadline = time.monotonic() + grace
        while time.monotonic() < deadline and self.node.alive(NAME):
            time.sleep(0.1)
        if self.node.alive(NAME):
            self.kill()

    def exited_by_itself(self) -> int | None:
        if not self._started or self.killed_by_us or self.node.alive(NAME):
            return None
        code = self.node.exit_status(NAME)
        return code if code is not None else -signals.SIGKILL
