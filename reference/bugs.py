"""The bug zoo: named bugs planted in the broker's real code paths, off unless
switched on by name (`highwater broker --bug NAME`, `highwater run --bug
NAME`). Each is a few lines where the correct code makes its decision, never
a separate fake path, so that a harness that catches the bug catches the
real mistake. `highwater zoo` runs, for each bug, the chaos test that should
expose it and checks that the expected anomaly is found.

A bug is switched on for the whole process (one broker per process; in the
deterministic simulation, for the whole simulated cluster).
"""
from __future__ import annotations

import logging

log = logging.getLogger(__name__)

# name -> what it does (the zoo's table says what exposes it and what it must produce)
BUGS: dict[str, str] = {
    "ack-before-fsync": "the WAL acknowledges a group once it is written and fsyncs only once a second "
                        "(storage/wal.py)",
    "trim-before-commit": "the WAL is trimmed when an upload's PUT returns, before its metadata commit "
                          "(storage/upload.py)",
    "skip-wal-replay": "a restarted or failed-over node skips its WAL: what was acknowledged but not "
                       "yet uploaded is forgotten (storage/recovery.py)",
    "no-fencing": "node and stream epochs are not checked, the ack-path checks (session, stream still "
                  "here) always pass and a broker told it is fenced carries on: a fenced broker still "
                  "writes, commits and acknowledges (cluster/node.py, storage/engine.py, storage/metadata.py)",
    "no-dedup": "an idempotent producer's retry of a batch already stored is appended again "
                "(storage/producer_state.py)",
    "offset-reuse": "after a failover the dead node's partitions reopen at their last uploaded offset, "
                    "without recovering its WAL (cluster/controller.py)",
    "blind-metadata-write": "metadata log records are written with a plain PUT, not If-None-Match: a deposed "
                            "controller's late write overwrites a record the new one wrote and others applied "
                            "(storage/metadata.py)",
    "stale-read-after-reassign": "a node whose partition moved away keeps answering fetches and offset "
                                 "requests for it from what it had, at its old epoch (storage/engine.py)",
    "serve-after-gap": "recovery that finds a gap (a hole in a stream, or a damaged or unreadable WAL record "
                       "with acknowledged records after it) logs it, resets the WAL and serves, so new "
                       "appends reuse the lost offsets (storage/recovery.py)",
}

_enabled: set[str] = set()


class UnknownBug(ValueError):
    pass


def enable(names) -> None:
    for name in names:
        if name not in BUGS:
            raise UnknownBug(f"unknown bug {name!r}; known: {', '.join(sorted(BUGS))}")
        _enabled.add(name)
        log.warning("PLANTED BUG ON: %s (%s); this broker is deliberately broken", name, BUGS[name])


def disable_all() -> None:
    _enabled.clear()


def enabled(name: str) -> bool:
    """Whether the named bug is on. Asking for a name that is not in BUGS is
    the caller's mistake, caught at once."""
    if name not in BUGS:
        raise UnknownBug(name)
    return name in _enabled
