"""The broker process: `highwater broker` / `python -m reference.broker`.

    highwater broker --node-id 1 --listen 127.0.0.1:9092 --volume /data/n1 \\
        --s3-endpoint http://127.0.0.1:8333 --bucket highwater

Storage is the WAL + S3 engine (`reference.storage.engine.S3Engine`). For
protocol work without S3 there is `--storage memory`, which keeps everything
in this process's memory: acknowledged writes die with the process, so it
must never be used where durability is being judged.

SIGTERM or SIGINT closes the listener, the connections and the engine
(flushing what it holds); SIGKILL is the crash the WAL is there for.
"""
from __future__ import annotations

import argparse
import asyncio
import logging
import signal
import sys

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


class EngineHalted(Exception):
    """The storage engine stopped accepting work; the process must exit so it
    can be restarted (and recover from its WAL) rather than limp on."""


async def serve(args) -> None:
    from reference.protocol.context import make_context
    from reference.server import BrokerServer, ConnectionLimits

    listen_host, listen_port = args.listen
    engine = build_engine(args)
    try:
        await engine.start()
    except Exception:
        log.exception("storage engine failed to start")
        try:
            await engine.close()
        except Exception:
            pass
        raise SystemExit("highwater broker: storage engine failed to start (see above)")
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    server = groups_task = None
    halted = getattr(engine, "halted", None)
    try:
        adv_host, adv_port = args.advertise or (listen_host, listen_port)
        if adv_host in ("0.0.0.0", "::", ""):
            adv_host = "127.0.0.1"
        ctx = make_context(engine, args.node_id, adv_host, adv_port,
                           auto_create_topics=args.auto_create_topics, default_partitions=args.default_partitions,
                           fetch_max_bytes=args.fetch_max_bytes)
        limits = ConnectionLimits(max_frame_size=args.max_frame_bytes,
                                  idle_timeout=args.connections_max_idle_ms / 1000)
        server = BrokerServer(ctx, listen_host, listen_port, limits)
        await server.start()
        if args.advertise is None and listen_port == 0:
            ctx.port = server.port
        groups_task = asyncio.create_task(ctx.groups.run())
        log.info("broker %d (storage %s) listening on %s:%d, advertising %s:%d", args.node_id, args.storage,
                 listen_host, server.port, ctx.host, ctx.port)
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
        if groups_task is not None:
            groups_task.cancel()
        if server is not None:
            await server.close()
        try:
            await engine.close()
        except Exception:
            log.exception("storage engine close failed")
        log.info("stopped")


def run(args) -> int:
    configure_logging(args.log_level)
    try:
        asyncio.run(serve(args))
    except EngineHalted as exc:
        log.critical("exiting: storage engine halted: %s", exc)
        return 1
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
