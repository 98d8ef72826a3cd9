"""Object garbage collection in a cluster: the storage engine's `Cleaner`,
run by the controller against the authoritative metadata it writes."""
from __future__ import annotations

import asyncio

from reference.storage.retention import Cleaner


class _NoBlocks:
    def drop_object(self, oid) -> None:
        pass


class _NoReader:
    blocks = _NoBlocks()


class ControllerCleaner(Cleaner):
    """A Cleaner whose "engine" is the controller: its metadata log, the
    node's object store and executor, the engine's retention settings."""

    def __init__(self, controller, store, config, executor):
        self.controller = controller
        self.meta = controller.meta
        self.store = store
        self.config = config
        self.s3_executor = executor
        self.reader = _NoReader()
        self.stopping = asyncio.Event()
        super().__init__(self)

    @property
    def closing(self) -> bool:
        return not self.controller.active

    @property
    def failed(self):
        return self.controller.deposed
