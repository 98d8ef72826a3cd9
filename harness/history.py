"""Recording a history as it happens (the format is design.md's contract).

Every event is appended and flushed at once, so a harness that dies mid-run
loses nothing but, at worst, a torn last line, which readers drop.
"""
from __future__ import annotations

import json
import os
import threading
import time


class HistoryWriter:
    def __init__(self, path, start_ns: int | None = None):
        self.path = path
        self._file = open(path, "a", encoding="utf-8")
        self._lock = threading.Lock()
        self._index = 0
        self.start_ns = time.monotonic_ns() if start_ns is None else start_ns
        self.counts = {"invoke": 0, "ok": 0, "fail": 0, "info": 0}
        self._listeners = []

    def now(self) -> int:
        return time.monotonic_ns() - self.start_ns

    def subscribe(self, listener) -> None:
        """listener(event) is called for each event after it is written."""
        self._listeners.append(listener)

    def append(self, process, type_: str, f: str, value, **extra) -> dict:
        with self._lock:
            event = {"index": self._index, "time": self.now(), "process": process,
                     "type": type_, "f": f, "value": value}
            event.update(extra)
            self._file.write(json.dumps(event, separators=(",", ":")) + "\n")
            self._file.flush()
            self._index += 1
            if type_ in self.counts and process != "nemesis":
                self.counts[type_] += 1
        for listener in self._listeners:
            listener(event)
        return event

    def sync(self) -> None:
        with self._lock:
            self._file.flush()
            os.fsync(self._file.fileno())

    def close(self) -> None:
        with self._lock:
            if not self._file.closed:
                self._file.flush()
                self._file.close()
