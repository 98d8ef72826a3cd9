"""The `local` volume provider: each volume a backing directory, each
attachment a FUSE file system (`fusefs.py`, one process per attachment)
mounted at a path of its node. A small volume service process owns them;
everything else (the harness's faults, the cluster's controller inside a
broker, a CLI, a test) is a client of its control socket through
`LocalVolumes`, so several processes can drive the same volumes.

Layout under the service's ROOT:

    ROOT/control.sock            the control socket (AF_UNIX, stream)
    ROOT/volumes/<volume>/       backing directories: the "disks"
    ROOT/mnt/<node>/<volume>/    mount points: where <node> reaches <volume>
    ROOT/logs/                   one stderr log per attachment process

Semantics
---------

- A volume is attached to at most one node. `attach` to another node while
  attached is refused (detach first); `attach` to the same node answers the
  same attachment.
- `detach` makes the attachment dead at once: every operation on it, on
  descriptors opened before and on new opens alike, answers EIO. In lazy mode
  what was not fsynced is dropped (the old host's page cache goes with a
  force-detach). The dead mount stays mounted (answering EIO) until the volume
  is attached to that node again, `unmount` is asked, or the service stops:
  unmounting at once would let a process restarted on that node write into the
  bare mount-point directory instead of failing.
- The volume faults are settings of the volume, not of one attachment: lazy
  mode, delay, errors and bad sectors follow the volume when it moves, and
  are applied to each new attachment (a bad sector is a place on the disk:
  its file's inode and offset in the backing directory).

Control protocol (JSON Lines over ROOT/control.sock)
----------------------------------------------------

A client connects, writes one JSON object per line, and reads one JSON object
per line back, in order; a connection may carry any number of requests.
Every response is `{"ok": true, ...}` or `{"ok": false, "error": MESSAGE}`.
Names (volume, node) match `[A-Za-z0-9][A-Za-z0-9._-]*`.

    {"op": "create", "volume": V, "lazy": BOOL?}   -> {"backing": PATH}   (idempotent; lazy default true)
    {"op": "attach", "volume": V, "node": N}       -> {"volume", "node", "path"}
    {"op": "detach", "volume": V, "node": N}       -> {"detached": BOOL, "lost_bytes"?, ...}
    {"op": "attachment", "volume": V}              -> {"volume", "node": N|null, "path": P|null}
    {"op": "list"}                                 -> {"volumes": {V: {"backing", "node", "path", "lazy",
                                                        "slow", "errors"}}}
    {"op": "mount_path", "volume": V, "node": N}   -> {"path"}   (where N would reach V)
    {"op": "unmount", "volume": V, "node": N}      -> {}   (remove a dead mount left by detach)
    {"op": "crash", "volume": V}                   -> {"attached": BOOL, "lost_bytes", "lost_files",
                                                        "undone_entries"}   (lose-unsynced)
    {"op": "sync", "volume": V}                    -> {}   (make everything durable)
    {"op": "lazy", "volume": V, "on": BOOL}        -> {}
    {"op": "slow", "volume": V, "spec": SPEC|null} -> {}   (disk-slow; SPEC: fusefs.DelaySpec)
    {"op": "errors", "volume": V, "spec": SPEC|null} -> {}   (disk-error; SPEC: fusefs.ErrorSpec)
    {"op": "bad_sector", "volume": V, "behind": N} -> {"ino", "file", "offset", "length"}   (bad-sector:
                                                        a block written and synced before reads EIO)
    {"op": "heal_sectors", "volume": V}            -> {}   (every bad sector reads again)
    {"op": "status", "volume": V}                  -> {"attachment": {...}, "fs": {...} | null}
    {"op": "shutdown"}                             -> {}   (unmount everything, stop the service)

DelaySpec: `{"distribution": "fixed"|"uniform"|"exponential"|"pareto", "ms",
"min_ms", "max_ms", "alpha", "ops": ["read","write","sync","meta"], "seed"}`.
ErrorSpec: `{"rate": 0..1, "ops": [...], "seed"}` (ops default write, sync).

Starting it: `python -m reference.volumes.local serve --root ROOT` prints one
JSON line `{"ready": true, "socket": PATH, "pid": P}` on stdout once it
listens; it stops (unmounting everything) on SIGTERM/SIGINT, on `shutdown`,
and, with `--exit-with-stdin`, when its stdin closes (its starter died).
`start_service(root)` does that from Python.
"""
from __future__ import annotations

import argparse
import json
import logging
import os
import re
import signal
import socket
import socketserver
import subprocess
import sys
import threading
from dataclasses import dataclass, field
from pathlib import Path

from reference.volumes.base import Attachment, VolumeControl, VolumeError, VolumeProvider, write_label
from reference.volumes.fusefs import DelaySpec, ErrorSpec, lazy_unmount

log = logging.getLogger("highwater.volumes")

NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*$")
SOCKET_NAME = "control.sock"
SOCKET_MAX = 100   # AF_UNIX paths hold 108 bytes


def socket_path_for(root) -> Path:
    """ROOT/control.sock, or, when that path is too long for AF_UNIX (a deep
    store directory), a short one in /tmp named after ROOT: every client
    finds the same one from ROOT alone."""
    import hashlib
    root = Path(root).resolve()
    path = root / SOCKET_NAME
    if len(str(path)) <= SOCKET_MAX:
        return path
    return Path("/tmp") / f"hwvol-{hashlib.sha1(str(root).encode()).hexdigest()[:16]}.sock"
MOUNT_TIMEOUT = 20.0


def _check_name(kind: str, name) -> str:
    if not isinstance(name, str) or not NAME.match(name) or len(name) > 100:
        raise VolumeError(f"bad {kind} name {name!r} (letters, digits, '.', '_', '-'; not starting with '.')")
    return name


def _repo_root() -> str:
    import reference
    return str(Path(reference.__file__).resolve().parent.parent)


# --------------------------------------------------------------------------
# The service (server side)
# --------------------------------------------------------------------------

class FsProcess:
    """One attachment's FUSE process and its control pipes."""

    def __init__(self, volume: str, node: str, backing: Path, path: Path, log_path: Path, lazy: bool):
        self.volume, self.node, self.path = volume, node, path
        self.dead = False
        self.lock = threading.Lock()
        env = {**os.environ, "PYTHONPATH": os.pathsep.join(
            p for p in (_repo_root(), os.environ.get("PYTHONPATH")) if p)}
        cmd = [sys.executable, "-m", "reference.volumes.fusefs", "--backing", str(backing),
               "--mountpoint", str(path), "--name", f"highwater:{volume}@{node}"]
        if lazy:
            cmd.append("--lazy")
        with open(log_path, "ab") as err:
            self.proc = subprocess.Popen(cmd, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=err,
                                         text=True, bufsize=1, env=env, start_new_session=True)
        ready = self._readline(MOUNT_TIMEOUT)
        if not ready or not ready.get("ready"):
            self.proc.kill()
            self.proc.wait()
            lazy_unmount(str(path))
            why = (ready or {}).get("error") or f"no answer within {MOUNT_TIMEOUT:.0f}s"
            raise VolumeError(f"mounting {volume} at {path} failed: {why}; see {log_path}")

    def _readline(self, timeout: float | None = None) -> dict | None:
        box: list = []
        reader = threading.Thread(target=lambda: box.append(self.proc.stdout.readline()), daemon=True)
        reader.start()
        reader.join(timeout)
        if not box or not box[0]:
            return None
        return json.loads(box[0])

    def request(self, op: str, **params) -> dict:
        with self.lock:
            if self.proc.poll() is not None:
                raise VolumeError(f"the file system of {self.volume}@{self.node} has exited "
                                  f"({self.proc.returncode})")
            try:
                self.proc.stdin.write(json.dumps({"op": op, **params}) + "\n")
                self.proc.stdin.flush()
                line = self.proc.stdout.readline()
            except (BrokenPipeError, OSError) as e:
                raise VolumeError(f"the file system of {self.volume}@{self.node} is gone: {e}") from None
            if not line:
                raise VolumeError(f"the file system of {self.volume}@{self.node} closed its control channel")
            resp = json.loads(line)
        if not resp.get("ok"):
            raise VolumeError(resp.get("error", "unknown error"))
        resp.pop("ok", None)
        return resp

    def retire(self) -> None:
        """Unmount (lazily); the process exits once no descriptor is open on it."""
        try:
            self.request("exit")
        except VolumeError:
            pass
        lazy_unmount(str(self.path))
        try:
            self.proc.stdin.close()
        except OSError:
            pass

    def stop(self, grace: float = 3.0) -> None:
        self.retire()
        try:
            self.proc.wait(grace)
        except subprocess.TimeoutExpired:
            self.proc.kill()  # descriptors still open on it now get ENOTCONN
            self.proc.wait()


@dataclass
class VolumeState:
    backing: Path
    lazy: bool = True
    slow: DelaySpec | None = None
    errors: ErrorSpec | None = None
    bad_blocks: list = field(default_factory=list)   # [{"ino", "offset", ...}]: read EIO until healed
    attached: FsProcess | None = None
    lock: threading.Lock = field(default_factory=threading.Lock)


class VolumeService:
    def __init__(self, root: str | Path):
        self.root = Path(root).resolve()
        for sub in ("volumes", "mnt", "logs"):
            (self.root / sub).mkdir(parents=True, exist_ok=True)
        self.socket_path = socket_path_for(self.root)
        if len(str(self.socket_path).encode()) > 100:
            raise VolumeError(f"socket path {self.socket_path} is too long for AF_UNIX; use a shorter root")
        self.volumes: dict[str, VolumeState] = {}
        self.dead_mounts: dict[tuple[str, str], FsProcess] = {}   # (volume, node) -> detached, still mounted
        self.retired: list[FsProcess] = []                        # unmounted, maybe still serving old fds
        self.registry = threading.Lock()
        self.spawned = 0
        self._stop_lock = threading.Lock()
        self._stopped = False
        self._server: socketserver.ThreadingUnixStreamServer | None = None
        self._serve_thread: threading.Thread | None = None

    # ---- requests ------------------------------------------------------------------
    def handle(self, req: dict) -> dict:
        op = req.get("op")
        fn = getattr(self, "op_" + str(op), None)
        if fn is None:
            raise VolumeError(f"unknown op {op!r}")
        return fn(req) or {}

    def _volume(self, req) -> tuple[str, VolumeState]:
        name = _check_name("volume", req.get("volume"))
        with self.registry:
            state = self.volumes.get(name)
            if state is None:
                backing = self.root / "volumes" / name
                if not backing.is_dir():
                    raise VolumeError(f"no volume {name!r} (create it first)")
                state = self.volumes[name] = VolumeState(backing)  # made by an earlier service
            return name, state

    def mount_path(self, volume: str, node: str) -> Path:
        return self.root / "mnt" / node / volume

    def op_create(self, req):
        name = _check_name("volume", req.get("volume"))
        with self.registry:
            state = self.volumes.get(name)
            if state is None:
                backing = self.root / "volumes" / name
                backing.mkdir(parents=True, exist_ok=True)
                write_label(backing, name)
                state = self.volumes[name] = VolumeState(backing, lazy=bool(req.get("lazy", True)))
        return {"backing": str(state.backing)}

    def op_mount_path(self, req):
        return {"path": str(self.mount_path(_check_name("volume", req.get("volume")),
                                            _check_name("node", req.get("node"))))}

    def op_attach(self, req):
        name, state = self._volume(req)
        node = _check_name("node", req.get("node"))
        with state.lock:
            if state.attached is not None:
                if state.attached.node == node:
                    return {"volume": name, "node": node, "path": str(state.attached.path)}
                raise VolumeError(f"volume {name} is attached to {state.attached.node}; detach it first")
            path = self.mount_path(name, node)
            with self.registry:
                old = self.dead_mounts.pop((name, node), None)
            if old is not None:
                old.retire()
                self.retired.append(old)
            lazy_unmount(str(path))  # anything left there by an earlier service
            path.mkdir(parents=True, exist_ok=True)
            self.spawned += 1
            fs = FsProcess(name, node, state.backing, path,
                           self.root / "logs" / f"{name}@{node}.{self.spawned}.log", state.lazy)
            try:
                if state.slow is not None:
                    fs.request("slow", spec=state.slow.to_json())
                if state.errors is not None:
                    fs.request("errors", spec=state.errors.to_json())
                if state.bad_blocks:
                    fs.request("bad_sectors", blocks=state.bad_blocks)
            except VolumeError:
                fs.stop()
                raise
            state.attached = fs
            return {"volume": name, "node": node, "path": str(path)}

    def op_detach(self, req):
        name, state = self._volume(req)
        node = _check_name("node", req.get("node"))
        with state.lock:
            fs = state.attached
            if fs is None or fs.node != node:
                return {"detached": False}
            state.attached = None
            try:
                dropped = fs.request("kill")
            except VolumeError as e:  # its process died: stopping it is all that is left
                log.warning("detach %s from %s: %s", name, node, e)
                dropped = {}
            fs.dead = True
            with self.registry:
                self.dead_mounts[(name, node)] = fs
            return {"detached": True, **dropped}

    def op_unmount(self, req):
        name = _check_name("volume", req.get("volume"))
        node = _check_name("node", req.get("node"))
        with self.registry:
            fs = self.dead_mounts.pop((name, node), None)
        if fs is not None:
            fs.retire()
            self.retired.append(fs)
        return {}

    def op_attachment(self, req):
        name, state = self._volume(req)
        fs = state.attached
        return {"volume": name, "node": fs.node if fs else None, "path": str(fs.path) if fs else None}

    def op_list(self, req):
        with self.registry:
            items = list(self.volumes.items())
        return {"volumes": {name: {"backing": str(s.backing), "node": s.attached.node if s.attached else None,
                                   "path": str(s.attached.path) if s.attached else None, "lazy": s.lazy,
                                   "slow": s.slow.to_json() if s.slow else None,
                                   "errors": s.errors.to_json() if s.errors else None}
                            for name, s in items}}

    def _forward(self, state: VolumeState, op: str, **params) -> dict | None:
        fs = state.attached
        return None if fs is None else fs.request(op, **params)

    def op_crash(self, req):
        _, state = self._volume(req)
        with state.lock:
            got = self._forward(state, "crash")
        return {"attached": got is not None, **(got or {})}

    def op_sync(self, req):
        _, state = self._volume(req)
        with state.lock:
            self._forward(state, "sync")

    def op_lazy(self, req):
        _, state = self._volume(req)
        with state.lock:
            state.lazy = bool(req.get("on"))
            self._forward(state, "lazy", on=state.lazy)

    def op_slow(self, req):
        _, state = self._volume(req)
        spec = None if req.get("spec") is None else _spec(DelaySpec, req["spec"])
        with state.lock:
            state.slow = spec
            self._forward(state, "slow", spec=spec.to_json() if spec else None)

    def op_errors(self, req):
        _, state = self._volume(req)
        spec = None if req.get("spec") is None else _spec(ErrorSpec, req["spec"])
        with state.lock:
            state.errors = spec
            self._forward(state, "errors", spec=spec.to_json() if spec else None)

    def op_bad_sector(self, req):
        name, state = self._volume(req)
        with state.lock:
            got = self._forward(state, "bad_sector", behind=int(req.get("behind", 2)))
            if got is None:
                raise VolumeError(f"bad-sector: volume {name} is not attached (no recent synced write to damage)")
            state.bad_blocks.append(got)
        return got

    def op_heal_sectors(self, req):
        _, state = self._volume(req)
        with state.lock:
            state.bad_blocks = []
            self._forward(state, "bad_sectors", blocks=[])

    def op_status(self, req):
        name, state = self._volume(req)
        with state.lock:
            fs = self._forward(state, "status")
            att = self.op_attachment(req)
        return {"attachment": att, "fs": fs}

    def op_shutdown(self, req):
        threading.Thread(target=self.stop, daemon=True).start()

    # ---- lifetime ------------------------------------------------------------------
    def serve(self, on_ready=None) -> None:
        service = self

        class Handler(socketserver.StreamRequestHandler):
            def handle(self):
                for line in self.rfile:
                    if not line.strip():
                        continue
                    try:
                        req = json.loads(line)
                        if not isinstance(req, dict):
                            raise VolumeError("a request is a JSON object")
                        resp = {"ok": True, **service.handle(req)}
                    except (VolumeError, ValueError, OSError) as e:
                        resp = {"ok": False, "error": str(e)}
                    except Exception as e:  # a bug answers, it does not take the service down
                        log.exception("request %r failed", line[:200])
                        resp = {"ok": False, "error": f"{type(e).__name__}: {e}"}
                    try:
                        self.wfile.write((json.dumps(resp) + "\n").encode())
                        self.wfile.flush()
                    except OSError:
                        return

        class Server(socketserver.ThreadingUnixStreamServer):
            daemon_threads = True

        try:
            self.socket_path.unlink()
        except FileNotFoundError:
            pass
        self._server = Server(str(self.socket_path), Handler)
        self._serve_thread = threading.current_thread()
        if on_ready is not None:
            on_ready()
        try:
            self._server.serve_forever(poll_interval=0.2)
        finally:
            self._server.server_close()

    def stop(self) -> None:
        """Unmount everything and end serve(). Safe to call from any thread,
        more than once; returns when the mounts are gone."""
        with self._stop_lock:
            if not self._stopped:
                self._unmount_all()
                self._stopped = True
        if self._server is not None and threading.current_thread() is not self._serve_thread:
            self._server.shutdown()

    def _unmount_all(self) -> None:
        with self.registry:
            states = list(self.volumes.values())
            dead = list(self.dead_mounts.values())
            self.dead_mounts.clear()
        procs = dead + [s.attached for s in states if s.attached is not None]
        for s in states:
            s.attached = None
        for fs in procs:
            fs.stop()
        for fs in self.retired:
            if fs.proc.poll() is None:
                fs.stop(grace=0.5)
        try:
            self.socket_path.unlink()
        except FileNotFoundError:
            pass


def _spec(cls, value):
    if not isinstance(value, dict):
        raise VolumeError(f"a {cls.__name__} is a JSON object, got {value!r}")
    try:
        return cls.from_json(value)
    except (TypeError, ValueError) as e:
        raise VolumeError(str(e)) from None


# --------------------------------------------------------------------------
# The client
# --------------------------------------------------------------------------

class LocalVolumes(VolumeProvider):
    """A client of the volume service at ROOT (or at the socket given). Each
    call is one request on a fresh connection: safe from any thread or
    process. Raises VolumeError with the service's message."""

    def __init__(self, root: str | Path | None = None, *, socket_path: str | Path | None = None,
                 timeout: float = 60.0):
        if socket_path is None:
            if root is None:
                raise ValueError("LocalVolumes needs the service's root or its socket path")
            socket_path = socket_path_for(root)
        self.socket_path = str(socket_path)
        self.timeout = timeout

    def request(self, op: str, **params) -> dict:
        try:
            with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
                s.settimeout(self.timeout)
                s.connect(self.socket_path)
                s.sendall((json.dumps({"op": op, **params}) + "\n").encode())
                buf = b""
                while not buf.endswith(b"\n"):
                    chunk = s.recv(65536)
                    if not chunk:
                        break
                    buf += chunk
        except OSError as e:
            raise VolumeError(f"volume service at {self.socket_path} unreachable: {e}") from None
        if not buf:
            raise VolumeError(f"volume service at {self.socket_path} closed the connection")
        resp = json.loads(buf)
        if not resp.pop("ok", False):
            raise VolumeError(resp.get("error", "unknown error"))
        return resp

    # ---- the provider interface ------------------------------------------------------
    def attach(self, volume_id: str, node: str) -> Attachment:
        r = self.request("attach", volume=volume_id, node=node)
        return Attachment(r["volume"], r["node"], r["path"])

    def detach(self, volume_id: str, node: str) -> None:
        self.request("detach", volume=volume_id, node=node)

    def attachment(self, volume_id: str) -> Attachment | None:
        r = self.request("attachment", volume=volume_id)
        return None if r["node"] is None else Attachment(r["volume"], r["node"], r["path"])

    # ---- local extras ---------------------------------------------------------------
    def create(self, volume_id: str, *, lazy: bool = True) -> Path:
        return Path(self.request("create", volume=volume_id, lazy=lazy)["backing"])

    def mount_path(self, volume_id: str, node: str) -> Path:
        return Path(self.request("mount_path", volume=volume_id, node=node)["path"])

    def unmount(self, volume_id: str, node: str) -> None:
        self.request("unmount", volume=volume_id, node=node)

    def list(self) -> dict:
        return self.request("list")["volumes"]

    def crash(self, volume_id: str) -> dict:
        return self.request("crash", volume=volume_id)

    def sync(self, volume_id: str) -> None:
        self.request("sync", volume=volume_id)

    def set_lazy(self, volume_id: str, on: bool) -> None:
        self.request("lazy", volume=volume_id, on=on)

    def set_slow(self, volume_id: str, spec: DelaySpec | dict | None) -> None:
        self.request("slow", volume=volume_id, spec=_spec_json(spec))

    def set_errors(self, volume_id: str, spec: ErrorSpec | dict | None) -> None:
        self.request("errors", volume=volume_id, spec=_spec_json(spec))

    def mark_bad_sector(self, volume_id: str, behind: int = 2) -> dict:
        return self.request("bad_sector", volume=volume_id, behind=behind)

    def heal_bad_sectors(self, volume_id: str) -> None:
        self.request("heal_sectors", volume=volume_id)

    def status(self, volume_id: str) -> dict:
        return self.request("status", volume=volume_id)

    def shutdown(self) -> None:
        self.request("shutdown")

    def control(self, volume_id: str, node: str) -> VolumeControl:
        return VolumeControl(self, volume_id, node)

    # the fault hooks VolumeControl calls
    supported_faults = ("detach", "lose-unsynced", "disk-slow", "disk-error", "bad-sector")


def _spec_json(spec):
    if spec is None or isinstance(spec, dict):
        return spec
    return spec.to_json()


# --------------------------------------------------------------------------
# Starting the service from Python
# --------------------------------------------------------------------------

class ServiceHandle:
    """A volume service this process started; `stop()` unmounts everything."""

    def __init__(self, root: Path, proc: subprocess.Popen, socket_path: str):
        self.root, self.proc, self.socket_path = root, proc, socket_path
        self.client = LocalVolumes(socket_path=socket_path)

    def stop(self, timeout: float = 30.0) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        if self.proc.stdin is not None:
            try:
                self.proc.stdin.close()
            except OSError:
                pass
        force_cleanup(self.root)

    def __enter__(self) -> "ServiceHandle":
        return self

    def __exit__(self, *exc) -> None:
        self.stop()


def start_service(root: str | Path, *, log_path: str | Path | None = None,
                  timeout: float = 30.0) -> ServiceHandle:
    """Start `python -m reference.volumes.local serve --root ROOT` and wait
    until it listens. It stops when `stop()` is called or this process dies
    (it watches its stdin)."""
    root = Path(root).resolve()
    root.mkdir(parents=True, exist_ok=True)
    log_path = Path(log_path) if log_path else root / "logs" / "service.log"
    log_path.parent.mkdir(parents=True, exist_ok=True)
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(p for p in (_repo_root(), os.environ.get("PYTHONPATH")) if p)}
    with open(log_path, "ab") as err:
        proc = subprocess.Popen([sys.executable, "-m", "reference.volumes.local", "serve", "--root", str(root),
                                 "--exit-with-stdin"], stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=err,
                                env=env, start_new_session=True)
    box: list = []
    reader = threading.Thread(target=lambda: box.append(proc.stdout.readline()), daemon=True)
    reader.start()
    reader.join(timeout)
    line = box[0] if box else b""
    try:
        ready = json.loads(line) if line else {}
    except ValueError:
        ready = {}
    if not ready.get("ready"):
        proc.kill()
        proc.wait()
        raise VolumeError(f"volume service at {root} did not start: {ready.get('error') or 'no answer'}; "
                          f"see {log_path}")
    return ServiceHandle(root, proc, ready["socket"])


def force_cleanup(root: str | Path) -> list[str]:
    """Lazily unmount every FUSE mount under ROOT (whatever left them);
    returns the mount points it unmounted. For teardown after a crash."""
    root = str(Path(root).resolve())
    gone = []
    try:
        with open("/proc/self/mounts") as f:
            points = [line.split()[1].replace("\\040", " ") for line in f]
    except OSError:
        return gone
    for point in sorted(points, key=len, reverse=True):
        if point == root or point.startswith(root + "/"):
            if lazy_unmount(point):
                gone.append(point)
    return gone


# --------------------------------------------------------------------------
# CLI
# --------------------------------------------------------------------------

def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="python -m reference.volumes.local",
                                description="The local volume service (FUSE volumes) and a client for it.")
    sub = p.add_subparsers(dest="cmd", required=True)
    s = sub.add_parser("serve", help="run the service in the foreground")
    s.add_argument("--root", required=True)
    s.add_argument("--exit-with-stdin", action="store_true", help="stop when stdin closes (the starter died)")
    c = sub.add_parser("call", help="send one request: call ROOT OP [key=value ...] (values are JSON)")
    c.add_argument("root")
    c.add_argument("op")
    c.add_argument("params", nargs="*")
    k = sub.add_parser("cleanup", help="lazily unmount every mount under ROOT")
    k.add_argument("root")
    args = p.parse_args(argv)

    if args.cmd == "cleanup":
        for point in force_cleanup(args.root):
            print(f"unmounted {point}")
        return 0
    if args.cmd == "call":
        params = {}
        for kv in args.params:
            key, _, value = kv.partition("=")
            try:
                params[key] = json.loads(value)
            except ValueError:
                params[key] = value
        try:
            print(json.dumps(LocalVolumes(args.root).request(args.op, **params)))
        except VolumeError as e:
            print(f"error: {e}", file=sys.stderr)
            return 1
        return 0

    logging.basicConfig(stream=sys.stderr, level=logging.INFO,
                        format="%(asctime)s.%(msecs)03d %(levelname)s %(name)s: %(message)s", datefmt="%H:%M:%S")
    try:
        service = VolumeService(args.root)
    except VolumeError as e:
        print(json.dumps({"ready": False, "error": str(e)}), flush=True)
        return 2

    def stop(*_):
        threading.Thread(target=service.stop, daemon=True).start()

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    if args.exit_with_stdin:
        def watch():
            try:  # raw reads: a buffered stdin would hold its lock at interpreter exit
                while os.read(0, 4096):
                    pass
            except OSError:
                pass
            stop()
        threading.Thread(target=watch, daemon=True).start()

    def ready():
        print(json.dumps({"ready": True, "socket": str(service.socket_path), "pid": os.getpid()}), flush=True)
        log.info("volume service on %s", service.socket_path)

    try:
        service.serve(on_ready=ready)
    finally:
        service.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
