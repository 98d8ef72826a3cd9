"""Volumes: where a node's WAL lives, and how it moves to another node.

The only state of a reference broker is its WAL on a volume; failover moves
the volume. A provider attaches a volume to a node and detaches it; after a
detach every I/O of the old attachment fails (EIO), as an EBS volume that was
force-detached. See `base.py` and `reference/CLUSTER.md`."""


def open_provider(spec: str | None):
    """A provider from a command-line spec (`--volume-provider`), for
    processes that are handed one (a broker acting as controller):
    `local:ROOT` (a client of the volume service at ROOT), `ec2:FILE` (FILE:
    JSON `{"region": R, "instances": {node: instance-id}, "device_name":
    "/dev/sdf"}`), or `directory:ROOT` (plain directories, NO I/O fencing:
    development only; it says `fences_io = False` and the controller then
    waits out a dead node's session before touching its volume). None: no
    provider."""
    if not spec:
        return None
    kind, _, arg = spec.partition(":")
    if kind == "directory" and arg:
        from reference.volumes.directory import DirectoryVolumeProvider
        return DirectoryVolumeProvider(arg)
    if kind == "local" and arg:
        from reference.volumes.local import LocalVolumes
        return LocalVolumes(arg)
    if kind == "ec2" and arg:
        import json

        from reference.volumes.ec2 import EC2Volumes
        with open(arg) as f:
            conf = json.load(f)
        return EC2Volumes(conf["instances"], region=conf.get("region"),
                          device_name=conf.get("device_name", "/dev/sdf"))
    raise ValueError(f"volume provider {spec!r}: expected local:ROOT, ec2:CONFIG.json or directory:ROOT")
