"""Progress on the terminal: a line every few seconds with the phase, elapsed
time, operation counts and the faults in force. Plain lines, so CI logs read
as well as a terminal does."""
from __future__ import annotations

import time

from rich.console import Console


class Progress:
    def __init__(self, quiet: bool = False, every: float = 5.0):
        self.quiet = quiet
        self.every = every
        self.console = Console(stderr=True, highlight=False)
        self.t0 = time.monotonic()
        self._phase = ""
        self._phase_t0 = self.t0
        self._phase_len = None
        self._last = 0.0
        self.faults: list[str] = []

    def say(self, text: str) -> None:
        if not self.quiet:
            self.console.print(f"[dim]{time.monotonic() - self.t0:7.1f}s[/dim] {text}")

    def phase(self, name: str, length: float | None) -> None:
        self._phase, self._phase_t0, self._phase_len = name, time.monotonic(), length
        self.say(f"[bold]{name}[/bold]" + (f" ({length:g}s)" if length else ""))

    def on_event(self, event: dict) -> None:
        if event["process"] == "nemesis":
            v = event["value"]
            self.say(f"[yellow]nemesis[/yellow] {event['f']} {','.join(v.get('targets', []))}")

    def tick(self, counts: dict) -> None:
        now = time.monotonic()
        if self.quiet or now - self._last < self.every:
            return
        self._last = now
        done = now - self._phase_t0
        of = f"/{self._phase_len:g}s" if self._phase_len else ""
        self.say(f"{self._phase} {done:5.1f}s{of}  ok {counts['ok']}  fail {counts['fail']}  info {counts['info']}")
