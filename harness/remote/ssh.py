"""Nodes driven over real SSH (paramiko): remote machines from an inventory
and the harness's own network namespaces alike.

What this module guarantees:

- Host keys are checked against a known_hosts file. Accepting an unknown key
  is an explicit per-node option (`accept_unknown_host_keys`), off by
  default, and every acceptance is written to the node's log with the key's
  fingerprint. A key that differs from the recorded one is always refused.
- Every command has a timeout. On expiry the remote process group is
  SIGKILLed and `RemoteCommandTimeout` (a `subprocess.TimeoutExpired`) says
  which host, which command and after how long.
- Every command, its stdout, stderr and exit status are appended to the
  node's log (`<log_dir>/ssh.log`). No secret is: passphrases and passwords
  come from environment variables and are redacted, as are the lines of the
  private key file, any private-key block a command prints, and the values
  passed as `secret_env` (those travel on the channel's stdin, never on a
  command line).
- Background processes run under `nohup setsid` in their own session and
  process group, with a pid file, so that kill (SIGKILL to the group), pause
  (SIGSTOP), resume (SIGCONT) and "is it alive" work from any later
  connection, even from another harness process.

The remote side needs a POSIX sh, coreutils, util-linux `setsid` and procps
`ps`: any ordinary Linux host.
"""
from __future__ import annotations

import base64
import hashlib
import logging
import os
import re
import select
import shlex
import signal as signals
import socket
import subprocess
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime, timezone
from pathlib import Path, PurePosixPath

import paramiko

from harness.remote.inventory import Inventory, NodeSpec

log = logging.getLogger(__name__)

LOG_OUTPUT_LIMIT = 64 * 1024  # bytes of one stream of one command kept in the node log
_PID_MARK = b"HWPID:"
_NOT_STARTED = 125  # exit status of the wrappers when they could not even start the command


# Any private key a command prints (PEM or OpenSSH), to its end or the end of the text.
_PRIVATE_KEY_BLOCK = re.compile(r"-----BEGIN [A-Z0-9 ]*PRIVATE KEY-----.*?(?:-----END [A-Z0-9 ]*PRIVATE KEY-----|\Z)",
                                re.S)


# --- errors -----------------------------------------------------------------------------

class RemoteError(RuntimeError):
    """Something failed on or on the way to a node; the message names the
    node, the host and, when there is one, the command."""

    def __init__(self, node: NodeSpec, what: str, command: str | None = None):
        self.node = node
        self.what = what
        self.command = command
        where = f"node {node.name} ({node.user}@{node.address})"
        self.message = f"{where}: {what}" + (f" [command: {command}]" if command else "")
        RuntimeError.__init__(self, self.message)

    def __str__(self) -> str:
        return self.message


class HostUnreachable(RemoteError):
    pass


class AuthenticationFailed(RemoteError):
    pass


class HostKeyMismatch(RemoteError):
    pass


class UnknownHostKey(RemoteError):
    pass


class RemoteCommandTimeout(RemoteError, subprocess.TimeoutExpired):
    """The command ran past its timeout; its process group was killed. Also a
    `subprocess.TimeoutExpired`, so code written for `LocalRunner` catches it."""

    def __init__(self, node: NodeSpec, command: str, timeout: float, stdout: str, stderr: str):
        RemoteError.__init__(self, node, f"timed out after {timeout:g} s (its process group was killed)", command)
        self.cmd = command
        self.timeout = timeout
        self.output = self.stdout = stdout
        self.stderr = stderr


class RemoteCommandFailed(RemoteError):
    def __init__(self, node: NodeSpec, command: str, result: subprocess.CompletedProcess):
        err = (result.stderr or "").strip().splitlines()[-5:]
        RemoteError.__init__(self, node, f"exited {result.returncode}" + (": " + " / ".join(err) if err else ""),
                             command)
        self.result = result


# --- the node's log ---------------------------------------------------------------------

class NodeLog:
    """Append-only, flushed per entry, thread-safe; every text written passes
    through the redaction of the secrets registered so far."""

    def __init__(self, path: Path):
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._lock = threading.Lock()
        self._secrets: set[str] = set()

    def add_secret(self, value: str | None) -> None:
        # Short strings would redact innocent text and protect nothing.
        if value and len(value) >= 4:
            with self._lock:
                self._secrets.add(value)

    def redact(self, text: str) -> str:
        text = _PRIVATE_KEY_BLOCK.sub("[PRIVATE KEY REDACTED]", text)
        for secret in sorted(self._secrets, key=len, reverse=True):
            text = text.replace(secret, "***")
        return text

    def write(self, text: str) -> None:
        stamp = datetime.now(timezone.utc).isoformat(timespec="milliseconds")
        lines = text.rstrip("\n").split("\n")
        body = "".join(f"{stamp} {line}\n" if i == 0 else f"    {line}\n" for i, line in enumerate(lines))
        with self._lock:
            body = self.redact(body)
            with open(self.path, "a", encoding="utf-8") as f:
                f.write(body)

    def output(self, label: str, data: bytes) -> str:
        """Decoded stream for the caller and an indented copy for the log."""
        text = data.decode("utf-8", errors="replace")
        if data:
            shown = data[:LOG_OUTPUT_LIMIT].decode("utf-8", errors="replace")
            more = f"\n[... {len(data) - LOG_OUTPUT_LIMIT} bytes more not logged]" if len(data) > LOG_OUTPUT_LIMIT else ""
            self.write(f"  {label}:\n" + "\n".join("  | " + line for line in (shown + more).rstrip("\n").split("\n")))
        return text


# --- host keys ----------------------------------------------------------------------------

def fingerprint(key: paramiko.PKey) -> str:
    digest = hashlib.sha256(key.asbytes()).digest()
    return f"{key.get_name()} SHA256:{base64.b64encode(digest).decode().rstrip('=')}"


class _HostKeyPolicy(paramiko.MissingHostKeyPolicy):
    """Called by paramiko only for a host that is not in known_hosts (a
    *different* key raises BadHostKeyException before this)."""

    def __init__(self, node: "SshNode"):
        self.node = node

    def missing_host_key(self, client, hostname, key):
        spec = self.node.spec
        if not spec.accept_unknown_host_keys:
            raise UnknownHostKey(spec, f"host key {fingerprint(key)} is not in known_hosts {spec.known_hosts}; "
                                       f"add it (ssh-keyscan -p {spec.port} {spec.host} >> {spec.known_hosts}, "
                                       f"after checking the fingerprint) or set accept_unknown_host_keys = true")
        warning = (f"WARNING: accepting UNKNOWN host key {fingerprint(key)} for {hostname} without checking it "
                   f"(accept_unknown_host_keys is on); it is trusted for the rest of this run only")
        self.node.log.write(warning)
        log.warning("node %s: %s", spec.name, warning)
        client.get_host_keys().add(hostname, key.get_name(), key)


# --- a node -------------------------------------------------------------------------------

class SshNode:
    """One node reached over SSH. Thread-safe: commands may run concurrently
    (one SSH connection, one channel per command). Also a
    `nemeses.commands.CommandRunner`: `run(argv, timeout)`."""

    def __init__(self, spec: NodeSpec, log_dir: Path):
        self.spec = spec
        self.name = spec.name
        self.log = NodeLog(Path(log_dir) / "ssh.log")
        self._client: paramiko.SSHClient | None = None
        self._sftp: paramiko.SFTPClient | None = None
        self._lock = threading.RLock()
        self._register_key_secrets()

    def __repr__(self) -> str:
        return f"SshNode({self.spec.name}: {self.spec.user}@{self.spec.address})"

    @property
    def workdir(self) -> PurePosixPath:
        return PurePosixPath(self.spec.workdir)

    @property
    def procdir(self) -> PurePosixPath:
        """Where background processes keep NAME.pid, NAME.out and NAME.exit."""
        return self.workdir / "procs"

    def path(self, remote) -> str:
        """A remote path; relative ones are relative to the node's workdir."""
        p = PurePosixPath(remote)
        return str(p if p.is_absolute() else self.workdir / p)

    # --- connection -----------------------------------------------------------------
    def _register_key_secrets(self) -> None:
        """Every line of the private key file is a secret the log must never
        show, even if a command prints the file."""
        if self.spec.key_file is not None:
            try:
                for line in Path(self.spec.key_file).read_text(errors="replace").splitlines():
                    if len(line) >= 16 and not line.startswith("-----"):
                        self.log.add_secret(line.strip())
            except OSError:
                pass  # connect() reports an unreadable key

    def connect(self) -> "SshNode":
        """Open (or reopen) the connection; idempotent."""
        with self._lock:
            if self._client is not None and self._transport_active():
                return self
            spec = self.spec
            client = self._client or paramiko.SSHClient()
            if self._client is None:
                known = Path(spec.known_hosts).expanduser()
                if known.is_file():
                    client.load_host_keys(str(known))
                elif not spec.accept_unknown_host_keys:
                    raise UnknownHostKey(spec, f"known_hosts file {known} does not exist, so the host key cannot be "
                                               f"checked; create it or set accept_unknown_host_keys = true")
                client.set_missing_host_key_policy(_HostKeyPolicy(self))
            passphrase, password = spec.secret("passphrase"), spec.secret("password")
            self.log.add_secret(passphrase)
            self.log.add_secret(password)
            key_text = f"key {spec.key_file}" if spec.key_file else "the SSH agent / default keys"
            self.log.write(f"connect {spec.user}@{spec.address} with {key_text}")
            pkey = self._load_key(passphrase) if spec.key_file else None
            try:
                sock = socket.create_connection(
                    (spec.host, spec.port), timeout=spec.connect_timeout,
                    source_address=(spec.source_address, 0) if spec.source_address else None)
                client.connect(spec.host, port=spec.port, username=spec.user, pkey=pkey, sock=sock,
                               password=password,
                               allow_agent=spec.key_file is None, look_for_keys=spec.key_file is None,
                               timeout=spec.connect_timeout, banner_timeout=spec.connect_timeout,
                               auth_timeout=spec.connect_timeout, channel_timeout=spec.connect_timeout)
            except RemoteError as e:
                self.log.write(f"connect failed: {e.what}")
                client.close()
                raise
            except Exception as e:  # noqa: BLE001 - every failure becomes one clear RemoteError
                client.close()
                err = self._connect_error(e)
                self.log.write(f"connect failed: {err.what}")
                raise err from None
            transport = client.get_transport()
            transport.set_keepalive(5)
            # Commands are small request/response exchanges: without this,
            # Nagle and delayed ACKs add ~40 ms to opening each channel.
            transport.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            self._client = client
            self._sftp = None
            self.log.write(f"connected; host key {fingerprint(transport.get_remote_server_key())}")
            return self

    def _load_key(self, passphrase: str | None) -> paramiko.PKey:
        spec = self.spec
        try:
            return paramiko.PKey.from_path(spec.key_file, passphrase.encode() if passphrase else None)
        except paramiko.PasswordRequiredException:
            what = (f"key file {spec.key_file} is encrypted; name the environment variable holding its "
                    f"passphrase in key_passphrase_env")
        except Exception as e:  # noqa: BLE001 - paramiko's messages name the problem, never the key
            what = f"key file {spec.key_file} cannot be used as an SSH private key: {type(e).__name__}: {e}"
        self.log.write(f"connect failed: {what}")
        raise AuthenticationFailed(spec, what)

    def _transport_active(self) -> bool:
        t = self._client.get_transport() if self._client else None
        return t is not None and t.is_active()

    def _connect_error(self, e: Exception) -> RemoteError:
        spec = self.spec
        if isinstance(e, paramiko.BadHostKeyException):
            return HostKeyMismatch(spec, f"HOST KEY MISMATCH: the host offered {fingerprint(e.key)} but known_hosts "
                                         f"{spec.known_hosts} has {fingerprint(e.expected_key)}; refusing to connect "
                                         f"(a reinstalled host or a man in the middle: check, then fix known_hosts)")
        if isinstance(e, paramiko.AuthenticationException):
            return AuthenticationFailed(spec, f"authentication as {spec.user} failed with "
                                              f"{'key ' + str(spec.key_file) if spec.key_file else 'agent/default keys'}: {e}")
        if isinstance(e, (paramiko.ssh_exception.NoValidConnectionsError, socket.timeout, TimeoutError,
                          ConnectionError, OSError)):
            return HostUnreachable(spec, f"cannot connect to {spec.host} port {spec.port} "
                                         f"within {spec.connect_timeout:g} s: {e}")
        if isinstance(e, paramiko.SSHException):
            return HostUnreachable(spec, f"SSH handshake with {spec.host} port {spec.port} failed: {e}")
        return RemoteError(spec, f"cannot connect: {type(e).__name__}: {e}")

    def close(self) -> None:
        """Close the connection. The client object, and with it the host keys
        accepted during this run, stays for a later reconnect."""
        with self._lock:
            if self._sftp is not None:
                self._sftp.close()
                self._sftp = None
            if self._client is not None and self._client.get_transport() is not None:
                self._client.close()
                self.log.write("disconnected")

    def __enter__(self):
        return self.connect()

    def __exit__(self, *exc):
        self.close()

    # --- commands ---------------------------------------------------------------------
    def run(self, argv, timeout: float | None = None, *, check: bool = False, env: dict | None = None,
            secret_env: dict | None = None, cwd: str | None = None,
            input: bytes | str | None = None) -> subprocess.CompletedProcess:
        """Run argv (a list, no shell) or a string (an sh script) on the node,
        in `cwd` (relative to the workdir; default: the workdir). `env` is logged; `secret_env` values travel on stdin and are redacted
        (not combinable with `input`). Returns a CompletedProcess with str
        stdout/stderr; raises RemoteCommandTimeout past `timeout` (default: the
        node's command_timeout) and, with check=True, RemoteCommandFailed on a
        non-zero exit."""
        if secret_env and input is not None:
            raise ValueError("run(): secret_env travels on stdin; it cannot be combined with input")
        setup, command, shown = self._prepare(argv, env, secret_env, cwd)
        script = "\n".join(setup + [command if isinstance(argv, str) else "exec " + command])
        stdin = _secret_stdin(secret_env) if secret_env else input
        result = self._exec(script, shown, timeout, stdin)
        result.args = list(argv) if not isinstance(argv, str) else argv
        if check and result.returncode != 0:
            raise RemoteCommandFailed(self.spec, shown, result)
        return result

    def _prepare(self, argv, env, secret_env, cwd) -> tuple[list[str], str, str]:
        """The sh lines that set the command up (secrets, directory, env for a
        script), the command itself, and the text the log shows."""
        setup = []
        if isinstance(argv, str):
            command = shown = argv
            if env:
                setup.append("export " + " ".join(f"{k}={shlex.quote(str(v))}" for k, v in env.items()))
                shown = " ".join(f"{k}={v}" for k, v in env.items()) + " " + shown
        else:
            argv = [str(a) for a in argv]
            if not argv:
                raise ValueError("empty argv")
            prefix = ["env"] + [f"{k}={v}" for k, v in env.items()] if env else []
            command = shown = shlex.join(prefix + argv)
        if secret_env:
            for k, v in secret_env.items():
                if not k.isidentifier():
                    raise ValueError(f"secret_env: {k!r} is not a variable name")
                self.log.add_secret(str(v))
            setup.insert(0, 'eval "$(cat)"')
            shown = " ".join(f"{k}=***" for k in secret_env) + " " + shown
        if cwd is not None:
            setup.append(f"cd {shlex.quote(self.path(cwd))} || exit {_NOT_STARTED}")
            shown = f"(in {self.path(cwd)}) {shown}"
        else:
            setup.append(f"cd {shlex.quote(str(self.workdir))} || exit {_NOT_STARTED}")
        return setup, command, shown

    def _exec(self, script: str, shown: str, timeout: float | None, stdin) -> subprocess.CompletedProcess:
        """Run an sh script as the group leader of its own session, so a
        timeout can kill everything it started."""
        timeout = self.spec.command_timeout if timeout is None else float(timeout)
        wrapped = f"printf '{_PID_MARK.decode()}%s\\n' \"$$\"\n{script}"
        remote = "exec /bin/sh -c " + shlex.quote(wrapped)
        self.log.write(f"$ {shown}   (timeout {timeout:g} s)")
        try:
            self.connect()
        except RemoteError as e:
            raise type(e)(self.spec, e.what, shown) from None
        started = time.monotonic()
        try:
            chan = self._client.get_transport().open_session(timeout=self.spec.connect_timeout)
        except Exception as e:  # noqa: BLE001
            self.close()
            err = HostUnreachable(self.spec, f"cannot open a channel: {type(e).__name__}: {e}", shown)
            self.log.write(f"  failed: {err.what}")
            raise err from None
        out, err, pid = bytearray(), bytearray(), None
        try:
            chan.exec_command(remote)
            if stdin:
                chan.sendall(stdin.encode() if isinstance(stdin, str) else stdin)
            chan.shutdown_write()
            deadline = started + timeout
            while True:
                while chan.recv_ready():
                    out += chan.recv(65536)
                while chan.recv_stderr_ready():
                    err += chan.recv_stderr(65536)
                if pid is None:
                    pid, out = _take_pid(out)
                if chan.exit_status_ready() and chan.eof_received and not chan.recv_ready() \
                        and not chan.recv_stderr_ready():
                    break
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    self._kill_group_after_timeout(pid)
                    o, e = self.log.output("stdout", bytes(out)), self.log.output("stderr", bytes(err))
                    self.log.write(f"  TIMEOUT after {timeout:g} s; process group {pid} killed")
                    raise RemoteCommandTimeout(self.spec, shown, timeout, self.log.redact(o), self.log.redact(e))
                select.select([chan], [], [], min(remaining, 0.25))
            status = chan.recv_exit_status()
        except (RemoteError, ValueError):
            raise
        except Exception as e:  # noqa: BLE001 - the connection broke mid-command
            self.close()
            failure = HostUnreachable(self.spec, f"connection lost while the command ran: {type(e).__name__}: {e}",
                                      shown)
            self.log.write(f"  failed: {failure.what}")
            raise failure from None
        finally:
            chan.close()
        stdout, stderr = self.log.output("stdout", bytes(out)), self.log.output("stderr", bytes(err))
        self.log.write(f"  exit {status} ({time.monotonic() - started:.3f} s)")
        return subprocess.CompletedProcess(shown, status, stdout, stderr)

    def _kill_group_after_timeout(self, pid: int | None) -> None:
        if pid is None:
            return
        try:
            chan = self._client.get_transport().open_session(timeout=self.spec.connect_timeout)
            chan.settimeout(self.spec.connect_timeout)
            chan.exec_command(f"kill -KILL -- -{pid}")
            chan.recv_exit_status()
            chan.close()
        except Exception as e:  # noqa: BLE001 - best effort; the timeout is reported anyway
            self.log.write(f"  could not kill process group {pid}: {e}")

    # --- background processes -----------------------------------------------------------
    def start_background(self, name: str, argv, *, env: dict | None = None, secret_env: dict | None = None,
                         cwd: str | None = None, timeout: float | None = None) -> int:
        """Start argv detached (nohup setsid) in `cwd` (default: the workdir),
        stdout and stderr appended to procs/NAME.out; returns its pid, which is also its process group and
        session id. Refused while a process of the same name is alive."""
        base = self._base(name)
        setup, command, shown = self._prepare(argv, env, secret_env, cwd)
        # The wrapper sh is the group leader; it records the pid, waits for the
        # command and records its exit status (absent when it was killed).
        wrapper = ('echo $$ > "$0.pid.tmp" && mv "$0.pid.tmp" "$0.pid" || exit 125; '
                   '"$@"; echo $? > "$0.exit.tmp"; mv "$0.exit.tmp" "$0.exit"')
        lines = [
            f"mkdir -p {shlex.quote(str(self.procdir))} || exit {_NOT_STARTED}",
            f"if [ -s {base}.pid ] && [ -n \"$({_group_members(base)})\" ]; then "
            f"echo 'a process named {name} is already running' >&2; exit {_NOT_STARTED}; fi",
            f"rm -f {base}.pid {base}.exit",
            *setup,
            f"echo \"=== $(date -u +%FT%TZ) start: \"{shlex.quote(shown.replace(chr(10), ' '))} >> {base}.out",
            f"nohup setsid sh -c {shlex.quote(wrapper)} {base} "
            + (command if not isinstance(argv, str) else f"sh -c {shlex.quote(command)}")
            + f" >> {base}.out 2>&1 < /dev/null &",
            f"n=0; while [ ! -s {base}.pid ]; do n=$((n+1)); if [ $n -gt 1000 ]; then "
            f"echo 'no pid file after 10 s' >&2; exit {_NOT_STARTED}; fi; sleep 0.01; done",
            f"cat {base}.pid",
        ]
        result = self._exec("\n".join(lines), f"[background {name}] {shown}", timeout,
                            _secret_stdin(secret_env) if secret_env else None)
        if result.returncode != 0:
            raise RemoteCommandFailed(self.spec, f"[background {name}] {shown}", result)
        return int(result.stdout.strip().splitlines()[-1])

    def _base(self, name: str) -> str:
        """procdir/NAME, quoted for sh: the stem of NAME.pid, .out and .exit."""
        _check_name(name)
        return shlex.quote(str(self.procdir / name))

    def _read_int(self, name: str, suffix: str) -> int | None:
        r = self._exec(f"cat {self._base(name)}.{suffix} 2>/dev/null || true", f"[{suffix} of {name}]", None, None)
        text = r.stdout.strip()
        return int(text) if text.lstrip("-").isdigit() else None

    def pid(self, name: str) -> int | None:
        """The pid (= process group = session) of background process `name`,
        from its pid file; None if it was never started."""
        return self._read_int(name, "pid")

    def state(self, name: str) -> str:
        """'running', 'stopped' (every process of the group is SIGSTOPped),
        or 'gone' (no live process left, or never started)."""
        r = self._exec(_state_script(self._base(name)), f"[state {name}]", None, None)
        state = r.stdout.strip()
        if state not in ("running", "stopped", "gone"):
            raise RemoteError(self.spec, f"cannot tell the state of {name}: {r.stdout!r} {r.stderr!r}")
        return state

    def alive(self, name: str) -> bool:
        return self.state(name) != "gone"

    def exit_status(self, name: str) -> int | None:
        """The exit status of a background process that ended on its own;
        None while it runs or when it was killed by a signal to its group."""
        return self._read_int(name, "exit")

    def signal(self, name: str, sig: int | str, *, wait: float | None = 10.0) -> bool:
        """Send `sig` to the process group of background process `name`.
        With `wait`, return only once the effect is visible: SIGKILL -> gone,
        SIGSTOP -> stopped, SIGCONT -> running (RemoteError if not within
        `wait` seconds). False when no process of that name was alive."""
        base = self._base(name)
        full = signals.Signals(sig).name if isinstance(sig, int) else "SIG" + str(sig).upper().removeprefix("SIG")
        if full not in signals.Signals.__members__:
            raise ValueError(f"unknown signal {sig!r}")
        signame = full[3:]
        expect = {"KILL": "gone", "STOP": "stopped", "CONT": "running"}.get(signame) if wait else None
        lines = [f"p=$(cat {base}.pid 2>/dev/null) || exit 3",
                 f'[ -n "$({_group_members(base)})" ] || exit 3',
                 f'kill -s {signame} -- "-$p" || exit 4']
        if expect:
            tries = max(1, int(wait / 0.01))
            lines.append(f"n=0; while [ \"$({_state_script(base)})\" != {expect} ]; do n=$((n+1)); "
                         f"if [ $n -gt {tries} ]; then echo \"still $({_state_script(base)})\" >&2; exit 5; fi; "
                         f"sleep 0.01; done")
        shown = f"[signal {name}] kill -s {signame} -- -PGID" + (f", wait until {expect}" if expect else "")
        r = self._exec("\n".join(lines), shown, (wait or 0) + self.spec.command_timeout, None)
        if r.returncode == 3:
            return False
        if r.returncode != 0:
            raise RemoteCommandFailed(self.spec, shown, r)
        return True

    def kill(self, name: str, wait: float | None = 10.0) -> bool:
        return self.signal(name, signals.SIGKILL, wait=wait)

    def pause(self, name: str, wait: float | None = 10.0) -> bool:
        return self.signal(name, signals.SIGSTOP, wait=wait)

    def resume(self, name: str, wait: float | None = 10.0) -> bool:
        return self.signal(name, signals.SIGCONT, wait=wait)

    def background_names(self) -> list[str]:
        """Names of the background processes with a pid file (alive or not)."""
        r = self._exec(f"cd {shlex.quote(str(self.procdir))} 2>/dev/null && ls -1 | sed -n 's/\\.pid$//p' || true",
                       "[list background processes]", None, None)
        return [line for line in r.stdout.split() if line]

    def kill_all_background(self) -> list[str]:
        """SIGKILL every background process this harness started on the node
        (the pid files say which, even those of a crashed earlier run)."""
        return [n for n in self.background_names() if self.kill(n)]

    # --- files (SFTP) ------------------------------------------------------------------
    def _sftp_client(self) -> paramiko.SFTPClient:
        with self._lock:
            self.connect()
            if self._sftp is None:
                self._sftp = self._client.open_sftp()
                self._sftp.get_channel().settimeout(self.spec.command_timeout)
            return self._sftp

    def _sftp_call(self, what: str, fn):
        self.log.write(f"sftp {what}")
        try:
            with self._lock:
                return fn(self._sftp_client())
        except RemoteError:
            raise
        except Exception as e:  # noqa: BLE001
            self.log.write(f"  failed: {type(e).__name__}: {e}")
            raise RemoteError(self.spec, f"sftp {what} failed: {type(e).__name__}: {e}") from None

    def put(self, local, remote, mode: int | None = None) -> str:
        """Upload a local file (parents created); returns the remote path."""
        target = self.path(remote)

        def do(sftp):
            self._makedirs(sftp, str(PurePosixPath(target).parent))
            sftp.put(str(local), target)
            if mode is not None:
                sftp.chmod(target, mode)
        self._sftp_call(f"put {local} -> {target}", do)
        return target

    def get(self, remote, local) -> Path:
        """Download a remote file; returns the local path."""
        source, local = self.path(remote), Path(local)
        local.parent.mkdir(parents=True, exist_ok=True)
        self._sftp_call(f"get {source} -> {local}", lambda sftp: sftp.get(source, str(local)))
        return local

    def get_tree(self, remote, local_dir) -> list[Path]:
        """Copy a remote file, or a directory with everything under it, into
        local_dir (keeping its name); returns the local files written. A
        missing path is a RemoteError saying so."""
        import stat as stats
        source, local_dir = self.path(remote), Path(local_dir)
        copied: list[Path] = []

        def walk(sftp, src: str, dest: Path) -> None:
            if stats.S_ISDIR(sftp.stat(src).st_mode):
                dest.mkdir(parents=True, exist_ok=True)
                for entry in sftp.listdir(src):
                    walk(sftp, str(PurePosixPath(src) / entry), dest / entry)
            else:
                dest.parent.mkdir(parents=True, exist_ok=True)
                sftp.get(src, str(dest))
                copied.append(dest)
        self._sftp_call(f"get {source} -> {local_dir}/",
                        lambda sftp: walk(sftp, source, local_dir / PurePosixPath(source).name))
        return copied

    def write_bytes(self, remote, data: bytes, mode: int = 0o644) -> str:
        """Write a remote file atomically (a temporary file, then rename), so a
        reader never sees half of it. The content is not logged."""
        target = self.path(remote)
        tmp = f"{target}.tmp-{os.getpid()}-{threading.get_ident()}"

        def do(sftp):
            self._makedirs(sftp, str(PurePosixPath(target).parent))
            with sftp.open(tmp, "wb") as f:
                f.write(data)
            sftp.chmod(tmp, mode)
            sftp.posix_rename(tmp, target)
        self._sftp_call(f"write {target} ({len(data)} bytes, mode {mode:o})", do)
        return target

    def write_text(self, remote, text: str, mode: int = 0o644) -> str:
        return self.write_bytes(remote, text.encode(), mode)

    def read_bytes(self, remote) -> bytes:
        source = self.path(remote)

        def do(sftp):
            with sftp.open(source, "rb") as f:
                return f.read()
        return self._sftp_call(f"read {source}", do)

    def read_text(self, remote) -> str:
        return self.read_bytes(remote).decode("utf-8", errors="replace")

    @staticmethod
    def _makedirs(sftp, path: str) -> None:
        parts = PurePosixPath(path).parts
        for i in range(1, len(parts) + 1):
            p = str(PurePosixPath(*parts[:i]))
            try:
                sftp.stat(p)
            except FileNotFoundError:
                sftp.mkdir(p)


def open_nodes(inventory: Inventory, log_root: Path, connect: bool = True) -> dict[str, SshNode]:
    """An SshNode per inventory node, logging to log_root/<name>/ssh.log;
    connected (and its workdir created) unless connect=False. On a failure
    the nodes already connected are closed and the error is raised."""
    nodes = {name: SshNode(spec, Path(log_root) / name) for name, spec in inventory.nodes.items()}
    if connect:
        def ready(node: SshNode) -> None:
            node.connect()
            node.run(["mkdir", "-p", str(node.workdir)], check=True, cwd="/")
        try:
            with ThreadPoolExecutor(max_workers=min(16, len(nodes))) as pool:
                for future in [pool.submit(ready, node) for node in nodes.values()]:
                    future.result()
        except BaseException:
            for node in nodes.values():
                node.close()
            raise
    return nodes


def local_address_for(spec: NodeSpec) -> str:
    """The address of this machine that the node reaches it at (its
    `source_address`, else the source address of the route towards the node:
    127.0.0.1 for a node on loopback), where a service of the harness the node
    must reach (S3, an S3 fault proxy) listens. No packet is sent."""
    if spec.source_address:
        return spec.source_address
    try:
        family = socket.getaddrinfo(spec.host, spec.port, type=socket.SOCK_DGRAM)[0]
        with socket.socket(family[0], socket.SOCK_DGRAM) as probe:
            probe.connect(family[4])
            return probe.getsockname()[0]
    except OSError as e:
        raise HostUnreachable(spec, f"no route from this machine to {spec.host}: {e}") from None


# --- helpers ------------------------------------------------------------------------------

def _check_name(name: str) -> None:
    if not name or not all(c.isalnum() or c in "-_." for c in name) or name.startswith("."):
        raise ValueError(f"background process name {name!r}: use letters, digits, - _ .")


def _secret_stdin(secret_env: dict) -> bytes:
    return "".join(f"export {k}={shlex.quote(str(v))}\n" for k, v in secret_env.items()).encode()


def _group_members(base: str) -> str:
    """sh: the states of the live (not zombie) processes of the group whose
    leader's pid is in BASE.pid."""
    return (f"p=$(cat {base}.pid 2>/dev/null) && ps -e -o pgid=,stat= | "
            f"awk -v g=\"$p\" '$1 == g && $2 !~ /^Z/ {{print $2}}'")


def _state_script(base: str) -> str:
    return (f"s=$({_group_members(base)}); "
            f"if [ -z \"$s\" ]; then echo gone; "
            f"elif [ -z \"$(echo \"$s\" | grep -v '^T')\" ]; then echo stopped; else echo running; fi")


def _take_pid(out: bytearray) -> tuple[int | None, bytearray]:
    """Find the wrapper's pid line; drop it and anything a login script
    printed before it from stdout."""
    i = out.find(_PID_MARK)
    if i < 0:
        return None, out
    j = out.find(b"\n", i)
    if j < 0:
        return None, out
    pid = out[i + len(_PID_MARK):j]
    return (int(pid) if pid.isdigit() else None), out[j + 1:]
