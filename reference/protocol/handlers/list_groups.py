"""ListGroups (16): every group the coordinator knows, with members or
committed offsets."""
from kafka.protocol.admin import ListGroupsResponse

API_KEY = 16


async def handle(request, ctx):
    groups = [ListGroupsResponse.ListedGroup(group_id=g.group_id, protocol_type=g.protocol_type or "consumer")
              for g in ctx.groups.groups.values()]
    return ListGroupsResponse(version=request.version, throttle_time_ms=0, error_code=0, groups=groups)
