"""`highwater zoo`: prove the harness catches what it claims. For every bug
planted in the reference (`reference/bugs.py`), run the shortest chaos test
that should expose it, on a few seeds, and check that the expected anomaly
is found; run the same tests on the clean reference and check that they
pass. Prints one row per bug: faults, detected (which anomaly), time to
detect, seed. Exit 0 when every bug was detected in every seed and the clean
reference passed every run, 1 when not, 2 when a run could not be made.
"""
from __future__ import annotations

import json
import time
from dataclasses import dataclass, field

from reference.bugs import BUGS


@dataclass(frozen=True)
class ZooCase:
    """The chaos test that should expose one bug, and what it must produce."""
    nemesis: str
    expect: tuple[str, ...]                 # any of these anomaly types counts as detected
    options: dict = field(default_factory=dict)


# Settings every zoo run shares: short, busy, and with the storage paths
# (uploads, commits, trims, reads that miss the cache) running many times
# per fault window.
COMMON = {"nodes": 1, "time_limit": "24s", "final_time_limit": "12s", "nemesis_interval": "4s", "rate": 60,
          "recovery_wait": "2s"}

# Uploads rare: the WAL is then the only copy of what was acknowledged.
RARE_UPLOADS = "--upload-interval 30s --upload-bytes 64MiB"
LOST = ("lost-write", "inconsistent-offsets", "unseen")


def _kills(times, down=1.5, node="n1"):
    return [{"fault": "kill", "targets": [node], "start_s": t, "stop_s": t + down} for t in times]


CASES: dict[str, ZooCase] = {
    "skip-wal-replay": ZooCase("kill", LOST, {"broker_args": RARE_UPLOADS}),
    "ack-before-fsync": ZooCase("lose-unsynced", LOST, {"broker_args": RARE_UPLOADS}),
    # The metadata commits of uploads fail (503) for a few seconds while the
    # rest of S3, and the commit's prepare, work: the upload under way PUTs
    # its object, cannot commit, and retries; with the bug its records are
    # already trimmed from the WAL. The kill lands while it retries.
    "trim-before-commit": ZooCase(
        "kill,s3-error", LOST,
        {"broker_args": "--upload-interval 200ms --upload-bytes 64MiB", "workload": "produce",
         "nemesis_options": {"s3-error": {"rate": 1.0, "ops": "put-if", "prefix": "metadata/log/",
                                          "body_contains": '"type":"commit_objects"'}},
         "nemesis_plan": [f for t in (2, 8, 14) for f in (
             {"fault": "s3-error", "targets": ["n1"], "start_s": t, "stop_s": t + 3.5},
             *_kills([t + 3.0], down=2.0))]}),
    # Every WAL fsync takes longer than the client's request timeout: each
    # produce is retried while the first try is still on its way.
    "no-dedup": ZooCase("disk-slow", ("duplicate",),
                        {"nemesis_options": {"disk-slow": {"spec": {"distribution": "fixed", "ms": 6000,
                                                                    "ops": ["sync"]}}},
                         "nemesis_interval": "8s", "time_limit": "28s"}),
    # A broker down past its session: its partitions fail over, and with the
    # bug reopen where the last upload left them.
    "offset-reuse": ZooCase("kill", LOST, {"nodes": 3, "broker_args": RARE_UPLOADS, "nemesis_interval": "5s",
                                           "time_limit": "28s"}),
    # Without I/O fencing (directory volumes) only epochs and the session
    # check keep a paused broker from acknowledging once it wakes.
    # Clients wait out the pause (their timeout is longer), so the paused
    # broker, fenced and failed over meanwhile, answers them when it wakes.
    # A latent sector error in the WAL's middle, acknowledged records after
    # it; the node restarts onto it. The clean reference refuses to serve
    # until the heal (then recovers everything); with the bug it serves past
    # the hole, and new appends take the lost offsets. Uploads rare: the
    # damaged records are in the WAL only.
    "serve-after-gap": ZooCase(
        "bad-sector", LOST,
        {"broker_args": RARE_UPLOADS,
         "nemesis_plan": [{"fault": "bad-sector", "targets": ["n1"], "start_s": 8.0, "stop_s": 16.0}]}),
    "no-fencing": ZooCase("pause", LOST + ("duplicate",),
                          {"nodes": 3, "volumes": "directory", "broker_args": RARE_UPLOADS,
                           "nemesis_interval": "8s", "time_limit": "28s", "request_timeout": "15s"}),
    # The controller's S3 requests slowed past its lease: another node takes
    # the role and writes, and the deposed controller's late log write lands
    # on a record the new one wrote (conditional: refused; blind: overwrites).
    # The overwritten record takes acknowledged offsets out of the log, or
    # maps them to another node's object, which no node can read back. Sends
    # only (reads at the end): whichever it is, acknowledged records are
    # never read. (With polls during the run, records read before the damage
    # left only final polls that fall short: unknown, not a finding.)
    "blind-metadata-write": ZooCase("s3-slow", LOST + ("nonlinearizable",),
                                    {"nodes": 3, "nemesis_targets": "controller", "nemesis_interval": "10s",
                                     "workload": "produce", "time_limit": "24s",
                                     # without compaction: its rewrites turn the damage into objects no
                                     # node can read back (final polls short: unknown) more often
                                     "broker_args": "--upload-interval 200ms --compaction-interval 0",
                                     "nemesis_options": {"s3-slow": {"latency": "6s"}}}),
    # Partitions moved every few seconds; consumers keep the leaders they
    # knew (nothing tells a client reading a stale node to look again), and
    # each poll asks those leaders for the end: a stale one answers its old
    # end, so a read "to the end" misses sends acknowledged by the new owner.
    "stale-read-after-reassign": ZooCase("reassign", ("nonlinearizable",),
                                         {"nodes": 3, "nemesis_interval": "1500ms", "reads_to_end": True}),
}


@dataclass
class ZooRun:
    bug: str | None
    seed: int
    valid: object
    anomalies: list[str]
    seconds: float
    run_dir: str | None
    exit_code: int

    def detected(self, case: ZooCase) -> str | None:
        hits = [a for a in self.anomalies if a in case.expect]
        return hits[0] if self.valid is False and hits else None


def _run(bug: str | None, case: ZooCase, seed: int, store: str, time_limit=None) -> ZooRun:
    from harness.options import resolve
    from harness.run_test import execute_test
    wanted = {**COMMON, **case.options, "nemesis": case.nemesis, "seed": seed, "store": store, "quiet": True,
              "name": f"zoo-{bug or 'clean'}-{case.nemesis.replace(',', '+')}", "bug": bug or ""}
    if time_limit:
        wanted["time_limit"] = time_limit
    options = resolve(None, wanted)
    started = time.monotonic()
    code, run_dir = execute_test(options, announce=False)
    results = {}
    if run_dir is not None and (run_dir / "results.json").exists():
        results = json.loads((run_dir / "results.json").read_text())
    anomalies = [a for a in results.get("anomaly_types", []) if a not in results.get("allowed", [])]
    return ZooRun(bug, seed, results.get("valid"), anomalies, time.monotonic() - started,
                  str(run_dir) if run_dir else None, code)


def zoo(bugs: list[str] | None = None, seeds: list[int] = (1, 2, 3), store: str = "store",
        clean: bool = True, time_limit=None, out=print) -> int:
    names = bugs or sorted(CASES)
    unknown = [b for b in names if b not in CASES]
    if unknown:
        out(f"highwater zoo: no zoo case for {', '.join(unknown)}; planted bugs with cases: "
            f"{', '.join(sorted(CASES))}")
        return 2
    missing = sorted(set(CASES) - set(BUGS))
    if missing:  # a case for a bug the reference does not carry: the table would lie
        out(f"highwater zoo: cases name bugs the reference does not plant: {', '.join(missing)}")
        return 2
    out(f"{'bug':<28} {'faults':<24} {'detected':<34} {'time s':>7}  seed  store")
    all_good = True
    for name in names:
        case = CASES[name]
        for seed in seeds:
            r = _run(name, case, seed, store, time_limit)
            hit = r.detected(case)
            all_good &= hit is not None
            shown = hit or (f"NOT DETECTED (valid={r.valid}, found {','.join(r.anomalies) or 'nothing'})")
            out(f"{name:<28} {case.nemesis:<24} {shown:<34} {r.seconds:>7.1f}  {seed:>4}  {r.run_dir}")
        if clean:
            for seed in seeds:
                r = _run(None, case, seed, store, time_limit)
                ok = r.valid is True
                all_good &= ok
                shown = "passes" if ok else f"CLEAN REFERENCE FAILS (valid={r.valid}, {','.join(r.anomalies)})"
                out(f"{'  (clean reference)':<28} {case.nemesis:<24} {shown:<34} {r.seconds:>7.1f}  {seed:>4}  "
                    f"{r.run_dir}")
    out("every planted bug was detected and the clean reference passed" if all_good else
        "NOT every planted bug was detected, or the clean reference failed a run")
    return 0 if all_good else 1
