"""Options: durations, TOML test files, and bad input refused with exit 2."""
from __future__ import annotations

import subprocess
import sys

import pytest

from harness.durations import parse_duration, parse_size
from harness.options import OptionError, load_test_file, resolve


@pytest.mark.parametrize("text,seconds", [("500ms", 0.5), ("10s", 10), ("2m", 120), ("1h", 3600), ("7", 7),
                                          (3, 3.0), ("1.5s", 1.5)])
def test_parse_duration(text, seconds):
    assert parse_duration(text) == seconds


@pytest.mark.parametrize("text", ["", "ten", "5 minutes", "-1s", "1d"])
def test_parse_duration_rejects(text):
    with pytest.raises(ValueError):
        parse_duration(text)


@pytest.mark.parametrize("text,size", [("64MiB", 64 << 20), ("4M", 4 << 20), ("512k", 512 << 10), ("100", 100)])
def test_parse_size(text, size):
    assert parse_size(text) == size


def test_test_file_then_flags(tmp_path):
    f = tmp_path / "short.toml"
    f.write_text('time_limit = "20s"\nnemesis = "kill,pause"\nconcurrency = 2\n')
    o = resolve(load_test_file(f), {"concurrency": 3})
    assert o["name"] == "short" and o["time_limit"] == 20 and o["concurrency"] == 3
    assert o["nemesis"] == ["kill", "pause"]
    assert isinstance(o["seed"], int)


def test_unknown_key_in_test_file(tmp_path):
    f = tmp_path / "bad.toml"
    f.write_text('time_limmit = "20s"\n')
    with pytest.raises(OptionError, match="time_limmit"):
        load_test_file(f)


@pytest.mark.parametrize("flags,needle", [({"time_limit": "soon"}, "duration"), ({"concurrency": 0}, "concurrency"),
                                          ({"nemesis_targets": "some"}, "nemesis-targets"),
                                          ({"db": "mongo"}, "--db"), ({"reads_to_end": "yes"}, "reads_to_end")])
def test_bad_options(flags, needle):
    with pytest.raises(OptionError, match=needle):
        resolve(None, flags)


def test_run_with_bad_option_exits_2_before_starting_anything(tmp_path):
    r = subprocess.run([sys.executable, "-m", "harness.cli", "run", "--time-limit", "forever",
                        "--store", str(tmp_path)], capture_output=True, text=True, timeout=60)
    assert r.returncode == 2
    assert "forever" in r.stderr
    assert not any(tmp_path.iterdir())


def test_run_with_unknown_fault_exits_2(tmp_path):
    r = subprocess.run([sys.executable, "-m", "harness.cli", "run", "--nemesis", "meteor",
                        "--store", str(tmp_path)], capture_output=True, text=True, timeout=60)
    assert r.returncode == 2
    assert "meteor" in r.stderr
