"""JoinGroup (11): park the member until the group's rebalance completes
(see reference.protocol.groups). v4+: a member without an id first gets
MEMBER_ID_REQUIRED with its new id, and joins again with it (KIP-394)."""
from kafka.protocol.consumer import JoinGroupResponse

from reference import errors

API_KEY = 11


async def handle(request, ctx):
    version = request.version
    if not request.group_id:
        result_code, result = errors.INVALID_GROUP_ID, None
    elif ctx.not_coordinator(request.group_id):
        result_code, result = errors.NOT_COORDINATOR, None
    else:
        rebalance_timeout = request.rebalance_timeout_ms if version >= 1 else request.session_timeout_ms
        result = await ctx.groups.join(
            request.group_id, member_id=request.member_id, client_id=request.header.client_id or "",
            client_host="", group_instance_id=request.group_instance_id if version >= 5 else None,
            session_timeout_ms=request.session_timeout_ms, rebalance_timeout_ms=rebalance_timeout,
            protocol_type=request.protocol_type, protocols=[(p.name, bytes(p.metadata)) for p in request.protocols],
            require_known_member_id=version >= 4)
        result_code = result.error_code
    if result is None or result_code:
        return JoinGroupResponse(version=version, throttle_time_ms=0, error_code=result_code, generation_id=-1,
                                 protocol_name="", leader="", member_id=result.member_id if result else "",
                                 members=[])
    members = [JoinGroupResponse.JoinGroupResponseMember(member_id=mid, group_instance_id=instance, metadata=meta)
               for mid, instance, meta in result.members]
    return JoinGroupResponse(version=version, throttle_time_ms=0, error_code=0, generation_id=result.generation_id,
                             protocol_name=result.protocol_name, leader=result.leader, member_id=result.member_id,
                             members=members)
