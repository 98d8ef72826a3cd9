"""The target ("db") interface: what the runner and the nemeses may ask of a
system under test. The runner never asks for a particular class; a fault
asks the target for the *control* it needs (`process`, `network`,
`s3_proxy`, `volume`, `clock`, `reassign`) and the target either has it or
says why not (`unsupported`), so an impossible fault is refused at start
with the reason.

Controls (duck-typed, documented here):

- process: `kill_node(name)`, `start_node(name)`, `pause_node(name)`,
  `resume_node(name)` on the target itself.
- network: `target.network()` -> an object with `cut(links)` and `heal()`;
  `links` is a list of (a, b) pairs of endpoint names: node names, "client",
  "s3" (both directions are cut).
- s3_proxy: `target.s3_proxy(node)` -> the node's S3 fault proxy
  (`nemeses.s3_proxy`).
- volume: `target.volume(node)` -> the node's volume control (detach/attach,
  lose-unsynced, slow, error).
- clock: `target.clock(node)` -> an object with `set_offset(seconds)`,
  `strobe(...)`, `reset()`.
- reassign: `target.reassign(partitions)` moves partitions between live
  brokers.
- bug: the target can switch on the reference's planted bugs (`--bug`).
"""
from __future__ import annotations

import abc
from pathlib import Path

CONTROLS = ("process", "pause", "network", "s3_proxy", "volume", "clock", "reassign", "lose_unsynced",
            "bug")


class TargetUnavailable(RuntimeError):
    """The target cannot be set up here (a missing binary, a node that did not
    start, an unreachable host); the message says which and what to do."""


class Target(abc.ABC):
    name: str = ""

    @classmethod
    @abc.abstractmethod
    def from_options(cls, options: dict, run_dir: Path | None) -> "Target":
        """The target a run's options describe. With run_dir None it must not
        create or start anything: the runner asks it what it supports before
        the run begins."""

    # --- lifecycle ------------------------------------------------------------------
    @abc.abstractmethod
    def setup(self) -> None:
        """Start everything; raise an exception with a clear message if it cannot."""

    @abc.abstractmethod
    def teardown(self) -> None:
        """Stop everything setup started; never raise."""

    @property
    @abc.abstractmethod
    def bootstrap_servers(self) -> str: ...

    @property
    @abc.abstractmethod
    def node_names(self) -> list[str]: ...

    def node_logs(self) -> dict[str, Path]:
        """Each node's log file, for the store and the run page."""
        return {}

    # --- capabilities -----------------------------------------------------------
    def unsupported(self, control: str) -> str | None:
        """None if this target offers `control` (one of CONTROLS), else why not."""
        return f"target {self.name} does not offer {control}"

    # --- process control (the `process` / `pause` controls) -------------------------
    def start_node(self, name: str) -> None:
        raise NotImplementedError

    def kill_node(self, name: str) -> None:
        raise NotImplementedError

    def pause_node(self, name: str) -> None:
        raise NotImplementedError

    def resume_node(self, name: str) -> None:
        raise NotImplementedError

    def died_on_their_own(self) -> dict[str, int]:
        """Nodes that exited without the harness stopping them (a finding)."""
        return {}

    # --- cluster knowledge ------------------------------------------------------
    def primaries(self) -> list[str]:
        """The nodes whose loss hurts most: the controller (first, when the
        target has one: `--nemesis-targets controller` takes it) and the
        leaders of the most partitions (`--nemesis-targets primaries`).
        Default: the first node."""
        return self.node_names[:1]

    def run_info(self) -> dict:
        """What the target observed during the run (failovers and their
        timings, storage path counters, ...), for results.json."""
        return {}


REGISTRY: dict[str, str] = {
    "reference": "harness.db.reference:ReferenceCluster",
    "tansu": "harness.db.tansu:TansuTarget",
    "external": "harness.db.external:ExternalTarget",
}


def target_class(name: str):
    """The Target class registered for `--db name`."""
    import importlib
    try:
        module, _, cls = REGISTRY[name].partition(":")
    except KeyError:
        raise ValueError(f"--db {name!r}: unknown target; known: {', '.join(sorted(REGISTRY))}") from None
    return getattr(importlib.import_module(module), cls)
