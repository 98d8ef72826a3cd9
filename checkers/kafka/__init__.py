"""Jepsen's Kafka queue analysis (jepsen.tests.kafka), over a parsed history.

Everything here is a pure function of a ``History`` (see history.py) and an
options dict. The stages follow Jepsen's, one module each:

1. ``extract``: per op, its sends [(key, offset, value)] and its reads
   {key: [(offset, value), ...]}, plus writer-of / failed / ok-read indexes.
2. ``orders``: per key, the version order: offset -> values from sends that
   must have committed (ok, or info and seen by an ok read) and from every
   poll, compacted into a gap-free *index* (transaction markers take
   offsets).
3. ``cases``: one function per anomaly type, each returning witnesses.
4. ``graph``: the dependency graph and ``cycles.find_cycles`` for G0 / G1c
   and their -process / -realtime variants.

Two backends do the stages that walk every read, send or op: ``LISTS``, the
reference, over each op's decoded value; and ``TABLES``, when the reader
kept poll results as arrays (``History.polls``), over flat arrays
(``tables.ReadTable``) with compiled walks (``cases_tables``, the kernels in
``tables`` and ``graph``). ``extract`` below chooses, once per analysis; the
stages then ask ``a.backend``. Tests hold the two to identical results
(tests/test_checkers_kafka_kernels.py, test_checkers_fastpath.py).
"""
from __future__ import annotations

from typing import Callable, NamedTuple

from ..history import History, no_gc
from . import cases, cases_tables, graph, orders, tables
from . import extract as _lists
from .extract import TXN_FS, Analysis

__all__ = ["ALL_TYPES", "DEFAULT_OPTIONS", "LISTS", "TABLES", "TXN_FS", "Analysis", "Backend",
           "KafkaChecker", "allowed_types", "analyze", "extract"]

# Anomaly types that fail a test unless allowed.
ALL_TYPES = ("inconsistent-offsets", "duplicate", "lost-write", "G1a",
             "precommitted-read", "poll-skip", "nonmonotonic-poll",
             "int-poll-skip", "int-nonmonotonic-poll", "int-send-skip",
             "int-nonmonotonic-send", "nonmonotonic-send", "unseen",
             "garbage-read",
             "G0", "G0-process", "G0-realtime", "G1c", "G1c-process",
             "G1c-realtime")

DEFAULT_OPTIONS = {
    # Infer write-write edges from the log order (Jepsen's --ww-deps).
    "ww_deps": True,
    # Search dependency cycles at all.
    "cycles": True,
    "cycle_budget_s": 30.0,
    # Witnesses kept per anomaly type in the result (counts are exact).
    "max_witnesses": 32,
    # Values listed in one "skipped" witness field.
    "max_skipped": 32,
    # None: Jepsen's defaults (see allowed_types); else a set of type names.
    "allowed_anomalies": None,
    # Added to whatever allowed set is in force.
    "allow": (),
    # Points kept in the "unseen over time" series.
    "series_points": 1000,
}


class Backend(NamedTuple):
    """How an analysis holds the history's reads and sends, and the stages
    whose work depends on that (each a function of the Analysis)."""
    name: str
    extract: Callable          # history -> Analysis, or None if it cannot hold it
    version_orders: Callable   # a -> a.orders, a.inconsistent
    ops_writing: Callable      # (a, at_least, reading) -> [(op id, sends)]
    g1a: Callable              # (a, {key: failed values read}) -> witnesses
    int_poll: Callable         # (a, max_skipped) -> (skips, nonmonotonic)
    poll: Callable             # (a, max_skipped) -> (skips, nonmonotonic)
    nonmonotonic_send: Callable
    unseen_and_lag: Callable   # (a, series_points) -> (witness, series, lag)
    vertices: Callable         # a -> bytearray: ops in the dependency graph
    columns: Callable          # a -> (ok, process number) per op
    ww_wr_edges: Callable      # (a, vertex, ww_deps) -> (most edges, fill)


LISTS = Backend("lists", _lists.extract, orders.version_orders, cases.ops_writing,
                cases.g1a_reads, cases.int_poll_cases, cases.poll_cases,
                cases.nonmonotonic_send_cases, cases.unseen_and_lag, graph.vertices,
                graph.columns, graph.ww_wr_edges)

TABLES = Backend("tables", tables.extract_tables, orders.version_orders_table,
                 cases_tables.ops_writing, cases_tables.g1a_reads,
                 cases_tables.int_poll_cases, cases_tables.poll_cases,
                 cases_tables.nonmonotonic_send_cases, cases_tables.unseen_and_lag_table,
                 graph.vertices_table, graph.columns_table, graph.ww_wr_edges_table)


def extract(history: History, backend: Backend | None = None) -> Analysis:
    """The analysis' indexes and version orders, by the backend chosen
    here: TABLES when the reader kept poll results as arrays and the
    arrays can hold every read and send, else LISTS (or the one given:
    LISTS, for the reference on any history)."""
    a = None
    if backend is not LISTS:
        a = TABLES.extract(history)
        if a is not None:
            a.backend = TABLES
    if a is None:
        a = LISTS.extract(history)
        a.backend = LISTS
    a.backend.version_orders(a)
    return a


# ---------------------------------------------------------------- the check
def allowed_types(a: Analysis, options) -> set:
    """Jepsen's allowed-error-types: int-send-skip and G0* always; poll-skip
    and nonmonotonic-poll when consumers subscribe (rebalances legitimately
    skip). G1c* with ww edges only when there are transactions, whose writes
    Kafka does not isolate (Jepsen allows it for any ww-deps run; without
    transactions a G1c-realtime is a real ordering violation)."""
    if options.get("allowed_anomalies") is not None:
        allowed = set(options["allowed_anomalies"])
    else:
        allowed = {"int-send-skip", "G0", "G0-process", "G0-realtime"}
        if a.has_subscribe:
            allowed |= {"poll-skip", "nonmonotonic-poll"}
        if options.get("ww_deps") and a.has_txn:
            allowed |= {"G1c", "G1c-process", "G1c-realtime"}
    allowed |= set(options.get("allow") or ())
    return allowed


def analyze(history: History, options=None, backend: Backend | None = None) -> dict:
    """The full Kafka analysis. Returns {"valid", "anomalies" (all found,
    witnesses capped), "anomaly_counts", "anomaly_types", "allowed",
    "realtime_lag", "unseen_series", ...}. backend: see extract."""
    opts = dict(DEFAULT_OPTIONS)
    if options:
        opts.update({k: v for k, v in options.items() if k in DEFAULT_OPTIONS})
    with no_gc():
        a = extract(history, backend)
        b = a.backend
        ms = opts["max_skipped"]
        found = {}
        found["inconsistent-offsets"] = a.inconsistent
        found["duplicate"] = cases.duplicate_cases(a)
        found["G1a"] = cases.g1a_cases(a)
        found["garbage-read"] = cases.garbage_read_cases(a)
        found["precommitted-read"] = cases.precommitted_read_cases(a)
        found["lost-write"] = cases.lost_write_cases(a)
        found["int-poll-skip"], found["int-nonmonotonic-poll"] = b.int_poll(a, ms)
        found["int-send-skip"], found["int-nonmonotonic-send"] = cases.int_send_cases(a, ms)
        found["poll-skip"], found["nonmonotonic-poll"] = b.poll(a, ms)
        found["nonmonotonic-send"] = b.nonmonotonic_send(a)
        unseen, series, lag = b.unseen_and_lag(a, opts["series_points"])
        if unseen:
            found["unseen"] = [unseen]
        graph_stats = None
        if opts["cycles"]:
            cycles, graph_stats = graph.cycle_cases(a, opts)
            found.update(cycles)
    found = {t: cs for t, cs in found.items() if cs}
    allowed = allowed_types(a, opts)
    types = sorted(found)
    bad = [t for t in types if t not in allowed]
    cap = opts["max_witnesses"]
    result = {
        "valid": not bad,
        "anomaly_types": types,
        "bad_anomaly_types": bad,
        "allowed": [t for t in types if t in allowed],
        "anomalies": {t: found[t][:cap] for t in types},
        "anomaly_counts": {t: len(found[t]) for t in types},
        "keys": len(a.orders),
        "realtime_lag": lag,
        "unseen_series": [{"time": t, "unseen": u} for t, u in series],
    }
    if graph_stats is not None:
        result["graph"] = graph_stats
    return result


class KafkaChecker:
    name = "kafka"

    def check(self, history: History, options=None) -> dict:
        return analyze(history, options)
