"""Test options: one vocabulary for flags, TOML test files (keys are the flag
names with underscores) and the pytest plugin. Every option is validated here,
so a bad one is a clear error (exit 2) before anything starts."""
from __future__ import annotations

import random
import tomllib
from pathlib import Path

from harness.durations import parse_duration

DEFAULTS = {
    "name": "queue",
    "db": "reference",
    "nodes": None,        # the target's own: 3 reference nodes, one of anything else
    "client": "kafka-python",
    "keys": 4,
    "max_writes_per_key": 256,
    "concurrency": 4,
    "rate": 50.0,
    "time_limit": "60s",
    "final_time_limit": "30s",
    "recovery_wait": "3s",
    "request_timeout": "5s",
    "nemesis": "kill,detach,s3-slow",
    "nemesis_interval": "7s",
    "nemesis_targets": "one",
    "recovery_bound": None,
    "seed": None,
    "store": "store",
    "quiet": False,
    "s3_endpoint": None,
    "bucket": "highwater",
    "broker_args": "",
    "sub_via": "assign",
    "key_dist": "uniform",
    "bug": "",
    "workload": "queue",
    "send_batch": 10,
    "nemesis_plan": None,
    "nemesis_options": None,
    "recipe": None,
    "volumes": "local",
    "reads_to_end": False,
}
SUB_VIA = ("assign", "subscribe")
KEY_DISTS = ("uniform", "zipf")
DURATIONS = ("time_limit", "final_time_limit", "recovery_wait", "request_timeout", "nemesis_interval",
             "recovery_bound")
POSITIVE_INTS = ("keys", "max_writes_per_key", "concurrency", "send_batch")
WORKLOADS = ("queue", "produce")


class OptionError(ValueError):
    pass


def load_test_file(path) -> dict:
    try:
        with open(path, "rb") as f:
            data = tomllib.load(f)
    except FileNotFoundError:
        raise OptionError(f"test file {path} not found") from None
    except tomllib.TOMLDecodeError as e:  # its message names the line and column
        raise OptionError(f"test file {path}: malformed TOML: {e}") from None
    except IsADirectoryError:
        raise OptionError(f"{path} is a directory: give it as a suite") from None
    unknown = sorted(set(data) - set(DEFAULTS))
    if unknown:
        text = Path(path).read_text(encoding="utf-8", errors="replace").splitlines()
        where = []
        for key in unknown:
            line = next((i for i, ln in enumerate(text, 1) if ln.strip().startswith((key + " ", key + "=", f"[{key}]",
                                                                                     f"[[{key}]]"))), None)
            where.append(f"{key} (line {line})" if line else key)
        raise OptionError(f"test file {path}: unknown option(s) {', '.join(where)}; "
                          f"known: {', '.join(sorted(DEFAULTS))}")
    data.setdefault("name", Path(path).stem)
    if isinstance(data.get("recipe"), str) and not Path(data["recipe"]).is_absolute():
        # A recipe named in a test file lives beside it (suites move as one folder).
        data["recipe"] = str(Path(path).parent / data["recipe"])
    if isinstance(data.get("nodes"), str) and data["nodes"].startswith("inventory:") \
            and not Path(data["nodes"].split(":", 1)[1]).is_absolute():
        data["nodes"] = f"inventory:{Path(path).parent / data['nodes'].split(':', 1)[1]}"   # beside it too
    return data


def resolve(test_file: dict | None, flags: dict) -> dict:
    """Defaults, then the test file, then flags given on the command line."""
    o = dict(DEFAULTS)
    o.update(test_file or {})
    o.update({k: v for k, v in flags.items() if v is not None and k in DEFAULTS})
    try:
        for k in DURATIONS:
            if o[k] is not None:
                o[k] = parse_duration(o[k])
        for k in POSITIVE_INTS:
            o[k] = int(o[k])
            if o[k] < 1:
                raise OptionError(f"--{k.replace('_', '-')} must be at least 1, got {o[k]}")
        o["rate"] = float(o["rate"])
        if o["rate"] <= 0:
            raise OptionError(f"--rate must be positive, got {o['rate']}")
    except ValueError as e:
        raise OptionError(str(e)) from None
    if o["time_limit"] <= 0:
        raise OptionError("--time-limit must be positive")
    if o["nodes"] is None:
        o["nodes"] = 3 if o["db"] == "reference" else 1
    nodes = str(o["nodes"])
    if nodes.startswith("inventory:"):
        if o["db"] != "reference":
            raise OptionError(f"--nodes {nodes}: an inventory's hosts run reference nodes (--db reference); "
                              f"an external system's nodes are its recipe's")
        from harness.db.base import TargetUnavailable
        from harness.db.reference import load_brokers
        path = nodes.split(":", 1)[1]
        try:
            load_brokers(path)
        except TargetUnavailable as e:
            raise OptionError(str(e)) from None
        nodes = f"inventory:{Path(path).resolve()}"   # test.json and a replay name the same file
    elif nodes.startswith("netns:"):
        count = nodes.split(":", 1)[1]
        if not count.isdigit() or not 1 <= int(count) <= 50:
            raise OptionError(f"--nodes {nodes!r}: netns:N with N from 1 to 50")
        if o["db"] != "reference":
            raise OptionError(f"--nodes {nodes}: network namespaces are for --db reference")
    elif not nodes.isdigit() or int(nodes) < 1:
        raise OptionError(f"--nodes {nodes!r}: give a positive number of nodes, netns:N or inventory:FILE")
    else:
        nodes = int(nodes)
    o["nodes"] = nodes
    from harness.db.base import REGISTRY
    if o["db"] not in REGISTRY:
        raise OptionError(f"--db {o['db']!r}: unknown target; known: {', '.join(sorted(REGISTRY))}")
    if o["db"] == "external":
        if flags.get("nodes") is not None or (test_file or {}).get("nodes") is not None:
            raise OptionError("--nodes: an external system's nodes are the ones its --recipe lists")
        if not o["recipe"]:
            raise OptionError("--db external needs --recipe FILE: a TOML recipe describing the system "
                              "(see examples/)")
        from harness.db.external import RecipeError, load_recipe
        try:
            load_recipe(o["recipe"])
        except RecipeError as e:
            raise OptionError(str(e)) from None
        o["recipe"] = str(Path(o["recipe"]).resolve())
    elif o["recipe"]:
        raise OptionError(f"--recipe is for --db external only (this run uses --db {o['db']})")
    from harness.workloads.clients import CLIENTS
    if o["client"] not in CLIENTS:
        raise OptionError(f"--client {o['client']!r}: unknown client; known: {', '.join(CLIENTS)}")
    if isinstance(o["sub_via"], str):
        o["sub_via"] = [v.strip() for v in o["sub_via"].split(",") if v.strip()]
    bad = [v for v in o["sub_via"] if v not in SUB_VIA]
    if bad or not o["sub_via"]:
        raise OptionError(f"--sub-via {','.join(o['sub_via'])!r}: use assign, subscribe or both (comma-separated)")
    if o["volumes"] not in ("local", "directory"):
        raise OptionError(f"--volumes {o['volumes']!r}: local (FUSE volumes, the default: I/O fencing and the "
                          f"volume faults) or directory (plain directories, no fencing)")
    if o["workload"] not in WORKLOADS:
        raise OptionError(f"--workload {o['workload']!r}: use queue (sends and polls, Jepsen's) or produce "
                          f"(sends only, for throughput; the final polls still read everything)")
    if o["key_dist"] not in KEY_DISTS:
        raise OptionError(f"--key-dist {o['key_dist']!r}: use {' or '.join(KEY_DISTS)}")
    for flag in ("quiet", "reads_to_end"):
        if not isinstance(o[flag], bool):
            raise OptionError(f"{flag} = {o[flag]!r}: use true or false")
    if isinstance(o["bug"], str):
        o["bug"] = [b.strip() for b in o["bug"].split(",") if b.strip()]
    from reference.bugs import BUGS
    for b in o["bug"]:
        if b not in BUGS:
            raise OptionError(f"--bug {b!r}: not a planted bug of the reference; known: {', '.join(sorted(BUGS))}")
    from nemeses import FaultUnsupported, fault_names
    from nemeses.base import TARGET_SPECS
    try:
        o["nemesis"] = fault_names(o["nemesis"])
    except FaultUnsupported as e:
        raise OptionError(f"--nemesis: {e}") from None
    if o["nemesis_targets"] not in TARGET_SPECS:
        raise OptionError(f"--nemesis-targets {o['nemesis_targets']!r}: use {', '.join(TARGET_SPECS)}")
    if o["nemesis_options"] is not None:
        if isinstance(o["nemesis_options"], str):  # from the command line: JSON
            import json
            try:
                o["nemesis_options"] = json.loads(o["nemesis_options"])
            except json.JSONDecodeError as e:
                raise OptionError(f"--nemesis-options: not JSON ({e})") from None
        bad = [k for k, v in (o["nemesis_options"].items() if isinstance(o["nemesis_options"], dict) else [(None, 0)])
               if k not in o["nemesis"] or not isinstance(v, dict)]
        if bad:
            raise OptionError(f"--nemesis-options: a table per fault of --nemesis, e.g. "
                              f"{{\"s3-slow\": {{\"latency\": \"200ms\"}}}}; not: {bad}")
    if o["nemesis_plan"] is not None:
        o["nemesis_plan"] = _check_plan(o["nemesis_plan"], o["nemesis"])
    if o["seed"] is None:
        o["seed"] = random.SystemRandom().randrange(2**31)
    o["seed"] = int(o["seed"])
    return o


def _check_plan(plan, faults: list[str]) -> list[dict]:
    """A fixed fault schedule (what `highwater replay` follows, or a test
    file's `[[nemesis_plan]]` tables): each entry's fault among --nemesis,
    its targets, start_s and stop_s (seconds from the test's start)."""
    if not isinstance(plan, list):
        raise OptionError("nemesis_plan must be a list of {fault, targets, start_s, stop_s}")
    out = []
    for i, p in enumerate(plan):
        if not isinstance(p, dict) or set(p) - {"fault", "targets", "start_s", "stop_s"}:
            raise OptionError(f"nemesis_plan[{i}]: expected keys fault, targets, start_s, stop_s; got {p!r}")
        if p.get("fault") not in faults:
            raise OptionError(f"nemesis_plan[{i}]: fault {p.get('fault')!r} is not among --nemesis {faults}")
        targets = p.get("targets")
        if not isinstance(targets, list) or not all(isinstance(t, str) for t in targets):
            raise OptionError(f"nemesis_plan[{i}]: targets must be a list of node names")
        try:
            start = float(p["start_s"])
            stop = None if p.get("stop_s") is None else float(p["stop_s"])
        except (KeyError, TypeError, ValueError):
            raise OptionError(f"nemesis_plan[{i}]: start_s (and stop_s) must be seconds") from None
        if start < 0 or (stop is not None and stop < start):
            raise OptionError(f"nemesis_plan[{i}]: needs 0 <= start_s <= stop_s")
        out.append({"fault": p["fault"], "targets": targets, "start_s": start, "stop_s": stop})
    return out


def load_suite(directory) -> list[tuple[Path, dict]]:
    """A suite: every *.toml file of a directory, in name order, each checked
    before any runs (a malformed file or an unknown key refuses the whole
    suite, naming the file and line)."""
    files = sorted(Path(directory).glob("*.toml"))
    if not files:
        raise OptionError(f"suite {directory}: no *.toml test files in it")
    return [(f, load_test_file(f)) for f in files]
