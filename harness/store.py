"""The store directory: store/<test-name>/<timestamp>/ and store/latest."""
from __future__ import annotations

import datetime
import json
import os
from pathlib import Path


def new_run_dir(root, test_name: str) -> Path:
    stamp = datetime.datetime.now().strftime("%Y%m%dT%H%M%S.%f")[:-3]
    run_dir = Path(root) / test_name / stamp
    run_dir.mkdir(parents=True, exist_ok=False)
    latest = Path(root) / "latest"
    try:
        if latest.is_symlink() or latest.exists():
            latest.unlink()
        latest.symlink_to(run_dir.relative_to(Path(root)), target_is_directory=True)
    except OSError:
        pass  # a symlink is a convenience; the run itself must not fail for it
    return run_dir


def write_json(path, data) -> None:
    tmp = Path(str(path) + ".tmp")
    with open(tmp, "w", encoding="utf-8") as f:
        json.dump(data, f, indent=2, sort_keys=True, default=str)
        f.write("\n")
    os.replace(tmp, path)


def resolve_history(path) -> Path:
    """A store directory (its history.jsonl) or a history file."""
    p = Path(path)
    if p.is_dir():
        return p / "history.jsonl"
    return p
