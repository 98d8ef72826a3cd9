"""The inventory file: what it accepts, what it refuses and how it says so."""
from pathlib import Path

import pytest

from harness.remote.inventory import InventoryError, load_inventory, parse_inventory

pytestmark = pytest.mark.timeout(30)


@pytest.fixture
def key(tmp_path):
    path = tmp_path / "keys" / "id_test"
    path.parent.mkdir()
    path.write_text("not read by the parser\n")
    return path


def test_defaults_merge_and_paths_resolve_against_the_file(tmp_path, key):
    inv_file = tmp_path / "inventory.toml"
    inv_file.write_text("""
[defaults]
user = "admin"
key_file = "keys/id_test"
known_hosts = "known_hosts"
command_timeout = "90s"

[nodes.n1]
host = "10.0.0.11"
roles = ["broker", "controller"]
s3_endpoint = "http://10.0.0.1:8333"
workdir = "/srv/hw"
source_address = "10.0.0.1"

[nodes.n2]
host = "10.0.0.12"
port = 2222
user = "other"
connect_timeout = "500ms"
accept_unknown_host_keys = true
""")
    inv = load_inventory(inv_file)
    assert inv.node_names == ["n1", "n2"]
    n1, n2 = inv.nodes["n1"], inv.nodes["n2"]
    assert (n1.host, n1.port, n1.user) == ("10.0.0.11", 22, "admin")
    assert n1.key_file == key and n1.known_hosts == tmp_path / "known_hosts"
    assert n1.roles == ("broker", "controller") and n1.s3_endpoint == "http://10.0.0.1:8333"
    assert n1.workdir == "/srv/hw" and n1.command_timeout == 90.0 and n1.source_address == "10.0.0.1"
    assert n2.source_address is None
    assert n1.accept_unknown_host_keys is False
    assert (n2.port, n2.user, n2.connect_timeout, n2.roles) == (2222, "other", 0.5, ("broker",))
    assert n2.accept_unknown_host_keys is True
    assert n2.address == "[10.0.0.12]:2222" and n1.address == "10.0.0.11"
    assert [n.name for n in inv.with_role("controller")] == ["n1"]


def test_known_hosts_defaults_to_the_users_file():
    inv = parse_inventory('[nodes.a]\nhost = "h"\n')
    assert inv.nodes["a"].known_hosts == Path("~/.ssh/known_hosts").expanduser()
    assert inv.nodes["a"].key_file is None


@pytest.mark.parametrize("text, message", [
    ("[nodes.n1]\nport = 22\n", "node n1: `host` is required"),
    ('[nodes.n1]\nhost = "h"\nhots = "x"\n', "node n1: unknown key(s) hots"),
    ('[nodes.n1]\nhost = "h"\nport = 70000\n', "`port` must be an integer 1..65535"),
    ('[nodes.n1]\nhost = "h"\nport = "22"\n', "`port` must be an integer"),
    ('[nodes.n1]\nhost = "h"\nroles = "broker"\n', "`roles` must be a non-empty list"),
    ('[nodes.n1]\nhost = "h"\ncommand_timeout = "soon"\n', "`command_timeout`: not a duration"),
    ('[nodes.n1]\nhost = "h"\naccept_unknown_host_keys = "yes"\n', "must be true or false"),
    ('[nodes.n1]\nhost = "h"\nkey_file = "missing_key"\n', "key_file"),
    ('[node.n1]\nhost = "h"\n', "unknown top-level key(s) node"),
    ("[defaults]\nuser = 'x'\n", "no nodes"),
    ("[nodes.n1\nhost = 1", "not valid TOML"),
    ('[nodes.n1]\nhost = ""\n', "`host` must be a non-empty string"),
])
def test_bad_inventories_are_refused_with_the_node_and_key(text, message):
    with pytest.raises(InventoryError) as e:
        parse_inventory(text, source="inv.toml")
    assert message in str(e.value) and "inv.toml" in str(e.value)


def test_secrets_come_from_the_environment_only(monkeypatch):
    inv = parse_inventory('[nodes.n1]\nhost = "h"\npassword_env = "HW_TEST_PW"\n')
    spec = inv.nodes["n1"]
    assert "HW_TEST_PW" in repr(spec)
    monkeypatch.delenv("HW_TEST_PW", raising=False)
    with pytest.raises(InventoryError, match="HW_TEST_PW .* is not set"):
        spec.secret("password")
    monkeypatch.setenv("HW_TEST_PW", "hunter2-long")
    assert spec.secret("password") == "hunter2-long"
    assert "hunter2" not in repr(spec)


def test_unreadable_file_is_named(tmp_path):
    with pytest.raises(InventoryError, match="nope.toml: cannot read"):
        load_inventory(tmp_path / "nope.toml")
