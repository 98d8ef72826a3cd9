"""The pytest plugin, as a user's CI meets it: a chaos test that passes, one
that fails (the reference with a planted bug) whose failure message points
at its store directory, JUnit XML carrying that path, and bad options refused."""
from __future__ import annotations

import re
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest

pytest_plugins = ["pytester"]

CHAOS_TESTS = '''
import pytest

@pytest.mark.chaos(nodes=1, nemesis="none", time_limit="4s", final_time_limit="10s", rate=30)
def test_quiet_reference_is_valid(highwater_cluster):
    result = highwater_cluster.run().assert_valid()
    assert result.run_dir.is_dir()

@pytest.mark.chaos(nodes=1, nemesis="kill", nemesis_interval="3s", time_limit="14s", final_time_limit="8s", rate=40,
                   bug="skip-wal-replay", seed=9, broker_args="--upload-interval 30s --upload-bytes 64MiB")
def test_broken_reference_fails(highwater_cluster):
    highwater_cluster.run().assert_valid()
'''


@pytest.mark.timeout(300)
def test_chaos_tests_pass_and_fail_with_the_store_directory_in_the_message(pytester):
    pytester.makepyfile(test_chaos=CHAOS_TESTS)
    junit = pytester.path / "junit.xml"
    result = pytester.runpytest_subprocess(f"--junitxml={junit}",
                                           "--highwater-store", str(pytester.path / "store"), timeout=280)
    result.assert_outcomes(passed=1, failed=1)
    out = result.stdout.str()
    assert "highwater: INVALID" in out
    store_dir = Path(re.search(r"store directory: (\S+)", out).group(1))
    assert (store_dir / "results.json").exists() and (store_dir / "index.html").exists()
    assert store_dir.parent.name == "test_broken_reference_fails"
    props = {p.get("name"): p.get("value") for p in ET.parse(junit).iter("property")}
    assert Path(props["highwater_store"]).parent.name in ("test_quiet_reference_is_valid",
                                                          "test_broken_reference_fails")


def test_unknown_chaos_option_is_refused(pytester):
    pytester.makepyfile(test_bad='''
import pytest

@pytest.mark.chaos(nemesys="kill")
def test_typo(highwater_cluster):
    highwater_cluster.run()
''')
    result = pytester.runpytest_subprocess(timeout=60)
    assert "unknown nemesys" in result.stdout.str() + result.stderr.str()
