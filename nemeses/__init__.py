"""Faults. Each fault is real at the boundary where the system under test meets
it; each has a canonical name (design.md) and is refused at start, with the
reason, by a target that cannot take it."""
from __future__ import annotations

import importlib

from nemeses.base import Fault, FaultUnsupported  # noqa: F401

CANONICAL_FAULTS = ("kill", "pause", "partition", "clock", "detach", "lose-unsynced", "disk-slow",
                    "disk-error", "s3-slow", "s3-error", "s3-reset", "s3-hang", "s3-ambiguous", "reassign")

# name -> "module:class"; the module is imported only when the fault is asked for.
FAULT_CLASSES = {
    "kill": "nemeses.process:KillFault",
    "pause": "nemeses.process:PauseFault",
}


def fault_names(names) -> list[str]:
    """The one validator of `--nemesis`: canonical names, `all` expanded,
    `none` dropped. Raises FaultUnsupported naming an unknown fault."""
    if isinstance(names, str):
        names = [n.strip() for n in names.split(",")]
    out: list[str] = []
    for name in names:
        if name in ("none", ""):
            continue
        if name == "all":
            out.extend(n for n in CANONICAL_FAULTS if n not in out)
            continue
        if name not in CANONICAL_FAULTS:
            raise FaultUnsupported(f"unknown fault {name!r}; known: {', '.join(CANONICAL_FAULTS)}, all, none")
        if name not in out:
            out.append(name)
    return out


def fault_class(name: str):
    spec = FAULT_CLASSES.get(name)
    if spec is None:
        raise FaultUnsupported(f"fault {name!r} is not built in this version of Highwater; "
                               f"built: {', '.join(FAULT_CLASSES)}")
    module, _, cls = spec.partition(":")
    return getattr(importlib.import_module(module), cls)


def build_faults(names, db) -> list[Fault]:
    """Faults for `--nemesis LIST` on this db; raises FaultUnsupported, with
    the reason, for any fault the target cannot take."""
    faults = []
    for name in fault_names(names):
        fault = fault_class(name)(db)
        fault.check_supported()
        faults.append(fault)
    return faults
