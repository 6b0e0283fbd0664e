"""The coordinator over gRPC with mutual TLS against real `healthpsi node serve` processes on loopback:
the epoch's matches equal the reference, refusals arrive as protocol errors, a stranger's certificate is
turned away."""

from __future__ import annotations

import datetime as dt
import json
from collections.abc import Iterator
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from coordinator import applicants as appl
from coordinator.epoch import run_epoch
from coordinator.matching import verify_manifest
from coordinator.transport import GrpcTransport, NodeUnavailable
from crypto import oprf
from crypto.drbg import Drbg
from proto import tokens as tk
from proto.errors import FailedPrecondition, InvalidArgument, NotFound, ResourceExhausted
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
            list(client.stream_index("trip@1999-01-01", 0, b""))
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


def _charges(run: Path, agency: str) -> list[dict[str, object]]:
    """The node's evaluate entries (charged, replayed or refused)."""
    lines = (run / "nodes" / agency / "audit.jsonl").read_text().splitlines()
    return [e["data"] for e in map(json.loads, lines) if e["kind"] == "evaluate"]


def test_household_enumeration_after_the_identity_checks_is_refused_and_logged(
    served: tuple[Path, dict[str, NodeProcess]],
) -> None:
    """The coordinator checks its applicants' identities, then asks the police node about the household
    tokens of sequential household ids: the household partition's own cap stops it long before the end."""
    run, nodes = served
    if not (run / "coordinator" / "matches.parquet").exists():  # the identity checks happen in the epoch
        clients = transports(run, nodes)
        try:
            run_epoch(run, clients)
        finally:
            for client in clients.values():
                client.close()
    # the normal epoch fitted the default caps: nothing was over budget, and the identity checks were charged
    # to the identity partition, at most one element per application
    for agency in AGENCIES:
        assert not [c for c in _charges(run, agency) if c.get("status") == "RESOURCE_EXHAUSTED"], agency
    applicants = appl.prepare(appl.load_applicants(run)).checked
    identity = [c for c in _charges(run, "police") if c["partition_id"] == "identity@static"]
    assert 0 < sum(int(c["count"]) for c in identity if c["outcome"] == "charged") <= len(applicants)

    population = pq.read_table(run / "data" / "police" / "population.parquet").to_pandas()
    counties = sorted({h.split("-")[0] for h in population["household_id"]})
    n_households = population["household_id"].nunique()
    with GrpcTransport(nodes["police"].address, "police", PkiPaths(run)) as client:
        manifest = verify_manifest(client.get_manifest(), "police", load_identities(PkiPaths(run)))
        info = next(p for p in manifest.partitions if p.partition_id == "household@static")
        assert info.entry_count == n_households and info.budget_total <= n_households // 8
        numbers = range(1, n_households + 1)
        guesses = [tk.household(f"{county}-{n:07d}").encode() for n in numbers for county in counties]
        asked, refusal = 0, None
        for start in range(0, len(guesses), 32):
            _, blinded = oprf.blind_many(guesses[start : start + 32], oprf.Mode.VOPRF)
            request = node_pb2.EvaluateRequest(partition_id=info.partition_id, blinded_elements=blinded)
            try:
                client.evaluate(request)
            except ResourceExhausted as exc:
                refusal = exc
                break
            asked += len(guesses[start : start + 32])
    assert refusal is not None and "budget exhausted on partition household@static" in str(refusal)
    assert asked <= info.budget_left < n_households  # at most the cap's worth of households, not all
    refused = [c for c in _charges(run, "police") if c.get("status") == "RESOURCE_EXHAUSTED"]
    assert [(c["partition_id"], c["status"]) for c in refused] == [("household@static", "RESOURCE_EXHAUSTED")]
