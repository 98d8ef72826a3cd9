"""The external target: a system described by a TOML recipe.

The end-to-end test starts a reference broker by hand (as a user would, with
a pid file), describes it in a recipe whose kill/pause/resume/start are shell
commands, and runs a kill test through the recipe: valid, the broker really
killed and restarted by the recipe's commands, left running afterwards.
The validation tests run the CLI and check it refuses a bad recipe (exit 2,
the key and its line) before anything starts (no store directory).
"""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from harness.db.external import ExternalTarget, RecipeError, load_recipe
from harness.db.local_process import port_open
from harness.ports import free_port

REPO = Path(__file__).resolve().parent.parent


def _cli(*args, timeout=60):
    return subprocess.run([sys.executable, "-m", "harness.cli", "run", *args], cwd=REPO,
                          capture_output=True, text=True, timeout=timeout)


def _kill_run_through(recipe: Path, store: Path) -> tuple[Path, dict]:
    """A 20 s kill test through the recipe: it must exit 0; its run
    directory and results."""
    r = _cli("--db", "external", "--recipe", str(recipe), "--nemesis", "kill", "--time-limit", "20s",
             "--nemesis-interval", "5s", "--final-time-limit", "20s", "--rate", "40", "--seed", "3",
             "--store", str(store), timeout=220)
    run_dir = (store / "latest").resolve()
    results = json.loads((run_dir / "results.json").read_text()) if (run_dir / "results.json").exists() else {}
    assert r.returncode == 0, f"exit {r.returncode}\n{r.stderr[-3000:]}\n{json.dumps(results)[:3000]}"
    return run_dir, results


def _recipe(tmp_path, text: str) -> Path:
    path = tmp_path / "recipe.toml"
    path.write_text(textwrap.dedent(text))
    return path


def _alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"


def _state(pid: int) -> str:
    return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]


# --- validation: refused before anything starts --------------------------------------

@pytest.mark.timeout(60)
def test_unknown_key_is_refused_with_its_line_before_anything_starts(tmp_path):
    recipe = _recipe(tmp_path, """\
        name = "x"

        [nodes.n1]
        address = "127.0.0.1:9092"
        start = "sleep 100"
        kil = "kill -9 {pid}"
    """)
    r = _cli("--db", "external", "--recipe", str(recipe), "--store", str(tmp_path / "store"))
    assert r.returncode == 2, r.stderr
    assert f"{recipe}:6" in r.stderr and "nodes.n1.kil" in r.stderr and "unknown key" in r.stderr
    assert not (tmp_path / "store").exists()


@pytest.mark.timeout(60)
def test_unknown_key_inside_an_inline_table_names_its_line(tmp_path):
    recipe = _recipe(tmp_path, """\
        [nodes.n1]
        address = "127.0.0.1:9092"
        start = "sleep 100"

        up = { prot = "127.0.0.1:9092" }
    """)
    with pytest.raises(RecipeError) as e:
        load_recipe(recipe)
    assert f"{recipe}:5" in str(e.value) and "nodes.n1.up.prot" in str(e.value)


@pytest.mark.timeout(60)
def test_malformed_recipe_is_refused_with_the_line(tmp_path):
    recipe = _recipe(tmp_path, """\
        [nodes.n1]
        address = "127.0.0.1:9092
        start = "sleep 100"
    """)
    r = _cli("--db", "external", "--recipe", str(recipe), "--store", str(tmp_path / "store"))
    assert r.returncode == 2 and "malformed TOML" in r.stderr and "line 2" in r.stderr, r.stderr
    assert not (tmp_path / "store").exists()


@pytest.mark.parametrize("text, needle", [
    ('[nodes.n1]\naddress = "127.0.0.1:9092"\nstart = "run {prot}"\n', "unknown placeholder {prot}"),
    ('[nodes.n1]\naddress = "127.0.0.1:9092"\nstart = 3\n', "nodes.n1.start: must be a string"),
    ('[nodes.n1]\naddress = "localhost"\nstart = "x"\n', "is not HOST:PORT"),
    ('[nodes.n1]\naddress = "127.0.0.1:1"\nstart = "x"\nforeground = false\n', "no `stop` or `kill`"),
    ('[nodes.n1]\naddress = "127.0.0.1:1"\nalready_running = true\nkill = "kill {pid}"\n',
     "{pid} exists only"),
    ('[nodes.n1]\naddress = "127.0.0.1:1"\nstart = "x --s3 {s3_endpoint}"\n', "no [s3] endpoint"),
    ('[s3]\nendpoint = "ftp://x"\n[nodes.n1]\naddress = "127.0.0.1:1"\nstart = "x"\n', "s3.endpoint"),
    ('name = "x"\n', "describes no node"),
    ('[nodes.n1]\naddress = "127.0.0.1:1"\n', "needs a `start` command"),
])
def test_bad_recipes_are_refused_naming_the_key(tmp_path, text, needle):
    path = tmp_path / "r.toml"
    path.write_text(text)
    with pytest.raises(RecipeError) as e:
        load_recipe(path)
    assert needle in str(e.value)


@pytest.mark.timeout(60)
def test_a_fault_the_recipe_cannot_perform_is_refused_with_the_reason(tmp_path):
    # Started in the background by a command: Highwater holds no process it
    # could SIGSTOP, and the recipe gives no pause command.
    recipe = _recipe(tmp_path, """\
        [nodes.n1]
        address = "127.0.0.1:9092"
        foreground = false
        start = "touch started"
        kill = "true"
    """)
    r = _cli("--db", "external", "--recipe", str(recipe), "--nemesis", "pause",
             "--store", str(tmp_path / "store"))
    assert r.returncode == 2, r.stderr
    assert "fault 'pause'" in r.stderr and "no way to pause it" in r.stderr and "add a `pause` command" in r.stderr
    assert not (tmp_path / "store").exists() and not (REPO / "started").exists()


@pytest.mark.timeout(60)
@pytest.mark.parametrize("ssh, key, needle", [
    ('{ host = "127.0.0.1", port = 70000 }', "nodes.n1.ssh.port", "`port` must be an integer 1..65535"),
    ('{ host = "127.0.0.1", prot = 22 }', "nodes.n1.ssh.prot", "unknown key"),
    ('{ host = "127.0.0.1", accept_unknown_host_keys = "yes" }', "nodes.n1.ssh.accept_unknown_host_keys",
     "must be true or false"),
    ('{ host = "127.0.0.1", key_file = "no-such-key" }', "nodes.n1.ssh.key_file", "does not exist"),
    ('{ user = "kafka" }', "nodes.n1.ssh", "needs a host"),
])
def test_a_malformed_ssh_table_is_refused_with_file_and_line(tmp_path, ssh, key, needle):
    recipe = _recipe(tmp_path, f"""\
        name = "remote"

        [nodes.n1]
        address = "10.9.9.9:9092"
        start = "systemctl start kafka"
        ssh = {ssh}
    """)
    r = _cli("--db", "external", "--recipe", str(recipe), "--store", str(tmp_path / "store"))
    assert r.returncode == 2 and f"{recipe}:6" in r.stderr and key in r.stderr and needle in r.stderr, r.stderr
    assert not (tmp_path / "store").exists()


def test_recipe_needs_db_external_and_db_external_needs_a_recipe(tmp_path):
    recipe = _recipe(tmp_path, '[nodes.n1]\naddress = "127.0.0.1:1"\nstart = "x"\n')
    r = _cli("--recipe", str(recipe), "--store", str(tmp_path / "store"))
    assert r.returncode == 2 and "--db external only" in r.stderr
    r = _cli("--db", "external", "--store", str(tmp_path / "store"))
    assert r.returncode == 2 and "needs --recipe" in r.stderr


def test_s3_faults_need_an_endpoint_the_node_is_started_against(tmp_path):
    def target(text):
        return ExternalTarget(load_recipe(_recipe(tmp_path, text)), None)

    no_s3 = target('[nodes.n1]\naddress = "127.0.0.1:1"\nstart = "x"\n')
    assert "declares no [s3] endpoint" in no_s3.unsupported("s3_proxy")
    fixed = target('[s3]\nendpoint = "http://127.0.0.1:9"\n[nodes.n1]\naddress = "127.0.0.1:1"\nstart = "x"\n')
    assert "do not take {s3_endpoint}" in fixed.unsupported("s3_proxy")
    via_env = target('[s3]\nendpoint = "embedded"\n[nodes.n1]\naddress = "127.0.0.1:1"\nstart = "x"\n'
                     'env = { S3 = "{s3_endpoint}" }\n')
    assert via_env.unsupported("s3_proxy") is None
    assert via_env.unsupported("process") is None and via_env.unsupported("pause") is None
    for control in ("network", "volume", "lose_unsynced", "clock", "reassign"):
        assert via_env.unsupported(control)


def test_every_shipped_recipe_is_valid():
    recipes = sorted((REPO / "examples").glob("*.toml"))
    assert len(recipes) >= 3
    for path in recipes:
        recipe = load_recipe(path)
        assert recipe.nodes, path
    tansu = ExternalTarget(load_recipe(REPO / "examples" / "tansu.toml"), None)
    assert tansu.unsupported("s3_proxy") is None and tansu.unsupported("process") is None
    over_ssh = load_recipe(REPO / "examples" / "reference-over-ssh.toml")
    assert [(n.ssh.host, n.ssh.port, n.ssh.workdir) for n in over_ssh.nodes.values()] == \
        [("10.0.0.11", 22, "/var/tmp/highwater/n1"), ("10.0.0.12", 2222, "/var/tmp/highwater/n2")]
    assert ExternalTarget(over_ssh, None).unsupported("s3_proxy") is None


# --- lifecycle of a node Highwater starts in the foreground -----------------------------

@pytest.mark.timeout(60)
def test_foreground_node_is_killed_paused_resumed_and_stopped_by_signals(tmp_path):
    recipe = _recipe(tmp_path, """\
        [nodes.web]
        address = "127.0.0.1:auto"
        start = "exec {python} -m http.server --bind {host} {port}"
        logs = ["{dir}/console.log"]
        data = ["{dir}/data"]
    """)
    target = ExternalTarget(load_recipe(recipe), tmp_path / "run")
    try:
        target.setup()
        node = target.nodes["web"]
        assert node.port != 0 and target.bootstrap_servers == node.address
        first = node.process.pid
        target.pause_node("web")
        assert _state(first) == "T"
        target.resume_node("web")
        assert _state(first) != "T"
        target.kill_node("web")
        assert not _alive(first) and target.died_on_their_own() == {}
        target.start_node("web")
        second = node.process.pid
        assert second != first and _alive(second)
        os.kill(second, signal.SIGKILL)  # a crash the harness did not cause is reported
        node.process.process.wait(10)
        assert target.died_on_their_own() == {"web": -signal.SIGKILL}
        target.start_node("web")
        third = node.process.pid
        info = target.run_info()
        assert info["nodes"]["web"]["starts"] == 3
        assert info["nodes"]["web"]["data"] == [str(tmp_path / "run" / "nodes" / "web" / "data")]
    finally:
        target.teardown()
    assert not _alive(third)
    assert (tmp_path / "run" / "recipe.toml").exists()
    assert (tmp_path / "run" / "nodes" / "web" / "console.log").read_text().count("=== highwater: starting web") == 3


# --- nodes on another host, over SSH (a loopback sshd of the test's own) ------------------

def _ssh_table(sshd, tmp_path, name, **extra) -> str:
    fields = {"host": sshd.host, "port": sshd.port, "key_file": str(sshd.client_key),
              "known_hosts": str(sshd.known_hosts), "workdir": str(tmp_path / "host" / name),
              "python": sys.executable, **extra}
    return "{ " + ", ".join(f"{k} = {json.dumps(v)}" for k, v in fields.items()) + " }"


def _host_pids(pattern: str) -> list[int]:
    r = subprocess.run(["pgrep", "-f", pattern], capture_output=True, text=True)
    return [int(p) for p in r.stdout.split()]


@pytest.mark.timeout(90)
def test_a_foreground_node_over_ssh_is_paused_resumed_killed_and_its_logs_fetched(tmp_path, loopback_sshd):
    secret = "s3cr3t-never-logged-7f3a"
    known_hosts = tmp_path / "no-known-hosts"   # unseen host key, trusted for this run by the option
    marker = f"http.server --bind 127.0.0.1 .* --directory {tmp_path / 'host' / 'web'}"
    recipe = _recipe(tmp_path, f"""\
        [s3]
        endpoint = "http://127.0.0.1:9"
        secret_key = "{secret}"

        [nodes.web]
        address = "127.0.0.1:auto"
        start = "echo {{dir}} > where && exec {{python}} -m http.server --bind {{host}} {{port}} --directory {{dir}}"
        env = {{ KEY = "{{s3_secret_key}}" }}
        up = {{ command = "test -s where && echo key=$KEY" }}
        logs = ["{{dir}}/where", "{{dir}}/procs"]
        ssh = {_ssh_table(loopback_sshd, tmp_path, "web", known_hosts=str(known_hosts), accept_unknown_host_keys=True)}
    """)
    target = ExternalTarget(load_recipe(recipe), tmp_path / "run")
    assert target.unsupported("process") is None and target.unsupported("pause") is None
    try:
        target.setup()
        node = target.nodes["web"]
        first = node.process.pid   # the process group the host's sh wrapper leads, the server in it
        group = _host_pids(marker)
        assert first in group and len(group) == 2    # processes of "the host", started over SSH
        target.pause_node("web")
        assert {_state(p) for p in group} == {"T"}
        target.resume_node("web")
        assert "T" not in {_state(p) for p in group}
        target.kill_node("web")
        assert not any(_alive(p) for p in group) and target.died_on_their_own() == {}
        target.start_node("web")
        second = node.process.pid
        assert second != first and _alive(second) and port_open("127.0.0.1", node.port)
        assert target.run_info()["nodes"]["web"]["starts"] == 2
    finally:
        target.teardown()
    assert not _host_pids(marker)
    run = tmp_path / "run" / "nodes" / "web"
    assert (run / "where").read_text().strip() == str(tmp_path / "host" / "web")   # {dir} is the host's workdir
    assert (run / "procs" / "node-web.out").exists()                               # a directory, fetched whole
    console = (run / "console.log").read_text()
    assert "=== highwater: output of web on" in console and console.count("http.server --bind") == 2  # two starts
    ssh_log = (run / "ssh.log").read_text()
    assert "WARNING: accepting UNKNOWN host key" in ssh_log and "kill -s KILL" in ssh_log
    assert "kill -s STOP" in ssh_log and "kill -s CONT" in ssh_log
    assert not known_hosts.exists()                                                # trusted for the run only
    for f in (tmp_path / "run").rglob("*"):
        assert not f.is_file() or secret not in f.read_text(errors="replace"), f"the S3 secret in {f}"
    assert "key=***" in ssh_log    # the up command printed it: redacted


@pytest.mark.timeout(60)
def test_an_unknown_host_key_is_refused_with_a_clear_message(tmp_path, loopback_sshd):
    loopback_sshd.known_hosts.write_text("")
    recipe = _recipe(tmp_path, f"""\
        [nodes.n1]
        address = "127.0.0.1:auto"
        start = "exec sleep 100"
        ssh = {_ssh_table(loopback_sshd, tmp_path, "n1")}
    """)
    r = _cli("--db", "external", "--recipe", str(recipe), "--nemesis", "kill", "--time-limit", "5s",
             "--store", str(tmp_path / "store"))
    assert r.returncode == 2, r.stderr
    assert str(recipe) in r.stderr and "node n1" in r.stderr and "is not in known_hosts" in r.stderr, r.stderr
    assert "ssh-keyscan" in r.stderr and "accept_unknown_host_keys = true" in r.stderr
    assert not (tmp_path / "host" / "n1" / "procs").exists()   # refused before anything ran there


@pytest.mark.timeout(240)
def test_kill_test_through_a_recipe_of_a_reference_node_started_over_ssh(tmp_path, loopback_sshd):
    """The node's start command runs on "its host" over SSH (a loopback sshd):
    a reference broker against the embedded S3 behind an S3 proxy, killed
    (SIGKILL to its process group there, over SSH) and started again."""
    recipe = _recipe(tmp_path, f"""\
        name = "reference-over-ssh"

        [s3]
        endpoint = "embedded"

        [nodes.n1]
        address = "127.0.0.1:auto"
        start = "mkdir -p {{dir}}/volume && exec {{python}} -m reference.broker --node-id 1 --listen {{address}} --volume {{dir}}/volume --s3-endpoint {{s3_endpoint}} --bucket {{bucket}} --upload-interval 1s"
        env = {{ PYTHONPATH = "{REPO}", PYTHONUNBUFFERED = "1" }}
        data = ["{{dir}}/volume"]
        ssh = {_ssh_table(loopback_sshd, tmp_path, "n1")}
    """)
    run_dir, results = _kill_run_through(recipe, tmp_path / "store")
    assert results.get("valid") is True, json.dumps(results)[:3000]
    kills = [json.loads(line) for line in (run_dir / "nemesis.jsonl").read_text().splitlines()]
    assert [e for e in kills if e["f"] == "start-kill" and e["type"] == "info"]
    node = results["run"]["target"]["nodes"]["n1"]
    assert node["starts"] >= 2 and node["data"] == [str(tmp_path / "host" / "n1" / "volume")]
    assert node["s3_proxy"] is not None
    ssh_log = (run_dir / "nodes" / "n1" / "ssh.log").read_text()
    assert ssh_log.count("[background node-n1]") >= 2 and "kill -s KILL" in ssh_log
    console = (run_dir / "nodes" / "n1" / "console.log").read_text()
    assert "=== highwater: output of n1 on" in console and console.count("listening on") >= 2
    assert not _host_pids(f"--volume {tmp_path / 'host' / 'n1' / 'volume'}"), "stopped at teardown"


# --- a reference node started by hand, killed through the recipe -------------------------

@pytest.mark.timeout(240)
def test_kill_test_through_a_recipe_of_a_reference_node_started_by_hand(tmp_path, s3_bucket):
    endpoint, bucket = s3_bucket
    port = free_port()
    volume, log, pidfile = tmp_path / "n1", tmp_path / "n1.log", tmp_path / "n1.pid"
    volume.mkdir()
    broker = (f"{sys.executable} -m reference.broker --node-id 1 --listen 127.0.0.1:{port} "
              f"--volume {volume} --s3-endpoint {endpoint} --bucket {bucket} --upload-interval 1s")
    start = f"cd {REPO}; nohup {broker} >> {log} 2>&1 & echo $! > {pidfile}"
    # By hand: the broker runs before the harness is asked anything.
    subprocess.run(["/bin/sh", "-c", start], check=True, timeout=10, start_new_session=True)
    first_pid = int(pidfile.read_text())
    try:
        deadline = time.monotonic() + 30
        while not port_open("127.0.0.1", port):
            assert time.monotonic() < deadline and _alive(first_pid), log.read_text()[-2000:]
            time.sleep(0.1)
        recipe = _recipe(tmp_path, f"""\
            name = "reference-by-hand"

            [nodes.n1]
            address = "127.0.0.1:{port}"
            already_running = true
            foreground = false
            start = "{start}"
            kill = "kill -KILL $(cat {pidfile})"
            pause = "kill -STOP $(cat {pidfile})"
            resume = "kill -CONT $(cat {pidfile})"
            logs = ["{log}"]
            data = ["{volume}"]
        """)
        run_dir, results = _kill_run_through(recipe, tmp_path / "store")
        assert results["valid"] is True, json.dumps(results)[:3000]
        kills = [json.loads(line) for line in (run_dir / "nemesis.jsonl").read_text().splitlines()]
        kills = [e for e in kills if e["f"] == "start-kill" and e["type"] == "info"]
        assert len(kills) >= 1 and results["run"]["faults_executed"] >= 1
        # The recipe's commands really killed and restarted the hand-started broker ...
        assert not _alive(first_pid)
        last_pid = int(pidfile.read_text())
        assert last_pid != first_pid
        copied = run_dir / "nodes" / "n1" / "n1.log"
        assert copied.exists() and results["run"]["target"]["nodes"]["n1"]["logs"] == {str(log): str(copied)}
        # the hand-started broker and the one the recipe's `start` brought back both logged there
        assert copied.read_text().count("listening on") >= 2
        assert "kill -KILL" in (run_dir / "nodes" / "n1" / "console.log").read_text()
        # ... and, started by hand, it is left running.
        assert _alive(last_pid)
    finally:
        pid = int(pidfile.read_text())
        if _alive(pid):
            os.kill(pid, signal.SIGKILL)


@pytest.mark.timeout(120)
def test_the_shipped_tansu_recipe_runs_here(tmp_path):
    """examples/tansu.toml as it ships: SeaweedFS started for it, Tansu
    started through `python -m harness.db.tansu` against the S3 proxy,
    killed with SIGKILL and started again on the same bucket."""
    from kafka import KafkaConsumer, KafkaProducer, TopicPartition
    from harness.workloads.kafka_python_client import create_topics

    target = ExternalTarget(load_recipe(REPO / "examples" / "tansu.toml"), tmp_path / "run")
    try:
        target.setup()
        node = target.nodes["n1"]
        assert target.s3 is not None and node.proxy is not None
        node.proxy.latency = 0.002   # counts the requests that cross it
        create_topics(target.bootstrap_servers, ["r"])
        producer = KafkaProducer(bootstrap_servers=target.bootstrap_servers)
        assert [producer.send("r", value=str(i).encode(), partition=0).get(10).offset for i in range(3)] == [0, 1, 2]
        producer.close()
        assert sum(node.proxy.stats()["requests"].values()) > 0
        first = node.process.pid
        assert "tansu" in Path(f"/proc/{first}/exe").resolve().name   # exec'd: signals reach Tansu itself
        target.kill_node("n1")
        assert not _alive(first)
        target.start_node("n1")
        consumer = KafkaConsumer(bootstrap_servers=target.bootstrap_servers)
        tp = TopicPartition("r", 0)
        consumer.assign([tp])
        consumer.seek_to_beginning(tp)
        got = []
        deadline = time.monotonic() + 20
        while len(got) < 3 and time.monotonic() < deadline:
            got.extend(int(r.value) for rs in consumer.poll(500).values() for r in rs)
        consumer.close()
        assert got == [0, 1, 2]
    finally:
        target.teardown()
    assert "tansu broker 0.6.0" in (tmp_path / "run" / "nodes" / "n1" / "console.log").read_text()


def test_nodes_come_from_the_recipe_not_from_nodes(tmp_path):
    recipe = _recipe(tmp_path, '[nodes.n1]\naddress = "127.0.0.1:1"\nstart = "x"\n')
    r = _cli("--db", "external", "--recipe", str(recipe), "--nodes", "3", "--store", str(tmp_path / "store"))
    assert r.returncode == 2 and "the ones its --recipe lists" in r.stderr


def test_a_recipe_named_in_a_test_file_is_found_beside_it(tmp_path):
    from harness.options import load_test_file, resolve
    suite = tmp_path / "suite"
    suite.mkdir()
    (suite / "r.toml").write_text('[nodes.n1]\naddress = "127.0.0.1:1"\nstart = "x"\n')
    (suite / "t.toml").write_text('db = "external"\nrecipe = "r.toml"\nnemesis = "kill"\n')
    options = resolve(load_test_file(suite / "t.toml"), {})
    assert options["recipe"] == str((suite / "r.toml").resolve())
