"""`highwater check` on hand-written histories: the verdict, the witness and
the exit code a user's CI depends on."""
from __future__ import annotations

import json
import subprocess
import sys


def highwater(*args, timeout=60):
    return subprocess.run([sys.executable, "-m", "harness.cli", *args], capture_output=True, text=True,
                          timeout=timeout)


def write_history(path, events):
    with open(path, "w") as f:
        for i, e in enumerate(events):
            f.write(json.dumps({"index": i, "time": i * 1000, **e}) + "\n")


LOST_WRITE = [
    {"process": 0, "type": "invoke", "f": "send", "value": [["send", "0", 1]]},
    {"process": 0, "type": "ok", "f": "send", "value": [["send", "0", [0, 1]]]},
    {"process": 0, "type": "invoke", "f": "send", "value": [["send", "0", 2]]},
    {"process": 0, "type": "ok", "f": "send", "value": [["send", "0", [1, 2]]]},
    {"process": 0, "type": "invoke", "f": "send", "value": [["send", "0", 3]]},
    {"process": 0, "type": "ok", "f": "send", "value": [["send", "0", [2, 3]]]},
    {"process": 1, "type": "invoke", "f": "poll", "value": [["poll"]]},
    # Reads offsets 0 and 2 but never 1: the value 2 was acknowledged and lost.
    {"process": 1, "type": "ok", "f": "poll", "value": [["poll", {"0": [[0, 1], [2, 3]]}]]},
]


def test_check_reports_lost_write_and_exits_1(tmp_path):
    path = tmp_path / "history.jsonl"
    write_history(path, LOST_WRITE)
    r = highwater("check", str(path), "--no-require-activity")
    assert r.returncode == 1, r.stderr
    result = json.loads(r.stdout.splitlines()[0])
    assert result["valid"] is False
    assert "lost-write" in result["anomaly_types"]
    lost = result["anomalies"]["lost-write"]
    assert [(w["key"], w["value"]) for w in lost] == [("0", 2)]


def test_check_valid_history_exits_0(tmp_path):
    events = LOST_WRITE[:-1] + [
        {"process": 1, "type": "ok", "f": "poll", "value": [["poll", {"0": [[0, 1], [1, 2], [2, 3]]}]]}]
    path = tmp_path / "history.jsonl"
    write_history(path, events)
    r = highwater("check", str(path), "--no-require-activity")
    assert r.returncode == 0, (r.stdout, r.stderr)
    assert json.loads(r.stdout)["valid"] is True


def test_check_store_directory(tmp_path):
    write_history(tmp_path / "history.jsonl", LOST_WRITE)
    r = highwater("check", str(tmp_path), "--no-require-activity")
    assert r.returncode == 1
    assert json.loads(r.stdout)["path"] == str(tmp_path)


def test_check_malformed_line_is_named_and_exits_2(tmp_path):
    path = tmp_path / "history.jsonl"
    write_history(path, LOST_WRITE)
    lines = path.read_text().splitlines()
    lines[3] = '{"index": 3, "time": 3000, "process": 0, "type": "ok", "f": '  # broken, not the last line
    path.write_text("\n".join(lines) + "\n")
    r = highwater("check", str(path))
    assert r.returncode == 2
    assert "history.jsonl:4:" in r.stderr  # file:line, as compilers name lines


def test_check_missing_file_exits_2(tmp_path):
    r = highwater("check", str(tmp_path / "nope.jsonl"))
    assert r.returncode == 2
    assert "nope.jsonl" in r.stderr


def test_quiet_history_is_not_valid(tmp_path):
    """A run that did no real work is "unknown", never a pass."""
    path = tmp_path / "history.jsonl"
    write_history(path, [{"process": 0, "type": "invoke", "f": "poll", "value": [["poll"]]},
                         {"process": 0, "type": "ok", "f": "poll", "value": [["poll", {}]]}])
    r = highwater("check", str(path))
    assert r.returncode == 3, (r.stdout, r.stderr)
