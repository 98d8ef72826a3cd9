"""Heartbeat (12): keeps a member's session alive and tells it when to rejoin."""
from kafka.protocol.consumer import HeartbeatResponse

from reference import errors

API_KEY = 12


async def handle(request, ctx):
    if not request.group_id:
        code = errors.INVALID_GROUP_ID
    elif ctx.not_coordinator(request.group_id):
        code = errors.NOT_COORDINATOR
    else:
        code = ctx.groups.heartbeat(request.group_id, request.member_id, request.generation_id)
    return HeartbeatResponse(version=request.version, throttle_time_ms=0, error_code=code)
