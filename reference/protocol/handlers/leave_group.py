"""LeaveGroup (13): the member goes now (no session timeout to wait out) and
the others rebalance. v3+ may name several members at once."""
from kafka.protocol.consumer import LeaveGroupResponse

from reference import errors

API_KEY = 13


async def handle(request, ctx):
    version = request.version
    if not request.group_id:
        return LeaveGroupResponse(version=version, throttle_time_ms=0, error_code=errors.INVALID_GROUP_ID, members=[])
    if ctx.not_coordinator(request.group_id):
        return LeaveGroupResponse(version=version, throttle_time_ms=0, error_code=errors.NOT_COORDINATOR, members=[])
    if version < 3:
        code = ctx.groups.leave(request.group_id, request.member_id)
        return LeaveGroupResponse(version=version, throttle_time_ms=0, error_code=code)
    members = [LeaveGroupResponse.MemberResponse(member_id=m.member_id, group_instance_id=m.group_instance_id,
                                                 error_code=ctx.groups.leave(request.group_id, m.member_id))
               for m in request.members]
    return LeaveGroupResponse(version=version, throttle_time_ms=0, error_code=0, members=members)
