"""The bug zoo in CI: every planted bug of the reference is found by the
chaos test of its zoo case (one seed here; `highwater zoo` runs three), with
one of the anomalies the case expects, and the clean reference passes the
same test. A bug the harness stops catching turns this red."""
from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from harness.zoo import CASES, zoo
from reference.bugs import BUGS


def test_every_zoo_case_names_a_planted_bug_and_an_anomaly():
    assert set(CASES) <= set(BUGS)
    for name, case in CASES.items():
        assert case.expect, name
        assert case.nemesis, name


def test_zoo_refuses_a_bug_it_has_no_case_for(tmp_path):
    lines: list[str] = []
    assert zoo(["no-such-bug"], seeds=[1], store=str(tmp_path), out=lines.append) == 2
    assert "no zoo case for no-such-bug" in lines[0]


@pytest.mark.timeout(420)
@pytest.mark.parametrize("bug", sorted(CASES))
def test_the_zoo_finds_the_bug_and_the_clean_reference_passes(bug, tmp_path):
    lines: list[str] = []
    code = zoo([bug], seeds=[1], store=str(tmp_path / "store"), out=lines.append)
    text = "\n".join(lines)
    rows = [ln for ln in lines if ln.startswith(bug)]
    assert len(rows) == 1, text
    found = re.split(r"\s{2,}", rows[0])[2]
    assert found in CASES[bug].expect, text
    if bug == "trim-before-commit":
        _a_node_that_refuses_to_come_back_skips_the_final_polls(Path(rows[0].split()[-1]))
    clean = [ln for ln in lines if "(clean reference)" in ln]
    assert len(clean) == 1 and "passes" in clean[0], text
    assert code == 0, text



def _a_node_that_refuses_to_come_back_skips_the_final_polls(run_dir: Path) -> None:
    # trim-before-commit's run: the node's recovery sees the hole and refuses
    # (exit 3) at every start. Nothing can answer a final poll, so none is
    # made (each would wait out its bootstrap), every key falls short, and
    # every acknowledged value is unseen: the run is invalid, never valid.
    results = json.loads((run_dir / "results.json").read_text())
    info = results["run"]
    assert results["valid"] is False and "unseen" in results["anomaly_types"], results["anomaly_types"]
    assert any(e.startswith("final polls skipped: no node would start (n1)") for e in info["harness_errors"])
    assert info["nodes_exited_by_themselves"] == {"n1": 3}
    assert info["final_polls_short"] and all(v["reached"] == -1 for v in info["final_polls_short"].values())
    log = (run_dir / "nodes" / "n1" / "broker.log").read_text()
    assert "recovery refused to serve: WAL recovery found acknowledged data missing" in log
