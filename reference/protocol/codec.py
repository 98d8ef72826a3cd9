"""Frames, headers and the table of APIs this broker speaks.

A Kafka frame is a 4-byte big-endian size followed by that many bytes. A
request starts with api key (int16), api version (int16) and correlation id
(int32) whatever its header version, so `peek_header` can always read those
three, even for a version we cannot decode (that is how a flexible
ApiVersions request from a newer client gets its UNSUPPORTED_VERSION answer).
"""
from __future__ import annotations

import struct
from dataclasses import dataclass

from kafka.protocol.admin import (
    CreateTopicsRequest, CreateTopicsResponse, DeleteTopicsRequest, DeleteTopicsResponse,
    DescribeConfigsRequest, DescribeConfigsResponse, DescribeGroupsRequest, DescribeGroupsResponse,
    ListGroupsRequest, ListGroupsResponse)
from kafka.protocol.consumer import (
    FetchRequest, FetchResponse, HeartbeatRequest, HeartbeatResponse, JoinGroupRequest,
    JoinGroupResponse, LeaveGroupRequest, LeaveGroupResponse, ListOffsetsRequest, ListOffsetsResponse,
    OffsetCommitRequest, OffsetCommitResponse, OffsetFetchRequest, OffsetFetchResponse,
    OffsetForLeaderEpochRequest, OffsetForLeaderEpochResponse, SyncGroupRequest, SyncGroupResponse)
from kafka.protocol.admin import (
    AlterPartitionReassignmentsRequest, AlterPartitionReassignmentsResponse, ListPartitionReassignmentsRequest,
    ListPartitionReassignmentsResponse)
from kafka.protocol.metadata import (
    ApiVersionsRequest, ApiVersionsResponse, FindCoordinatorRequest, FindCoordinatorResponse,
    MetadataRequest, MetadataResponse)
from kafka.protocol.producer import (
    InitProducerIdRequest, InitProducerIdResponse, ProduceRequest, ProduceResponse)

SIZE_PREFIX = struct.Struct(">i")
REQUEST_HEADER_PREFIX = struct.Struct(">hhi")  # api key, api version, correlation id
DEFAULT_MAX_FRAME_SIZE = 100 * 1024 * 1024


@dataclass(frozen=True)
class ApiSpec:
    request_class: type
    response_class: type
    min_version: int
    max_version: int


# What we advertise in ApiVersions, and all we accept. The ranges stop below
# each API's first flexible ("compact") version except ApiVersions itself, so
# every body we decode has been exercised by both kafka-python and librdkafka
# against us; the minimums are the oldest versions kafka-python's schemas
# (Kafka 4.x JSON) still describe. Both clients negotiate down to these.
API_SPECS: dict[int, ApiSpec] = {
    0: ApiSpec(ProduceRequest, ProduceResponse, 3, 8),
    1: ApiSpec(FetchRequest, FetchResponse, 4, 11),
    2: ApiSpec(ListOffsetsRequest, ListOffsetsResponse, 1, 5),
    3: ApiSpec(MetadataRequest, MetadataResponse, 0, 8),
    8: ApiSpec(OffsetCommitRequest, OffsetCommitResponse, 2, 7),
    9: ApiSpec(OffsetFetchRequest, OffsetFetchResponse, 1, 5),
    10: ApiSpec(FindCoordinatorRequest, FindCoordinatorResponse, 0, 2),
    11: ApiSpec(JoinGroupRequest, JoinGroupResponse, 0, 5),
    12: ApiSpec(HeartbeatRequest, HeartbeatResponse, 0, 3),
    13: ApiSpec(LeaveGroupRequest, LeaveGroupResponse, 0, 3),
    14: ApiSpec(SyncGroupRequest, SyncGroupResponse, 0, 3),
    15: ApiSpec(DescribeGroupsRequest, DescribeGroupsResponse, 0, 4),
    16: ApiSpec(ListGroupsRequest, ListGroupsResponse, 0, 2),
    18: ApiSpec(ApiVersionsRequest, ApiVersionsResponse, 0, 4),
    19: ApiSpec(CreateTopicsRequest, CreateTopicsResponse, 2, 4),
    20: ApiSpec(DeleteTopicsRequest, DeleteTopicsResponse, 1, 3),
    22: ApiSpec(InitProducerIdRequest, InitProducerIdResponse, 0, 1),
    23: ApiSpec(OffsetForLeaderEpochRequest, OffsetForLeaderEpochResponse, 2, 3),
    32: ApiSpec(DescribeConfigsRequest, DescribeConfigsResponse, 1, 3),
    # flexible from v0 (kafka-python's classes encode their tagged headers); cluster only
    45: ApiSpec(AlterPartitionReassignmentsRequest, AlterPartitionReassignmentsResponse, 0, 0),
    46: ApiSpec(ListPartitionReassignmentsRequest, ListPartitionReassignmentsResponse, 0, 0),
}
API_VERSIONS_KEY = 18
PRODUCE_KEY = 0
UNSUPPORTED_VERSION = 35


class FrameError(Exception):
    """The byte stream cannot be parsed further: close the connection."""


class FrameTooLarge(FrameError):
    pass


class MalformedRequest(Exception):
    """One request could not be decoded; what to do depends on `correlation_id`."""


@dataclass(frozen=True)
class RequestHeaderPrefix:
    api_key: int
    api_version: int
    correlation_id: int


class FrameReader:
    """Cuts a byte stream into frames (size prefix removed).

    Holds at most one partial frame, and refuses a declared size above
    `max_frame_size` before buffering any of it, so a hostile peer cannot make
    us allocate more than that."""

    def __init__(self, max_frame_size: int = DEFAULT_MAX_FRAME_SIZE):
        self.max_frame_size = max_frame_size
        self._buffer = bytearray()

    def receive_data(self, data: bytes) -> None:
        self._buffer += data

    @property
    def buffered(self) -> int:
        return len(self._buffer)

    def pending_frame_size(self) -> int | None:
        """Declared size of the next frame, once its prefix has arrived."""
        if len(self._buffer) < 4:
            return None
        size = SIZE_PREFIX.unpack_from(self._buffer)[0]
        if size < REQUEST_HEADER_PREFIX.size:
            raise FrameError(f"frame size {size} is smaller than a request header")
        if size > self.max_frame_size:
            raise FrameTooLarge(f"frame size {size} exceeds the limit {self.max_frame_size}")
        return size

    def next_frame(self) -> bytes | None:
        size = self.pending_frame_size()
        if size is None or len(self._buffer) < 4 + size:
            return None
        with memoryview(self._buffer) as view:  # one copy, and released before the resize
            frame = bytes(view[4:4 + size])
        del self._buffer[:4 + size]
        return frame


def peek_header(frame: bytes) -> RequestHeaderPrefix:
    if len(frame) < REQUEST_HEADER_PREFIX.size:
        raise FrameError(f"request of {len(frame)} bytes has no header")
    return RequestHeaderPrefix(*REQUEST_HEADER_PREFIX.unpack_from(frame))


def is_supported(api_key: int, api_version: int) -> bool:
    spec = API_SPECS.get(api_key)
    return spec is not None and spec.min_version <= api_version <= spec.max_version


def decode_request(frame: bytes, prefix: RequestHeaderPrefix):
    """A supported request, decoded. Raises MalformedRequest on any decoding
    failure (truncated, trailing garbage, bad lengths)."""
    spec = API_SPECS[prefix.api_key]
    try:
        request = spec.request_class.decode(frame, version=prefix.api_version, header=True)
    except Exception as exc:  # the generated decoders raise many types on garbage
        raise MalformedRequest(f"cannot decode {spec.request_class.__name__} v{prefix.api_version}: {exc!r}") from exc
    bad = null_where_not_nullable(request, prefix.api_version)
    if bad is not None:
        raise MalformedRequest(f"{spec.request_class.__name__} v{prefix.api_version}: null {bad}")
    return request


def null_where_not_nullable(container, version: int, path: str = "") -> str | None:
    """The first field that decoded as null (length -1 on the wire) although
    the schema does not allow null there, else None. The decoders accept such
    nulls; handlers should not have to."""
    for field in container._struct.fields.values():
        if not field.for_version_q(version) or field.tagged_field_q(version):
            continue
        value = getattr(container, field.name)
        name = f"{path}{field.name}"
        if value is None:
            if not field.nullable_for_version_q(version):
                return name
        elif field.is_struct_array():
            for item in value:
                bad = null_where_not_nullable(item, version, name + ".")
                if bad is not None:
                    return bad
        elif field.is_struct():
            bad = null_where_not_nullable(value, version, name + ".")
            if bad is not None:
                return bad
    return None


def encode_response(response, correlation_id: int) -> bytes:
    """Framed response bytes. ApiVersions keeps a v0 header even when its body
    is flexible (kafka-python's class takes care of that)."""
    response.with_header(correlation_id=correlation_id)
    return bytes(response.encode(header=True, framed=True))


def api_versions_list() -> list:
    return [ApiVersionsResponse.ApiVersion(api_key=key, min_version=spec.min_version, max_version=spec.max_version)
            for key, spec in sorted(API_SPECS.items())]


def unsupported_api_versions_response(correlation_id: int) -> bytes:
    """The answer to an ApiVersions request of a version we do not speak:
    error 35 and our ranges, in the v0 body every client can read."""
    response = ApiVersionsResponse(version=0, error_code=35, api_keys=api_versions_list())
    return encode_response(response, correlation_id)
