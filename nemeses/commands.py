"""Where a fault's commands run. A fault that needs to run a program on a
node (iptables rules, writing a clock offset) builds the argv and hands it to
a `CommandRunner`; the runner decides whether it runs here (`LocalRunner`),
over SSH (`harness.remote.ssh.SshNode`) or anywhere else. Faults stay pure
and testable; the transport is the runner's business.

Contract of `run`: the argv runs once, without a shell, with a timeout; the
result is a `subprocess.CompletedProcess` (args, returncode, stdout, stderr
as str). A run that exceeds its timeout raises `subprocess.TimeoutExpired`
(or a subclass), whatever the transport. A non-zero exit is returned, not
raised: the caller decides (`check_completed`)."""
from __future__ import annotations

import subprocess
from typing import Protocol, runtime_checkable


@runtime_checkable
class CommandRunner(Protocol):
    def run(self, argv: list[str], timeout: float) -> subprocess.CompletedProcess: ...


class LocalRunner:
    """Runs argv on this machine (in this network namespace)."""

    def run(self, argv: list[str], timeout: float) -> subprocess.CompletedProcess:
        return subprocess.run(list(argv), capture_output=True, text=True, timeout=timeout,
                              stdin=subprocess.DEVNULL)

    def __repr__(self) -> str:
        return "LocalRunner()"


class CommandFailed(RuntimeError):
    """A command exited non-zero; the message names the runner, argv, exit
    status and the end of stderr."""

    def __init__(self, where: str, result: subprocess.CompletedProcess):
        self.where = where
        self.result = result
        err = (result.stderr or "").strip().splitlines()[-5:]
        argv = result.args if isinstance(result.args, str) else " ".join(map(str, result.args))
        super().__init__(f"{where}: `{argv}` exited {result.returncode}"
                         + (": " + " / ".join(err) if err else ""))


def check_completed(runner: CommandRunner, argv: list[str], timeout: float) -> subprocess.CompletedProcess:
    """Run and raise CommandFailed on a non-zero exit."""
    result = runner.run(argv, timeout)
    if result.returncode != 0:
        raise CommandFailed(repr(runner), result)
    return result
