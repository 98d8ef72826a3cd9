"""pytest plugin: chaos tests in a user's own CI.

    @pytest.mark.chaos(nemesis="kill,pause", nodes=1)
    def test_survives_kills(highwater_cluster):
        highwater_cluster.run().assert_valid()

`highwater_cluster` runs Highwater tests (the options of `highwater run`,
as keyword arguments: from the `chaos` marker, then `run(**overrides)`)
against the reference (the default) or the user's own target
(`--highwater-db external --highwater-recipe FILE`). A failing run fails the
test with its verdict, its anomalies and its store directory's path; the
path is also a JUnit XML property (`highwater_store`). Command-line options:
`--highwater-time-limit` (every chaos test's workload duration),
`--highwater-store` (store root; default: a directory of pytest's tmp),
`--highwater-db`, `--highwater-recipe`.
"""
from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

import pytest


def pytest_addoption(parser):
    group = parser.getgroup("highwater", "Highwater chaos tests")
    group.addoption("--highwater-time-limit", default=None,
                    help="workload duration of every chaos test, e.g. 30s (default: the marker's, else 30s)")
    group.addoption("--highwater-store", default=None, help="store root for the runs (default: pytest's tmp)")
    group.addoption("--highwater-db", default=None, help="target: reference (default), external, tansu")
    group.addoption("--highwater-recipe", default=None, help="the external target's TOML recipe")


def pytest_configure(config):
    config.addinivalue_line("markers", "chaos(**options): a Highwater chaos test; options are "
                                       "`highwater run`'s, with underscores (nemesis=..., nodes=...)")


class ChaosFailed(AssertionError):
    pass


@dataclass
class ChaosResult:
    exit_code: int
    run_dir: Path | None
    results: dict = field(default_factory=dict)

    @property
    def valid(self):
        return self.results.get("valid")

    @property
    def anomalies(self) -> list[str]:
        return [t for t in self.results.get("anomaly_types", []) if t not in self.results.get("allowed", [])]

    def describe(self) -> str:
        if self.run_dir is None:
            return f"highwater could not run (exit {self.exit_code}); see the output above"
        word = {True: "valid", False: "INVALID"}.get(self.valid, "unknown")
        reasons = "; ".join(self.results.get("reasons", [])[:3])
        return (f"highwater: {word}" + (f" ({', '.join(self.anomalies)})" if self.anomalies else "")
                + (f": {reasons}" if reasons else "")
                + f"\n  store directory: {self.run_dir}\n  run page: {self.run_dir / 'index.html'}")

    def assert_valid(self) -> "ChaosResult":
        if self.valid is not True:
            raise ChaosFailed(self.describe())
        return self


class HighwaterCluster:
    """Runs chaos tests with the options of the test's `chaos` marker."""

    def __init__(self, base: dict, record_property=None):
        self.base = dict(base)
        self.record_property = record_property
        self.results: list[ChaosResult] = []

    def run(self, **overrides) -> ChaosResult:
        from harness.options import DEFAULTS, resolve
        from harness.run_test import execute_test
        wanted = {**self.base, **overrides}
        unknown = sorted(set(wanted) - set(DEFAULTS))
        if unknown:
            raise pytest.UsageError(f"highwater chaos options: unknown {', '.join(unknown)}; "
                                    f"known: {', '.join(sorted(DEFAULTS))}")
        options = resolve(None, wanted)
        code, run_dir = execute_test(options, announce=False)
        results = {}
        if run_dir is not None and (run_dir / "results.json").exists():
            results = json.loads((run_dir / "results.json").read_text())
        result = ChaosResult(code, run_dir, results)
        self.results.append(result)
        if self.record_property is not None and run_dir is not None:
            self.record_property("highwater_store", str(run_dir))
        return result


@pytest.fixture
def highwater_cluster(request, tmp_path_factory, record_property):
    config = request.config
    store = config.getoption("--highwater-store") or str(tmp_path_factory.mktemp("highwater-store"))
    base = {"store": store, "quiet": True, "name": request.node.name.replace("[", "-").replace("]", "")}
    marker = request.node.get_closest_marker("chaos")
    if marker is not None:
        base.update(marker.kwargs)
    base.setdefault("time_limit", "30s")
    for flag, key in (("--highwater-time-limit", "time_limit"), ("--highwater-db", "db"),
                      ("--highwater-recipe", "recipe")):
        value = config.getoption(flag)
        if value:
            base[key] = value
    return HighwaterCluster(base, record_property)
