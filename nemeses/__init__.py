"""Faults. Each fault is real at the boundary where the system under test meets
it; each has a canonical name (design.md) and is refused at start, with the
reason, by a target that cannot take it."""
from __future__ import annotations

import importlib

from nemeses.base import Fault, FaultUnsupported  # noqa: F401

CANONICAL_FAULTS = ("kill", "pause", "partition", "clock", "detach", "lose-unsynced", "disk-slow",
                    "disk-error", "bad-sector", "s3-slow", "s3-error", "s3-reset", "s3-hang", "s3-ambiguous",
                    "reassign")

# Faults `all` leaves out, each with the reason; name them explicitly to run them.
NOT_IN_ALL = {
    "bad-sector": "a correct node refuses to serve while its WAL has a bad sector (it stays down until the "
                  "heal), and how the cluster's failover meets that refusal on another node is not tested yet",
}

# name -> "module:class"; the module is imported only when the fault is asked for.
FAULT_CLASSES = {
    "kill": "nemeses.process:KillFault",
    "pause": "nemeses.process:PauseFault",
    "partition": "nemeses.partition:PartitionFault",
    "clock": "nemeses.clock_fault:ClockFault",
    "s3-slow": "nemeses.s3_faults:S3SlowFault",
    "s3-error": "nemeses.s3_faults:S3ErrorFault",
    "s3-reset": "nemeses.s3_faults:S3ResetFault",
    "s3-hang": "nemeses.s3_faults:S3HangFault",
    "s3-ambiguous": "nemeses.s3_faults:S3AmbiguousFault",
    "detach": "nemeses.volume:DetachFault",
    "lose-unsynced": "nemeses.volume:LoseUnsyncedFault",
    "disk-slow": "nemeses.volume:DiskSlowFault",
    "disk-error": "nemeses.volume:DiskErrorFault",
    "bad-sector": "nemeses.volume:BadSectorFault",
    "reassign": "nemeses.reassign:ReassignFault",
}


def fault_names(names) -> list[str]:
    """The one validator of `--nemesis`: canonical names, `all` expanded
    (every canonical fault but those in NOT_IN_ALL), `none` dropped. Raises FaultUnsupported naming an unknown fault."""
    if isinstance(names, str):
        names = [n.strip() for n in names.split(",")]
    out: list[str] = []
    for name in names:
        if name in ("none", ""):
            continue
        if name == "all":
            out.extend(n for n in CANONICAL_FAULTS if n not in out and n not in NOT_IN_ALL)
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


def build_faults(names, db, rng=None, options: dict | None = None) -> list[Fault]:
    """Faults for `--nemesis LIST` on this db; raises FaultUnsupported, with
    the reason, for any fault the target cannot take, or whose options
    (`options[name]`, e.g. {"s3-slow": {"latency": "200ms"}}) are bad. A
    fault that draws random choices gets the run's seeded `rng`."""
    import inspect
    faults = []
    for name in fault_names(names):
        cls = fault_class(name)
        kwargs = dict((options or {}).get(name) or {})
        if rng is not None and "rng" in inspect.signature(cls.__init__).parameters:
            kwargs["rng"] = rng
        try:
            fault = cls(db, **kwargs)
        except (TypeError, ValueError) as e:
            raise FaultUnsupported(f"fault {name!r}: bad options {kwargs}: {e}") from None
        fault.check_supported()
        faults.append(fault)
    return faults
