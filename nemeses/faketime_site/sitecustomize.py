"""Loaded (through PYTHONPATH) into a Python node whose wall clock the clock
fault skews. libfaketime 0.9.10 with the monotonic clock left alone makes
clock_nanosleep(CLOCK_MONOTONIC) fail with EINVAL, so `time.sleep` raises
in the faked process (botocore's retry back-off, for one). Sleeping with
select() waits the same monotonic time without that call. Nothing else is
changed: the node's code is the code under test."""
import select
import time

_MONOTONIC = time.monotonic


def _sleep(seconds):
    if seconds < 0:
        raise ValueError("sleep length must be non-negative")
    end = _MONOTONIC() + seconds
    while (left := end - _MONOTONIC()) > 0:
        select.select([], [], [], left)


time.sleep = _sleep
