"""The volume provider interface (sans policy: the controller decides, the
provider only does). Calls block; async callers run them in an executor."""
from __future__ import annotations

import abc
from dataclasses import dataclass


# Written at the root of every volume when it is made: a node checks it before
# using a path as its volume, so a bare mount point (between a detach and the
# next attach, the directory under the mount shows through) is never taken
# for the volume and written to.
VOLUME_LABEL = ".highwater-volume"


def write_label(root, volume_id: str) -> None:
    import os
    from pathlib import Path
    path = Path(root) / VOLUME_LABEL
    if path.exists():
        return
    tmp = path.with_name(path.name + ".new")
    with open(tmp, "w") as f:
        f.write(volume_id + "\n")
        f.flush()
        os.fsync(f.fileno())
    os.rename(tmp, path)
    fd = os.open(root, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def label_of(root) -> str | None:
    """The volume id labelled at `root`, or None (no label, not readable)."""
    from pathlib import Path
    try:
        return (Path(root) / VOLUME_LABEL).read_text().strip() or None
    except OSError:
        return None


class VolumeError(RuntimeError):
    """An attach or detach that could not be done; the message says why."""


@dataclass(frozen=True)
class Attachment:
    volume_id: str
    node: str
    path: str          # where the node reaches it: a directory (local) or a block device (ec2)


class VolumeProvider(abc.ABC):
    @abc.abstractmethod
    def attach(self, volume_id: str, node: str) -> Attachment:
        """Attach the volume to the node; raise VolumeError if it is attached
        elsewhere (detach first) or does not exist. Idempotent for the same
        node."""

    @abc.abstractmethod
    def detach(self, volume_id: str, node: str) -> None:
        """Detach it from that node. When this returns, every I/O of that
        attachment, including on descriptors opened before, fails with EIO.
        A no-op if it is not attached there."""

    @abc.abstractmethod
    def attachment(self, volume_id: str) -> Attachment | None:
        """Where the volume is attached now, or None."""


VOLUME_FAULTS = ("detach", "lose-unsynced", "disk-slow", "disk-error", "bad-sector")


class VolumeControl:
    """One node's volume, as the nemeses see it (`target.volume(node)`):
    detach it from that node, attach it back, and, where the provider can,
    drop its unsynced writes, slow it down or make it fail. Thin: each call is
    one provider call. A provider that cannot do a fault lists only what it
    can in `supported_faults`; `unsupported(fault)` says why not."""

    def __init__(self, provider: VolumeProvider, volume_id: str, node: str):
        self.provider = provider
        self.volume_id = volume_id
        self.node = node

    def unsupported(self, fault: str) -> str | None:
        can = getattr(self.provider, "supported_faults", ("detach",))
        if fault in can:
            return None
        return f"the {type(self.provider).__name__} volume provider cannot do {fault} (it can: {', '.join(can)})"

    def detach(self) -> None:
        """Detach from this node (a no-op if it is attached elsewhere or nowhere)."""
        self.provider.detach(self.volume_id, self.node)

    def attach(self) -> Attachment:
        return self.provider.attach(self.volume_id, self.node)

    def reattach(self) -> Attachment | None:
        """The detach fault's heal: attach to this node again, unless the
        volume was moved meanwhile (a cluster's failover owns it then)."""
        where = self.provider.attachment(self.volume_id)
        if where is not None:
            return where if where.node == self.node else None
        try:
            return self.provider.attach(self.volume_id, self.node)
        except VolumeError:
            # the failover took it between the look and the attach
            where = self.provider.attachment(self.volume_id)
            if where is not None and where.node != self.node:
                return None
            raise

    def attachment(self) -> Attachment | None:
        return self.provider.attachment(self.volume_id)

    def crash(self) -> dict:
        """Drop every write not yet made durable (lose-unsynced)."""
        return self._faults("lose-unsynced").crash(self.volume_id)

    def set_slow(self, spec) -> None:
        self._faults("disk-slow").set_slow(self.volume_id, spec)

    def set_errors(self, spec) -> None:
        self._faults("disk-error").set_errors(self.volume_id, spec)

    def mark_bad_sector(self, behind: int = 2) -> dict:
        """A block written and synced `behind` synced writes ago (or more)
        reads EIO from now on (bad-sector); returns where."""
        return self._faults("bad-sector").mark_bad_sector(self.volume_id, behind)

    def heal_bad_sectors(self) -> None:
        self._faults("bad-sector").heal_bad_sectors(self.volume_id)

    def status(self) -> dict:
        return self.provider.status(self.volume_id) if hasattr(self.provider, "status") else {}

    def _faults(self, fault: str):
        why = self.unsupported(fault)
        if why is not None:
            raise VolumeError(why)
        return self.provider
