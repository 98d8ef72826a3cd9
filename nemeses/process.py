"""Process faults: real signals to the node's process (the target knows how
to reach it: locally, in a namespace or over SSH)."""
from __future__ import annotations

from nemeses.base import Fault


class KillFault(Fault):
    """SIGKILL the node; healing starts it again on the same volume."""
    name = "kill"
    requires = "process"

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
    requires = "pause"

    def start(self, targets):
        for t in targets:
            self.db.pause_node(t)
        return {"signal": "SIGSTOP"}

    def stop(self, targets):
        for t in targets:
            self.db.resume_node(t)
