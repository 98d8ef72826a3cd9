"""`highwater`: the command line. One verb per job; every verb that judges
exits 0 valid, 1 invalid, 2 could not run, 3 unknown."""
from __future__ import annotations

import argparse
import json
import logging
import signal
import sys
from pathlib import Path

EXIT_VALID, EXIT_INVALID, EXIT_CANNOT_RUN, EXIT_UNKNOWN = 0, 1, 2, 3


def _add_run_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("test_file", nargs="?", help="a TOML test file (keys are these flags with underscores), "
                                                "or a directory of them: a suite, run in turn")
    p.add_argument("--name", help="test name, the store sub-directory (default: the test file's stem or 'queue')")
    p.add_argument("--db", help="system under test: reference (default), tansu (Tansu 0.6.0 on the embedded "
                                "SeaweedFS), external (any Kafka-compatible system, described by --recipe)")
    p.add_argument("--recipe", help="the TOML recipe of an --db external system: its nodes, the commands that "
                                    "start, kill, pause and resume them, its logs, its S3 (see examples/)")
    p.add_argument("--nodes", help="number of nodes (default: 3 reference nodes, 1 Tansu; an external recipe lists its "
                                   "own), or netns:N (reference nodes in network namespaces, driven over SSH)")
    p.add_argument("--client", help="workload client: kafka-python (default) or librdkafka (confluent-kafka)")
    p.add_argument("--sub-via", help="how consumers take keys: assign (default), subscribe (consumer groups), "
                                     "or assign,subscribe (each reassignment picks one)")
    p.add_argument("--workload", help="queue (default: Jepsen's sends and polls) or produce (sends only, "
                                      "--send-batch values per operation, for throughput; final polls still check)")
    p.add_argument("--send-batch", type=int, help="values per send operation in the produce workload (default 10)")
    p.add_argument("--key-dist", help="spread of writes over the active keys: uniform (default) or zipf")
    p.add_argument("--keys", type=int, help="active keys at a time (default 4)")
    p.add_argument("--max-writes-per-key", type=int, help="values per key before it retires (default 256)")
    p.add_argument("--concurrency", type=int, help="client processes (default 4)")
    p.add_argument("--rate", type=float, help="operations per second, all clients together (default 50)")
    p.add_argument("--time-limit", help="workload duration with faults, e.g. 60s (default)")
    p.add_argument("--final-time-limit", help="bound on the final polls (default 30s)")
    p.add_argument("--recovery-wait", help="pause after healing, before the final polls (default 3s)")
    p.add_argument("--request-timeout", help="client request timeout (default 5s)")
    p.add_argument("--nemesis", help="comma-separated faults: kill, pause, …, all, none (default kill)")
    p.add_argument("--nemesis-interval", help="time between faults and fault duration (default 10s)")
    p.add_argument("--nemesis-options", help='per-fault parameters as JSON, e.g. \'{"s3-slow": {"latency": '
                                             '"50ms..500ms", "ops": "put"}}\' (a [nemesis_options] table in TOML)')
    p.add_argument("--nemesis-targets", help="one, minority, majority, all, primaries (the controller or a node leading the "
                                                   "most partitions), controller (default one)")
    p.add_argument("--recovery-bound", help="fail the run if a key is unavailable longer than this")
    p.add_argument("--seed", type=int, help="random seed (default: random, recorded in test.json)")
    p.add_argument("--store", help="store root directory (default ./store)")
    p.add_argument("--s3-endpoint", help="use this S3 endpoint instead of starting SeaweedFS")
    p.add_argument("--bucket", help="S3 bucket (default highwater)")
    p.add_argument("--broker-args", help="extra flags for every reference broker, e.g. '--upload-bytes 1MiB'")
    p.add_argument("--volumes", help="reference nodes' volumes: local (FUSE, default) or directory (no I/O "
                                     "fencing; for machines without FUSE)")
    p.add_argument("--bug", help="switch on planted bugs of the reference broker (comma-separated; see "
                                 "`highwater zoo`): the run should then be INVALID")
    p.add_argument("--reads-to-end", action="store_true", default=None,
                   help="after each poll, ask the leaders of the keys it read for their end offsets: a poll that "
                        "reached the end must hold every send acknowledged before it began (checked by the "
                        "linearizable checker's log model; catches stale reads)")
    p.add_argument("--quiet", action="store_true", default=None, help="no progress output")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="highwater", description=__doc__)
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    sub = parser.add_subparsers(dest="verb", required=True)

    run = sub.add_parser("run", help="run a chaos test (default: 60 s on a local reference broker + SeaweedFS)")
    _add_run_arguments(run)

    check = sub.add_parser("check", help="check stored histories (store directories, history.jsonl "
                                          "or Jepsen history.edn files), one JSON result line per path")
    check.add_argument("paths", nargs="+")
    check.add_argument("--checker", default=None,
                       help="comma-separated checkers: kafka, linearizable, recovery, perf "
                            "(default kafka,recovery,perf; linearizable only for --model "
                            "register|cas-register|kv)")
    check.add_argument("--model", choices=("log", "register", "cas-register", "kv"),
                       help="linearizability model (adds the linearizable checker): log judges "
                            "a Kafka history per partition; register, cas-register and kv judge "
                            "Jepsen/Knossos-style read/write/cas histories")
    check.add_argument("--format", choices=("jsonl", "edn"),
                       help="history format (default: edn for *.edn files and store "
                            "directories holding only history.edn, else jsonl)")
    check.add_argument("--recovery-bound", help="flag unavailability windows longer than this")
    check.add_argument("--linearizable-budget", help="time budget of the linearizability "
                                                    "search per path (default 10s)")
    check.add_argument("--no-require-activity", action="store_true",
                       help="do not demand evidence of real work (for hand-written histories)")
    check.add_argument("--ww-deps", action=argparse.BooleanOptionalAction, default=None,
                       help="infer write-write dependencies from each partition's log order "
                            "(Jepsen's --ww-deps; the default), or not (--no-ww-deps: only "
                            "write-read, process and realtime edges in the cycle search)")

    rep = sub.add_parser("replay", help="run a stored test again: same options, seed and fault schedule; "
                                         "exit 0 when its verdict came back in most replays")
    rep.add_argument("run_dir", help="a run's store directory (e.g. store/latest)")
    rep.add_argument("--times", type=int, default=1, help="how many replays (default 1)")
    rep.add_argument("--store", help="store root for the replays (default: the original's)")
    rep.add_argument("--quiet", action="store_true", help="no progress output")

    zoo = sub.add_parser("zoo", help="run the chaos test that should expose each planted bug of the reference; "
                                     "exit 0 when every one is detected and the clean reference passes")
    zoo.add_argument("bugs", nargs="*", help="only these bugs (default: all)")
    zoo.add_argument("--seeds", default="1,2,3", help="comma-separated seeds (default 1,2,3)")
    zoo.add_argument("--no-clean", action="store_true", help="skip the clean reference's runs")
    zoo.add_argument("--time-limit", help="override each case's workload duration")
    zoo.add_argument("--store", default="store", help="store root (default ./store)")

    sim = sub.add_parser("sim", help="run the reference cluster under the deterministic simulator (virtual time, "
                                     "simulated disks, S3 and network), seed after seed; a failing seed is "
                                     "replayed byte for byte from the command it prints")
    from harness.sim import command as sim_command
    sim_command.add_arguments(sim)

    serve = sub.add_parser("serve", help="browse every stored run on 127.0.0.1 (prints its URL first)")
    serve.add_argument("store", nargs="?", default="store", help="store root (default ./store)")
    serve.add_argument("--port", type=int, default=8080, help="port on 127.0.0.1 (default 8080; 0: any free)")

    broker = sub.add_parser("broker", help="run one reference broker in the foreground")
    try:
        from reference.broker import add_arguments as add_broker_arguments
        add_broker_arguments(broker)
    except ImportError as e:  # keep the rest of the CLI usable
        broker.set_defaults(broker_import_error=str(e))

    cluster = sub.add_parser("cluster", help="run a local reference cluster until Ctrl-C; its first stdout "
                                              "line is JSON (bootstrap, s3, controller, nodes), then one "
                                              "JSON line per failover")
    cluster.add_argument("--nodes", type=int, default=3, help="number of nodes (default 3)")
    cluster.add_argument("--dir", help="where nodes, volumes, S3 data and logs live (default: a new "
                                       "directory under store/cluster/)")
    cluster.add_argument("--restart-after", help="restart a node that died this long after it died "
                                                 "(default: it stays down; failover is the cluster's job)")
    cluster.add_argument("--s3-endpoint", help="use this S3 instead of starting SeaweedFS")
    cluster.add_argument("--bucket", default="highwater")
    cluster.add_argument("--session-timeout", default="3s")
    cluster.add_argument("--heartbeat-interval", default="500ms")
    cluster.add_argument("--broker-args", default="", help="extra broker flags, one shell-quoted string")

    reassign = sub.add_parser("reassign", help="move partitions between live brokers of a cluster "
                                                "(Kafka's AlterPartitionReassignments); one JSON line")
    reassign.add_argument("--bootstrap", required=True, help="HOST:PORT[,...] of the cluster")
    reassign.add_argument("moves", nargs="+", metavar="TOPIC:PARTITION=NODE",
                          help="e.g. hw-3:0=2 moves partition 0 of hw-3 to node 2")
    reassign.add_argument("--timeout", default="120s")

    s3 = sub.add_parser("s3", help="run the embedded S3 (SeaweedFS) in the foreground")
    s3.add_argument("--dir", default="store/s3", help="data directory (default store/s3)")
    s3.add_argument("--port", type=int, help="S3 port (default: a free one)")
    s3.add_argument("--bucket", default="highwater")
    return parser


def _interrupt(signum, frame):
    raise KeyboardInterrupt


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.WARNING,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    if not args.verbose:
        # Clients complain loudly while a fault is in force: that is expected,
        # and it goes to the run's harness.log, not to the terminal.
        for handler in logging.getLogger().handlers:
            handler.addFilter(lambda record: not record.name.startswith("kafka"))
    # SIGTERM unwinds like Ctrl-C, so every verb tears down what it started.
    signal.signal(signal.SIGTERM, _interrupt)
    try:
        return {"run": cmd_run, "check": cmd_check, "broker": cmd_broker, "s3": cmd_s3, "cluster": cmd_cluster,
                "reassign": cmd_reassign, "replay": cmd_replay, "serve": cmd_serve, "zoo": cmd_zoo,
                "sim": cmd_sim}[args.verb](args)
    except KeyboardInterrupt:
        print("highwater: interrupted", file=sys.stderr)
        return 130


def cmd_sim(args) -> int:
    from harness.sim import command
    return command.main(args)


def cmd_run(args) -> int:
    from harness.options import OptionError, load_test_file, resolve
    from harness.run_test import run_test
    if args.test_file and Path(args.test_file).is_dir():
        return cmd_run_suite(args)
    try:
        test_file = load_test_file(args.test_file) if args.test_file else None
        options = resolve(test_file, vars(args))
    except OptionError as e:
        print(f"highwater run: {e}", file=sys.stderr)
        return EXIT_CANNOT_RUN
    return run_test(options)


def cmd_run_suite(args) -> int:
    """A directory of TOML tests: each checked first, then run in turn (flags
    given on the command line apply to every test), one line per test."""
    from harness.options import OptionError, load_suite, resolve
    from harness.run_test import execute_test
    try:
        tests = [(path, resolve(data, vars(args))) for path, data in load_suite(args.test_file)]
    except OptionError as e:
        print(f"highwater run: {e}", file=sys.stderr)
        return EXIT_CANNOT_RUN
    codes = []
    for path, options in tests:
        options["quiet"] = True
        code, run_dir = execute_test(options, announce=False)
        codes.append(code)
        verdict = "-"
        if run_dir is not None and (run_dir / "results.json").exists():
            r = json.loads((run_dir / "results.json").read_text())
            verdict = {True: "valid", False: "INVALID"}.get(r.get("valid"), "unknown")
            anomalies = ",".join(t for t in r.get("anomaly_types", []) if t not in r.get("allowed", [])) or "-"
            stats = r.get("stats", {})
            line = f"{path.name}\t{verdict}\tok={stats.get('ok')}\tanomalies={anomalies}\t{run_dir}"
        else:
            line = f"{path.name}\tcould not run (exit {code})"
        print(line, flush=True)
    for code in (EXIT_INVALID, EXIT_CANNOT_RUN, EXIT_UNKNOWN):
        if code in codes:
            return code
    return EXIT_VALID


def cmd_zoo(args) -> int:
    from harness.zoo import zoo
    try:
        seeds = [int(s) for s in args.seeds.split(",") if s.strip()]
    except ValueError:
        print(f"highwater zoo: --seeds {args.seeds!r}: comma-separated integers", file=sys.stderr)
        return EXIT_CANNOT_RUN
    return zoo(args.bugs or None, seeds, args.store, clean=not args.no_clean, time_limit=args.time_limit,
               out=lambda line: print(line, flush=True))


def cmd_serve(args) -> int:
    from harness.serve import make_server
    if not Path(args.store).is_dir():
        print(f"highwater serve: {args.store} is not a directory (a store root, e.g. ./store)", file=sys.stderr)
        return EXIT_CANNOT_RUN
    try:
        server = make_server(args.store, args.port)
    except OSError as e:
        print(f"highwater serve: cannot listen on 127.0.0.1:{args.port}: {e}", file=sys.stderr)
        return EXIT_CANNOT_RUN
    host, port = server.server_address[:2]
    print(f"http://{host}:{port}/", flush=True)
    print(f"serving {Path(args.store).resolve()}; Ctrl-C stops", file=sys.stderr, flush=True)
    try:
        server.serve_forever()
    finally:
        server.server_close()
    return EXIT_VALID


def cmd_replay(args) -> int:
    from harness.replay import replay
    if args.times < 1:
        print("highwater replay: --times must be at least 1", file=sys.stderr)
        return EXIT_CANNOT_RUN
    return replay(args.run_dir, times=args.times, store=args.store, quiet=args.quiet)


def cmd_check(args) -> int:
    from checkers import check_history, compose, exit_code
    from checkers.edn import read_edn_history
    from checkers.history import HistoryError, read_history
    from harness.durations import parse_duration
    from harness.store import resolve_history

    def _check_format(path, fmt):
        """jsonl or edn for a path: the flag, else the suffix, else what a
        store directory holds."""
        if fmt:
            return fmt
        p = Path(path)
        if p.suffix == ".edn":
            return "edn"
        if p.is_dir() and not (p / "history.jsonl").exists() and (p / "history.edn").exists():
            return "edn"
        return "jsonl"

    def _html_path(path) -> Path:
        """Where linearizability.html goes: into a store directory, or next to
        the history file (prefixed by its stem unless it is history.*)."""
        p = Path(path)
        if p.is_dir():
            return p / "linearizability.html"
        stem = p.name.split(".")[0]
        name = "linearizability.html" if stem == "history" else f"{stem}.linearizability.html"
        return p.parent / name

    generic = args.model in ("register", "cas-register", "kv")
    if args.checker is None:
        names = ("linearizable",) if generic else ("kafka", "recovery", "perf")
    else:
        names = tuple(n.strip() for n in args.checker.split(",") if n.strip())
    if args.model and "linearizable" not in names:
        names = names + ("linearizable",)
    if generic and names != ("linearizable",):
        print(f"highwater check: --model {args.model} judges read/write/cas histories with the "
              f"linearizable checker only; drop --checker {','.join(names)}", file=sys.stderr)
        return EXIT_CANNOT_RUN
    options = {"require_activity": not args.no_require_activity}
    if args.ww_deps is not None:
        options["ww_deps"] = args.ww_deps
    try:
        if args.recovery_bound:
            options["recovery_bound_s"] = parse_duration(args.recovery_bound)
        if args.linearizable_budget:
            options["linearizable_budget_s"] = parse_duration(args.linearizable_budget)
    except ValueError as e:
        print(f"highwater check: {e}", file=sys.stderr)
        return EXIT_CANNOT_RUN
    codes = []
    for path in args.paths:
        fmt = _check_format(path, args.format)
        try:
            if generic:
                from checkers.model_history import check_model_file
                lin, stats, _ = check_model_file(path, args.model, fmt, options)
                result = compose({"linearizable": lin}, stats)
            else:
                if fmt == "edn":
                    history = read_edn_history(path)
                else:
                    history = read_history(resolve_history(path))
                result = check_history(history, checkers=names, options=options)
        except (HistoryError, OSError, ValueError) as e:
            print(json.dumps({"path": str(path), "valid": "unknown", "error": str(e)}))
            print(f"highwater check: {e}", file=sys.stderr)
            codes.append(EXIT_CANNOT_RUN)
            continue
        bad_lin = result.get("anomalies", {}).get("nonlinearizable")
        if bad_lin and bad_lin[0].get("timeline") is not None:
            from checkers.render_linear import write_html
            target = _html_path(path)
            try:
                result["linearizability_html"] = write_html(bad_lin[0], target, source=str(path))
            except OSError as e:
                print(f"highwater check: cannot write {target}: {e}", file=sys.stderr)
        print(json.dumps({"path": str(path), **result}, default=str), flush=True)
        codes.append(exit_code(result))
    for code in (EXIT_INVALID, EXIT_CANNOT_RUN, EXIT_UNKNOWN):
        if code in codes:
            return code
    return EXIT_VALID


def cmd_broker(args) -> int:
    if getattr(args, "broker_import_error", None):
        print(f"highwater broker: the reference broker is unavailable: {args.broker_import_error}", file=sys.stderr)
        return EXIT_CANNOT_RUN
    from reference.broker import run
    return run(args) or 0


def cmd_s3(args) -> int:
    import time
    from harness.s3server import S3Unavailable, SeaweedS3
    server = SeaweedS3(Path(args.dir), bucket=args.bucket, port=args.port)
    try:
        server.start()
    except S3Unavailable as e:
        print(f"highwater s3: {e}", file=sys.stderr)
        return EXIT_CANNOT_RUN
    print(f"{server.endpoint} bucket={server.bucket}", flush=True)
    print(f"SeaweedFS S3 on {server.endpoint}, bucket {server.bucket}, data in {args.dir}; "
          f"log {server.log_path}; Ctrl-C stops it", file=sys.stderr, flush=True)
    try:
        while server.process is not None and server.process.poll() is None:
            time.sleep(0.5)
        print("highwater s3: SeaweedFS exited", file=sys.stderr)
        return EXIT_CANNOT_RUN
    finally:
        server.stop()


def cmd_cluster(args) -> int:
    import json
    import shlex
    import time
    from harness.db.reference import NodeFailedToStart, ReferenceCluster
    from harness.durations import parse_duration
    from harness.s3server import S3Unavailable
    if args.nodes < 1:
        print("highwater cluster: --nodes must be at least 1", file=sys.stderr)
        return EXIT_CANNOT_RUN
    try:
        restart_after = parse_duration(args.restart_after) if args.restart_after else None
    except ValueError as e:
        print(f"highwater cluster: --restart-after: {e}", file=sys.stderr)
        return EXIT_CANNOT_RUN
    run_dir = Path(args.dir) if args.dir else Path("store/cluster") / time.strftime("%Y%m%dT%H%M%S")
    run_dir.mkdir(parents=True, exist_ok=True)
    c = ReferenceCluster(run_dir, nodes_count=args.nodes, s3_endpoint=args.s3_endpoint, bucket=args.bucket,
                         broker_args=shlex.split(args.broker_args), session_timeout=args.session_timeout,
                         heartbeat_interval=args.heartbeat_interval)
    try:
        try:
            c.setup()
        except (S3Unavailable, NodeFailedToStart) as e:
            print(f"highwater cluster: {e}", file=sys.stderr)
            return EXIT_CANNOT_RUN
        print(json.dumps({"bootstrap": c.bootstrap_servers, "s3": {"endpoint": c.s3_endpoint, "bucket": c.bucket},
                          "controller": c.controller(),
                          "nodes": {n.name: {"pid": n.pid, "listen": n.address, "volume": str(n.volume)}
                                    for n in c.nodes.values()}}), flush=True)
        print(f"highwater cluster: {args.nodes} nodes in {run_dir}; Ctrl-C stops them", file=sys.stderr, flush=True)
        seen = 0
        died_at: dict[str, float] = {}
        while True:
            time.sleep(0.5)
            failovers = c.failovers()
            for f in failovers[seen:]:
                print(json.dumps({"failover": f}), flush=True)
            seen = len(failovers)
            for name, node in c.nodes.items():
                if node.process is not None and node.pid is None:   # exited (killed from outside)
                    died_at.setdefault(name, time.monotonic())
                    if restart_after is not None and time.monotonic() - died_at[name] >= restart_after:
                        print(f"highwater cluster: restarting {name}", file=sys.stderr, flush=True)
                        try:
                            c.start_node(name)
                            died_at.pop(name, None)
                        except NodeFailedToStart as e:
                            print(f"highwater cluster: {e}", file=sys.stderr, flush=True)
                else:
                    died_at.pop(name, None)
    finally:
        c.teardown()


def cmd_reassign(args) -> int:
    import json
    import time
    from harness.durations import parse_duration
    moves: dict[tuple[str, int], int] = {}
    for text in args.moves:
        try:
            left, node = text.rsplit("=", 1)
            topic, partition = left.rsplit(":", 1)
            moves[(topic, int(partition))] = int(node)
        except ValueError:
            print(f"highwater reassign: {text!r}: expected TOPIC:PARTITION=NODE", file=sys.stderr)
            return EXIT_CANNOT_RUN
    from kafka.admin import KafkaAdminClient
    from kafka.structs import TopicPartition
    started = time.monotonic()
    try:
        admin = KafkaAdminClient(bootstrap_servers=args.bootstrap,
                                 request_timeout_ms=int(parse_duration(args.timeout) * 1000))
    except Exception as e:
        print(f"highwater reassign: cannot reach {args.bootstrap}: {e}", file=sys.stderr)
        return EXIT_CANNOT_RUN
    try:
        result = admin.alter_partition_reassignments({TopicPartition(t, p): [n] for (t, p), n in moves.items()},
                                                     timeout_ms=int(parse_duration(args.timeout) * 1000))
    except Exception as e:
        print(f"highwater reassign: {e}", file=sys.stderr)
        return 1
    finally:
        admin.close()
    out = {"seconds": round(time.monotonic() - started, 3), "moves": []}
    ok = True
    for (t, p), n in moves.items():
        err = _reassign_error(result, t, p)
        ok = ok and err is None
        out["moves"].append({"topic": t, "partition": p, "node": n, "error": err})
    print(json.dumps(out), flush=True)
    return 0 if ok else 1


def _reassign_error(result: dict, topic: str, partition: int):
    """The error of one partition in kafka-python's answer (None: moved)."""
    from kafka.structs import TopicPartition
    tp = TopicPartition(topic, partition)
    if tp not in result:
        return "the broker did not report on this partition"
    err = result[tp]
    return None if err is None else getattr(err, "__name__", str(err))


if __name__ == "__main__":
    sys.exit(main())
