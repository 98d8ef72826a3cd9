"""BUGGIFY (after FoundationDB): named code points where the deterministic
simulator may inject a rare condition -- a delay, a failure the code must
already survive -- so that rare paths run often under simulation.

Outside simulation nothing is installed and every call is a cheap no-op:

    if buggify.fire("upload.commit.fail"):   # always False in production
        raise ...
    await buggify.delay("wal.group.slow")     # returns at once in production

The simulator installs a policy (seeded: each point is enabled for a run
with some probability, then fires with some probability each time it is
reached), so a run stays reproducible from its seed. A point only ever
injects what the real world can do at that place (an I/O error, a slow
step, a lost response); it never breaks an invariant by itself.
"""
from __future__ import annotations

import asyncio

_policy = None   # an object with fire(name) -> bool and delay(name) -> float (seconds)

# every point, and what it injects (the simulator reports which ones fired)
POINTS: dict[str, str] = {
    "wal.write.slow": "the WAL's group write takes long (a slow disk)",
    "upload.before-commit.slow": "an upload pauses between its PUTs and its metadata commit",
    "upload.put.fail": "an object PUT fails once (the uploader retries)",
    "metadata.append.slow": "a metadata append waits before its conditional PUT",
    "replica.append.slow": "a broker's metadata append through the controller waits first",
    "heartbeat.slow": "a heartbeat is sent late",
    "controller.tick.slow": "the controller's tick starts late",
    "failover.step.slow": "a failover step (detach, attach, recover) waits first",
    "fetch.slow": "a Fetch handler waits before reading",
    "produce.queue.slow": "a Produce waits before queueing its batches",
}


def fire(name: str) -> bool:
    """Whether the point injects its condition now (never outside simulation)."""
    if _policy is None:
        return False
    return _policy.fire(name)


async def delay(name: str) -> None:
    """Wait a while if the point fires (no-op outside simulation)."""
    if _policy is None:
        return
    seconds = _policy.delay(name)
    if seconds > 0:
        await asyncio.sleep(seconds)


def install(policy) -> None:
    global _policy
    _policy = policy


def restore() -> None:
    global _policy
    _policy = None
