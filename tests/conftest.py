"""Shared fixtures: one real SeaweedFS S3 server per test session."""
from __future__ import annotations

import itertools
import uuid

import pytest

from harness.s3server import SeaweedS3, s3_client


@pytest.fixture(scope="session")
def s3_server(tmp_path_factory):
    server = SeaweedS3(tmp_path_factory.mktemp("seaweedfs"))
    server.start()
    yield server
    server.stop()


_bucket_ids = itertools.count()


@pytest.fixture
def s3_bucket(s3_server):
    """A fresh, empty bucket on the session's S3 server: (endpoint, bucket)."""
    name = f"t{next(_bucket_ids)}-{uuid.uuid4().hex[:10]}"
    s3_client(s3_server.endpoint).create_bucket(Bucket=name)
    return s3_server.endpoint, name


class LoopbackSshd:
    """A real sshd of the test's own on 127.0.0.1 (a free port): a throwaway
    host key, one authorized client key, its known_hosts line; the keys and
    the config come from the netns mode's helpers (harness/remote/netns.py)."""

    def __init__(self, directory):
        import subprocess

        from harness.ports import free_port
        from harness.remote import netns
        self.dir = directory
        self.host, self.port = "127.0.0.1", free_port()
        self.dir.mkdir(parents=True, exist_ok=True)
        self.host_key, self.client_key = self.dir / "ssh_host_ed25519_key", self.dir / "client_key"
        self.host_public = netns.new_key(self.host_key)
        (self.dir / "authorized_keys").write_text(netns.new_key(self.client_key) + "\n")
        self.known_hosts = self.dir / "known_hosts"
        self.known_hosts.write_text(f"[{self.host}]:{self.port} {self.host_public}\n")
        (self.dir / "sshd_config").write_text(
            netns.sshd_config(self.host, self.port, self.host_key, self.dir / "authorized_keys"))
        from pathlib import Path
        Path("/run/sshd").mkdir(mode=0o755, exist_ok=True)  # sshd's privilege-separation directory
        self.log = self.dir / "sshd.log"
        with open(self.log, "ab") as out:
            self.process = subprocess.Popen([netns.SSHD, "-D", "-e", "-f", str(self.dir / "sshd_config")],
                                            stdin=subprocess.DEVNULL, stdout=out, stderr=out,
                                            start_new_session=True)

    def wait_listening(self, timeout: float = 10.0) -> None:
        import socket
        import time
        deadline = time.monotonic() + timeout
        while True:
            assert self.process.poll() is None, f"sshd exited: {self.log.read_text()[-2000:]}"
            try:
                socket.create_connection((self.host, self.port), timeout=1.0).close()
                return
            except OSError:
                assert time.monotonic() < deadline, f"sshd does not listen: {self.log.read_text()[-2000:]}"
                time.sleep(0.02)

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.kill()
        self.process.wait(10)


@pytest.fixture
def loopback_sshd(tmp_path):
    """A started LoopbackSshd (skipped where sshd or root is missing)."""
    import os

    from harness.remote import netns
    if not os.access(netns.SSHD, os.X_OK) or os.geteuid() != 0:
        pytest.skip(f"a loopback sshd needs {netns.SSHD} and root (it logs in as root)")
    sshd = LoopbackSshd(tmp_path / "sshd")
    try:
        sshd.wait_listening()
        yield sshd
    finally:
        sshd.stop()
