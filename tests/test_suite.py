"""A directory of TOML tests runs as a suite; a bad file refuses the whole
suite, naming the file, the line and the reason, before anything starts."""
from __future__ import annotations

import subprocess
import sys

import pytest

from harness.s3server import s3_client


def _run(*args, timeout=60):
    return subprocess.run([sys.executable, "-m", "harness.cli", "run", *map(str, args)],
                          capture_output=True, text=True, timeout=timeout)


def test_unknown_key_refuses_the_suite_with_its_line(tmp_path):
    suite = tmp_path / "suite"
    suite.mkdir()
    (suite / "a.toml").write_text('time_limit = "5s"\n')
    (suite / "b.toml").write_text('nemesis = "kill"\n\nnemisis_interval = "3s"\n')
    r = _run(suite, "--store", tmp_path / "store")
    assert r.returncode == 2
    assert "b.toml" in r.stderr and "nemisis_interval (line 3)" in r.stderr
    assert not (tmp_path / "store").exists()


def test_malformed_file_refuses_the_suite_with_its_line(tmp_path):
    suite = tmp_path / "suite"
    suite.mkdir()
    (suite / "a.toml").write_text('time_limit = "5s"\nrate = = 3\n')
    r = _run(suite, "--store", tmp_path / "store")
    assert r.returncode == 2 and "a.toml" in r.stderr and "line 2" in r.stderr


def test_bad_value_in_a_suite_is_refused_before_any_test_runs(tmp_path):
    suite = tmp_path / "suite"
    suite.mkdir()
    (suite / "a.toml").write_text('time_limit = "5s"\n')
    (suite / "b.toml").write_text('concurrency = 0\n')
    r = _run(suite, "--store", tmp_path / "store")
    assert r.returncode == 2 and "concurrency" in r.stderr and not (tmp_path / "store").exists()


@pytest.mark.timeout(240)
def test_a_suite_runs_each_test_and_prints_a_line_each(tmp_path, s3_server):
    s3_client(s3_server.endpoint).create_bucket(Bucket="suite")
    suite = tmp_path / "suite"
    suite.mkdir()
    (suite / "one.toml").write_text('time_limit = "5s"\nnemesis = "none"\nnodes = 1\nrate = 30\nfinal_time_limit = "10s"\n')
    (suite / "two.toml").write_text('time_limit = "5s"\nnemesis = "none"\nnodes = 1\nrate = 30\nfinal_time_limit = "10s"\n'
                                    'client = "librdkafka"\n')
    r = _run(suite, "--store", tmp_path / "store", "--s3-endpoint", s3_server.endpoint, "--bucket", "suite",
             timeout=230)
    lines = [ln for ln in r.stdout.splitlines() if ln.startswith(("one.toml", "two.toml"))]
    assert r.returncode == 0, r.stdout + r.stderr[-2000:]
    assert [ln.split("\t")[:2] for ln in lines] == [["one.toml", "valid"], ["two.toml", "valid"]]
    assert (tmp_path / "store" / "one").is_dir() and (tmp_path / "store" / "two").is_dir()
