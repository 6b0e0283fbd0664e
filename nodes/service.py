"""The gRPC servicer of `healthpsi.v1.MatchingNode`: checks the peer, translates, maps errors to status codes.

All logic lives in `nodes.handlers.NodeHandlers`; this layer only refuses calls while the indexes are
still being built (UNAVAILABLE), from any peer but the coordinator (PERMISSION_DENIED, in addition
to the mutual-TLS handshake) or whose bytes are not the call's message (INVALID_ARGUMENT), logging the last
two in the node's audit log, and turns `ProtocolError.status` into a `grpc.StatusCode`. Unexpected
failures become INTERNAL with a generic message, so no internal detail travels to the peer.
"""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import NoReturn, TypeVar

import grpc
from cryptography import x509
from cryptography.hazmat.primitives.serialization import Encoding
from google.protobuf.message import DecodeError, Message

from nodes.handlers import NodeHandlers, capped
from proto.errors import ProtocolError
from proto.healthpsi.v1 import node_pb2, node_pb2_grpc

log = logging.getLogger("healthpsi.node")

SERVICE_NAME = node_pb2.DESCRIPTOR.services_by_name["MatchingNode"].full_name
M = TypeVar("M", bound=Message)


@dataclass(frozen=True)
class Undecodable:
    """A request whose bytes do not parse as the call's message (handed to the servicer to refuse and log)."""

    size: int
    error: str


def lenient(message_type: type[M]) -> Callable[[bytes], M | Undecodable]:
    """A request deserializer giving `Undecodable` instead of raising (gRPC would only print a traceback)."""

    def parse(data: bytes) -> M | Undecodable:
        try:
            return message_type.FromString(data)
        except DecodeError as exc:
            return Undecodable(len(data), capped(str(exc)))

    return parse


def certificate_fingerprint(pem: bytes) -> bytes:
    """SHA-256 of a PEM certificate's DER encoding."""
    return hashlib.sha256(x509.load_pem_x509_certificate(pem).public_bytes(Encoding.DER)).digest()


def status_code(error: ProtocolError) -> grpc.StatusCode:
    """The gRPC status code a protocol error travels as."""
    return getattr(grpc.StatusCode, error.status, grpc.StatusCode.INTERNAL)


class MatchingNodeServicer(node_pb2_grpc.MatchingNodeServicer):
    """Thin servicer over `NodeHandlers`, serving only the peer whose certificate has this fingerprint."""

    def __init__(self, handlers: NodeHandlers | None, allowed_peer: bytes | None) -> None:
        self.handlers = handlers
        self.allowed_peer = allowed_peer

    def _handlers(
        self, context: grpc.ServicerContext, call: str, request: M | Undecodable
    ) -> tuple[NodeHandlers, M]:
        """The handlers and the request, after checking the peer is the coordinator, the node is ready and
        the request decoded (a refused peer or request is in the node's audit log once the node is ready)."""
        if self.allowed_peer is not None:
            certs = context.auth_context().get("x509_pem_cert") or []
            try:
                ok = bool(certs) and certificate_fingerprint(certs[0]) == self.allowed_peer
            except ValueError:
                ok = False
            if not ok:
                log.warning("refused a call from peer %s: not the coordinator's certificate", context.peer())
                if self.handlers is not None:
                    self.handlers.log_refusal(
                        call, "PERMISSION_DENIED", "not the coordinator's certificate", context.peer()
                    )
                context.abort(grpc.StatusCode.PERMISSION_DENIED, "this node serves only the coordinator")
        handlers = self.handlers
        if handlers is None:
            context.abort(grpc.StatusCode.UNAVAILABLE, "the node is still building its indexes")
            raise AssertionError("context.abort raises")
        if isinstance(request, Undecodable):
            reason = f"a request of {request.size} bytes that is not a {call} request ({request.error})"
            log.warning("refused %s from %s: %s", call, context.peer(), reason)
            handlers.log_refusal(call, "INVALID_ARGUMENT", reason, context.peer())
            context.abort(grpc.StatusCode.INVALID_ARGUMENT, reason)
            raise AssertionError("context.abort raises")
        return handlers, request

    @staticmethod
    def _fail(context: grpc.ServicerContext, exc: Exception) -> NoReturn:
        """Abort the call with the status of a protocol error, or INTERNAL for anything else."""
        if isinstance(exc, ProtocolError):
            context.abort(status_code(exc), str(exc))
        log.exception("internal error while serving a call")
        context.abort(grpc.StatusCode.INTERNAL, "internal error")
        raise AssertionError("context.abort raises")

    def GetManifest(
        self, request: node_pb2.GetManifestRequest | Undecodable, context: grpc.ServicerContext
    ) -> node_pb2.SignedManifest:
        """The node's signed manifest."""
        handlers, message = self._handlers(context, "GetManifest", request)
        try:
            return handlers.get_manifest(message)
        except Exception as exc:
            self._fail(context, exc)

    def StreamIndex(
        self, request: node_pb2.StreamIndexRequest | Undecodable, context: grpc.ServicerContext
    ) -> Iterator[node_pb2.IndexChunk]:
        """A partition's index in chunks, from the requested entry offset."""
        handlers, message = self._handlers(context, "StreamIndex", request)
        try:
            chunks = handlers.stream_index(message)
        except Exception as exc:
            self._fail(context, exc)
        try:
            yield from chunks
        except Exception as exc:
            self._fail(context, exc)
        finally:
            chunks.close()

    def Evaluate(
        self, request: node_pb2.EvaluateRequest | Undecodable, context: grpc.ServicerContext
    ) -> node_pb2.EvaluateResponse:
        """BlindEvaluate a batch of blinded elements under the partition's key."""
        handlers, message = self._handlers(context, "Evaluate", request)
        try:
            return handlers.evaluate(message)
        except Exception as exc:
            self._fail(context, exc)


def add_to_server(servicer: MatchingNodeServicer, server: grpc.Server) -> None:
    """Serve `healthpsi.v1.MatchingNode` on `server` with lenient deserializers (see `Undecodable`)."""
    handlers = {
        "GetManifest": grpc.unary_unary_rpc_method_handler(
            servicer.GetManifest, request_deserializer=lenient(node_pb2.GetManifestRequest),
            response_serializer=node_pb2.SignedManifest.SerializeToString,
        ),
        "StreamIndex": grpc.unary_stream_rpc_method_handler(
            servicer.StreamIndex, request_deserializer=lenient(node_pb2.StreamIndexRequest),
            response_serializer=node_pb2.IndexChunk.SerializeToString,
        ),
        "Evaluate": grpc.unary_unary_rpc_method_handler(
            servicer.Evaluate, request_deserializer=lenient(node_pb2.EvaluateRequest),
            response_serializer=node_pb2.EvaluateResponse.SerializeToString,
        ),
    }
    server.add_generic_rpc_handlers((grpc.method_handlers_generic_handler(SERVICE_NAME, handlers),))
    server.add_registered_method_handlers(SERVICE_NAME, handlers)
