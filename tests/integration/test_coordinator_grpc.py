"""The coordinator over gRPC with mutual TLS against real `healthpsi node serve` processes on loopback:
the epoch's matches equal the reference, refusals arrive as protocol errors, a stranger's certificate is
turned away."""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterator
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from coordinator.epoch import run_epoch
from coordinator.matching import verify_manifest
from coordinator.transport import GrpcTransport, NodeUnavailable
from crypto.drbg import Drbg
from proto.errors import FailedPrecondition, InvalidArgument, NotFound
from proto.healthpsi.v1 import node_pb2
from proto.tokens import AGENCIES
from runctx.pki import PkiPaths, create_pki, init_keys, load_identities
from runner.enrollment import enroll_nodes
from runner.processes import NodeProcess, start_nodes
from simulation.reference import reference_matches
from simulation.scenario import simulate


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Path, dict[str, NodeProcess]]]:
    """A small simulated city (600 residents) with its three nodes serving on loopback."""
    run = tmp_path_factory.mktemp("grpc") / "run"
    simulate("city-20k", 11, run, persons=600)
    init_keys(run)
    enroll_nodes(run, AGENCIES)
    reference_matches(run)
    nodes = start_nodes(run, AGENCIES, workers=1)
    try:
        yield run, nodes
    finally:
        for node in nodes.values():
            node.stop()


def transports(run: Path, nodes: dict[str, NodeProcess]) -> dict[str, GrpcTransport]:
    """A gRPC transport per node, with the run's coordinator credentials."""
    return {agency: GrpcTransport(node.address, agency, PkiPaths(run)) for agency, node in nodes.items()}


def test_epoch_over_grpc_matches_the_reference(served: tuple[Path, dict[str, NodeProcess]]) -> None:
    run, nodes = served
    clients = transports(run, nodes)
    try:
        result = run_epoch(run, clients)
    finally:
        for client in clients.values():
            client.close()
    got = pq.read_table(run / "coordinator" / "matches.parquet")
    assert got.num_rows > 0 and got.equals(pq.read_table(run / "reference" / "matches.parquet"))
    assert (
        result.indexes_cached == 0
        and result.indexes_downloaded >= result.risk_partitions - result.absent_partitions
    )
    assert result.bytes["index"] > 0 and result.bytes["evaluate"] > 0
    assert result.codes_total == result.accepted > 0


def test_node_refusals_arrive_as_protocol_errors(served: tuple[Path, dict[str, NodeProcess]]) -> None:
    run, nodes = served
    with GrpcTransport(nodes["transport"].address, "transport", PkiPaths(run)) as client:
        manifest = verify_manifest(client.get_manifest(), "transport", load_identities(PkiPaths(run)))
        part = manifest.partitions[0]
        with pytest.raises(NotFound):
            list(client.stream_index("tickets@1999-01-01", 0, b""))
        with pytest.raises(FailedPrecondition):
            list(client.stream_index(part.partition_id, 0, bytes(32)))
        with pytest.raises(InvalidArgument):
            client.evaluate(
                node_pb2.EvaluateRequest(partition_id=part.partition_id, blinded_elements=b"\x01" * 31)
            )


def test_a_certificate_from_another_pki_is_refused(
    served: tuple[Path, dict[str, NodeProcess]], tmp_path: Path
) -> None:
    run, nodes = served
    stranger = PkiPaths(tmp_path)
    create_pki(stranger, rng=Drbg(b"stranger"), now=dt.datetime(2020, 1, 31))
    stranger.nodes_ca_cert.write_bytes(PkiPaths(run).nodes_ca_cert.read_bytes())  # trusts the real node
    client = GrpcTransport(nodes["carrier"].address, "carrier", stranger, retries=0, deadline=10)
    with client, pytest.raises(NodeUnavailable):
        client.get_manifest()
