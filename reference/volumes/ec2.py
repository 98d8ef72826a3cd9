"""The `ec2` volume provider: EBS volumes moved between EC2 instances with
DetachVolume / AttachVolume through boto3.

NOT TESTED AGAINST AWS. This machine has no AWS account or network; every
call here has only been checked with botocore's Stubber, which validates each
request and response against the EC2 service model (tests/test_volumes_ec2.py).
The first real use should watch the timings and the device lookup closely.

- `attach(volume, node)`: refuses if the volume is attached to another
  instance; otherwise AttachVolume (the instance is the node's, from the
  `instances` map), then the `volume_in_use` waiter, then a waiter on the
  attachment state (`attached`; `volume_in_use` alone only says the volume is
  taken), then the device is found on the node: on Nitro instances an EBS
  volume is an NVMe device whose serial number is the volume id without its
  dash (`vol0123...`), visible as /dev/disk/by-id/nvme-Amazon_Elastic_Block_Store_vol0123...
  and /sys/class/nvme/*/serial. The lookup runs where the provider is told to
  run it (`device_finder`): the default looks on this machine, which is right
  when a node attaches a volume to itself; a controller moving a volume to
  another node passes a finder that asks that node (over SSH:
  `device_lookup_command` is the shell snippet to run there).
- `detach(volume, node)`: DetachVolume with Force=True (a dead broker's
  instance cannot flush anything; AWS's docs warn that Force may lose data
  the instance had not written, which is exactly the failure being modeled),
  then the `volume_available` waiter. A no-op if the volume is not attached
  to that node's instance.
- Only `detach` among the volume faults: EBS has no hook for lost unsynced
  writes, slow or failing I/O (`supported_faults`).
"""
from __future__ import annotations

import glob
import os
import time
from typing import Callable

from reference.volumes.base import Attachment, VolumeError, VolumeProvider

ATTACHED_WAITER = {
    "version": 2,
    "waiters": {
        "VolumeAttached": {
            "operation": "DescribeVolumes",
            "delay": 1,
            "maxAttempts": 120,
            "acceptors": [
                {"state": "success", "matcher": "pathAll", "argument": "Volumes[].Attachments[].State",
                 "expected": "attached"},
                {"state": "failure", "matcher": "pathAny", "argument": "Volumes[].State", "expected": "deleted"},
                {"state": "failure", "matcher": "pathAny", "argument": "Volumes[].State", "expected": "available"},
            ],
        }
    },
}

# Attachment states that mean "this instance has it, or is getting it"
HOLDING = ("attaching", "attached", "busy")

DeviceFinder = Callable[[str, str, str], str]   # (node, volume_id, requested device name) -> device path


def nvme_serial(volume_id: str) -> str:
    """The NVMe serial number an EBS volume shows on a Nitro instance."""
    return volume_id.replace("-", "")


def device_lookup_command(volume_id: str) -> str:
    """A POSIX shell snippet that prints the device of `volume_id` on the
    machine it runs on (empty output: not there yet)."""
    serial = nvme_serial(volume_id)
    return (f"for d in /sys/class/nvme/nvme*; do "
            f"[ \"$(tr -d ' ' < $d/serial 2>/dev/null)\" = {serial} ] && "
            f"for n in $d/nvme*n1; do [ -e \"$n\" ] && echo /dev/$(basename $n) && exit 0; done; done; "
            f"l=/dev/disk/by-id/nvme-Amazon_Elastic_Block_Store_{serial}; [ -e $l ] && readlink -f $l")


class LocalDeviceFinder:
    """Find the volume's block device on this machine: NVMe serial in sysfs,
    then the by-id link, then the Xen name (/dev/sdf -> /dev/xvdf). Polls until
    the device appears (udev may lag the attachment) or `timeout`."""

    def __init__(self, root: str = "/", timeout: float = 30.0, poll: float = 0.2):
        self.root, self.timeout, self.poll = root, timeout, poll

    def _p(self, path: str) -> str:
        return os.path.join(self.root, path.lstrip("/"))

    def lookup(self, volume_id: str, device_name: str) -> str | None:
        serial = nvme_serial(volume_id)
        for ctrl in sorted(glob.glob(self._p("/sys/class/nvme/nvme*"))):
            try:
                with open(os.path.join(ctrl, "serial")) as f:
                    if f.read().strip() != serial:
                        continue
            except OSError:
                continue
            namespaces = sorted(glob.glob(os.path.join(ctrl, os.path.basename(ctrl) + "n*")))
            if namespaces:
                return "/dev/" + os.path.basename(namespaces[0])
        link = self._p(f"/dev/disk/by-id/nvme-Amazon_Elastic_Block_Store_{serial}")
        if os.path.exists(link):
            return "/dev/" + os.path.basename(os.path.realpath(link))
        if device_name.startswith("/dev/sd"):
            xen = "/dev/xvd" + device_name[len("/dev/sd"):]
            if os.path.exists(self._p(xen)):
                return xen
        if os.path.exists(self._p(device_name)):
            return device_name
        return None

    def __call__(self, node: str, volume_id: str, device_name: str) -> str:
        deadline = time.monotonic() + self.timeout
        while True:
            found = self.lookup(volume_id, device_name)
            if found is not None:
                return found
            if time.monotonic() >= deadline:
                raise VolumeError(f"volume {volume_id} is attached to {node} but no device with NVMe serial "
                                  f"{nvme_serial(volume_id)} (or {device_name}) appeared within {self.timeout:.0f}s")
            time.sleep(self.poll)


class EC2Volumes(VolumeProvider):
    supported_faults = ("detach",)

    def __init__(self, instances: dict[str, str], *, client=None, region: str | None = None,
                 device_name: str = "/dev/sdf", device_finder: DeviceFinder | None = None,
                 waiter_delay: float = 1.0, waiter_max_attempts: int = 120, force_detach: bool = True):
        if client is None:
            import boto3
            client = boto3.client("ec2", region_name=region)
        self.client = client
        self.instances = dict(instances)
        self.nodes_by_instance = {i: n for n, i in self.instances.items()}
        self.device_name = device_name
        self.device_finder = device_finder or LocalDeviceFinder()
        self.waiter_config = {"Delay": waiter_delay, "MaxAttempts": waiter_max_attempts}
        self.force_detach = force_detach

    # ---- helpers ----------------------------------------------------------------------
    def _instance(self, node: str) -> str:
        try:
            return self.instances[node]
        except KeyError:
            raise VolumeError(f"no EC2 instance known for node {node!r} (known: {sorted(self.instances)})") from None

    def _call(self, what: str, fn, **params):
        from botocore.exceptions import BotoCoreError, ClientError
        try:
            return fn(**params)
        except ClientError as e:
            err = e.response.get("Error", {})
            raise VolumeError(f"{what}: {err.get('Code')}: {err.get('Message')}") from None
        except BotoCoreError as e:
            raise VolumeError(f"{what}: {e}") from None

    def _describe(self, volume_id: str) -> dict:
        vols = self._call(f"DescribeVolumes {volume_id}", self.client.describe_volumes,
                          VolumeIds=[volume_id])["Volumes"]
        if not vols:
            raise VolumeError(f"volume {volume_id} does not exist")
        return vols[0]

    @staticmethod
    def _holder(volume: dict) -> dict | None:
        for att in volume.get("Attachments", []):
            if att.get("State") in HOLDING:
                return att
        return None

    def _wait(self, name: str, volume_id: str) -> None:
        from botocore.exceptions import WaiterError
        if name == "VolumeAttached":
            from botocore.waiter import WaiterModel, create_waiter_with_client
            waiter = create_waiter_with_client(name, WaiterModel(ATTACHED_WAITER), self.client)
        else:
            waiter = self.client.get_waiter(name)
        try:
            waiter.wait(VolumeIds=[volume_id], WaiterConfig=self.waiter_config)
        except WaiterError as e:
            raise VolumeError(f"waiting for {volume_id} ({name}): {e}") from None

    # ---- the provider interface ---------------------------------------------------------
    def attach(self, volume_id: str, node: str) -> Attachment:
        instance = self._instance(node)
        volume = self._describe(volume_id)
        holder = self._holder(volume)
        if holder is not None and holder["InstanceId"] != instance:
            other = self.nodes_by_instance.get(holder["InstanceId"], holder["InstanceId"])
            raise VolumeError(f"volume {volume_id} is attached to {other}; detach it first")
        if holder is None:
            if volume.get("State") != "available":
                raise VolumeError(f"volume {volume_id} is {volume.get('State')}, not available")
            self._call(f"AttachVolume {volume_id} to {instance}", self.client.attach_volume,
                       Device=self.device_name, InstanceId=instance, VolumeId=volume_id)
            self._wait("volume_in_use", volume_id)
        self._wait("VolumeAttached", volume_id)
        device = (holder or {}).get("Device") or self.device_name
        return Attachment(volume_id, node, self.device_finder(node, volume_id, device))

    def detach(self, volume_id: str, node: str) -> None:
        instance = self._instance(node)
        holder = self._holder(self._describe(volume_id))
        if holder is None or holder["InstanceId"] != instance:
            return
        self._call(f"DetachVolume {volume_id} from {instance}", self.client.detach_volume,
                   VolumeId=volume_id, InstanceId=instance, Force=self.force_detach)
        self._wait("volume_available", volume_id)

    def attachment(self, volume_id: str) -> Attachment | None:
        """Where AWS says it is attached. The path is the device name AWS
        recorded (asking the node for its real device name costs a round trip
        to it; `attach` does that)."""
        holder = self._holder(self._describe(volume_id))
        if holder is None:
            return None
        node = self.nodes_by_instance.get(holder["InstanceId"], holder["InstanceId"])
        return Attachment(volume_id, node, holder.get("Device", ""))
