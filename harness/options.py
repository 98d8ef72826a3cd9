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
}
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
        raise OptionError(f"--nodes {nodes!r}: network namespaces and inventories are not built yet; "
                          f"give a number of local nodes")
    if not nodes.isdigit() or int(nodes) < 1:
        raise OptionError(f"--nodes {nodes!r}: give a positive number of nodes")
    o["nodes"] = int(nodes)
    if o["db"] != "reference":
        raise OptionError(f"--db {o['db']}: only `reference` is available in this version "
                          f"(tansu and external come with the validation work)")
    if o["client"] != "kafka-python":
        raise OptionError(f"--client {o['client']}: only kafka-python drives the workload in this version")
    if isinstance(o["nemesis"], str):
        o["nemesis"] = [n.strip() for n in o["nemesis"].split(",") if n.strip()]
    from nemeses import CANONICAL_FAULTS
    for name in o["nemesis"]:
        if name not in CANONICAL_FAULTS + ("all", "none"):
            raise OptionError(f"--nemesis: unknown fault {name!r}; known: {', '.join(CANONICAL_FAULTS)}, all, none")
    if o["nemesis_targets"] not in ("one", "minority", "majority", "all", "primaries"):
        raise OptionError(f"--nemesis-targets {o['nemesis_targets']!r}: use one, minority, majority, all or primaries")
    if o["seed"] is None:
        o["seed"] = random.SystemRandom().randrange(2**31)
    o["seed"] = int(o["seed"])
    return o
