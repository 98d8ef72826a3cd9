"""Process faults, local form: real signals to the node's process group.
(The SSH form for remote nodes comes with the remote inventory.)"""
from __future__ import annotations

import signal

from nemeses.base import Fault, FaultUnsupported


class KillFault(Fault):
    """SIGKILL the node; healing starts it again on the same volume."""
    name = "kill"

    def check_supported(self):
        if not hasattr(self.db, "kill_node"):
            raise FaultUnsupported(f"db {self.db.name} cannot kill nodes")

    def start(self, targets):
        for t in targets:
            self.db.kill_node(t)
        return {"signal": "SIGKILL"}

    def stop(self, targets):
        for t in targets:
            self.db.start_node(t)


class PauseFault(Fault):
    """SIGSTOP the node (it holds its sockets but answers nothing); SIGCONT heals."""
    name = "pause"

    def check_supported(self):
        if not hasattr(self.db, "signal_node"):
            raise FaultUnsupported(f"db {self.db.name} cannot signal nodes")

    def start(self, targets):
        for t in targets:
            self.db.signal_node(t, signal.SIGSTOP)
        return {"signal": "SIGSTOP"}

    def stop(self, targets):
        for t in targets:
            self.db.signal_node(t, signal.SIGCONT)
