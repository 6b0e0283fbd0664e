"""Protocol errors shared by nodes and coordinator; each maps to one gRPC status code."""

from __future__ import annotations


class ProtocolError(Exception):
    """A request the node refuses; `status` names the gRPC status code it travels as."""

    status = "INTERNAL"


class InvalidArgument(ProtocolError):
    """Malformed request: bad length, invalid group element, oversized batch."""

    status = "INVALID_ARGUMENT"


class ResourceExhausted(ProtocolError):
    """The partition's query budget would be exceeded."""

    status = "RESOURCE_EXHAUSTED"


class NotFound(ProtocolError):
    """No such partition."""

    status = "NOT_FOUND"


class FailedPrecondition(ProtocolError):
    """The request is well-formed but does not fit the node's state (e.g. a stale index digest)."""

    status = "FAILED_PRECONDITION"


BY_STATUS: dict[str, type[ProtocolError]] = {
    cls.status: cls for cls in (InvalidArgument, ResourceExhausted, NotFound, FailedPrecondition)
}
