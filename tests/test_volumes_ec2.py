"""The ec2 volume provider's calls, under botocore's Stubber: every request
is checked against the EC2 service model (operation, parameter names and
types) and against the parameters we expect; every canned response against
the model's output shape. This is all the provider has met: not AWS."""
from __future__ import annotations

import datetime as dt

import boto3
import pytest
from botocore.stub import Stubber

from reference.volumes.base import VolumeControl, VolumeError
from reference.volumes.ec2 import EC2Volumes, LocalDeviceFinder, device_lookup_command, nvme_serial

VOL = "vol-0123456789abcdef0"
INSTANCES = {"n1": "i-0000000000000000a", "n2": "i-0000000000000000b"}
NOW = dt.datetime(2026, 1, 1, tzinfo=dt.timezone.utc)


@pytest.fixture
def ec2():
    client = boto3.client("ec2", region_name="us-east-1", aws_access_key_id="testing",
                          aws_secret_access_key="testing")
    with Stubber(client) as stub:
        found = []

        def finder(node, volume_id, device):
            found.append((node, volume_id, device))
            return "/dev/nvme1n1"

        provider = EC2Volumes(INSTANCES, client=client, device_finder=finder, waiter_delay=0)
        yield provider, stub, found
        stub.assert_no_pending_responses()


def _volume(state="available", attachments=()):
    return {"Volumes": [{"VolumeId": VOL, "State": state, "Size": 8, "AvailabilityZone": "us-east-1a",
                         "CreateTime": NOW, "VolumeType": "gp3", "Encrypted": False,
                         "Attachments": [{"VolumeId": VOL, "InstanceId": INSTANCES[n], "Device": "/dev/sdf",
                                          "State": s, "AttachTime": NOW, "DeleteOnTermination": False}
                                         for n, s in attachments]}]}


DESCRIBE = {"VolumeIds": [VOL]}


def test_attach_calls_attach_volume_then_waits_for_in_use_and_attached_then_finds_the_device(ec2):
    provider, stub, found = ec2
    stub.add_response("describe_volumes", _volume(), DESCRIBE)
    stub.add_response("attach_volume", {"VolumeId": VOL, "InstanceId": INSTANCES["n2"], "Device": "/dev/sdf",
                                        "State": "attaching", "AttachTime": NOW},
                      {"Device": "/dev/sdf", "InstanceId": INSTANCES["n2"], "VolumeId": VOL})
    # volume_in_use waiter: one poll still available, then in-use
    stub.add_response("describe_volumes", _volume("available"), DESCRIBE)
    stub.add_response("describe_volumes", _volume("in-use", [("n2", "attaching")]), DESCRIBE)
    # the attachment waiter: attaching, then attached
    stub.add_response("describe_volumes", _volume("in-use", [("n2", "attaching")]), DESCRIBE)
    stub.add_response("describe_volumes", _volume("in-use", [("n2", "attached")]), DESCRIBE)
    att = provider.attach(VOL, "n2")
    assert (att.volume_id, att.node, att.path) == (VOL, "n2", "/dev/nvme1n1")
    assert found == [("n2", VOL, "/dev/sdf")]


def test_attach_refuses_a_volume_attached_to_another_node(ec2):
    provider, stub, _ = ec2
    stub.add_response("describe_volumes", _volume("in-use", [("n1", "attached")]), DESCRIBE)
    with pytest.raises(VolumeError, match="attached to n1; detach it first"):
        provider.attach(VOL, "n2")


def test_attach_to_the_node_that_holds_it_is_idempotent(ec2):
    provider, stub, _ = ec2
    stub.add_response("describe_volumes", _volume("in-use", [("n1", "attached")]), DESCRIBE)
    stub.add_response("describe_volumes", _volume("in-use", [("n1", "attached")]), DESCRIBE)
    assert provider.attach(VOL, "n1").node == "n1"


def test_detach_forces_and_waits_until_available(ec2):
    provider, stub, _ = ec2
    stub.add_response("describe_volumes", _volume("in-use", [("n1", "attached")]), DESCRIBE)
    stub.add_response("detach_volume", {"VolumeId": VOL, "InstanceId": INSTANCES["n1"], "State": "detaching"},
                      {"VolumeId": VOL, "InstanceId": INSTANCES["n1"], "Force": True})
    stub.add_response("describe_volumes", _volume("in-use", [("n1", "detaching")]), DESCRIBE)
    stub.add_response("describe_volumes", _volume("available"), DESCRIBE)
    provider.detach(VOL, "n1")


def test_detach_from_a_node_that_does_not_hold_it_is_a_no_op(ec2):
    provider, stub, _ = ec2
    stub.add_response("describe_volumes", _volume("in-use", [("n2", "attached")]), DESCRIBE)
    provider.detach(VOL, "n1")


def test_attachment_maps_the_instance_back_to_its_node(ec2):
    provider, stub, _ = ec2
    stub.add_response("describe_volumes", _volume("in-use", [("n2", "attached")]), DESCRIBE)
    stub.add_response("describe_volumes", _volume("available"), DESCRIBE)
    assert provider.attachment(VOL).node == "n2"
    assert provider.attachment(VOL) is None


def test_aws_errors_become_volume_errors_with_the_code(ec2):
    provider, stub, _ = ec2
    stub.add_client_error("describe_volumes", "InvalidVolume.NotFound", f"The volume '{VOL}' does not exist.",
                          expected_params=DESCRIBE)
    with pytest.raises(VolumeError, match="InvalidVolume.NotFound"):
        provider.attach(VOL, "n1")
    stub.add_response("describe_volumes", _volume(), DESCRIBE)
    stub.add_client_error("attach_volume", "IncorrectState", "busy",
                          expected_params={"Device": "/dev/sdf", "InstanceId": INSTANCES["n1"], "VolumeId": VOL})
    with pytest.raises(VolumeError, match="IncorrectState"):
        provider.attach(VOL, "n1")


def test_a_waiter_that_sees_the_volume_fall_back_to_available_fails_clearly(ec2):
    provider, stub, _ = ec2
    stub.add_response("describe_volumes", _volume(), DESCRIBE)
    stub.add_response("attach_volume", {"VolumeId": VOL, "State": "attaching"},
                      {"Device": "/dev/sdf", "InstanceId": INSTANCES["n1"], "VolumeId": VOL})
    stub.add_response("describe_volumes", _volume("in-use", [("n1", "attaching")]), DESCRIBE)
    stub.add_response("describe_volumes", _volume("available"), DESCRIBE)  # the attach failed on AWS's side
    with pytest.raises(VolumeError, match="VolumeAttached"):
        provider.attach(VOL, "n1")


def test_unknown_node_and_unsupported_faults_are_refused(ec2):
    provider, _, _ = ec2
    with pytest.raises(VolumeError, match="no EC2 instance known for node 'n9'"):
        provider.attach(VOL, "n9")
    control = VolumeControl(provider, VOL, "n1")
    assert control.unsupported("detach") is None
    assert "cannot do lose-unsynced" in control.unsupported("lose-unsynced")
    with pytest.raises(VolumeError, match="cannot do disk-slow"):
        control.set_slow({"ms": 5})


def test_local_device_finder_reads_the_nvme_serial(tmp_path):
    """On a fake sysfs/dev tree (no EBS here): the serial of nvme1 is the
    volume id without its dash, its namespace is the device."""
    ctrl = tmp_path / "sys/class/nvme/nvme1"
    (ctrl / "nvme1n1").mkdir(parents=True)
    (ctrl / "serial").write_text(nvme_serial(VOL) + "    \n")
    other = tmp_path / "sys/class/nvme/nvme0"
    (other / "nvme0n1").mkdir(parents=True)
    (other / "serial").write_text("vol0ffffffffffffffff\n")
    finder = LocalDeviceFinder(root=str(tmp_path), timeout=0.3, poll=0.05)
    assert finder("n1", VOL, "/dev/sdf") == "/dev/nvme1n1"
    with pytest.raises(VolumeError, match="no device with NVMe serial vol0aaaaaaaaaaaaaaaa"):
        finder("n1", "vol-0aaaaaaaaaaaaaaaa", "/dev/sdf")
    assert nvme_serial(VOL) in device_lookup_command(VOL)
