"""A tiny Porcupine-like core: checkers, composition, verdicts.

A checker is any object with a ``name`` and ``check(history, options) ->
dict`` whose result has at least ``{"valid": True | False | "unknown"}``,
and optionally ``anomaly_types``, ``anomalies`` ({type: [witness, ...]}) and
``allowed`` (types found but allowed). ``compose`` merges results into
design.md's ``results.json`` shape.
"""
from __future__ import annotations

import os
import pickle
import time
import traceback

from .history import no_gc, read_history

UNKNOWN = "unknown"


def merge_valid(values) -> bool | str:
    """Any false -> false; else any unknown -> unknown; else true."""
    values = list(values)
    if any(v is False for v in values):
        return False
    if any(v is not True for v in values):
        return UNKNOWN
    return True


def compose(results: dict, stats: dict | None = None) -> dict:
    """{checker name: result} -> results.json. Anomaly witnesses move to the
    top level; each checker keeps the rest of its result."""
    anomalies, allowed = {}, set()
    checkers = {}
    for name, r in results.items():
        for t, ws in (r.get("anomalies") or {}).items():
            anomalies.setdefault(t, []).extend(ws)
        allowed.update(r.get("allowed") or ())
        checkers[name] = {k: v for k, v in r.items() if k != "anomalies"}
    types = sorted(anomalies)
    return {"valid": merge_valid(r.get("valid", UNKNOWN) for r in results.values()),
            "anomaly_types": types,
            "anomalies": {t: anomalies[t] for t in types},
            "allowed": sorted(t for t in allowed if t in anomalies),
            "checkers": checkers,
            "stats": stats or {"ok": 0, "fail": 0, "info": 0}}


def exit_code(result: dict) -> int:
    """design.md's exit codes: 0 valid, 1 invalid, 3 unknown."""
    v = result.get("valid")
    if v is True:
        return 0
    if v is False:
        return 1
    return 3


def _registry():
    from .kafka import KafkaChecker
    from .perf import PerfChecker
    from .recovery import RecoveryChecker
    from .workload import WorkloadChecker
    reg = {c.name: c for c in (KafkaChecker(), RecoveryChecker(), PerfChecker(),
                               WorkloadChecker())}
    try:
        from .linearizable import LinearizableChecker
        reg[LinearizableChecker.name] = LinearizableChecker()
    except ImportError:
        pass
    return reg


def available_checkers() -> list:
    return sorted(_registry())


DEFAULT_CHECKERS = ("kafka", "recovery", "perf")


def check_history(history, checkers=DEFAULT_CHECKERS, options=None) -> dict:
    """Runs checkers (names or objects) over a History (or a path to a history
    file / store directory) and composes results.json.

    options (flat; each checker reads its own keys): ``require_activity``
    (default True) adds the workload-sanity checker ("a quiet run is not a
    passing run"); ``recovery_bound_s``; kafka's ``ww_deps``,
    ``allowed_anomalies``, ``allow``, ``max_witnesses``, ...
    """
    options = dict(options or {})
    if isinstance(history, (str, os.PathLike)):
        history = read_history(history)
    reg = _registry()
    chosen = []
    for c in checkers:
        if isinstance(c, str):
            if c not in reg:
                raise ValueError(f"unknown checker {c!r}; available: "
                                 f"{', '.join(sorted(reg))}")
            c = reg[c]
        chosen.append(c)
    if options.get("require_activity", True) and not any(
            c.name == "workload" for c in chosen):
        chosen.append(reg["workload"])
    results = {}
    with no_gc():
        side = []
        if (len(chosen) > 1 and chosen[0].name == "kafka" and hasattr(os, "fork")
                and options.get("parallel", True) and len(history.ops) >= PARALLEL_MIN_OPS):
            side = chosen[1:]
        child = _fork_checks(side, history, options) if side else None
        for c in chosen:
            if child is not None and c in side:
                continue
            results[c.name] = _run_checker(c, history, options)
        if child is not None:
            done = _join_checks(child)
            for c in side:
                results[c.name] = done[c.name] if done and c.name in done \
                    else _run_checker(c, history, options)
        results = {c.name: results[c.name] for c in chosen}
    out = compose(results, history.stats())
    if history.warnings:
        out["checkers"].setdefault("history", {"valid": True})
        out["checkers"]["history"]["warnings"] = history.warnings[:20]
    return out


# From this many client operations on, the checkers other than kafka run in a
# forked child, on the second core, while kafka (the longest) runs here.
PARALLEL_MIN_OPS = 200_000


def _run_checker(c, history, options) -> dict:
    t0 = time.monotonic()
    try:
        r = dict(c.check(history, options))
    except Exception as e:  # a crashing checker decides nothing
        r = {"valid": UNKNOWN, "error": f"{type(e).__name__}: {e}",
             "traceback": traceback.format_exc(limit=5)}
    r["elapsed_s"] = round(time.monotonic() - t0, 3)
    return r


def _fork_checks(checkers, history, options):
    """Runs checkers in a forked child; returns (pid, read end) or None."""
    try:
        rfd, wfd = os.pipe()
        pid = os.fork()
    except OSError:
        return None
    if pid == 0:  # the child: never returns
        code = 0
        try:
            os.close(rfd)
            out = {c.name: _run_checker(c, history, options) for c in checkers}
            data = pickle.dumps(out, protocol=pickle.HIGHEST_PROTOCOL)
            with os.fdopen(wfd, "wb") as fh:
                fh.write(data)
        except BaseException:
            code = 1
        os._exit(code)
    os.close(wfd)
    return pid, rfd


def _join_checks(child):
    """The child's {name: result}, or None if it failed (then the caller
    runs those checkers itself)."""
    pid, rfd = child
    try:
        with os.fdopen(rfd, "rb") as fh:
            data = fh.read()
    finally:
        _, status = os.waitpid(pid, 0)
    if status != 0 or not data:
        return None
    try:
        return pickle.loads(data)
    except Exception:
        return None


def check_path(path, checkers=DEFAULT_CHECKERS, options=None) -> dict:
    return check_history(read_history(path), checkers, options)
