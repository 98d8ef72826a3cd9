"""From one request frame to the bytes to send back (or a decision to close).

Policy, as in Kafka: a request we cannot read (unknown API key, truncated or
garbled body) closes its connection, since nothing after it can be trusted;
an ApiVersions request of a version we do not speak gets UNSUPPORTED_VERSION
(35) with our ranges; any other request of an unsupported version gets 35
where its response has a top-level error code, else the connection closes.
A handler that raises is logged and closes only its own connection.
"""
from __future__ import annotations

import logging

from reference.protocol import codec
from reference.protocol.handlers import (
    alter_partition_reassignments, api_versions, create_topics, delete_topics, describe_configs, describe_groups, fetch,
    find_coordinator, heartbeat, init_producer_id, join_group, leave_group, list_groups,
    list_offsets, list_partition_reassignments, metadata, offset_commit, offset_fetch, offset_for_leader_epoch, produce,
    sync_group)

log = logging.getLogger("highwater.protocol")

HANDLERS = {module.API_KEY: module.handle for module in (
    produce, fetch, list_offsets, metadata, offset_commit, offset_fetch, find_coordinator,
    join_group, heartbeat, leave_group, sync_group, describe_groups, list_groups, api_versions,
    create_topics, delete_topics, init_producer_id, offset_for_leader_epoch, describe_configs,
    alter_partition_reassignments, list_partition_reassignments)}
assert set(HANDLERS) == set(codec.API_SPECS), "every advertised API needs a handler, and only those"


class CloseConnection(Exception):
    """Stop serving this connection after the responses already queued."""


def _unsupported_version_response(prefix: codec.RequestHeaderPrefix) -> bytes:
    if prefix.api_key == codec.API_VERSIONS_KEY:
        return codec.unsupported_api_versions_response(prefix.correlation_id)
    response_class = codec.API_SPECS[prefix.api_key].response_class
    if prefix.api_version > response_class.max_version or prefix.api_version < 0:
        raise CloseConnection(f"api {prefix.api_key} v{prefix.api_version} is unknown to us")
    field = response_class.fields.get("error_code")
    if field is None or not field.for_version_q(prefix.api_version):
        raise CloseConnection(f"api {prefix.api_key} v{prefix.api_version} unsupported and has no top-level error code")
    try:
        return codec.encode_response(response_class(version=prefix.api_version, error_code=codec.UNSUPPORTED_VERSION),
                                     prefix.correlation_id)
    except Exception as exc:
        raise CloseConnection(f"api {prefix.api_key} v{prefix.api_version} unsupported: {exc!r}") from exc


def parse(frame: bytes):
    """(prefix, request) for a frame we can serve, or (prefix, bytes) for an
    immediate answer (unsupported version). Raises CloseConnection."""
    try:
        prefix = codec.peek_header(frame)
    except codec.FrameError as exc:
        raise CloseConnection(str(exc)) from exc
    if prefix.api_key not in codec.API_SPECS:
        raise CloseConnection(f"unknown api key {prefix.api_key}")
    if not codec.is_supported(prefix.api_key, prefix.api_version):
        log.info("api %d v%d is outside our range: answering UNSUPPORTED_VERSION", prefix.api_key, prefix.api_version)
        return prefix, _unsupported_version_response(prefix)
    try:
        return prefix, codec.decode_request(frame, prefix)
    except codec.MalformedRequest as exc:
        raise CloseConnection(str(exc)) from exc


def response_reservation(ctx, prefix: codec.RequestHeaderPrefix, request) -> int:
    """Bytes to count against the connection's in-flight budget for this
    request's response, beyond its frame: a Fetch response may be as large as
    its (capped) max_bytes; every other response is small next to its request
    or to the broker's own metadata."""
    if prefix.api_key == fetch.API_KEY:
        return fetch.response_budget(ctx, request)
    return 0


async def handle(ctx, prefix: codec.RequestHeaderPrefix, request) -> bytes | None:
    """Run the API's handler; the framed response, or None for no response."""
    if log.isEnabledFor(logging.DEBUG):
        log.debug("api %d v%d correlation id %d from %r", prefix.api_key, prefix.api_version,
                  prefix.correlation_id, getattr(request.header, "client_id", None))
    return await respond(prefix, HANDLERS[prefix.api_key](request, ctx))


async def respond(prefix: codec.RequestHeaderPrefix, handling) -> bytes | None:
    """Await a handler's response (a coroutine) and frame it; a handler that
    raises is logged and closes its connection."""
    try:
        response = await handling
        return None if response is None else codec.encode_response(response, prefix.correlation_id)
    except Exception as exc:
        log.exception("api %d v%d (correlation id %d) failed", prefix.api_key, prefix.api_version,
                      prefix.correlation_id)
        raise CloseConnection(f"handler failed: {exc!r}") from exc


async def handle_frame(ctx, frame: bytes) -> bytes | None:
    """parse + handle, for tests and simple callers."""
    prefix, request = parse(frame)
    if isinstance(request, (bytes, bytearray)):
        return bytes(request)
    return await handle(ctx, prefix, request)
