"""The controller lease: one small JSON object in S3, changed only by
compare-and-swap (If-None-Match: * to create, If-Match: <etag> to renew or
take over).

    cluster/controller  {"node", "epoch", "rpc", "incarnation", "expires_ms"}

The lease says who the controller is and where to reach it; it is only a
liveness hint. Safety comes from the metadata log: a new controller writes a
`controller` record before anything else, so a deposed controller's next
metadata write collides with an existing key and S3 refuses it.

`LeaseDecision` is sans-I/O (what to do given the lease read and the
clocks); `LeaseStore` is the blocking S3 edge.
"""
from __future__ import annotations

import json
from dataclasses import dataclass

from reference.storage.s3io import NoSuchKey, ObjectExists, ObjectStore

LEASE_KEY = "cluster/controller"


@dataclass(frozen=True)
class Lease:
    node: int
    epoch: int
    rpc: str
    incarnation: str        # which process of that node (a restarted node is another holder)
    expires_ms: int         # wall clock
    etag: str | None = None

    def to_body(self) -> bytes:
        return json.dumps({"node": self.node, "epoch": self.epoch, "rpc": self.rpc,
                           "incarnation": self.incarnation, "expires_ms": self.expires_ms},
                          sort_keys=True).encode()

    @classmethod
    def from_body(cls, body: bytes, etag: str) -> "Lease":
        j = json.loads(body)
        return cls(j["node"], j["epoch"], j["rpc"], j.get("incarnation", ""), j["expires_ms"], etag)


class LeaseStore:
    """Blocking: run in an executor."""

    def __init__(self, store: ObjectStore, key: str = LEASE_KEY):
        self.store = store
        self.key = key

    def read(self) -> Lease | None:
        try:
            body, etag = self.store.get_with_etag(self.key)
        except NoSuchKey:
            return None
        try:
            return Lease.from_body(body, etag)
        except (ValueError, KeyError):
            # unreadable: treat as expired, but keep its etag so a takeover is still a CAS
            return Lease(0, 0, "", "", 0, etag)

    def write(self, lease: Lease, etag: str | None) -> Lease | None:
        """The new lease (with its etag), or None if the CAS lost."""
        try:
            new_etag = self.store.put_conditional(self.key, lease.to_body(), etag)
        except ObjectExists:
            return None
        return Lease(lease.node, lease.epoch, lease.rpc, lease.incarnation, lease.expires_ms, new_etag)


def may_take_over(lease: Lease | None, me: int, incarnation: str, now_ms: int, margin_ms: int,
                  holder_dead: bool) -> bool:
    """Sans-I/O: may this candidate try to take the lease now?

    - no lease yet: yes;
    - ours already (same process): no (renew instead);
    - held by an earlier process of this same node: yes, at once (this process
      holds the node's volume lock, so that one is gone);
    - expired by the wall clock, with a margin for clock skew: yes;
    - `holder_dead` (the holder's RPC port refuses connections and the
      volumes fence I/O, so its old attachment can ack nothing): yes.
    """
    if lease is None:
        return True
    if lease.node == me and lease.incarnation == incarnation:
        return False
    if lease.node == me:
        return True
    if now_ms > lease.expires_ms + margin_ms:
        return True
    return holder_dead
