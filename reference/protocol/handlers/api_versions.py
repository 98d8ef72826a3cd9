"""ApiVersions (18): the ranges we speak. Clients pick the highest version
both sides know, so these ranges must be honest (see codec.API_SPECS)."""
from kafka.protocol.metadata import ApiVersionsResponse

from reference.protocol.codec import api_versions_list

API_KEY = 18


async def handle(request, ctx):
    return ApiVersionsResponse(version=request.version, error_code=0, api_keys=api_versions_list(),
                               throttle_time_ms=0)
