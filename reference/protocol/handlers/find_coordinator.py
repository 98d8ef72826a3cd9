"""FindCoordinator (10): a group's coordinator. A lone node coordinates
every group; in a cluster one live broker does, chosen by a hash of the
group id (ClusterView.coordinator). Transaction coordinators do not exist
here (no transactions)."""
from kafka.protocol.metadata import FindCoordinatorResponse

from reference import errors

API_KEY = 10
GROUP, TRANSACTION = 0, 1


async def handle(request, ctx):
    if request.key_type != GROUP:
        return FindCoordinatorResponse(version=request.version, throttle_time_ms=0,
                                       error_code=errors.COORDINATOR_NOT_AVAILABLE,
                                       error_message="only group coordinators", node_id=-1, host="", port=-1)
    node, host, port = ctx.node_id, ctx.host, ctx.port
    if ctx.cluster is not None:
        found = ctx.cluster.coordinator(request.key or "")
        if found is None:
            return FindCoordinatorResponse(version=request.version, throttle_time_ms=0,
                                           error_code=errors.COORDINATOR_NOT_AVAILABLE, error_message="no live broker",
                                           node_id=-1, host="", port=-1)
        node, host, port = found
    return FindCoordinatorResponse(version=request.version, throttle_time_ms=0, error_code=0, error_message=None,
                                   node_id=node, host=host, port=port)
