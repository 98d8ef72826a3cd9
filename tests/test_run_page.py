"""The run page and `highwater serve`, seen as a user sees them: a stored run
(with a planted lost write, so there are witnesses to show) is served on
127.0.0.1 and opened in headless Chromium, which renders it with its plots;
the list page names the run with its verdict."""
from __future__ import annotations

import json
import re
import shutil
import signal
import subprocess
import sys
import time
import urllib.request

import pytest

from checkers import check_history
from checkers.history import read_history
from checkers.synth import generate, plant_anomalies
from harness.plots import write_plots
from harness.report import PLOTS, write_index

CHROMIUM = shutil.which("chromium")


@pytest.fixture
def stored_run(tmp_path):
    store = tmp_path / "store"
    run_dir = store / "queue" / "20261130T120000.000"
    run_dir.mkdir(parents=True)
    events = plant_anomalies(generate(n_ops=600, processes=4, keys=3, seed=3, nemesis_every=150))
    with open(run_dir / "history.jsonl", "w") as f:
        for e in events:
            f.write(json.dumps(e) + "\n")
    (run_dir / "nodes" / "n1").mkdir(parents=True)
    (run_dir / "nodes" / "n1" / "broker.log").write_text("line one\nbroker 1 listening on 127.0.0.1:9092\n")
    options = {"db": "reference", "nodes": 1, "client": "kafka-python", "nemesis": ["kill"], "seed": 3}
    test = {"options": options, "seed": 3, "started": 1796040000.0}
    (run_dir / "test.json").write_text(json.dumps(test))
    history = read_history(run_dir / "history.jsonl")
    results = check_history(history, checkers=("kafka", "recovery", "perf"), options={"require_activity": False})
    (run_dir / "results.json").write_text(json.dumps(results, default=str))
    write_plots(run_dir, history, results)
    write_index(run_dir, results, test)
    return store, run_dir, results


def test_the_page_shows_verdict_witnesses_plots_figures_and_logs(stored_run):
    _, run_dir, results = stored_run
    assert results["valid"] is False and "lost-write" in results["anomaly_types"]
    page = (run_dir / "index.html").read_text()
    assert ">INVALID<" in page and "lost-write" in page
    lost = results["anomalies"]["lost-write"][0]
    assert f"&quot;value&quot;: {lost['value']}" in page            # the witness itself, escaped
    for png, _ in PLOTS:
        assert (run_dir / png).stat().st_size > 5000, png
        assert f"src='{png}'" in page
    for section in ("Latency quantiles", "Realtime lag", "Recovery", "Node logs", "broker 1 listening"):
        assert section in page, section


@pytest.fixture
def served(stored_run):
    store, run_dir, results = stored_run
    proc = subprocess.Popen([sys.executable, "-m", "harness.cli", "serve", str(store), "--port", "0"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    url = proc.stdout.readline().strip()
    assert url.startswith("http://127.0.0.1:"), proc.stderr.read()
    yield url, run_dir, results
    proc.send_signal(signal.SIGINT)
    proc.wait(10)


def test_serve_lists_runs_with_verdict_target_faults_and_date(served):
    url, run_dir, _ = served
    listing = urllib.request.urlopen(url, timeout=10).read().decode()
    assert "INVALID" in listing and "lost-write" in listing and "reference" in listing and "kill" in listing
    assert "2026-" in listing
    link = re.search(r"href='([^']+index\.html)'", listing).group(1)
    assert urllib.request.urlopen(url + link, timeout=10).read().decode() == (run_dir / "index.html").read_text()


def _chromium(*args, timeout=90):
    return subprocess.run([CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic",
                           "--no-first-run", "--disable-background-networking", "--disable-component-update",
                           "--disable-sync", "--hide-scrollbars", *args],
                          capture_output=True, text=True, timeout=timeout)


@pytest.mark.skipif(CHROMIUM is None, reason="Debian's chromium is not installed (./setup.sh --test installs it)")
@pytest.mark.timeout(180)
def test_the_page_renders_in_headless_chromium_with_its_plots(served, tmp_path):
    url, run_dir, _ = served
    page_url = url + run_dir.relative_to(run_dir.parents[1]).as_posix() + "/index.html"
    profile = tmp_path / "chromium-profile"
    r = _chromium(f"--user-data-dir={profile}", "--virtual-time-budget=10000", "--dump-dom", page_url)
    dom = r.stdout
    assert "INVALID" in dom, r.stderr[-2000:]
    plots = int(re.search(r'data-plots="(\d+)"', dom).group(1))
    loaded = int(re.search(r'data-plots-loaded="(\d+)"', dom).group(1))
    assert plots == len(PLOTS) and loaded == plots, (plots, loaded)
    shot = tmp_path / "page.png"
    r = _chromium(f"--user-data-dir={profile}", "--window-size=1280,2400", "--virtual-time-budget=10000",
                  f"--screenshot={shot}", page_url)
    assert shot.exists(), r.stderr[-2000:]
    import matplotlib.image
    pixels = matplotlib.image.imread(shot)
    assert pixels.shape[:2] == (2400, 1280)
    # Not a blank page: the plots put many distinct colours on it, the
    # verdict's red among them.
    flat = (pixels[..., :3] * 255).astype(int).reshape(-1, 3)
    distinct = {tuple(p) for p in flat[:: 97]}
    assert len(distinct) > 200
    reds = ((flat[:, 0] > 180) & (flat[:, 1] < 80) & (flat[:, 2] < 80)).sum()
    assert reds > 100
    time.sleep(0)  # (nothing to wait for: chromium has exited)
