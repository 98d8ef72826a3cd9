"""The volume provider interface (sans policy: the controller decides, the
provider only does). Calls block; async callers run them in an executor."""
from __future__ import annotations

import abc
from dataclasses import dataclass


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
