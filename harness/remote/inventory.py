"""Remote nodes described in a TOML inventory (`--nodes inventory:FILE`).

```toml
[defaults]                      # optional; every key a node may have
user = "admin"
key_file = "~/.ssh/highwater"   # relative paths are relative to this file
known_hosts = "~/.ssh/known_hosts"

[nodes.n1]
host = "10.0.0.11"
roles = ["broker", "controller"]
s3_endpoint = "http://10.0.0.1:8333"   # S3 as this node reaches it

[nodes.n2]
host = "10.0.0.12"
port = 2222
```

Per node (or in `[defaults]`): `host` (required), `port` (22), `user`
("root"), `key_file` (without it: the SSH agent and ~/.ssh/id_*), `key_passphrase_env` / `password_env` (the *name* of an
environment variable that holds the secret: secrets never live in the
inventory, the store or the logs), `known_hosts` ("~/.ssh/known_hosts"),
`accept_unknown_host_keys` (false), `roles` (["broker"]), `workdir`
("/var/tmp/highwater", where the node's files, pid files and process logs
go), `s3_endpoint`, `python` ("python3"), `connect_timeout` ("10s"),
`command_timeout` ("60s"), `source_address` (the local address SSH connects
from: keep it out of partition rules and the control path survives them),
`broker_port` (9092) and `rpc_port` (9093): where a reference broker on the
node listens for Kafka clients and for the cluster's RPC, on `host` (give
each node of one host its own). Unknown keys and wrong types are refused
with the file, the node and the key."""
from __future__ import annotations

import os
import tomllib
from dataclasses import dataclass, fields
from pathlib import Path

from harness.durations import parse_duration


class InventoryError(ValueError):
    pass


@dataclass(frozen=True)
class NodeSpec:
    """How to reach one node and what it is for. Holds no secret: a
    passphrase or password is named by the environment variable holding it."""
    name: str
    host: str
    port: int = 22
    user: str = "root"
    key_file: Path | None = None
    key_passphrase_env: str | None = None
    password_env: str | None = None
    known_hosts: Path = Path("~/.ssh/known_hosts")
    accept_unknown_host_keys: bool = False
    roles: tuple[str, ...] = ("broker",)
    workdir: str = "/var/tmp/highwater"
    s3_endpoint: str | None = None
    python: str = "python3"
    connect_timeout: float = 10.0
    command_timeout: float = 60.0
    source_address: str | None = None
    broker_port: int = 9092
    rpc_port: int = 9093

    @property
    def address(self) -> str:
        """host:port as the known_hosts file and error messages name it."""
        return self.host if self.port == 22 else f"[{self.host}]:{self.port}"

    def secret(self, which: str) -> str | None:
        """The passphrase or password from its environment variable, read when
        needed and never stored."""
        var = {"passphrase": self.key_passphrase_env, "password": self.password_env}[which]
        if var is None:
            return None
        value = os.environ.get(var)
        if value is None:
            raise InventoryError(f"node {self.name}: environment variable {var} (its {which}) is not set")
        return value


_KEYS = {f.name for f in fields(NodeSpec)} - {"name"}
_PATH_KEYS = ("key_file", "known_hosts")
_DURATION_KEYS = ("connect_timeout", "command_timeout")
_STR_KEYS = ("host", "user", "key_passphrase_env", "password_env", "workdir", "s3_endpoint", "python",
             "source_address")


@dataclass(frozen=True)
class Inventory:
    nodes: dict[str, NodeSpec]
    source: str = "<inventory>"

    @property
    def node_names(self) -> list[str]:
        return list(self.nodes)

    def with_role(self, role: str) -> list[NodeSpec]:
        return [n for n in self.nodes.values() if role in n.roles]


def load_inventory(path) -> Inventory:
    path = Path(path)
    try:
        text = path.read_text()
    except OSError as e:
        raise InventoryError(f"inventory {path}: cannot read: {e.strerror or e}") from None
    return parse_inventory(text, base_dir=path.parent, source=str(path))


def parse_inventory(text: str, base_dir: Path = Path("."), source: str = "<inventory>") -> Inventory:
    try:
        doc = tomllib.loads(text)
    except tomllib.TOMLDecodeError as e:
        raise InventoryError(f"inventory {source}: not valid TOML: {e}") from None
    unknown = set(doc) - {"defaults", "nodes"}
    if unknown:
        raise InventoryError(f"inventory {source}: unknown top-level key(s) {', '.join(sorted(unknown))} "
                             f"(expected [defaults] and [nodes.NAME] tables)")
    defaults = doc.get("defaults", {})
    if not isinstance(defaults, dict):
        raise InventoryError(f"inventory {source}: `defaults` must be a table")
    nodes = doc.get("nodes")
    if not isinstance(nodes, dict) or not nodes:
        raise InventoryError(f"inventory {source}: no nodes (add a [nodes.n1] table with at least `host`)")
    specs = {}
    for name, table in nodes.items():
        if not isinstance(table, dict):
            raise InventoryError(f"inventory {source}: nodes.{name} must be a table")
        specs[name] = node_spec(name, {**defaults, **table}, base_dir, f"inventory {source}: node {name}")
    return Inventory(specs, source)


def node_spec(name: str, raw: dict, base_dir: Path, where: str) -> NodeSpec:
    """A NodeSpec from one node's table (an inventory's, or an `external`
    recipe's `ssh` table); `where` begins every error message."""
    unknown = set(raw) - _KEYS
    if unknown:
        raise InventoryError(f"{where}: unknown key(s) {', '.join(sorted(unknown))}; known: {', '.join(sorted(_KEYS))}")
    if "host" not in raw:
        raise InventoryError(f"{where}: `host` is required")
    kw = {}
    for key, value in raw.items():
        if key in _STR_KEYS:
            if not isinstance(value, str) or not value:
                raise InventoryError(f"{where}: `{key}` must be a non-empty string, not {value!r}")
            kw[key] = value
        elif key in ("port", "broker_port", "rpc_port"):
            if not isinstance(value, int) or isinstance(value, bool) or not 0 < value < 65536:
                raise InventoryError(f"{where}: `{key}` must be an integer 1..65535, not {value!r}")
            kw[key] = value
        elif key == "accept_unknown_host_keys":
            if not isinstance(value, bool):
                raise InventoryError(f"{where}: `{key}` must be true or false, not {value!r}")
            kw[key] = value
        elif key == "roles":
            if not isinstance(value, list) or not value or not all(isinstance(r, str) and r for r in value):
                raise InventoryError(f"{where}: `roles` must be a non-empty list of strings, not {value!r}")
            kw[key] = tuple(value)
        elif key in _DURATION_KEYS:
            try:
                kw[key] = parse_duration(value)
            except ValueError as e:
                raise InventoryError(f"{where}: `{key}`: {e}") from None
            if kw[key] <= 0:
                raise InventoryError(f"{where}: `{key}` must be positive")
        elif key in _PATH_KEYS:
            if not isinstance(value, str) or not value:
                raise InventoryError(f"{where}: `{key}` must be a path, not {value!r}")
            kw[key] = base_dir / Path(value).expanduser()
    key_file = kw.get("key_file")
    if key_file is not None and not key_file.is_file():
        raise InventoryError(f"{where}: key_file {key_file} does not exist")
    kw.setdefault("known_hosts", Path("~/.ssh/known_hosts").expanduser())
    return NodeSpec(name=name, **kw)
