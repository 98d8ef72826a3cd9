"""Faults. Each fault is real at the boundary where the system under test meets
it; each has a canonical name (design.md) and is refused at start, with the
reason, by a target that cannot take it."""
from nemeses.base import Fault, FaultUnsupported  # noqa: F401

CANONICAL_FAULTS = ("kill", "pause", "partition", "clock", "detach", "lose-unsynced", "disk-slow",
                    "disk-error", "s3-slow", "s3-error", "s3-reset", "s3-hang", "s3-ambiguous", "reassign")


def build_faults(names, db) -> list[Fault]:
    """Faults for `--nemesis LIST` on this db; raises FaultUnsupported for any
    fault the target cannot take, or that is not built yet, naming it."""
    from nemeses.process import KillFault, PauseFault
    available = {"kill": KillFault, "pause": PauseFault}
    names = list(names)
    if names == ["all"]:
        names = list(CANONICAL_FAULTS)
    faults = []
    for name in names:
        if name in ("none", ""):
            continue
        if name not in CANONICAL_FAULTS:
            raise FaultUnsupported(f"unknown fault {name!r}; known: {', '.join(CANONICAL_FAULTS)}, all, none")
        if name not in available:
            raise FaultUnsupported(f"fault {name!r} is not implemented in this version of Highwater yet; "
                                   f"available: {', '.join(available)}")
        fault = available[name](db)
        fault.check_supported()
        faults.append(fault)
    return faults
