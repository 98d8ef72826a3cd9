"""FindCoordinator (10): every group's coordinator is this broker.
Transaction coordinators do not exist here (no transactions)."""
from kafka.protocol.metadata import FindCoordinatorResponse

from reference import errors

API_KEY = 10
GROUP, TRANSACTION = 0, 1


async def handle(request, ctx):
    if request.key_type != GROUP:
        return FindCoordinatorResponse(version=request.version, throttle_time_ms=0,
                                       error_code=errors.COORDINATOR_NOT_AVAILABLE,
                                       error_message="only group coordinators", node_id=-1, host="", port=-1)
    return FindCoordinatorResponse(version=request.version, throttle_time_ms=0, error_code=0, error_message=None,
                                   node_id=ctx.node_id, host=ctx.host, port=ctx.port)
