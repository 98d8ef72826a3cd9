"""DescribeGroups (15): state, protocol and members of each group."""
from kafka.protocol.admin import DescribeGroupsResponse

from reference import errors

API_KEY = 15
Described = DescribeGroupsResponse.DescribedGroup
DescribedMember = Described.DescribedGroupMember


async def handle(request, ctx):
    groups = []
    for group_id in request.groups:
        group = ctx.groups.groups.get(group_id)
        if group is None:
            groups.append(Described(error_code=errors.NONE, group_id=group_id, group_state="Dead",
                                    protocol_type="", protocol_data="", members=[]))
            continue
        stable = group.state.value in ("Stable", "CompletingRebalance")
        members = [DescribedMember(member_id=m.member_id, group_instance_id=m.group_instance_id,
                                   client_id=m.client_id, client_host=m.client_host,
                                   member_metadata=m.metadata_for(group.protocol_name) if stable and group.protocol_name else b"",
                                   member_assignment=m.assignment if group.state.value == "Stable" else b"")
                   for m in group.members.values()]
        groups.append(Described(error_code=errors.NONE, group_id=group_id, group_state=group.state.value,
                                protocol_type=group.protocol_type or "", protocol_data=group.protocol_name or "",
                                members=members))
    return DescribeGroupsResponse(version=request.version, throttle_time_ms=0, groups=groups)
