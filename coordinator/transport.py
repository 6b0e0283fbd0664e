"""How the coordinator reaches a node: gRPC with mutual TLS, or in-process over the same node logic.

Both transports speak the wire messages of `proto/healthpsi/v1/node.proto` and raise `proto.errors`
exceptions for refusals, so the matching code cannot tell them apart. `NodeUnavailable` marks a failure
worth retrying (the node is down or the connection was cut).
"""

from __future__ import annotations

import logging
import random
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any, Protocol, TypeVar, runtime_checkable

import grpc
from google.protobuf.message import Message

from crypto.pki import DNS_SUFFIX
from proto.errors import BY_STATUS, ProtocolError
from proto.healthpsi.v1 import node_pb2, node_pb2_grpc
from runctx.pki import PkiPaths

MAX_MESSAGE_BYTES = 64 * 1024 * 1024
"""Largest gRPC message either way (an Evaluate batch or an index chunk stays far below)."""
MAX_BACKOFF = 10.0
"""The longest wait, in seconds, before a retry (before jitter)."""

log = logging.getLogger("healthpsi.coordinator")

T = TypeVar("T")
M = TypeVar("M", bound=Message)


class NodeUnavailable(ProtocolError):
    """The node could not be reached or the stream was cut; the call may be retried."""

    status = "UNAVAILABLE"


class TransportError(ProtocolError):
    """A gRPC failure that is not one of the protocol's refusals (deadline, authentication, internal)."""

    def __init__(self, status: str, message: str) -> None:
        super().__init__(f"{status}: {message}")
        self.status = status


@runtime_checkable
class NodeTransport(Protocol):
    """One node, as the coordinator sees it: the three calls of `healthpsi.v1.MatchingNode`."""

    agency: str

    def get_manifest(self) -> node_pb2.SignedManifest:
        """The node's signed manifest."""
        ...

    def stream_index(
        self, partition_id: str, offset: int, index_digest: bytes
    ) -> Iterator[node_pb2.IndexChunk]:
        """A partition's index chunks from entry `offset`; the digest is the one the manifest states."""
        ...

    def evaluate(self, req: node_pb2.EvaluateRequest) -> node_pb2.EvaluateResponse:
        """BlindEvaluate one batch, charged to the partition's budget (once per idempotency key)."""
        ...


class ByteCounter:
    """Bytes sent and received by a transport, as serialized protobuf messages (safe across threads: the
    coordinator streams an index while it evaluates)."""

    def __init__(self) -> None:
        self.sent = 0
        self.received = 0
        self.streamed = 0
        """Of those, the bytes of StreamIndex requests and chunks."""
        self._lock = threading.Lock()

    def add(self, sent: int = 0, received: int = 0, *, stream: bool = False) -> None:
        """Count one message's bytes (`stream`: a StreamIndex message)."""
        with self._lock:
            self.sent += sent
            self.received += received
            if stream:
                self.streamed += sent + received

    @property
    def total(self) -> int:
        """Bytes both ways."""
        return self.sent + self.received


def backoff_delay(attempt: int, base: float, cap: float = MAX_BACKOFF) -> float:
    """Seconds to wait before retry number `attempt` (0-based): `base`·2^attempt capped at `cap`, of which a
    random half is jittered away so that callers refused together do not come back together."""
    delay = min(cap, base * 2 ** min(attempt, 30))
    return delay / 2 + random.uniform(0, delay / 2)


def error_from_rpc(exc: grpc.RpcError, agency: str) -> ProtocolError:
    """The protocol error a failed gRPC call stands for (per `proto.errors.BY_STATUS`)."""
    code = exc.code() if isinstance(exc, grpc.Call) else None
    status = code.name if code is not None else "UNKNOWN"
    details = (exc.details() if isinstance(exc, grpc.Call) else None) or str(exc)
    message = f"node {agency}: {details}"
    if status in BY_STATUS:
        return BY_STATUS[status](message)
    if status == "UNAVAILABLE":
        return NodeUnavailable(message)
    return TransportError(status, message)


class GrpcTransport:
    """A node over gRPC with mutual TLS: the coordinator's client certificate, the nodes CA as trust root.

    Unary calls get a deadline and are retried `retries` times with bounded exponential backoff and jitter
    while the node is UNAVAILABLE (down, or at its limit of calls in progress), each retry logged; Evaluate is
    safe to retry: its idempotency key keeps the node from charging twice. RESOURCE_EXHAUSTED (a spent
    budget) and every other refusal are raised at once, never retried.
    """

    def __init__(
        self,
        address: str,
        agency: str,
        pki_paths: PkiPaths,
        *,
        deadline: float = 120.0,
        retries: int = 5,
        backoff: float = 0.5,
        max_message_bytes: int = MAX_MESSAGE_BYTES,
    ) -> None:
        self.agency = agency
        self.address = address
        self.deadline = deadline
        self.retries = retries
        self.backoff = backoff
        self.counter = ByteCounter()
        try:
            credentials = grpc.ssl_channel_credentials(
                root_certificates=pki_paths.nodes_ca_cert.read_bytes(),
                private_key=pki_paths.coordinator_key.read_bytes(),
                certificate_chain=pki_paths.coordinator_cert.read_bytes(),
            )
        except OSError as exc:
            raise TransportError("FAILED_PRECONDITION", f"coordinator TLS material missing: {exc}") from exc
        options = [
            ("grpc.ssl_target_name_override", agency + DNS_SUFFIX),
            ("grpc.max_receive_message_length", max_message_bytes),
            ("grpc.max_send_message_length", max_message_bytes),
            ("grpc.keepalive_time_ms", 30_000),
        ]
        self._channel = grpc.secure_channel(address, credentials, options=options)
        self._stub = node_pb2_grpc.MatchingNodeStub(self._channel)

    def close(self) -> None:
        """Close the channel."""
        self._channel.close()

    def __enter__(self) -> GrpcTransport:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _unary(self, call: Callable[..., M], request: Any) -> M:
        """One unary call with a deadline, retried on UNAVAILABLE; errors mapped to protocol errors."""
        self.counter.add(sent=request.ByteSize())
        for attempt in range(self.retries + 1):
            try:
                response = call(request, timeout=self.deadline)
            except grpc.RpcError as exc:
                error = error_from_rpc(exc, self.agency)
                if not isinstance(error, NodeUnavailable) or attempt == self.retries:
                    raise error from exc
                delay = backoff_delay(attempt, self.backoff)
                log.warning("%s (%s); retry %d of %d in %.1fs", error, type(request).__name__.removesuffix(
                    "Request"), attempt + 1, self.retries, delay)
                time.sleep(delay)
                continue
            self.counter.add(received=response.ByteSize())
            return response
        raise AssertionError("unreachable")

    def get_manifest(self) -> node_pb2.SignedManifest:
        """The node's signed manifest."""
        return self._unary(self._stub.GetManifest, node_pb2.GetManifestRequest())

    def evaluate(self, req: node_pb2.EvaluateRequest) -> node_pb2.EvaluateResponse:
        """BlindEvaluate one batch (retried on UNAVAILABLE under the same idempotency key)."""
        return self._unary(self._stub.Evaluate, req)

    def stream_index(
        self, partition_id: str, offset: int, index_digest: bytes
    ) -> Iterator[node_pb2.IndexChunk]:
        """A partition's index chunks from `offset`, without an overall deadline (keepalive pings notice a
        dead peer); a cut stream raises NodeUnavailable (resume from the last offset received)."""
        request = node_pb2.StreamIndexRequest(
            partition_id=partition_id, offset=offset, index_digest=index_digest
        )
        self.counter.add(sent=request.ByteSize(), stream=True)
        try:
            for chunk in self._stub.StreamIndex(request):
                self.counter.add(received=chunk.ByteSize(), stream=True)
                yield chunk
        except grpc.RpcError as exc:
            raise error_from_rpc(exc, self.agency) from exc


class InProcessTransport:
    """A node's handlers called directly (same process), with every message passed through its wire bytes.

    `handlers` is any object with the node handlers' `get_manifest`, `stream_index` and `evaluate` methods
    taking and returning protobuf messages.
    """

    def __init__(self, handlers: Any, agency: str | None = None) -> None:
        self.handlers = handlers
        self.agency = agency if agency is not None else str(getattr(handlers, "agency", ""))
        self.counter = ByteCounter()

    def _wire(self, message: T, outgoing: bool, stream: bool = False) -> T:
        """A copy of a message through its serialized bytes, counted (`stream`: a StreamIndex message)."""
        data = message.SerializeToString()  # type: ignore[attr-defined]
        if outgoing:
            self.counter.add(sent=len(data), stream=stream)
        else:
            self.counter.add(received=len(data), stream=stream)
        return type(message).FromString(data)  # type: ignore[attr-defined]

    def get_manifest(self) -> node_pb2.SignedManifest:
        """The node's signed manifest."""
        request = self._wire(node_pb2.GetManifestRequest(), True)
        return self._wire(self.handlers.get_manifest(request), False)

    def evaluate(self, req: node_pb2.EvaluateRequest) -> node_pb2.EvaluateResponse:
        """BlindEvaluate one batch."""
        return self._wire(self.handlers.evaluate(self._wire(req, True)), False)

    def stream_index(
        self, partition_id: str, offset: int, index_digest: bytes
    ) -> Iterator[node_pb2.IndexChunk]:
        """A partition's index chunks from `offset`."""
        request = node_pb2.StreamIndexRequest(
            partition_id=partition_id, offset=offset, index_digest=index_digest
        )
        for chunk in self.handlers.stream_index(self._wire(request, True, stream=True)):
            yield self._wire(chunk, False, stream=True)
