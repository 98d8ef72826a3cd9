"""SyncGroup (14): the leader hands in every member's assignment; each
member gets its own (an empty one, never a missing or truncated one)."""
from kafka.protocol.consumer import SyncGroupResponse

from reference import errors

API_KEY = 14


async def handle(request, ctx):
    if not request.group_id:
        return SyncGroupResponse(version=request.version, throttle_time_ms=0, error_code=errors.INVALID_GROUP_ID,
                                 assignment=b"")
    if ctx.not_coordinator(request.group_id):
        return SyncGroupResponse(version=request.version, throttle_time_ms=0, error_code=errors.NOT_COORDINATOR,
                                 assignment=b"")
    assignments = {a.member_id: bytes(a.assignment or b"") for a in request.assignments or []}
    result = await ctx.groups.sync(request.group_id, request.member_id, request.generation_id, assignments)
    return SyncGroupResponse(version=request.version, throttle_time_ms=0, error_code=result.error_code,
                             assignment=result.assignment)
