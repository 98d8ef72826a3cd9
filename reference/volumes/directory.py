"""The `directory` volume provider: plain directories, NO EIO FENCING.

For development and unit tests only. A volume is a directory
`<root>/volumes/<id>`; attaching it to a node makes the symlink
`<root>/mnt/<node>/<id>` point at it; detaching removes the link. A process
that opened files through the old link keeps its descriptors and can go on
writing: nothing stops a paused broker from writing after its volume moved.
The cluster knows (`fences_io = False`): its controller then never acts on
a fast failure detection, it waits until the old node's session has
certainly expired before another node reads the volume. The `local` (FUSE)
and `ec2` providers fence I/O and allow the fast path.

Attachments are kept in `<root>/attachments.json`, updated under an flock,
so the harness and any node's controller share one view.
"""
from __future__ import annotations

import fcntl
import json
import os
from contextlib import contextmanager
from pathlib import Path

from reference.volumes.base import Attachment, VolumeError, VolumeProvider, write_label


class DirectoryVolumeProvider(VolumeProvider):
    fences_io = False

    def __init__(self, root: str | Path):
        self.root = Path(root)
        (self.root / "volumes").mkdir(parents=True, exist_ok=True)
        (self.root / "mnt").mkdir(parents=True, exist_ok=True)

    def create(self, volume_id: str) -> None:
        """Make a new empty volume (the harness does, before attaching)."""
        backing = self.root / "volumes" / volume_id
        backing.mkdir(parents=True, exist_ok=True)
        write_label(backing, volume_id)

    def mount_point(self, volume_id: str, node: str) -> Path:
        return self.root / "mnt" / node / volume_id

    @contextmanager
    def _table(self):
        path = self.root / "attachments.json"
        with open(self.root / "attachments.lock", "a+") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            try:
                table = json.loads(path.read_text()) if path.exists() else {}
                yield table
                tmp = path.with_suffix(".tmp")
                tmp.write_text(json.dumps(table, sort_keys=True))
                os.replace(tmp, path)
            finally:
                fcntl.flock(lock, fcntl.LOCK_UN)

    def attach(self, volume_id: str, node: str) -> Attachment:
        backing = self.root / "volumes" / volume_id
        if not backing.is_dir():
            raise VolumeError(f"volume {volume_id} does not exist (no {backing})")
        with self._table() as table:
            where = table.get(volume_id)
            if where is not None and where != node:
                raise VolumeError(f"volume {volume_id} is attached to {where}; detach it first")
            link = self.mount_point(volume_id, node)
            link.parent.mkdir(parents=True, exist_ok=True)
            if not link.is_symlink():
                link.symlink_to(backing.resolve(), target_is_directory=True)
            table[volume_id] = node
        return Attachment(volume_id, node, str(link))

    def detach(self, volume_id: str, node: str) -> None:
        with self._table() as table:
            if table.get(volume_id) != node:
                return
            link = self.mount_point(volume_id, node)
            if link.is_symlink():
                link.unlink()
            del table[volume_id]

    def attachment(self, volume_id: str) -> Attachment | None:
        with self._table() as table:
            node = table.get(volume_id)
        return None if node is None else Attachment(volume_id, node, str(self.mount_point(volume_id, node)))
