"""One node process started on this machine, and the small helpers every
local target needs around it: its own process group (a signal reaches the
node and any children a wrapper script started), its output appended to a
log with a marker line per start, a wait until it is up that fails early
when the process dies, and a stop that cannot hang on a paused node."""
from __future__ import annotations

import os
import signal
import socket
import subprocess
import time
from pathlib import Path
from typing import Callable


def port_open(host: str, port: int, timeout: float = 0.5) -> bool:
    try:
        with socket.create_connection((host, port), timeout=timeout):
            return True
    except OSError:
        return False


def process_state(pid: int) -> str | None:
    """The state letter of /proc/PID/stat (R, S, T, Z, ...), None if gone."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        return None


def split_address(address: str) -> tuple[str, int]:
    host, sep, port = address.rpartition(":")
    if not sep or not host or not port.isdigit():
        raise ValueError(f"{address!r} is not HOST:PORT")
    return host.strip("[]"), int(port)


class LocalProcess:
    """A node's process: started in a new session, SIGKILLed, paused, stopped."""

    def __init__(self, name: str, argv: list[str], log_path: Path, env: dict | None = None,
                 cwd: str | Path | None = None):
        self.name = name
        self.argv = argv
        self.log_path = Path(log_path)
        self.env = env
        self.cwd = cwd
        self.process: subprocess.Popen | None = None
        self.starts = 0
        self.killed_by_us = False

    @property
    def pid(self) -> int | None:
        """The pid while the process runs, else None."""
        return self.process.pid if self.process is not None and self.process.poll() is None else None

    def start(self) -> None:
        if self.pid is not None:
            return
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        self.killed_by_us = False
        with open(self.log_path, "ab") as out:
            out.write(f"\n=== highwater: starting {self.name} (start #{self.starts + 1}) ===\n".encode())
            out.flush()
            self.process = subprocess.Popen(self.argv, stdout=out, stderr=subprocess.STDOUT,
                                            stdin=subprocess.DEVNULL, start_new_session=True,
                                            env=self.env, cwd=self.cwd)
        self.starts += 1

    def signal(self, sig: int) -> bool:
        """Send sig to the process group; False if nothing is running."""
        if self.pid is None:
            return False
        try:
            os.killpg(self.process.pid, sig)
        except ProcessLookupError:
            return False
        return True

    def pause(self, timeout: float = 2.0) -> None:
        """SIGSTOP the group, and return once the node's process is stopped
        (the signal is delivered asynchronously): the fault has taken effect."""
        if not self.signal(signal.SIGSTOP):
            return
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline and process_state(self.process.pid) not in ("T", "t", None):
            time.sleep(0.005)

    def resume(self) -> None:
        self.signal(signal.SIGCONT)

    def kill(self) -> None:
        """SIGKILL: no flush, no goodbye."""
        self.killed_by_us = True
        if self.signal(signal.SIGKILL):
            self.process.wait(10)

    def stop(self, grace: float = 3.0) -> None:
        """SIGCONT (a paused process cannot act on SIGTERM), SIGTERM, then
        SIGKILL after the grace."""
        self.killed_by_us = True
        self.signal(signal.SIGCONT)
        if not self.signal(signal.SIGTERM):
            return
        try:
            self.process.wait(grace)
        except subprocess.TimeoutExpired:
            self.kill()

    def exited_by_itself(self) -> int | None:
        """The exit code if the process ended without the harness stopping it."""
        if self.process is None or self.killed_by_us:
            return None
        return self.process.poll()

    def wait_up(self, is_up: Callable[[], bool], timeout: float, what: str, error=RuntimeError) -> None:
        wait_up(is_up, timeout, what, error, process=self)


def wait_up(is_up: Callable[[], bool], timeout: float, what: str, error=RuntimeError,
            process: LocalProcess | None = None, name: str = "node") -> None:
    """Until is_up() holds; raise `error` if the process (when there is one)
    exits or the timeout passes first, naming its log."""
    name = process.name if process is not None else name
    where = f"; see {process.log_path}" if process is not None else ""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process is not None and process.process is not None and process.process.poll() is not None:
            raise error(f"{name} exited with {process.process.returncode} during start{where}")
        if is_up():
            return
        time.sleep(0.05)
    raise error(f"{name} was not up ({what}) within {timeout:.0f}s{where}")
