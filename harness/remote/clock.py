"""The clock fault's remote form: a node's process runs with libfaketime
preloaded (`env()`), and skewing its clock is writing the offset file over
SFTP; a strobe is a small sh loop on the node flipping the file."""
from __future__ import annotations

import shlex

from harness.remote.ssh import SshNode
from nemeses.faketime import LIBRARY_CANDIDATES, offset_spec, preload_env

STROBE = "clock-strobe"


class ClockUnavailable(RuntimeError):
    pass


class RemoteClock:
    """`target.clock(node)` for an SSH node: set_offset(seconds), strobe(...),
    reset(). The offset file is relative to the node's workdir unless absolute."""

    def __init__(self, node: SshNode, offset_file: str = "clock/faketime.offset"):
        self.node = node
        self.offset_file = node.path(offset_file)
        self._library: str | None = None

    def unsupported(self) -> str | None:
        """None if libfaketime is installed on the node, else why not."""
        if self._library is None:
            tests = " ".join(shlex.quote(p) for p in LIBRARY_CANDIDATES)
            r = self.node.run(f"for f in {tests}; do if [ -r \"$f\" ]; then echo \"$f\"; exit 0; fi; done; exit 1")
            if r.returncode != 0:
                return (f"libfaketime is not installed on node {self.node.name} "
                        f"(looked for {', '.join(LIBRARY_CANDIDATES)}; Debian: apt-get install libfaketime)")
            self._library = r.stdout.strip()
        return None

    def env(self, fake_monotonic: bool = False) -> dict[str, str]:
        """Environment to start the node's process with (start_background(env=...));
        the offset starts at zero. See nemeses.faketime on `fake_monotonic`."""
        reason = self.unsupported()
        if reason:
            raise ClockUnavailable(reason)
        self.node.write_text(self.offset_file, offset_spec(0))
        return preload_env(self._library, self.offset_file, fake_monotonic)

    def set_offset(self, seconds: float) -> None:
        self._stop_strobe()
        self.node.write_text(self.offset_file, offset_spec(seconds))

    def strobe(self, delta: float, period: float, duration: float) -> None:
        """Flip the clock between +0 and +delta every `period` seconds for
        `duration` seconds (Jepsen's strobe), then leave it at +0."""
        self._stop_strobe()
        f = shlex.quote(self.offset_file)
        write = 'printf %s "$1" > {f}.strobe && mv {f}.strobe {f}'.format(f=f)
        script = (f"flip() {{ {write}; }}; end=$(( $(date +%s) + {max(1, round(duration))} )); "
                  f"while [ $(date +%s) -lt $end ]; do flip {shlex.quote(offset_spec(delta))}; sleep {period:g}; "
                  f"flip {shlex.quote(offset_spec(0))}; sleep {period:g}; done; flip {shlex.quote(offset_spec(0))}")
        self.node.start_background(STROBE, script)

    def reset(self) -> None:
        self.set_offset(0)

    def _stop_strobe(self) -> None:
        self.node.kill(STROBE)
