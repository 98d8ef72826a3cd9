"""The store directory: store/<test-name>/<timestamp>/ and store/latest."""
from __future__ import annotations

import datetime
import json
import os
from pathlib import Path


def new_run_dir(root, test_name: str) -> Path:
    """A fresh, absolute store directory (absolute, so every process the run
    starts names it in its command line: that is how a later run finds what
    a killed harness left behind)."""
    root = Path(root).resolve()
    stamp = datetime.datetime.now().strftime("%Y%m%dT%H%M%S.%f")[:-3]
    run_dir = root / test_name / stamp
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


# --- a harness killed mid-run ---------------------------------------------------------------
#
# While a run is in progress its directory holds RUNNING (the harness's pid).
# A harness killed with SIGKILL cannot stop what it started; the next run
# finds RUNNING files whose harness is gone, stops every process that names
# that directory in its command line (brokers, SeaweedFS, the volume
# service and its FUSE processes), unmounts what is mounted under it, and
# leaves a note. Its history stays as it was: `highwater check` reads it.

RUNNING = "RUNNING"
ABANDONED_NOTE = "harness-killed.txt"


def mark_running(run_dir) -> None:
    (Path(run_dir) / RUNNING).write_text(f"{os.getpid()}\n")


def mark_finished(run_dir) -> None:
    try:
        (Path(run_dir) / RUNNING).unlink()
    except FileNotFoundError:
        pass


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def processes_naming(path: Path) -> list[int]:
    """Pids whose command line names `path` (or something under it)."""
    needle = str(path).encode()
    pids = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit() or int(entry) == os.getpid():
            continue
        try:
            cmdline = Path(f"/proc/{entry}/cmdline").read_bytes()
        except OSError:
            continue
        if needle in cmdline:
            pids.append(int(entry))
    return pids


def reap_abandoned(root) -> list[str]:
    """Stop what killed harnesses left under the store `root`; returns one
    line per abandoned run."""
    import signal
    root = Path(root)
    done = []
    if not root.is_dir():
        return done
    for marker in root.glob(f"*/*/{RUNNING}"):
        run_dir = marker.parent.resolve()
        try:
            pid = int(marker.read_text().split()[0])
        except (OSError, ValueError, IndexError):
            pid = -1
        if pid > 0 and _alive(pid):
            continue  # a run in progress (another harness): leave it alone
        killed = []
        for p in processes_naming(run_dir):
            try:
                os.kill(p, signal.SIGCONT)   # a paused broker too
                os.kill(p, signal.SIGKILL)
                killed.append(p)
            except ProcessLookupError:
                pass
        unmounted = []
        try:
            from reference.volumes.local import force_cleanup
            unmounted = force_cleanup(run_dir)
        except Exception as e:  # best effort: say so
            unmounted = [f"(unmounting failed: {e!r})"]
        for cleanup in (_stale_chains, _stale_namespaces):
            try:
                cleanup()
            except Exception:
                pass
        note = (f"the harness (pid {pid}) was killed before this run ended; the next run stopped "
                f"{len(killed)} process(es) it left {sorted(killed)} and unmounted {unmounted}\n")
        (run_dir / ABANDONED_NOTE).write_text(note)
        mark_finished(run_dir)
        done.append(f"{run_dir}: {note.strip()}")
    return done


def _stale_chains() -> None:
    from nemeses.network import iptables_available, remove_stale_chains
    if iptables_available() is None:
        remove_stale_chains()


def _stale_namespaces() -> None:
    from harness.remote.netns import cleanup_leftovers
    cleanup_leftovers()
