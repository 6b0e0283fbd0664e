"""A real node at its limit of calls in progress: it answers UNAVAILABLE (not RESOURCE_EXHAUSTED, which
means a spent budget), the coordinator's gRPC client retries that with backoff and says so, and a spent
budget is refused at once, never retried."""

from __future__ import annotations

import logging
import queue
import threading
from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest
from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc

from coordinator.transport import GrpcTransport
from crypto import oprf
from nodes.manifest import verify_manifest
from proto.errors import ResourceExhausted
from proto.healthpsi.v1 import node_pb2
from runctx.pki import PkiPaths, load_identities

from .conftest import NodeClient, NodeProcess, copy_run

AGENCY = "transport"


@pytest.fixture(scope="module")
def busy_node(city_run: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[NodeProcess]:
    """The transport node serving one call at a time (`--max-calls 1`)."""
    run = copy_run(city_run, tmp_path_factory.mktemp("load") / "run")
    node = NodeProcess(run, AGENCY, "--max-calls", "1").wait_ready()
    try:
        yield node
    finally:
        node.terminate()


class HeldCall:
    """A reflection stream kept open: the node's handler thread waits for the next request, so the call holds
    the node's one slot until `release`."""

    def __init__(self, client: NodeClient) -> None:
        self.requests: queue.Queue[reflection_pb2.ServerReflectionRequest | None] = queue.Queue()
        stub = reflection_pb2_grpc.ServerReflectionStub(client.channel)
        self.responses = stub.ServerReflectionInfo(iter(self.requests.get, None), timeout=120)
        self.requests.put(reflection_pb2.ServerReflectionRequest(list_services=""))
        next(self.responses)  # the node is now inside the call

    def release(self) -> None:
        """End the stream; the slot is free once the node has finished it."""
        self.requests.put(None)
        assert list(self.responses) == []


class Retries(logging.Handler):
    """The coordinator client's retry messages, with an event set at the first."""

    def __init__(self) -> None:
        super().__init__(logging.WARNING)
        self.messages: list[str] = []
        self.first = threading.Event()

    def emit(self, record: logging.LogRecord) -> None:
        self.messages.append(record.getMessage())
        self.first.set()


@pytest.fixture
def retries() -> Iterator[Retries]:
    handler = Retries()
    logger = logging.getLogger("healthpsi.coordinator")
    logger.addHandler(handler)
    try:
        yield handler
    finally:
        logger.removeHandler(handler)


def test_a_node_at_its_limit_answers_unavailable_and_the_client_retries(
    busy_node: NodeProcess, retries: Retries
) -> None:
    with NodeClient(busy_node.run, AGENCY, busy_node.address) as client:
        held = HeldCall(client)
        try:
            with pytest.raises(grpc.RpcError) as refused:
                client.manifest()
            assert refused.value.code() == grpc.StatusCode.UNAVAILABLE
            assert "limit of 1 calls" in refused.value.details()
        finally:
            held.release()
        assert client.manifest().manifest  # the slot is free again
        held = HeldCall(client)
        pki = PkiPaths(busy_node.run)
        transport = GrpcTransport(busy_node.address, AGENCY, pki, retries=20, backoff=0.05)
        answer: list[node_pb2.SignedManifest] = []
        worker = threading.Thread(target=lambda: answer.append(transport.get_manifest()))
        try:
            worker.start()
            assert retries.first.wait(60), "the client did not retry"
        finally:
            held.release()
        worker.join(120)
        transport.close()
    assert answer and answer[0].manifest
    assert "retry 1 of 20" in retries.messages[0] and "limit of 1 calls" in retries.messages[0]
    assert "refused /healthpsi.v1.MatchingNode/GetManifest" in busy_node.log()
    assert "RESOURCE_EXHAUSTED" not in busy_node.log()


def test_a_spent_budget_is_resource_exhausted_and_never_retried(
    busy_node: NodeProcess, retries: Retries
) -> None:
    with GrpcTransport(busy_node.address, AGENCY, PkiPaths(busy_node.run), backoff=0.05) as transport:
        identity = load_identities(PkiPaths(busy_node.run)).node(AGENCY).public_bytes_raw()
        manifest = verify_manifest(transport.get_manifest(), identity)
        info = min((p for p in manifest.partitions if p.budget_left), key=lambda p: p.budget_left)
        inputs = [f"over|{i}".encode() for i in range(info.budget_left + 1)]
        blinded = oprf.blind_many(inputs, oprf.Mode.OPRF)[1]
        with pytest.raises(ResourceExhausted):
            transport.evaluate(node_pb2.EvaluateRequest(
                partition_id=info.partition_id, blinded_elements=blinded, idempotency_key="over"))
    assert retries.messages == []
