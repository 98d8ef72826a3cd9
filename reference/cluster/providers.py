"""Volume providers by name, for `--volume-provider KIND:ARG`.

- `directory:ROOT`: plain directories, NO EIO fencing (development and unit
  tests only; see reference/volumes/directory.py).
- `local:ROOT`: the FUSE provider (reference/volumes/local.py) whose volume
  service runs under ROOT (`LocalVolumes(ROOT)`), when present.
- `ec2:...`: the EC2 provider, when present, through its module's `from_spec(ARG)`.

A provider that fences I/O on detach (FUSE, EBS) says nothing; one that does
not says `fences_io = False`, and the controller then takes the slow, safe
path (CLUSTER.md, "Fast failure detection").
"""
from __future__ import annotations

import importlib


def open_provider(spec: str | None):
    if not spec:
        return None
    kind, _, arg = spec.partition(":")
    if kind == "directory":
        from reference.volumes.directory import DirectoryVolumeProvider
        return DirectoryVolumeProvider(arg)
    if kind in ("local", "ec2"):
        try:
            module = importlib.import_module(f"reference.volumes.{kind}")
        except ModuleNotFoundError:
            raise ValueError(f"--volume-provider {kind}: not available in this checkout") from None
        if hasattr(module, "from_spec"):
            return module.from_spec(arg)
        if kind == "local" and hasattr(module, "LocalVolumes"):
            return module.LocalVolumes(arg)
        raise ValueError(f"--volume-provider {kind}: reference.volumes.{kind} has no from_spec(arg)")
    raise ValueError(f"--volume-provider {spec!r}: unknown kind (directory:ROOT, local:..., ec2:...)")
