"""`highwater sim`: run the reference cluster under the deterministic
simulator, seed after seed; a failing seed prints the command that replays
it, is stored (history, log, schedule, results), and its fault schedule is
shrunk.

    highwater sim --seed 1 --seeds 100 [--sim-time 30s] [--bug NAME] [--faults LIST]

Exit: 0 every seed valid; 1 a seed failed (a bug found: its replay command is
printed); 2 could not run (bad option); 3 a seed was "unknown" (and none
failed), e.g. the cluster never recovered within the run.
"""
from __future__ import annotations

import json
import os
import sys
import time
from dataclasses import replace
from pathlib import Path

DEFAULT_SIM_TIME = 30.0


def add_arguments(p) -> None:
    p.add_argument("--seed", type=int, default=1, help="the first seed (default 1)")
    p.add_argument("--seeds", type=int, default=1, help="how many seeds, from --seed on (default 1)")
    p.add_argument("--sim-time", default="30s", help="virtual time of the workload with faults (default 30s)")
    p.add_argument("--bug", default=None, metavar="NAME", help="switch on a planted bug of reference/bugs.py")
    p.add_argument("--faults", default="all", help="the faults the schedule draws from: all, none, or a comma list "
                                                   "(kill, lose-unsynced, pause, partition, detach, disk-slow, "
                                                   "disk-error, s3-slow, s3-error, s3-reset, s3-hang, s3-ambiguous, "
                                                   "clock, reassign, net-slow)")
    p.add_argument("--nodes", type=int, default=3, help="brokers in the simulated cluster (default 3)")
    p.add_argument("--rate", type=float, default=30.0, help="client operations per virtual second (default 30)")
    p.add_argument("--schedule", default=None, metavar="JSON|@FILE",
                   help="run this fault schedule instead of drawing one from the seed (as printed after shrinking)")
    p.add_argument("--no-buggify", action="store_true", help="no BUGGIFY fault injection in the reference's code")
    p.add_argument("--keep-going", action="store_true", help="run every seed, also after a failure")
    p.add_argument("--no-shrink", action="store_true", help="do not shrink a failing seed's schedule")
    p.add_argument("--shrink-budget", type=int, default=30, help="most runs spent shrinking (default 30)")
    p.add_argument("--jobs", type=int, default=1, help="seeds run in this many processes at once (default 1)")
    p.add_argument("--store", default="store", help="where failing seeds are written (default store/)")
    p.add_argument("--log-level", default="WARNING",
                   help="the simulated cluster's log level (default WARNING; part of what a replay repeats)")
    p.add_argument("--quiet", action="store_true", help="print only failures and the summary")


def options_from(args):
    from harness.sim import faults as F
    from harness.sim.world import SimOptions
    from reference import bugs
    from reference.storage.config import parse_duration
    sim_time = parse_duration(args.sim_time)
    if sim_time <= 0:
        raise ValueError("--sim-time must be positive")
    if args.bug and args.bug not in bugs.BUGS:
        raise ValueError(f"unknown bug {args.bug!r}; known: {', '.join(sorted(bugs.BUGS))}")
    if args.nodes < 1:
        raise ValueError("--nodes must be at least 1")
    schedule = None
    if args.schedule:
        text = Path(args.schedule[1:]).read_text() if args.schedule.startswith("@") else args.schedule
        schedule = F.loads(text)
    return SimOptions(nodes=args.nodes, sim_time=sim_time, faults=F.parse_faults(args.faults), bug=args.bug,
                      buggify=not args.no_buggify, schedule=schedule, log_level=args.log_level.upper(),
                      rate=args.rate)


def replay_command(seed: int, args, schedule=None, buggify=None) -> str:
    parts = ["highwater sim", f"--seed {seed}", f"--sim-time {args.sim_time}"]
    if args.bug:
        parts.append(f"--bug {args.bug}")
    if args.faults != "all":
        parts.append(f"--faults {args.faults}")
    if args.nodes != 3:
        parts.append(f"--nodes {args.nodes}")
    if args.rate != 30.0:
        parts.append(f"--rate {args.rate:g}")
    if args.log_level.upper() != "WARNING":
        parts.append(f"--log-level {args.log_level.upper()}")
    no_buggify = args.no_buggify if buggify is None else not buggify
    if no_buggify:
        parts.append("--no-buggify")
    if schedule is not None:
        from harness.sim.faults import dumps
        parts.append(f"--schedule '{dumps(schedule)}'")
    elif args.schedule:
        parts.append(f"--schedule '{args.schedule}'")
    return " ".join(parts)


def _ensure_hash_seed() -> None:
    """String hashing must not vary between processes, or a replay in
    another process could iterate a set of strings in another order: re-run
    this very command with PYTHONHASHSEED=0 if it is not set so."""
    if os.environ.get("PYTHONHASHSEED") == "0":
        return
    env = dict(os.environ, PYTHONHASHSEED="0")
    sys.stdout.flush()
    sys.stderr.flush()
    os.execve(sys.executable, sys.orig_argv, env)


def _in_processes(tasks, jobs: int, per_process: int = 20):
    """_run_one over tasks in `jobs` forked processes, the results in task
    order; a fresh set of processes every jobs * per_process tasks (a long
    hunt's memory stays flat). Not multiprocessing.Pool: its terminate() can
    block for good when a hunt stops at a failure while workers are busy."""
    import multiprocessing
    ctx = multiprocessing.get_context("fork")
    for start in range(0, len(tasks), jobs * per_process):
        batch = tasks[start:start + jobs * per_process]
        workers = []
        try:
            for k in range(jobs):
                receive, send = ctx.Pipe(duplex=False)
                proc = ctx.Process(target=_run_share, args=(batch[k::jobs], send), daemon=True)
                proc.start()
                send.close()
                workers.append((proc, receive))
            for i in range(len(batch)):
                proc, receive = workers[i % jobs]
                try:
                    yield receive.recv()
                except EOFError:
                    raise RuntimeError(f"the process simulating seed {batch[i][0]} died "
                                       f"(exit code {proc.join(5) or proc.exitcode})") from None
        finally:
            for proc, receive in workers:
                if proc.is_alive():
                    proc.kill()
                proc.join()
                receive.close()


def _run_share(tasks, send) -> None:
    for task in tasks:
        send.send(_run_one(task))
    send.close()


def _run_one(task):
    seed, options = task
    from harness.sim.world import run_seed
    r = run_seed(seed, options)
    return {"seed": seed, "valid": r.valid, "anomalies": r.anomalies, "error": r.error, "digest": r.digest,
            "stats": r.stats, "reason": _reason(r)}


def _expected_anomalies(bug: str | None) -> tuple:
    """What the zoo says the bug must produce (harness/zoo.py), if it says."""
    if not bug:
        return ()
    try:
        from harness.zoo import CASES
    except ImportError:
        return ()
    case = CASES.get(bug)
    return tuple(case.expect) if case is not None else ()


def _reason(r) -> str:
    if r.error:
        return r.error.splitlines()[0]
    if r.valid == "unknown":
        w = r.results.get("checkers", {}).get("workload", {})
        return w.get("reason", "") or json.dumps(r.results.get("checkers", {}))[:200]
    return ""


def _store(run_dir: Path, r, command: str) -> None:
    run_dir.mkdir(parents=True, exist_ok=True)
    (run_dir / "history.jsonl").write_bytes(r.history)
    (run_dir / "sim.log").write_bytes(r.log)
    (run_dir / "schedule.json").write_text(json.dumps(r.schedule, indent=1, sort_keys=True) + "\n")
    (run_dir / "results.json").write_text(json.dumps(r.results, indent=1, sort_keys=True, default=str) + "\n")
    (run_dir / "replay.txt").write_text(command + "\n")
    (run_dir / "digest").write_text(r.digest + "\n")


def main(args, out=print) -> int:
    _ensure_hash_seed()
    try:
        options = options_from(args)
    except (ValueError, OSError) as e:
        out(f"highwater sim: {e}")
        return 2
    from harness.sim.shrink import Shrinker
    from harness.sim.world import run_seed
    seeds = list(range(args.seed, args.seed + max(1, args.seeds)))
    started = time.perf_counter()
    counts = {"valid": 0, "invalid": 0, "unknown": 0}
    sim_seconds = 0.0
    failed = None
    expected = _expected_anomalies(args.bug)
    if expected:
        out(f"hunting {args.bug}: expected anomaly {' or '.join(expected)} (the zoo's table)")
    tasks = [(s, options) for s in seeds]
    if args.jobs > 1 and len(seeds) > 1:
        results = _in_processes(tasks, args.jobs)
    else:
        results = map(_run_one, tasks)
    try:
        for s in results:
            sim_seconds += s["stats"]["sim_seconds"]
            key = "valid" if s["valid"] is True else "invalid" if s["valid"] is False else "unknown"
            counts[key] += 1
            if not args.quiet or key != "valid":
                shown = "valid" if key == "valid" else (
                    f"INVALID {','.join(s['anomalies'])}" if key == "invalid" else f"unknown: {s['reason']}")
                out(f"seed {s['seed']:>6}  {shown:<44} sim {s['stats']['sim_seconds']:7.1f}s  "
                    f"real {s['stats']['real_seconds']:6.2f}s  digest {s['digest'][:12]}")
            done = sum(counts.values())
            if args.quiet and done % 100 == 0 and done < len(seeds):
                out(f"... {done} seeds: {counts['valid']} valid, {counts['invalid']} invalid, "
                    f"{counts['unknown']} unknown ({time.perf_counter() - started:.0f} s)")
            if key == "invalid" and failed is None:
                if expected and not set(expected) & set(s["anomalies"]):
                    out(f"  (seed {s['seed']}: not the expected anomaly {' or '.join(expected)}; hunting on)")
                    continue
                failed = s
                if not args.keep_going:
                    break
    finally:
        if hasattr(results, "close"):
            results.close()     # stops and reaps the worker processes
    real = time.perf_counter() - started
    out(f"{sum(counts.values())} seeds: {counts['valid']} valid, {counts['invalid']} invalid, "
        f"{counts['unknown']} unknown; {sim_seconds:.0f} simulated s in {real:.1f} real s "
        f"({sim_seconds / real if real else 0:.0f}x)")
    if failed is None:
        return 0 if counts["unknown"] == 0 else 3
    seed = failed["seed"]
    command = replay_command(seed, args)
    hit = [a for a in failed["anomalies"] if a in expected]
    out(f"FAILED: seed {seed}: {', '.join(failed['anomalies'])}"
        + (f" (the expected anomaly of {args.bug}: {hit[0]})" if hit else ""))
    out(f"replay: {command}")
    r = run_seed(seed, options)      # again, here: the replay, and what to store
    run_dir = Path(args.store) / "sim" / f"seed-{seed}{'-' + args.bug if args.bug else ''}"
    _store(run_dir, r, command)
    same = r.digest == failed["digest"]
    out(f"stored in {run_dir} (history, log, schedule, results); replayed here: "
        f"{'same history and log, byte for byte' if same else 'DIFFERENT from the first run: a determinism bug'}")
    if not args.no_shrink and r.schedule:
        shrinker = Shrinker(seed, replace(options, schedule=r.schedule), failed["anomalies"], run_seed,
                            budget=args.shrink_budget, say=out if not args.quiet else (lambda s: None))
        small, buggify = shrinker.shrink(r.schedule)
        out(f"shrunk schedule: {len(small)} of {len(r.schedule)} faults{'' if buggify else ', BUGGIFY off'} "
            f"({shrinker.runs} runs)")
        shrunk_command = replay_command(seed, args, schedule=small, buggify=buggify)
        out(f"replay shrunk: {shrunk_command}")
        (run_dir / "shrunk.txt").write_text(shrunk_command + "\n")
    return 1 if same else 2
