"""`highwater check` on hand-written histories: the verdict, the witness and
the exit code a user's CI depends on."""
from __future__ import annotations

import json
import subprocess
import sys
import pytest

# (a fresh clone compiles the checkers' kernels during its first tests)
pytestmark = pytest.mark.timeout(900)


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


# --------------------------------------------------- issue 5: more of `check`

VALID = LOST_WRITE[:-1] + [
    {"process": 1, "type": "ok", "f": "poll", "value": [["poll", {"0": [[0, 1], [1, 2], [2, 3]]}]]}]


def test_several_paths_one_line_each_and_exit_precedence(tmp_path):
    good, bad, broken = tmp_path / "good.jsonl", tmp_path / "bad.jsonl", tmp_path / "broken.jsonl"
    write_history(good, VALID)
    write_history(bad, LOST_WRITE)
    broken.write_text('{"index": 0,\n{"index": 1}\n')
    r = highwater("check", str(good), str(broken), str(bad), "--no-require-activity")
    lines = [json.loads(x) for x in r.stdout.splitlines()]
    assert [x["path"] for x in lines] == [str(good), str(broken), str(bad)]
    assert [x["valid"] for x in lines] == [True, "unknown", False]
    assert r.returncode == 1                       # any invalid wins
    r = highwater("check", str(good), str(broken), "--no-require-activity")
    assert r.returncode == 2                       # else could not run
    quiet = tmp_path / "quiet.jsonl"
    write_history(quiet, [{"process": 0, "type": "invoke", "f": "poll", "value": [["poll"]]},
                          {"process": 0, "type": "ok", "f": "poll", "value": [["poll", {}]]}])
    r = highwater("check", str(good), str(quiet))
    assert r.returncode == 3                       # else unknown
    r = highwater("check", str(good), str(good), "--no-require-activity")
    assert r.returncode == 0 and len(r.stdout.splitlines()) == 2


STALE_TO_END = [
    {"process": 0, "type": "invoke", "f": "send", "value": [["send", "0", 1]]},
    {"process": 0, "type": "ok", "f": "send", "value": [["send", "0", [0, 1]]]},
    {"process": 0, "type": "invoke", "f": "send", "value": [["send", "0", 2]]},
    {"process": 0, "type": "ok", "f": "send", "value": [["send", "0", [1, 2]]]},
    {"process": 1, "type": "invoke", "f": "poll", "value": [["poll"]]},
    {"process": 1, "type": "ok", "f": "poll", "value": [["poll", {"0": [[0, 1]]}]], "to_end": True},
]


def test_model_log_violation_writes_html_into_store_dir(tmp_path):
    write_history(tmp_path / "history.jsonl", STALE_TO_END)
    r = highwater("check", str(tmp_path), "--model", "log", "--no-require-activity")
    assert r.returncode == 1, (r.stdout, r.stderr)
    result = json.loads(r.stdout)
    assert result["checkers"]["linearizable"]["valid"] is False
    (w,) = result["anomalies"]["nonlinearizable"]
    assert w["key"] == "0" and w["prefix_length"] == 2 and w["op"]["index"] == 5
    page = tmp_path / "linearizability.html"
    assert result["linearizability_html"] == str(page)
    assert page.read_text().startswith("<!DOCTYPE html>")
    # next to a history file named otherwise
    other = tmp_path / "run7.jsonl"
    write_history(other, STALE_TO_END)
    r = highwater("check", str(other), "--checker", "kafka,linearizable", "--no-require-activity")
    assert r.returncode == 1 and (tmp_path / "run7.linearizability.html").exists()


def test_valid_log_model_writes_no_html(tmp_path):
    write_history(tmp_path / "history.jsonl", VALID)
    r = highwater("check", str(tmp_path), "--model", "log", "--no-require-activity")
    assert r.returncode == 0, (r.stdout, r.stderr)
    assert json.loads(r.stdout)["checkers"]["linearizable"]["valid"] is True
    assert not (tmp_path / "linearizability.html").exists()


KNOSSOS = """[{:type :invoke, :f :write, :value 1, :process 0, :time 0}
 {:type :ok, :f :write, :value 1, :process 0, :time 10}
 {:type :invoke, :f :cas, :value [1 2], :process 1, :time 20}
 {:type :ok, :f :cas, :value [1 2], :process 1, :time 30}
 {:type :invoke, :f :read, :value nil, :process 0, :time 40}
 {:type :ok, :f :read, :value %s, :process 0, :time 50}]
"""


def test_model_cas_register_on_edn(tmp_path):
    good, bad = tmp_path / "good.edn", tmp_path / "bad.edn"
    good.write_text(KNOSSOS % 2)
    bad.write_text(KNOSSOS % 1)
    r = highwater("check", str(good), str(bad), "--model", "cas-register")
    out = [json.loads(x) for x in r.stdout.splitlines()]
    assert [x["valid"] for x in out] == [True, False] and r.returncode == 1, r.stderr
    assert out[1]["anomalies"]["nonlinearizable"][0]["op"]["output"] == 1
    assert (tmp_path / "bad.linearizability.html").exists()
    # the same, as JSON Lines, with --format forcing the reader
    from checkers.edn import read_all
    jl = tmp_path / "bad.txt"
    jl.write_text("".join(json.dumps({str(k): (str(v) if k in ("type", "f") else v)
                                      for k, v in e.items()}) + "\n"
                          for e in read_all(KNOSSOS % 1)[0]))
    r = highwater("check", str(jl), "--model", "cas-register", "--format", "jsonl")
    assert r.returncode == 1, (r.stdout, r.stderr)
    # register models judge with the linearizable checker only
    r = highwater("check", str(good), "--model", "register", "--checker", "kafka")
    assert r.returncode == 2 and "linearizable checker only" in r.stderr


def test_jepsen_kafka_edn_auto_detected(tmp_path):
    import os
    import shutil
    src = os.path.join(os.path.dirname(__file__), "data", "histories", "jepsen-kafka-small.edn")
    shutil.copy(src, tmp_path / "history.edn")
    by_suffix = highwater("check", str(tmp_path / "history.edn"), "--no-require-activity")
    by_dir = highwater("check", str(tmp_path), "--no-require-activity")
    forced = highwater("check", str(tmp_path / "history.edn"), "--format", "edn",
                       "--no-require-activity")
    a, b, c = (json.loads(x.stdout) for x in (by_suffix, by_dir, forced))
    assert "error" not in a, a
    assert a["valid"] == b["valid"] == c["valid"] and a["stats"] == b["stats"] == c["stats"]
    assert by_suffix.returncode == by_dir.returncode == forced.returncode != 2
    wrong = highwater("check", str(tmp_path / "history.edn"), "--format", "jsonl")
    assert wrong.returncode == 2


# Two transactions of two sends each whose order on key x is the reverse of
# their order on key y: a G0 cycle made of write-write edges only.
WW_CYCLE = [
    {"process": 0, "type": "invoke", "f": "send", "value": [["send", "0", 1], ["send", "1", 2]]},
    {"process": 1, "type": "invoke", "f": "send", "value": [["send", "0", 3], ["send", "1", 4]]},
    {"process": 0, "type": "ok", "f": "send", "value": [["send", "0", [0, 1]], ["send", "1", [1, 2]]]},
    {"process": 1, "type": "ok", "f": "send", "value": [["send", "0", [1, 3]], ["send", "1", [0, 4]]]},
    {"process": 2, "type": "invoke", "f": "poll", "value": [["poll"]]},
    {"process": 2, "type": "ok", "f": "poll", "value": [["poll", {"0": [[0, 1], [1, 3]],
                                                                  "1": [[0, 4], [1, 2]]}]]},
]


def test_ww_deps_flags(tmp_path):
    h = tmp_path / "h.jsonl"
    write_history(h, WW_CYCLE)
    runs = {flag: highwater("check", str(h), "--no-require-activity", *flag)
            for flag in ((), ("--ww-deps",), ("--no-ww-deps",))}
    out = {flag: json.loads(r.stdout) for flag, r in runs.items()}
    assert "G0" in out[()]["anomaly_types"] and "G0" in out[("--ww-deps",)]["anomaly_types"]
    assert not any(t.startswith("G0") for t in out[("--no-ww-deps",)]["anomaly_types"])
    assert all(r.returncode == 0 for r in runs.values())  # (G0 is allowed by default)
    bad = highwater("check", str(h), "--ww-deps=no")
    assert bad.returncode == 2


INDEPENDENT_EDN = """[{:type :invoke, :f :write, :value [1 3], :process 0}
{:type :ok, :f :write, :value [1 3], :process 0}
{:type :invoke, :f :write, :value [2 4], :process 1}
{:type :ok, :f :write, :value [2 4], :process 1}
{:type :invoke, :f :cas, :value [1 [3 5]], :process 0}
{:type :ok, :f :cas, :value [1 [3 5]], :process 0}
{:type :invoke, :f :read, :value [2 nil], :process 1}
{:type :ok, :f :read, :value [2 %s], :process 1}
{:type :invoke, :f :read, :value [1 nil], :process 1}
{:type :ok, :f :read, :value [1 5], :process 1}]
"""


def test_independent_edn_checked_per_key(tmp_path):
    good, bad = tmp_path / "good.edn", tmp_path / "bad.edn"
    good.write_text(INDEPENDENT_EDN % 4)
    bad.write_text(INDEPENDENT_EDN % 3)   # key 2 never held 3
    r = highwater("check", str(good), str(bad), "--model", "cas-register", "--format", "edn")
    a, b = (json.loads(x) for x in r.stdout.splitlines())
    assert a["valid"] is True and a["checkers"]["linearizable"]["independent"] is True
    assert a["checkers"]["linearizable"]["partitions"] == 2
    assert b["valid"] is False and r.returncode == 1
    w = b["anomalies"]["nonlinearizable"][0]
    assert w["key"] == 2 and w["op"]["output"] == 3
