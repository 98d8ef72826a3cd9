"""Garbage collection of objects: nothing uploaded is leaked past retention.

Object states: prepared -> committed -> destroy -> (gone). Two kinds of
garbage arise: objects prepared but never committed (the node crashed
between PUT and commit, or the upload outlived its deadline), and objects
replaced by compaction or left without live streams by a topic deletion.
Every `cleanup_interval` the cleaner marks expired prepared objects for
destruction, and deletes from S3 those marked more than `object_retention`
ago (the delay lets readers that looked an object up just before finish),
then records them destroyed. A periodic sweep also deletes keys under
`objects/` that the metadata no longer knows at all (e.g. a PUT that landed
after its prepared id had already been destroyed).
"""
from __future__ import annotations

import asyncio
import logging

from reference import clock
from reference.storage.metadata import COMMITTED, DESTROY, PREPARED, MetadataState, object_key
from reference.storage.s3io import NoSuchKey

log = logging.getLogger(__name__)


def expired_prepared(state: MetadataState, now: float) -> list[int]:
    return sorted(o.object_id for o in state.objects.values() if o.state == PREPARED and o.deadline < now)


def due_for_deletion(state: MetadataState, now: float, retention: float) -> list[int]:
    return sorted(o.object_id for o in state.objects.values()
                  if o.state == DESTROY and o.marked_at + retention <= now)


def orphans(state: MetadataState, keys: list[str]) -> list[str]:
    """Keys of objects whose id was allocated but is no longer in the metadata."""
    out = []
    for key in keys:
        try:
            oid = int(key.rsplit("/", 1)[1])
        except ValueError:
            continue
        if oid < state.next_object_id and oid not in state.objects:
            out.append(key)
    return out


def live_object_keys(state: MetadataState) -> set[str]:
    return {object_key(o.object_id) for o in state.objects.values() if o.state == COMMITTED}


class Cleaner:
    SWEEP_EVERY = 60  # rounds

    def __init__(self, engine):
        self.engine = engine
        self.deleted = 0
        self._rounds = 0

    async def run(self) -> None:
        e = self.engine
        while not e.closing and not e.failed:
            try:
                await self.clean_once(sweep=self._rounds % self.SWEEP_EVERY == 0)
            except asyncio.CancelledError:
                raise
            except Exception as ex:
                log.warning("object cleanup failed: %r", ex)
            self._rounds += 1
            try:
                await asyncio.wait_for(e.stopping.wait(), e.config.cleanup_interval)
                return
            except asyncio.TimeoutError:
                pass

    async def clean_once(self, sweep: bool = False, now: float | None = None) -> int:
        e = self.engine
        now = clock.wall() if now is None else now
        meta = e.meta
        expired = expired_prepared(meta.state, now)
        if expired:
            await meta.append({"type": "mark_destroy", "ids": expired, "ts": now})
            log.info("prepared objects %s expired uncommitted: marked for deletion", expired)
        due = due_for_deletion(meta.state, now, e.config.object_retention)
        loop = asyncio.get_running_loop()
        for oid in due:
            try:
                await loop.run_in_executor(e.s3_executor, e.store.delete, object_key(oid))
            except NoSuchKey:
                pass
        if due:
            await meta.append({"type": "destroyed", "ids": due, "ts": now})
            for oid in due:
                e.reader.blocks.drop_object(oid)
            log.info("deleted objects %s after retention", due)
        n = len(due)
        if sweep:
            keys = [k for k, _ in await loop.run_in_executor(e.s3_executor, e.store.list, "objects/")]
            for key in orphans(meta.state, keys):
                await loop.run_in_executor(e.s3_executor, e.store.delete, key)
                log.info("deleted orphan object %s (unknown to the metadata)", key)
                n += 1
        self.deleted += n
        return n
