"""Random identifiers (topic ids, incarnations, recovery tokens, metadata
writer ids), behind one seam: outside simulation `uuid.uuid4()` from the OS
random source; the deterministic simulator installs a seeded source so that
a run's identifiers, and so its history, repeat from its seed."""
from __future__ import annotations

import uuid
from typing import Callable

_uuid4: Callable[[], uuid.UUID] = uuid.uuid4


def uuid4() -> uuid.UUID:
    return _uuid4()


def install(source: Callable[[], uuid.UUID]) -> None:
    global _uuid4
    _uuid4 = source


def restore() -> None:
    global _uuid4
    _uuid4 = uuid.uuid4
