"""Volume providers by name, for `--volume-provider KIND:ARG`.

- `directory:ROOT`: plain directories, NO EIO fencing (development and unit
  tests only; see reference/volumes/directory.py).
- `local:...`, `ec2:...`: the FUSE and EC2 providers (reference/volumes/local.py
  and ec2.py), when present: their module's `from_spec(ARG)` builds one.
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
        if not hasattr(module, "from_spec"):
            raise ValueError(f"--volume-provider {kind}: reference.volumes.{kind} has no from_spec(arg)")
        return module.from_spec(arg)
    raise ValueError(f"--volume-provider {spec!r}: unknown kind (directory:ROOT, local:..., ec2:...)")
