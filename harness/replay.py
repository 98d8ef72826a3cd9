"""`highwater replay RUN_DIR [--times N]`: run a stored test again with the
same options, the same seed and the same fault schedule (each fault at the
same offset from the start, on the same nodes), and say in how many replays
its verdict came back and, for an invalid run, in how many every anomaly
type that made it invalid was found again.

Real processes on a real machine never replay bit for bit (the simulator
does): a replay reproduces a failure's *conditions*, and the count says how
reliably they bring it back. Exit 0 when the verdict came back in most
replays, 1 when not, 2 when the stored run cannot be replayed.
"""
from __future__ import annotations

import json
import sys
from pathlib import Path

from nemeses.schedule import recorded_plan


class CannotReplay(ValueError):
    pass


def _read_json(path: Path) -> dict:
    try:
        return json.loads(path.read_text())
    except FileNotFoundError:
        raise CannotReplay(f"{path} is missing: is {path.parent} a run's store directory?") from None
    except json.JSONDecodeError as e:
        raise CannotReplay(f"{path}: not JSON ({e})") from None


def stored_run(run_dir: Path) -> tuple[dict, list[dict], dict]:
    """(options, fault plan, verdict) of a stored run. A run whose harness
    died before judging is judged from its history now."""
    run_dir = Path(run_dir).resolve()
    test = _read_json(run_dir / "test.json")
    options = dict(test.get("options") or {})
    if not options:
        raise CannotReplay(f"{run_dir / 'test.json'} holds no options")
    history_path = run_dir / "history.jsonl"
    if not history_path.exists():
        raise CannotReplay(f"{history_path} is missing")
    events = []
    with open(history_path, encoding="utf-8") as f:
        for line in f:
            if '"nemesis"' in line:
                try:
                    events.append(json.loads(line))
                except json.JSONDecodeError:
                    pass  # a torn last line
    plan = recorded_plan(events)
    if (run_dir / "results.json").exists():
        verdict = _read_json(run_dir / "results.json")
    else:
        from checkers import check_history
        from checkers.history import read_history
        verdict = check_history(read_history(history_path), checkers=("kafka", "recovery", "perf"),
                                options={"recovery_bound_s": options.get("recovery_bound"),
                                         "require_activity": True})
    return options, plan, verdict


def deciding_anomalies(verdict: dict) -> set[str]:
    return set(verdict.get("anomaly_types") or []) - set(verdict.get("allowed") or [])


def same_verdict(original: dict, replay: dict) -> bool:
    return original.get("valid") == replay.get("valid")


def same_anomalies(original: dict, replay: dict) -> bool:
    """Every anomaly type that made the original invalid was found again."""
    return same_verdict(original, replay) and deciding_anomalies(original) <= deciding_anomalies(replay)


def replay(run_dir, times: int = 1, store: str | None = None, quiet: bool = True) -> int:
    from harness.run_test import execute_test
    try:
        options, plan, original = stored_run(Path(run_dir))
    except CannotReplay as e:
        print(f"highwater replay: {e}", file=sys.stderr)
        return 2
    options.update(nemesis_plan=plan, name=f"{options.get('name', 'test')}-replay", quiet=quiet)
    if store:
        options["store"] = store
    want = "valid" if original.get("valid") is True else (
        "INVALID: " + ", ".join(sorted(deciding_anomalies(original))) if original.get("valid") is False
        else "unknown")
    print(f"replaying {run_dir}: seed {options.get('seed')}, {len(plan)} fault(s) at their recorded "
          f"offsets; its verdict: {want}", flush=True)
    if options.get("s3_endpoint"):
        print("highwater replay: the run used an external S3 endpoint; replays reuse its bucket, whose "
              "earlier data may change what the replay sees", file=sys.stderr)
    from harness.options import OptionError, resolve
    hits = same = 0
    for i in range(1, times + 1):
        try:
            resolved = resolve(None, options)
        except OptionError as e:
            print(f"highwater replay: the stored options no longer resolve: {e}", file=sys.stderr)
            return 2
        code, new_dir = execute_test(resolved)
        if new_dir is None or not (new_dir / "results.json").exists():
            print(f"replay {i}/{times}: could not run (exit {code})", flush=True)
            continue
        result = json.loads((new_dir / "results.json").read_text())
        ok = same_verdict(original, result)
        hits += ok
        same += same_anomalies(original, result)
        print(f"replay {i}/{times}: verdict {'reproduced' if ok else 'NOT reproduced'}: "
              f"valid={result.get('valid')} anomalies={sorted(deciding_anomalies(result))} store={new_dir}",
              flush=True)
    print(f"verdict reproduced in {hits} of {times} replays"
          + (f"; the same anomaly types in {same} of {times}" if original.get("valid") is False else ""),
          flush=True)
    return 0 if hits * 2 > times else 1
