"""Any Kafka-compatible system, described by a TOML recipe (`--db external
--recipe FILE`): its bootstrap servers, and per node the shell commands that
start, kill, pause and resume it, how to tell it is up, where its logs are;
optionally the S3 endpoint it uses (then an S3 proxy goes in front of it)
and its data paths. A node may live on another machine (`ssh = {...}`): its
commands then run there over SSH (`harness/remote/ssh.py`, paramiko, host
keys checked against known_hosts), a foreground node is a background
process of that host, and its logs are fetched back at teardown. See
examples/*.toml and the recipe reference in `RECIPE_HELP` below.

The recipe is validated strictly before anything starts: an unknown key, a
value of the wrong type, an unknown {placeholder} or a malformed file is
refused naming the key and its line. A fault the recipe gives no way to
perform is refused with the reason (`unsupported`).
"""
from __future__ import annotations

import logging
import os
import re
import shutil
import signal
import string
import subprocess
import sys
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlsplit

from harness.db.base import Target, TargetUnavailable
from harness.db.local_process import LocalProcess, port_open, split_address, wait_up
from harness.durations import parse_duration
from harness.ports import free_port
from harness.remote.inventory import Inventory, InventoryError, NodeSpec, node_spec
from harness.remote.process import RemoteProcess
from harness.remote.ssh import RemoteCommandTimeout, RemoteError, SshNode, local_address_for, open_nodes

log = logging.getLogger(__name__)

RECIPE_HELP = """\
Top level:
  name            the system's name, for reports (default: the file's stem)
  bootstrap       bootstrap servers "h:p,h:p" (default: every node's address)
  start_timeout   how long a node may take to come up (default "60s")
  command_timeout how long a kill/pause/resume/stop command may take (default "30s")
  [s3]            optional: the S3 the system uses
    endpoint      "http://HOST:PORT", or "embedded" (Highwater starts SeaweedFS)
    bucket        (default "highwater"; an embedded S3 creates it)
    access_key, secret_key, region
[nodes.NAME]      one table per node:
  address         "HOST:PORT" of its Kafka listener; PORT may be "auto" (a free port)
  start           shell command that starts it
  foreground      true (default): `start` IS the node: Highwater keeps the process
                  and signals its process group (SIGKILL, SIGSTOP, SIGCONT, SIGTERM)
                  unless kill/pause/resume/stop commands are given;
                  false: `start` launches the node and returns; kill, pause,
                  resume and stop are then commands or not available
  already_running true: the node runs before the test (started by hand);
                  setup only checks it is up, teardown leaves it running
  kill, pause, resume, stop   shell commands (stop: teardown; default kill)
  up              {port = "HOST:PORT"} or {command = "..."} (exit 0 = up);
                  default: the address's port accepts connections
  logs            list of files copied into the store's nodes/NAME/ at teardown
  data            list of the node's data paths (recorded in the run's results)
  env             table of extra environment variables for its commands
  cwd             working directory of its commands
  ssh             a node on another machine: its commands (start, kill, pause,
                  resume, stop, up.command) run there over SSH, a foreground
                  node is a process of that host (signalled there), its logs
                  are fetched from there; {host, port (22), user ("root"),
                  key_file (else the agent / ~/.ssh/id_*), known_hosts
                  ("~/.ssh/known_hosts"; an unknown host key is refused),
                  accept_unknown_host_keys (false; trust a key unseen before,
                  for this run, logged with its fingerprint), key_passphrase_env /
                  password_env (the NAME of the environment variable holding the
                  secret), workdir ("/var/tmp/highwater/NODE": {dir} there),
                  python ("python3": {python} there), connect_timeout,
                  command_timeout, source_address}; relative paths are relative
                  to the recipe. up.port is still checked from this machine.
Placeholders in commands, env values, logs, data and up: {name} {host} {port}
{address} {dir} (the node's directory in the store; for an ssh node its
workdir on its host) {python} (this Python; for an ssh node its `python`)
{s3_endpoint} (the endpoint the node must use: the S3 proxy when one is in
front) {bucket} {s3_access_key} {s3_secret_key} {s3_region}, and in
kill/pause/resume/stop of a foreground node {pid}. Write {{ and }} for
literal braces (e.g. shell's ${{VAR}}).
"""

TOP_KEYS = {"name": str, "bootstrap": str, "start_timeout": (str, int, float),
            "command_timeout": (str, int, float), "s3": dict, "nodes": dict}
S3_KEYS = {"endpoint": str, "bucket": str, "access_key": str, "secret_key": str, "region": str}
NODE_KEYS = {"address": str, "start": str, "foreground": bool, "already_running": bool, "kill": str,
             "pause": str, "resume": str, "stop": str, "up": dict, "logs": list, "data": list,
             "env": dict, "cwd": str, "ssh": dict}
UP_KEYS = {"port": str, "command": str}
DURATION = (str, int, float)
# the inventory's node keys that make sense for a recipe's node (harness/remote/inventory.py)
SSH_KEYS = {"host": str, "user": str, "port": int, "key_file": str, "key_passphrase_env": str,
            "password_env": str, "known_hosts": str, "accept_unknown_host_keys": bool, "workdir": str,
            "python": str, "connect_timeout": DURATION, "command_timeout": DURATION, "source_address": str}
SSH_WORKDIR = "/var/tmp/highwater/{name}"
COMMANDS = ("start", "kill", "pause", "resume", "stop")
PLACEHOLDERS = {"name", "host", "port", "address", "dir", "python", "s3_endpoint", "bucket",
                "s3_access_key", "s3_secret_key", "s3_region"}
PID_COMMANDS = ("kill", "pause", "resume", "stop")
TYPE_NAMES = {str: "a string", bool: "true or false", dict: "a table", list: "a list", int: "an integer"}


class RecipeError(TargetUnavailable):
    """A recipe that cannot be used; the message names the file, key and line."""


class ExternalUnavailable(TargetUnavailable):
    pass


# --- reading and validating a recipe --------------------------------------------------

def _line_of(text: str, path: tuple[str, ...]) -> int | None:
    """The line that sets the key at `path` (best effort): a `key =` line
    inside the table that holds it, or the table's own [header]."""
    table: tuple[str, ...] = ()
    header_lines: dict[tuple[str, ...], int] = {}
    for no, line in enumerate(text.splitlines(), 1):
        s = line.strip()
        if m := re.match(r"^\[\[?\s*([^\]]+?)\s*\]\]?", s):
            table = tuple(p.strip().strip('"') for p in m.group(1).split("."))
            header_lines.setdefault(table, no)
            continue
        if m := re.match(r'^"?([A-Za-z0-9_.\-"]+?)"?\s*=', s):
            full = table + tuple(p.strip().strip('"') for p in m.group(1).split("."))
            if full == path[:len(full)] and len(full) >= len(path) - 1:
                # `key = ...` or an inline table `parent = { key = ... }`
                if full == path or (full == path[:-1] and re.search(rf"\b{re.escape(path[-1])}\s*=", s)):
                    return no
    return header_lines.get(path)


@dataclass
class NodeRecipe:
    name: str
    address: str
    start: str | None = None
    foreground: bool = True
    already_running: bool = False
    kill: str | None = None
    pause: str | None = None
    resume: str | None = None
    stop: str | None = None
    up_port: str | None = None
    up_command: str | None = None
    logs: list[str] = field(default_factory=list)
    data: list[str] = field(default_factory=list)
    env: dict[str, str] = field(default_factory=dict)
    cwd: str | None = None
    ssh: NodeSpec | None = None      # how to reach its host, for a node on another machine

    @property
    def holds_process(self) -> bool:
        """Highwater itself starts and keeps the node's process (so signals work)."""
        return self.foreground and not self.already_running and self.start is not None

    def way_to(self, action: str) -> str | None:
        """How the recipe performs kill/pause/resume/stop, or None."""
        command = getattr(self, action)
        if command is not None:
            return "command"
        return "signal" if self.holds_process else None


@dataclass
class Recipe:
    path: Path
    name: str
    nodes: dict[str, NodeRecipe]
    bootstrap: str | None = None
    start_timeout: float = 60.0
    command_timeout: float = 30.0
    s3_endpoint: str | None = None      # a URL, "embedded", or None (no S3 declared)
    bucket: str = "highwater"
    s3_access_key: str | None = None
    s3_secret_key: str | None = None
    s3_region: str = "us-east-1"

    def uses_s3_placeholder(self, node: NodeRecipe) -> bool:
        """The node is started against {s3_endpoint} (in `start` or its env),
        so Highwater can hand it a proxy's endpoint instead of the real one."""
        if node.start is None:
            return False
        return any("s3_endpoint" in _fields(t) for t in (node.start, *node.env.values()))


def _fields(template: str) -> set[str]:
    return {f for _, f, _, _ in string.Formatter().parse(template) if f is not None}


def load_recipe(path) -> Recipe:
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise RecipeError(f"recipe {path}: file not found") from None
    except (OSError, UnicodeDecodeError) as e:
        raise RecipeError(f"recipe {path}: cannot read it ({e})") from None
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as e:
        raise RecipeError(f"recipe {path}: malformed TOML: {e}") from None

    def fail(key_path: tuple[str, ...], why: str):
        line = _line_of(text, key_path)
        where = f"{path}:{line}" if line else str(path)
        raise RecipeError(f"recipe {where}: {'.'.join(key_path)}: {why}")

    def check_table(table: dict, allowed: dict, prefix: tuple[str, ...]):
        for key, value in table.items():
            if key not in allowed:
                fail(prefix + (key,), f"unknown key (known here: {', '.join(allowed)})")
            want = allowed[key]
            if not isinstance(value, want) or (want is int and isinstance(value, bool)):
                wanted = (TYPE_NAMES.get(want, "a string or a number") if not isinstance(want, tuple)
                          else "a duration (\"10s\", \"500ms\" or seconds)")
                fail(prefix + (key,), f"must be {wanted}, not {value!r}")

    def duration(key: str, default: float) -> float:
        if key not in data:
            return default
        try:
            value = parse_duration(data[key])
        except ValueError as e:
            fail((key,), str(e))
        if value <= 0:
            fail((key,), "must be positive")
        return value

    def template(key_path: tuple[str, ...], value: str, pid: bool = False) -> str:
        try:
            names = _fields(value)
        except ValueError as e:
            fail(key_path, f"bad placeholder ({e}); write {{{{ and }}}} for literal braces")
        allowed = PLACEHOLDERS | ({"pid"} if pid else set())
        unknown = sorted(n for n in names if n not in allowed)
        if unknown:
            hint = (" ({pid} exists only in kill/pause/resume/stop of a foreground node)"
                    if "pid" in unknown else "")
            fail(key_path, f"unknown placeholder {{{unknown[0]}}}{hint}; known: "
                           f"{', '.join('{' + p + '}' for p in sorted(allowed))}; "
                           f"write {{{{ and }}}} for literal braces")
        return value

    check_table(data, TOP_KEYS, ())
    recipe = Recipe(path=path, name=data.get("name", path.stem), nodes={},
                    bootstrap=data.get("bootstrap"),
                    start_timeout=duration("start_timeout", 60.0),
                    command_timeout=duration("command_timeout", 30.0))
    if recipe.bootstrap is not None:
        for address in recipe.bootstrap.split(","):
            try:
                split_address(address.strip())
            except ValueError as e:
                fail(("bootstrap",), str(e))

    s3 = data.get("s3")
    if s3 is not None:
        check_table(s3, S3_KEYS, ("s3",))
        if "endpoint" not in s3:
            fail(("s3",), "needs an endpoint (a URL, or \"embedded\")")
        endpoint = s3["endpoint"]
        if endpoint != "embedded":
            u = urlsplit(endpoint)
            if u.scheme not in ("http", "https") or not u.hostname:
                fail(("s3", "endpoint"), f"{endpoint!r} is not http(s)://HOST[:PORT] nor \"embedded\"")
        recipe.s3_endpoint = endpoint
        recipe.bucket = s3.get("bucket", recipe.bucket)
        recipe.s3_access_key = s3.get("access_key")
        recipe.s3_secret_key = s3.get("secret_key")
        recipe.s3_region = s3.get("region", recipe.s3_region)

    nodes = data.get("nodes")
    if not nodes:
        fail(("nodes",), "the recipe describes no node: add a [nodes.NAME] table per node")
    for name, node in nodes.items():
        prefix = ("nodes", name)
        if not isinstance(node, dict):
            fail(prefix, "must be a table ([nodes.NAME])")
        if not re.fullmatch(r"[A-Za-z0-9_.-]+", name):
            fail(prefix, "a node name may hold letters, digits, '_', '.' and '-' only")
        check_table(node, NODE_KEYS, prefix)
        if "address" not in node:
            fail(prefix, "needs an address (\"HOST:PORT\" of its Kafka listener)")
        host, _, port = node["address"].rpartition(":")
        if not host or not (port.isdigit() or port == "auto"):
            fail(prefix + ("address",), f"{node['address']!r} is not HOST:PORT (PORT a number or \"auto\")")
        n = NodeRecipe(name=name, address=node["address"], foreground=node.get("foreground", True),
                       already_running=node.get("already_running", False), cwd=node.get("cwd"))
        if n.already_running and port == "auto":
            fail(prefix + ("address",), "a node that is already running needs its real port, not \"auto\"")
        for command in COMMANDS:
            if command in node:
                pid_ok = command in PID_COMMANDS and n.foreground and not n.already_running
                setattr(n, command, template(prefix + (command,), node[command], pid=pid_ok))
        if n.start is None and not n.already_running:
            fail(prefix, "needs a `start` command (or `already_running = true` for a node started by hand)")
        if not n.foreground and not n.already_running and n.stop is None and n.kill is None:
            fail(prefix, "starts a node in the background (foreground = false) but gives no `stop` or "
                         "`kill` command: Highwater could not stop it at teardown")
        for key in ("logs", "data"):
            items = node.get(key, [])
            for i, item in enumerate(items):
                if not isinstance(item, str):
                    fail(prefix + (key,), f"item {i} must be a path string, not {item!r}")
                template(prefix + (key,), item)
            setattr(n, key, list(items))
        for key, value in node.get("env", {}).items():
            if not isinstance(value, str):
                fail(prefix + ("env", key), f"must be a string, not {value!r}")
            template(prefix + ("env", key), value)
        n.env = dict(node.get("env", {}))
        if "up" in node:
            up = node["up"]
            check_table(up, UP_KEYS, prefix + ("up",))
            if len(up) != 1:
                fail(prefix + ("up",), "give exactly one of port = \"HOST:PORT\" or command = \"...\"")
            n.up_port = template(prefix + ("up", "port"), up["port"]) if "port" in up else None
            n.up_command = template(prefix + ("up", "command"), up["command"]) if "command" in up else None
        if "ssh" in node:
            check_table(node["ssh"], SSH_KEYS, prefix + ("ssh",))
            if "host" not in node["ssh"]:
                fail(prefix + ("ssh",), "needs a host")
            try:
                n.ssh = node_spec(name, {"workdir": SSH_WORKDIR.format(name=name), **node["ssh"]},
                                  path.parent, "")
            except InventoryError as e:  # the inventory's checks: a port out of range, a missing key_file, ...
                key = re.search(r"`(\w+)`|^: (\w+) ", str(e))
                key = key and (key.group(1) or key.group(2))
                fail(prefix + ("ssh",) + ((key,) if key in node["ssh"] else ()), str(e).removeprefix(": "))
        if n.cwd is not None:
            template(prefix + ("cwd",), n.cwd)
        for key, value in [("start", n.start), *(((f"env.{k}"), v) for k, v in n.env.items())]:
            if value is not None and "s3_endpoint" in _fields(value) and recipe.s3_endpoint is None:
                fail(prefix + tuple(key.split(".")), "uses {s3_endpoint} but the recipe has no [s3] endpoint")
        recipe.nodes[name] = n
    return recipe


# --- the target -----------------------------------------------------------------

@dataclass
class ExternalNode:
    recipe: NodeRecipe
    host: str
    port: int
    dir: Path
    values: dict               # placeholder values
    process: LocalProcess | RemoteProcess | None = None
    proxy: object | None = None
    ssh: SshNode | None = None  # the connection to its host, for a node on another machine
    killed_by_us: bool = False  # for daemon-style nodes: our kill, not their crash

    @property
    def name(self) -> str:
        return self.recipe.name

    @property
    def address(self) -> str:
        return f"{self.host}:{self.port}"

    @property
    def console_log(self) -> Path:
        return self.dir / "console.log"


class ExternalTarget(Target):
    name = "external"

    def __init__(self, recipe: Recipe, run_dir: Path | None):
        self.recipe = recipe
        self.run_dir = Path(run_dir) if run_dir is not None else None
        self.nodes: dict[str, ExternalNode] = {}
        self.s3 = None                   # an embedded SeaweedS3 we started
        self.s3_endpoint: str | None = None
        self.service_host = "127.0.0.1"  # where S3 and the S3 proxies listen: this machine's address towards the nodes

    @classmethod
    def from_options(cls, options: dict, run_dir):
        if not options.get("recipe"):
            raise RecipeError("--db external needs --recipe FILE (a TOML recipe; see examples/)")
        return cls(load_recipe(options["recipe"]), run_dir)

    # --- capabilities ------------------------------------------------------------------
    def unsupported(self, control: str) -> str | None:
        r = self.recipe
        need = {"process": ("kill", "start"), "pause": ("pause", "resume")}
        if control in need:
            for node in r.nodes.values():
                for action in need[control]:
                    if action == "start":
                        if node.start is None:
                            return (f"recipe {r.path}: node {node.name} has no `start` command, so a "
                                    f"killed node could not be started again")
                    elif node.way_to(action) is None:
                        return (f"recipe {r.path}: node {node.name} gives no way to {action} it: add a "
                                f"`{action}` command (Highwater does not hold its process, so it "
                                f"cannot signal it)")
            return None
        if control == "s3_proxy":
            if r.s3_endpoint is None:
                return f"recipe {r.path} declares no [s3] endpoint, so no S3 proxy can go in front of it"
            for node in r.nodes.values():
                if not r.uses_s3_placeholder(node):
                    return (f"recipe {r.path}: node {node.name}'s `start` command (and env) do not take "
                            f"{{s3_endpoint}}, so it cannot be started against an S3 proxy")
                if node.already_running:
                    return (f"recipe {r.path}: node {node.name} is already running against the real "
                            f"S3 endpoint; an S3 proxy needs Highwater to start it")
            return None
        reasons = {
            "network": "the external target has no network control in this version",
            "volume": "the external target has no volume control: a recipe's data paths are only "
                      "recorded, and a detachable (FUSE) volume cannot be described in a recipe yet",
            "lose_unsynced": "the external target cannot drop unsynced writes: that needs the node's "
                             "data on a FUSE volume Highwater controls",
            "clock": "the external target has no clock control in this version",
            "reassign": "the external target does not know how to move partitions in this system",
        }
        return reasons.get(control, f"the external target does not offer {control}")

    # --- what it is ----------------------------------------------------------------------
    @property
    def bootstrap_servers(self) -> str:
        if self.recipe.bootstrap:
            return self.recipe.bootstrap
        return ",".join(n.address for n in self.nodes.values())

    @property
    def node_names(self) -> list[str]:
        return list(self.recipe.nodes)

    def node_logs(self) -> dict[str, Path]:
        return {name: n.console_log for name, n in self.nodes.items()}

    def s3_proxy(self, node: str):
        return self.nodes[node].proxy

    # --- lifecycle -----------------------------------------------------------------------
    def setup(self) -> None:
        if self.run_dir is None:
            raise ExternalUnavailable("setup needs a run directory")
        try:
            self._setup()
        except RemoteError as e:  # a host key refused, a host unreachable, a command that failed there
            raise ExternalUnavailable(f"recipe {self.recipe.path}: {e}") from None

    def _setup(self) -> None:
        r = self.recipe
        self.run_dir.mkdir(parents=True, exist_ok=True)
        remote = {name: nr.ssh for name, nr in r.nodes.items() if nr.ssh is not None}
        # connected (and their workdirs made) before anything starts: a host that refuses us stops the run here
        ssh = open_nodes(Inventory(remote, str(r.path)), self.run_dir / "nodes") if remote else {}
        # S3 and the S3 proxies where the nodes reach them: this machine's address towards their hosts
        self.service_host = local_address_for(next(iter(remote.values()))) if remote else "127.0.0.1"
        if r.s3_endpoint == "embedded":
            from harness.s3server import SeaweedS3
            self.s3 = SeaweedS3(self.run_dir / "s3", bucket=r.bucket, host=self.service_host).start()
            self.s3_endpoint = self.s3.endpoint
        else:
            self.s3_endpoint = r.s3_endpoint
        from harness.s3server import ACCESS_KEY, SECRET_KEY
        try:  # the recipe goes with the run, for replay and for the reader of the store (not its secret)
            text = r.path.read_text(encoding="utf-8")
            if r.s3_secret_key:
                text = text.replace(r.s3_secret_key, "***")
            (self.run_dir / "recipe.toml").write_text(text, encoding="utf-8")
        except OSError as e:
            log.warning("copying the recipe into the store: %s", e)
        for name, nr in r.nodes.items():
            host, _, port = nr.address.rpartition(":")
            node = ExternalNode(nr, host.strip("[]"), free_port() if port == "auto" else int(port),
                                self.run_dir / "nodes" / name, {}, ssh=ssh.get(name))
            node.dir.mkdir(parents=True, exist_ok=True)
            if self.s3_endpoint is not None and r.uses_s3_placeholder(nr) and not nr.already_running:
                node.proxy = self._make_proxy(self.s3_endpoint, self.service_host if node.ssh else "127.0.0.1")
            node.values = {
                "name": name, "host": node.host, "port": node.port, "address": node.address,
                "dir": str(node.ssh.workdir) if node.ssh else str(node.dir),
                "python": nr.ssh.python if nr.ssh else sys.executable,
                "s3_endpoint": node.proxy.endpoint if node.proxy is not None else (self.s3_endpoint or ""),
                "bucket": r.bucket,
                "s3_access_key": r.s3_access_key or (ACCESS_KEY if self.s3 else ""),
                "s3_secret_key": r.s3_secret_key or (SECRET_KEY if self.s3 else ""),
                "s3_region": r.s3_region,
            }
            if node.ssh is not None:  # the key is a secret: whatever shows it in the node's ssh.log shows ***
                node.ssh.log.add_secret(node.values["s3_secret_key"])
            if nr.start is not None and nr.foreground and node.ssh is not None:
                node.process = RemoteProcess(name, node.ssh, self._fill(node, nr.start), env=self._env(node),
                                             cwd=self._cwd(node), proc_name=f"node-{name}")
            elif nr.start is not None and nr.foreground:
                node.process = LocalProcess(name, ["/bin/sh", "-c", self._fill(node, nr.start)],
                                            node.console_log, env=self._env(node), cwd=self._cwd(node))
            self.nodes[name] = node
        for name, node in self.nodes.items():
            if node.recipe.already_running:
                if not self._is_up(node):
                    raise ExternalUnavailable(
                        f"recipe {r.path}: node {name} is marked already_running but is not up "
                        f"({self._up_what(node)}); start it first")
            else:
                self.start_node(name)

    @staticmethod
    def _make_proxy(endpoint: str, listen_host: str):
        from nemeses.s3_proxy import S3FaultProxy
        u = urlsplit(endpoint)
        if u.scheme != "http":
            raise ExternalUnavailable(f"S3 endpoint {endpoint}: the S3 proxy speaks plain http only; "
                                      f"give an http:// endpoint or drop {{s3_endpoint}} from `start`")
        return S3FaultProxy(u.hostname, u.port or 80, listen_host=listen_host).start()

    def _fill(self, node: ExternalNode, template: str) -> str:
        values = dict(node.values)
        if node.process is not None and node.process.pid is not None:
            values["pid"] = node.process.pid
        return template.format_map(values)

    def _env(self, node: ExternalNode) -> dict:
        """This process's environment and the recipe's; on another host only the recipe's."""
        own = {k: self._fill(node, v) for k, v in node.recipe.env.items()}
        return own if node.ssh is not None else {**os.environ, **own}

    def _shown(self, node: ExternalNode, text: str) -> str:
        """Text for a log of the store: the S3 secret key never reaches it."""
        secret = node.values.get("s3_secret_key")
        text = text.replace(secret, "***") if secret and len(secret) >= 4 else text
        return node.ssh.log.redact(text) if node.ssh is not None else text

    def _cwd(self, node: ExternalNode) -> str | None:
        return self._fill(node, node.recipe.cwd) if node.recipe.cwd else None

    def _up_what(self, node: ExternalNode) -> str:
        if node.recipe.up_command:
            return f"`{self._fill(node, node.recipe.up_command)}` exits 0"
        return f"{self._fill(node, node.recipe.up_port) if node.recipe.up_port else node.address} accepts connections"

    def _is_up(self, node: ExternalNode) -> bool:
        nr = node.recipe
        if nr.up_command and node.ssh is not None:
            try:
                return node.ssh.run(self._fill(node, nr.up_command), timeout=self.recipe.command_timeout,
                                    env=self._env(node), cwd=self._cwd(node)).returncode == 0
            except RemoteCommandTimeout:
                return False
        if nr.up_command:
            try:
                return subprocess.run(["/bin/sh", "-c", self._fill(node, nr.up_command)], env=self._env(node),
                                      cwd=self._cwd(node), stdout=subprocess.DEVNULL,
                                      stderr=subprocess.DEVNULL, timeout=self.recipe.command_timeout
                                      ).returncode == 0
            except subprocess.TimeoutExpired:
                return False
        host, port = split_address(self._fill(node, nr.up_port)) if nr.up_port else (node.host, node.port)
        return port_open(host, port)

    def _run_command(self, node: ExternalNode, action: str) -> None:
        """Run the recipe's `action` command for node; its output goes to the
        node's console log. A command that fails is an error naming it."""
        command = self._fill(node, getattr(node.recipe, action))
        if node.ssh is not None:
            return self._run_remote_command(node, action, command)
        with open(node.console_log, "ab") as out:
            out.write(f"\n=== highwater: {action} {node.name}: {self._shown(node, command)} ===\n".encode())
            out.flush()
            try:
                done = subprocess.run(["/bin/sh", "-c", command], stdout=out, stderr=subprocess.STDOUT,
                                      stdin=subprocess.DEVNULL, env=self._env(node), cwd=self._cwd(node),
                                      timeout=self.recipe.command_timeout, start_new_session=True)
            except subprocess.TimeoutExpired:
                raise ExternalUnavailable(f"node {node.name}: `{action}` did not finish within "
                                          f"{self.recipe.command_timeout:.0f}s: {command}") from None
        if done.returncode != 0:
            raise ExternalUnavailable(f"node {node.name}: `{action}` exited with {done.returncode}: {command} "
                                      f"(output in {node.console_log})")

    def _run_remote_command(self, node: ExternalNode, action: str, command: str) -> None:
        """The same on the node's host, over SSH: its output into the console
        log here (and, with the command, into the node's ssh.log)."""
        where = f"{node.ssh.spec.user}@{node.ssh.spec.address}"
        with open(node.console_log, "ab") as out:
            out.write(f"\n=== highwater: {action} {node.name} on {where}: {self._shown(node, command)} ===\n"
                      .encode())
            try:
                done = node.ssh.run(command, timeout=self.recipe.command_timeout, env=self._env(node),
                                    cwd=self._cwd(node))
            except RemoteCommandTimeout:
                raise ExternalUnavailable(f"node {node.name}: `{action}` did not finish within "
                                          f"{self.recipe.command_timeout:.0f}s on {where}: "
                                          f"{self._shown(node, command)}") from None
            out.write(self._shown(node, done.stdout + done.stderr).encode())
        if done.returncode != 0:
            raise ExternalUnavailable(f"node {node.name}: `{action}` exited with {done.returncode} on {where}: "
                                      f"{self._shown(node, command)} (output in {node.console_log})")

    # --- process control -------------------------------------------------------------
    def start_node(self, name: str) -> None:
        node = self.nodes[name]
        node.killed_by_us = False
        if node.process is not None:
            node.process.start()
        else:
            self._run_command(node, "start")
        if isinstance(node.process, RemoteProcess):
            def up() -> bool:  # a process of its host that died while starting fails at once
                if node.process.pid is None:
                    raise ExternalUnavailable(f"node {name} exited during start on {node.ssh.spec.address}; its "
                                              f"output is {node.process.log_path} there (and in {node.console_log} "
                                              f"after the run)")
                return self._is_up(node)
            wait_up(up, self.recipe.start_timeout, self._up_what(node), error=ExternalUnavailable,
                    name=f"node {name}")
            return
        wait_up(lambda: self._is_up(node), self.recipe.start_timeout, self._up_what(node),
                error=ExternalUnavailable, process=node.process, name=f"node {name}")

    def _act(self, name: str, action: str, sig: int) -> None:
        node = self.nodes[name]
        way = node.recipe.way_to(action)
        if way is None:
            raise ExternalUnavailable(f"node {name}: the recipe gives no way to {action} it")
        if way == "command":
            self._run_command(node, action)
        elif sig == signal.SIGKILL:
            node.process.kill()
        elif sig == signal.SIGSTOP:
            node.process.pause()
        else:
            node.process.resume()

    def kill_node(self, name: str) -> None:
        node = self.nodes[name]
        node.killed_by_us = True
        if node.process is not None:
            node.process.killed_by_us = True   # also when a kill command does it
        self._act(name, "kill", signal.SIGKILL)
        if isinstance(node.process, LocalProcess) and node.process.process is not None:
            try:  # reap it, so a restart starts a fresh one
                node.process.process.wait(10)
            except subprocess.TimeoutExpired:
                raise ExternalUnavailable(f"node {name}: still running 10s after `kill`") from None

    def pause_node(self, name: str) -> None:
        self._act(name, "pause", signal.SIGSTOP)

    def resume_node(self, name: str) -> None:
        self._act(name, "resume", signal.SIGCONT)

    def died_on_their_own(self) -> dict[str, int]:
        out = {}
        for node in self.nodes.values():
            code = node.process.exited_by_itself() if node.process is not None else None
            if code is not None:
                out[node.name] = code
        return out

    def run_info(self) -> dict:
        return {"recipe": str(self.recipe.path), "system": self.recipe.name, "s3_endpoint": self.s3_endpoint,
                "nodes": {n.name: {"address": n.address, "data": [self._fill(n, d) for d in n.recipe.data],
                                   "starts": n.process.starts if n.process is not None else None,
                                   "s3_proxy": n.proxy.endpoint if n.proxy is not None else None,
                                   "logs": {self._fill(n, src): str(n.dir / Path(self._fill(n, src)).name)
                                            for src in n.recipe.logs}}
                          for n in self.nodes.values()}}

    def teardown(self) -> None:
        for node in self.nodes.values():
            try:
                self._stop(node)
            except Exception:
                log.exception("stopping %s", node.name)
            try:
                if node.ssh is not None:
                    self._fetch_logs(node)
                else:
                    self._copy_logs(node)
            except Exception:
                log.exception("copying the logs of %s", node.name)
            if node.ssh is not None:
                node.ssh.close()
            if node.proxy is not None:
                try:
                    node.proxy.stop()
                except Exception:
                    log.exception("stopping the S3 proxy of %s", node.name)
        if self.s3 is not None:
            self.s3.stop()

    def _stop(self, node: ExternalNode) -> None:
        nr = node.recipe
        if nr.already_running:
            # It ran before the test and is left running; a paused node is resumed.
            if nr.resume is not None:
                try:
                    self._run_command(node, "resume")
                except ExternalUnavailable as e:
                    log.warning("%s", e)
            return
        if nr.stop is not None:
            if nr.resume is not None:  # a paused node cannot act on a polite stop
                try:
                    self._run_command(node, "resume")
                except ExternalUnavailable as e:
                    log.warning("%s", e)
            self._run_command(node, "stop")
        if node.process is not None:
            node.process.stop(grace=3.0)  # after a stop command: makes sure, and reaps
        elif nr.stop is None and nr.kill is not None:
            self._run_command(node, "kill")

    def _copy_logs(self, node: ExternalNode) -> None:
        """The recipe's logs into the store's nodes/NAME/ (a directory whole)."""
        for pattern in node.recipe.logs:
            src = Path(self._fill(node, pattern))
            dest = node.dir / src.name
            if not src.exists():
                log.warning("node %s: log %s does not exist", node.name, src)
            elif src.resolve() == dest.resolve():
                continue   # already there ({dir}/...)
            elif src.is_dir():
                shutil.copytree(src, dest, dirs_exist_ok=True)
            else:
                shutil.copy2(src, dest)

    def _fetch_logs(self, node: ExternalNode) -> None:
        """A node on another host: the recipe's logs (files or directories)
        into the store's nodes/NAME/ over SFTP, and a foreground node's
        output appended to its console log."""
        for pattern in node.recipe.logs:
            src = self._fill(node, pattern)
            try:
                copied = node.ssh.get_tree(src, node.dir)
            except RemoteError as e:
                log.warning("node %s: log %s not fetched: %s", node.name, src, e)
                continue
            secret = node.values.get("s3_secret_key")
            for path in copied if secret and len(secret) >= 4 else ():
                data = path.read_bytes()   # a command line of the host's process logs may show it
                if secret.encode() in data:
                    path.write_bytes(data.replace(secret.encode(), b"***"))
        if isinstance(node.process, RemoteProcess) and node.process.starts:
            try:
                output = node.ssh.read_text(node.process.log_path)
            except RemoteError as e:
                log.warning("node %s: its output not fetched: %s", node.name, e)
                return
            with open(node.console_log, "a", encoding="utf-8") as out:
                out.write(f"\n=== highwater: output of {node.name} on {node.ssh.spec.address} "
                          f"({node.process.log_path}) ===\n{self._shown(node, output)}")
