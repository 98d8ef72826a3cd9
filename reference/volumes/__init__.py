"""Volumes: where a node's WAL lives, and how it moves to another node.

The only state of a reference broker is its WAL on a volume; failover moves
the volume. A provider attaches a volume to a node and detaches it; after a
detach every I/O of the old attachment fails (EIO), as an EBS volume that was
force-detached. See `base.py` and `reference/CLUSTER.md`."""
