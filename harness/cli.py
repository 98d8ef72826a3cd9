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
    p.add_argument("test_file", nargs="?", help="a TOML test file (keys are these flags with underscores)")
    p.add_argument("--name", help="test name, the store sub-directory (default: the test file's stem or 'queue')")
    p.add_argument("--db", help="system under test: reference (default)")
    p.add_argument("--nodes", help="number of nodes (default 1)")
    p.add_argument("--client", help="workload client: kafka-python (default)")
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
    p.add_argument("--nemesis-targets", help="one, minority, majority, all, primaries (default one)")
    p.add_argument("--recovery-bound", help="fail the run if a key is unavailable longer than this")
    p.add_argument("--seed", type=int, help="random seed (default: random, recorded in test.json)")
    p.add_argument("--store", help="store root directory (default ./store)")
    p.add_argument("--s3-endpoint", help="use this S3 endpoint instead of starting SeaweedFS")
    p.add_argument("--bucket", help="S3 bucket (default highwater)")
    p.add_argument("--broker-args", help="extra flags for every reference broker, e.g. '--upload-bytes 1MiB'")
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

    broker = sub.add_parser("broker", help="run one reference broker in the foreground")
    try:
        from reference.broker import add_arguments as add_broker_arguments
        add_broker_arguments(broker)
    except ImportError as e:  # keep the rest of the CLI usable
        broker.set_defaults(broker_import_error=str(e))

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
        return {"run": cmd_run, "check": cmd_check, "broker": cmd_broker, "s3": cmd_s3}[args.verb](args)
    except KeyboardInterrupt:
        print("highwater: interrupted", file=sys.stderr)
        return 130


def cmd_run(args) -> int:
    from harness.options import OptionError, load_test_file, resolve
    from harness.run_test import run_test
    try:
        test_file = load_test_file(args.test_file) if args.test_file else None
        options = resolve(test_file, vars(args))
    except OptionError as e:
        print(f"highwater run: {e}", file=sys.stderr)
        return EXIT_CANNOT_RUN
    return run_test(options)


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


if __name__ == "__main__":
    sys.exit(main())
