"""The broker process: `highwater broker` / `python -m reference.broker`.

    highwater broker --node-id 1 --listen 127.0.0.1:9092 --volume /data/n1 \\
        --s3-endpoint http://127.0.0.1:8333 --bucket highwater

Storage is the WAL + S3 engine (`reference.storage.engine.S3Engine`). For
protocol work without S3 there is `--storage memory`, which keeps everything
in this process's memory: acknowledged writes die with the process, so it
must never be used where durability is being judged.

Every s3 broker is a cluster node (`reference/cluster/`, CLUSTER.md): one
broker alone is a cluster of one, its own controller. Cluster flags:
`--rpc-listen` (the internal RPC; default any free port on 127.0.0.1),
`--session-timeout`, `--heartbeat-interval`, `--volume-provider KIND:ARG`
(how the controller moves volumes in failover; without one a dead node's
partitions wait for it to come back) and `--volume-id` (this node's volume
there). `--wal s3` runs the storage engine alone, outside any cluster.

SIGTERM or SIGINT closes the listener, the connections and the engine
(flushing what it holds); SIGKILL is the crash the WAL is there for.
"""
from __future__ import annotations

import argparse
import asyncio
import logging
import signal
import sys
from pathlib import Path

log = logging.getLogger("highwater.broker")

ENGINE_MODULE = "reference.storage.engine"


def _engine_module():
    """The WAL + S3 engine module, or None while it does not exist yet."""
    try:
        import reference.storage.engine as engine
    except ModuleNotFoundError as exc:
        if exc.name != ENGINE_MODULE:
            raise
        return None
    return engine


def parse_host_port(text: str) -> tuple[str, int]:
    host, sep, port = text.rpartition(":")
    if not sep or not port.isdigit():
        raise argparse.ArgumentTypeError(f"expected HOST:PORT, got {text!r}")
    return host.strip("[]") or "0.0.0.0", int(port)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--node-id", type=int, required=True, help="this broker's node id")
    parser.add_argument("--listen", type=parse_host_port, required=True, metavar="HOST:PORT",
                        help="address to accept Kafka clients on (port 0: any free port)")
    parser.add_argument("--advertise", type=parse_host_port, metavar="HOST:PORT",
                        help="address clients are told to connect to (default: --listen)")
    parser.add_argument("--volume", help="directory of the node's volume (the WAL lives here)")
    parser.add_argument("--s3-endpoint", help="S3 endpoint URL, e.g. http://127.0.0.1:8333")
    parser.add_argument("--bucket", help="S3 bucket for the node's data")
    parser.add_argument("--storage", choices=("s3", "memory"), default="s3",
                        help="s3 (default): WAL on --volume + S3, durable. memory: NOT DURABLE, "
                             "everything is lost when the process ends; for protocol tests only")
    parser.add_argument("--auto-create-topics", action=argparse.BooleanOptionalAction, default=True,
                        help="create an unknown topic (with --default-partitions) when a client's Metadata "
                             "request allows it, as Kafka's auto.create.topics.enable (default: on; "
                             "--no-auto-create-topics turns it off)")
    parser.add_argument("--default-partitions", type=int, default=1,
                        help="partitions of a topic created without a count (default 1)")
    parser.add_argument("--max-frame-bytes", type=int, default=100 * 1024 * 1024,
                        help="largest request accepted; a bigger one closes its connection (default 100 MiB)")
    parser.add_argument("--connections-max-idle-ms", type=int, default=600_000,
                        help="close a connection with nothing in flight and no byte read or written for this "
                             "long, also one stalled inside a frame (default 600000, Kafka's "
                             "connections.max.idle.ms; 0: never)")
    parser.add_argument("--fetch-max-bytes", type=int, default=55 * 1024 * 1024,
                        help="the most one Fetch response holds, whatever a client asks (default 55 MiB, "
                             "Kafka's fetch.max.bytes); past it only one batch, so a consumer progresses")
    parser.add_argument("--log-level", default="INFO", help="DEBUG, INFO, WARNING (default INFO)")
    parser.add_argument("--bug", action="append", default=[], metavar="NAME",
                        help="switch on a planted bug of the zoo (reference/bugs.py); for proving that the "
                             "harness catches it, never for real use")
    parser.add_argument("--rpc-listen", type=parse_host_port, default=("127.0.0.1", 0), metavar="HOST:PORT",
                        help="the cluster's internal RPC listener (default 127.0.0.1:0, any free port)")
    parser.add_argument("--session-timeout", default="3s",
                        help="the controller fences a broker that has not heartbeated for this long (default 3s)")
    parser.add_argument("--heartbeat-interval", default="500ms", help="broker heartbeat period (default 500ms)")
    parser.add_argument("--volume-provider", metavar="KIND:ARG",
                        help="how volumes move between nodes in failover: directory:ROOT (no I/O fencing: "
                             "development only), local:..., ec2:... (default: none; a dead node's partitions "
                             "wait for it to come back)")
    parser.add_argument("--volume-id", help="this node's volume in --volume-provider")
    parser.add_argument("--node-name", help="this node's name for the volume provider (default n<node-id>)")
    engine = _engine_module()
    if engine is not None and hasattr(engine, "add_arguments"):
        engine.add_arguments(parser)


def build_engine(args):
    if args.storage == "memory":
        from reference.storage.memory import MemoryEngine
        log.warning("storage is IN MEMORY (--storage memory): NOT DURABLE, every record is lost "
                    "when this process ends; use it for protocol tests only")
        return MemoryEngine(args.node_id)
    missing = [flag for flag, value in (("--volume", args.volume), ("--s3-endpoint", args.s3_endpoint),
                                        ("--bucket", args.bucket)) if not value]
    if missing:
        raise SystemExit(f"highwater broker: the s3 storage needs {', '.join(missing)}")
    engine = _engine_module()
    if engine is None:
        raise SystemExit("highwater broker: the WAL + S3 storage engine (reference/storage/engine.py) "
                         "is not available in this checkout; use --storage memory for a non-durable "
                         "broker meanwhile")
    config = engine.config_from_args(args) if hasattr(engine, "config_from_args") else None
    return engine.S3Engine(args.node_id, args.volume, args.s3_endpoint, args.bucket, config)


def configure_logging(level: str) -> None:
    logging.basicConfig(stream=sys.stderr, level=getattr(logging, level.upper(), logging.INFO),
                        format="%(asctime)s.%(msecs)03d %(levelname)s %(name)s: %(message)s",
                        datefmt="%Y-%m-%dT%H:%M:%S")


# The exit code of a broker whose recovery found acknowledged data missing
# from its WAL and refused to serve (storage/recovery.py, `on_gap`): not a
# crash, a deliberate stop that a harness or an operator can tell apart.
EXIT_RECOVERY_REFUSED = 3


def _recovery_refused(exc: BaseException) -> bool:
    """Whether `exc` is recovery's refusal (imported here, not at the top:
    a --storage memory broker never loads the storage engine)."""
    from reference.storage.recovery import RecoveryRefused
    return isinstance(exc, RecoveryRefused)


class EngineHalted(Exception):
    """The storage engine stopped accepting work; the process must exit so it
    can be restarted (and recover from its WAL) rather than limp on."""


def _import_kafka_side() -> None:
    import reference.protocol.context  # noqa: F401
    import reference.protocol.groups  # noqa: F401
    import reference.server  # noqa: F401


def is_cluster_node(args) -> bool:
    return args.storage == "s3" and getattr(args, "wal", "file") != "s3"


async def start_cluster_node(args, store=None, volumes=None):
    """The node agent (registration, heartbeats, maybe the controller) with
    its first engine; returns the agent. `store` and `volumes` replace the
    S3 client and the volume provider named by the flags (the deterministic
    simulator passes its own; everything else is built from `args` as for a
    real broker)."""
    from reference.cluster.core import ClusterConfig
    from reference.cluster.node import NodeAgent, NodeConfig
    from reference.volumes import open_provider
    from reference.storage.s3io import ObjectStore
    engine_mod = _engine_module()
    missing = [flag for flag, value in (("--volume", args.volume), ("--s3-endpoint", args.s3_endpoint),
                                        ("--bucket", args.bucket)) if not value]
    if missing:
        raise SystemExit(f"highwater broker: the s3 storage needs {', '.join(missing)}")
    config = engine_mod.config_from_args(args)
    if volumes is None:
        try:
            volumes = open_provider(args.volume_provider)
        except ValueError as e:
            raise SystemExit(f"highwater broker: {e}") from None
    session = engine_mod.parse_duration(args.session_timeout)
    heartbeat = engine_mod.parse_duration(args.heartbeat_interval)
    if not 0 < heartbeat < session:
        raise SystemExit("highwater broker: --heartbeat-interval must be positive and below --session-timeout")
    listen_host, listen_port = args.listen
    adv_host, adv_port = args.advertise or (listen_host, listen_port)
    if adv_host in ("0.0.0.0", "::", ""):
        adv_host = "127.0.0.1"
    cc = ClusterConfig(session_timeout=session, heartbeat_interval=heartbeat,
                       fences_io=bool(getattr(volumes, "fences_io", True)) if volumes is not None else False)
    ncfg = NodeConfig(node_id=args.node_id, name=args.node_name or f"n{args.node_id}",
                      rpc_host=args.rpc_listen[0], rpc_port=args.rpc_listen[1], advertise=f"{adv_host}:{adv_port}",
                      volume_path=Path(args.volume), volume_id=args.volume_id, cluster=cc,
                      wal_capacity=config.wal_capacity, metadata_prefix=config.metadata_prefix)
    if store is None:
        store = ObjectStore(args.s3_endpoint, args.bucket, config.s3_timeout, config.s3_prefix)

    def make_engine(node_id, volume_dir):
        return engine_mod.S3Engine(node_id, volume_dir, args.s3_endpoint, args.bucket, config, store=store)
    agent = NodeAgent(ncfg, store, make_engine, volumes)
    await agent.start()
    log.info("cluster node %d: RPC on %s, node epoch %d", args.node_id, agent.rpc_address, agent.epoch)
    return agent


async def serve(args) -> None:
    listen_host, listen_port = args.listen
    if is_cluster_node(args):
        if listen_port == 0:
            raise SystemExit("highwater broker: a cluster node needs a concrete --listen port (others advertise it)")
        # the Kafka side's modules load in a thread while the node registers (mostly waiting on S3)
        import threading
        threading.Thread(target=_import_kafka_side, daemon=True).start()
        try:
            agent = await start_cluster_node(args)
        except Exception as exc:
            if isinstance(exc, SystemExit) or _recovery_refused(exc):
                raise
            log.exception("cluster node failed to start")
            raise SystemExit(f"highwater broker: cluster node failed to start: {exc}") from None
        try:
            await serve_engine(args, agent.engine, agent)
        finally:
            await agent.close()
            log.info("stopped")
        return
    engine = build_engine(args)
    try:
        await engine.start()
    except Exception as exc:
        if not _recovery_refused(exc):
            log.exception("storage engine failed to start")
        try:
            await engine.close()
        except Exception:
            pass
        if _recovery_refused(exc):
            raise
        raise SystemExit("highwater broker: storage engine failed to start (see above)")
    try:
        await serve_engine(args, engine, None)
    finally:
        try:
            await engine.close()
        except Exception:
            log.exception("storage engine close failed")
        log.info("stopped")


class KafkaSide:
    """A broker's Kafka listener and group coordinator, over its engine (and,
    on a cluster node, its agent: the context follows each new engine)."""

    def __init__(self, ctx, server, groups_task):
        self.ctx, self.server, self.groups_task = ctx, server, groups_task

    async def close(self) -> None:
        self.groups_task.cancel()
        await self.server.close()


async def start_kafka_side(args, engine, agent) -> KafkaSide:
    from reference.protocol.context import make_context
    from reference.server import BrokerServer, ConnectionLimits
    listen_host, listen_port = args.listen
    adv_host, adv_port = args.advertise or (listen_host, listen_port)
    if adv_host in ("0.0.0.0", "::", ""):
        adv_host = "127.0.0.1"
    ctx = make_context(engine, args.node_id, adv_host, adv_port,
                       auto_create_topics=args.auto_create_topics, default_partitions=args.default_partitions,
                       fetch_max_bytes=args.fetch_max_bytes)
    if agent is not None:
        from reference.cluster.view import ClusterView
        ctx.cluster = ClusterView(agent.replica, args.node_id, agent.controller_call)

        def follow(new_engine):
            ctx.engine = new_engine
            ctx.groups.engine = new_engine
        agent.on_engine = follow
    limits = ConnectionLimits(max_frame_size=args.max_frame_bytes,
                              idle_timeout=args.connections_max_idle_ms / 1000)
    server = BrokerServer(ctx, listen_host, listen_port, limits)
    await server.start()
    if args.advertise is None and listen_port == 0:
        ctx.port = server.port
    groups_task = asyncio.create_task(ctx.groups.run())
    log.info("broker %d (storage %s) listening on %s:%d, advertising %s:%d", args.node_id, args.storage,
             listen_host, server.port, ctx.host, ctx.port)
    return KafkaSide(ctx, server, groups_task)


async def serve_engine(args, engine, agent) -> None:
    """Serve Kafka clients from `engine` until SIGTERM/SIGINT (or, outside a
    cluster, until the engine halts). A cluster node's engine is replaced
    when the node registers again after being fenced; the context follows."""
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    side = None
    halted = getattr(engine, "halted", None) if agent is None else None
    try:
        side = await start_kafka_side(args, engine, agent)
        waits = [asyncio.ensure_future(stop.wait())]
        if isinstance(halted, asyncio.Event):
            waits.append(asyncio.ensure_future(halted.wait()))
        await asyncio.wait(waits, return_when=asyncio.FIRST_COMPLETED)
        for w in waits:
            w.cancel()
        if isinstance(halted, asyncio.Event) and halted.is_set():
            raise EngineHalted(getattr(engine, "failed", None) or "storage engine halted")
        log.info("shutting down")
    finally:
        if side is not None:
            await side.close()


def run(args) -> int:
    configure_logging(args.log_level)
    from reference import bugs
    try:
        bugs.enable(getattr(args, "bug", []) or [])
    except bugs.UnknownBug as exc:
        log.error("%s", exc)
        return 2
    try:
        asyncio.run(serve(args))
    except EngineHalted as exc:
        log.critical("exiting: storage engine halted: %s", exc)
        return 1
    except Exception as exc:
        if not _recovery_refused(exc):
            raise
        log.critical("exiting: recovery refused to serve: %s", exc)
        return EXIT_RECOVERY_REFUSED
    except SystemExit as exc:
        if isinstance(exc.code, str):
            log.error("%s", exc.code)
            return 2
        raise
    return 0


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="highwater broker",
                                     description="The Highwater reference broker (Kafka protocol, WAL + S3).")
    add_arguments(parser)
    return run(parser.parse_args(argv))


if __name__ == "__main__":
    sys.exit(main())
