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
    "nodes": "1",
    "client": "kafka-python",
    "keys": 4,
    "max_writes_per_key": 256,
    "concurrency": 4,
    "rate": 50.0,
    "time_limit": "60s",
    "final_time_limit": "30s",
    "recovery_wait": "3s",
    "request_timeout": "5s",
    "nemesis": "kill",
    "nemesis_interval": "10s",
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
    "recipe": None,
}
SUB_VIA = ("assign", "subscribe")
KEY_DISTS = ("uniform", "zipf")
DURATIONS = ("time_limit", "final_time_limit", "recovery_wait", "request_timeout", "nemesis_interval",
             "recovery_bound")
POSITIVE_INTS = ("keys", "max_writes_per_key", "concurrency")


class OptionError(ValueError):
    pass


def load_test_file(path) -> dict:
    try:
        with open(path, "rb") as f:
            data = tomllib.load(f)
    except FileNotFoundError:
        raise OptionError(f"test file {path} not found") from None
    except tomllib.TOMLDecodeError as e:
        raise OptionError(f"test file {path}: {e}") from None
    unknown = sorted(set(data) - set(DEFAULTS))
    if unknown:
        raise OptionError(f"test file {path}: unknown option(s) {', '.join(unknown)}")
    data.setdefault("name", Path(path).stem)
    if isinstance(data.get("recipe"), str) and not Path(data["recipe"]).is_absolute():
        # A recipe named in a test file lives beside it (suites move as one folder).
        data["recipe"] = str(Path(path).parent / data["recipe"])
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
    nodes = str(o["nodes"])
    if nodes.startswith(("netns:", "inventory:")):
        raise OptionError(f"--nodes {nodes}: network-namespace and inventory nodes are not wired into "
                          f"the runner in this version; give a number of local nodes")
    if not nodes.isdigit() or int(nodes) < 1:
        raise OptionError(f"--nodes {nodes!r}: give a positive number of nodes")
    o["nodes"] = int(nodes)
    if o["db"] == "reference" and o["nodes"] != 1:
        raise OptionError(f"--nodes {o['nodes']}: the reference broker runs one node in this version; "
                          f"the multi-node cluster (controller, failover) is not built yet")
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
    if o["key_dist"] not in KEY_DISTS:
        raise OptionError(f"--key-dist {o['key_dist']!r}: use {' or '.join(KEY_DISTS)}")
    from nemeses import FaultUnsupported, fault_names
    from nemeses.base import TARGET_SPECS
    try:
        o["nemesis"] = fault_names(o["nemesis"])
    except FaultUnsupported as e:
        raise OptionError(f"--nemesis: {e}") from None
    if o["nemesis_targets"] not in TARGET_SPECS:
        raise OptionError(f"--nemesis-targets {o['nemesis_targets']!r}: use {', '.join(TARGET_SPECS)}")
    if o["seed"] is None:
        o["seed"] = random.SystemRandom().randrange(2**31)
    o["seed"] = int(o["seed"])
    return o
