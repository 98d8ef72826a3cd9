"""Volume faults: `detach`, `lose-unsynced`, `disk-slow`, `disk-error`, `bad-sector`.

Each asks the target for the node's volume control (`target.volume(node)`,
a `reference.volumes.base.VolumeControl`) and, where it must stop or start
the node's process, for the process control (`kill_node` / `start_node`).
The faults themselves live in the volume layer (`reference/volumes/`); these
classes only say when to switch them on and off.

- detach: the node's attachment answers EIO to every I/O, open descriptors
  included. Heal: restart the node (SIGKILL if it is still running: its
  descriptors point at the dead attachment) on the volume attached to it
  again, unless the cluster moved it meanwhile (failover owns it then).
- lose-unsynced: SIGKILL the node, then drop every write on its volume that
  was not fsynced (file data, size, directory entries). Heal: start it on what
  is left.
- disk-slow: every read, write and sync of the node's volume waits (fixed, or
  drawn from a distribution). Heal: no delay.
- disk-error: a fraction of the writes and syncs fail with EIO. Heal: no
  errors, and the node restarted (a WAL whose fsync failed is not trusted
  again).
- bad-sector: a block the node wrote and synced a few writes ago (with
  later synced writes beyond it: acknowledged data after it) reads back EIO
  from now on, and the node is restarted (SIGKILL, start) so that its
  recovery meets the damage. A correct node refuses to serve (it cannot
  read acknowledged records, and must not hand their offsets out again) and
  exits at once: that is recorded with the fault, never taken for a harness
  failure. Heal: the sector reads again, the node is started (killed first
  if it was serving) and recovers everything.
"""
from __future__ import annotations

from nemeses.base import Fault, FaultUnsupported


class VolumeFault(Fault):
    requires: tuple[str, ...] = ("volume",)

    def check_supported(self) -> None:
        unsupported = getattr(self.db, "unsupported", None)
        if unsupported is None:
            raise FaultUnsupported(f"{self.name}: target {getattr(self.db, 'name', self.db)!r} does not declare "
                                   f"the controls it offers (needs {', '.join(self.requires)})")
        for control in self.requires:
            why = unsupported(control)
            if why:
                raise FaultUnsupported(f"{self.name}: {why}")
        # the provider behind the volumes may offer only some faults (ec2: detach)
        for node in self.db.node_names:
            why = self.db.volume(node).unsupported(self.name)
            if why:
                raise FaultUnsupported(f"{self.name}: {why}")


class DetachFault(VolumeFault):
    name = "detach"
    requires = ("volume", "process")

    def start(self, targets):
        for t in targets:
            self.db.volume(t).detach()
        return {}

    def stop(self, targets):
        for t in targets:
            # The old process's descriptors point at the dead attachment: it
            # halts at its next WAL write whatever happens now, so the heal
            # restarts it on the re-attached volume (as a re-attached EBS
            # volume means a restarted broker).
            self.db.kill_node(t)
            self.db.volume(t).reattach()
            self.db.start_node(t)


class LoseUnsyncedFault(VolumeFault):
    name = "lose-unsynced"
    requires = ("volume", "process")

    def start(self, targets):
        lost = {}
        for t in targets:
            self.db.kill_node(t)
            lost[t] = self.db.volume(t).crash()
        return {"signal": "SIGKILL", "lost": {t: {k: v for k, v in r.items() if k != "attached"}
                                              for t, r in lost.items()}}

    def stop(self, targets):
        for t in targets:
            self.db.start_node(t)


class DiskSlowFault(VolumeFault):
    """`spec`: a reference.volumes.fusefs.DelaySpec as a dict (default: a
    fixed 50 ms on every read, write and sync)."""
    name = "disk-slow"
    DEFAULT = {"distribution": "fixed", "ms": 50, "ops": ["read", "write", "sync"]}

    def __init__(self, db, spec: dict | None = None):
        super().__init__(db)
        self.spec = dict(spec or self.DEFAULT)

    def start(self, targets):
        for t in targets:
            self.db.volume(t).set_slow(self.spec)
        return {"delay": self.spec}

    def stop(self, targets):
        for t in targets:
            self.db.volume(t).set_slow(None)


class DiskErrorFault(VolumeFault):
    """`spec`: a reference.volumes.fusefs.ErrorSpec as a dict (default: 10 %
    of writes and syncs fail with EIO)."""
    name = "disk-error"
    requires = ("volume", "process")
    DEFAULT = {"rate": 0.1, "ops": ["write", "sync"]}

    def __init__(self, db, spec: dict | None = None):
        super().__init__(db)
        self.spec = dict(spec or self.DEFAULT)

    def start(self, targets):
        for t in targets:
            self.db.volume(t).set_errors(self.spec)
        return {"errors": self.spec}

    def stop(self, targets):
        for t in targets:
            self.db.volume(t).set_errors(None)
            # A WAL whose fsync failed is not trusted again (fsyncgate): the
            # node restarts and recovers from what is durable.
            self.db.kill_node(t)
            self.db.start_node(t)


class BadSectorFault(VolumeFault):
    """`behind`: how many later synced writes of the same file must lie
    beyond the damaged block (default 2)."""
    name = "bad-sector"
    requires = ("volume", "process")

    def __init__(self, db, behind: int = 2):
        super().__init__(db)
        if int(behind) < 1:
            raise ValueError(f"behind must be at least 1, got {behind}")
        self.behind = int(behind)

    def start(self, targets):
        sectors, nodes = {}, {}
        for t in targets:
            sectors[t] = self.db.volume(t).mark_bad_sector(self.behind)
            self.db.kill_node(t)
            nodes[t] = self._start_and_see(t)
        return {"behind": self.behind, "sectors": sectors, "node": nodes}

    def _start_and_see(self, node: str) -> str:
        """Start the node; a node that exits during its start (a correct one
        refuses to serve a WAL it cannot read) is this fault's expected
        outcome, recorded with its exit code, not a failure of the fault."""
        try:
            self.db.start_node(node)
        except Exception as e:
            code = self.db.died_on_their_own().get(node)
            if code is None:  # it did not exit: it failed to start in some other way
                raise
            return f"exited with code {code} during its start ({e})"
        return "serving"

    def stop(self, targets):
        for t in targets:
            self.db.volume(t).heal_bad_sectors()
            self.db.kill_node(t)
            self.db.start_node(t)


FAULTS = {cls.name: cls for cls in (DetachFault, LoseUnsyncedFault, DiskSlowFault, DiskErrorFault, BadSectorFault)}
