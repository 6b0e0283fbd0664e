"""Integration fixtures: a small simulated city with its PKI, real `healthpsi node serve` processes on
loopback (ports chosen by the OS), and a small test-side gRPC client that records every byte it receives."""

from __future__ import annotations

import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, TypeVar

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from crypto.pki import DNS_SUFFIX
from nodes.budget import CONFIG_FILE
from proto.healthpsi.v1 import node_pb2, node_pb2_grpc
from proto.tokens import AGENCIES
from runctx.pki import PkiPaths, init_keys
from runner.enrollment import declared_applications, enroll_nodes
from runner.processes import spawn_node, wait_serving
from simulation.scenario import simulate

PERSONS = 1500
SEED = 7
TEST_CHUNK_BYTES = 4096
"""Small index chunks, so that every partition streams in several of them."""
START_TIMEOUT = 600.0

T = TypeVar("T")


def healthpsi(*args: str, timeout: float = 900.0) -> subprocess.CompletedProcess[str]:
    """Run the `healthpsi` command line; fail the test with its output if it fails."""
    proc = subprocess.run(
        [sys.executable, "-m", "healthpsi.cli", *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        stdin=subprocess.DEVNULL,
    )
    if proc.returncode != 0:
        pytest.fail(f"healthpsi {' '.join(args)} exited {proc.returncode}:\n{proc.stdout}\n{proc.stderr}")
    return proc


@pytest.fixture(scope="session")
def city_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A simulated city (`--persons 1500`, seed 7) with its PKI from `keys init` and each node's own keys
    from `node init` (the police operator declaring the simulation's applications as its identity cap),
    enrolled by `keys enroll`; no node state."""
    run = tmp_path_factory.mktemp("city") / "run"
    healthpsi(
        "simulate", "--preset", "city-20k", "--seed", str(SEED), "--out", str(run), "--persons", str(PERSONS)
    )
    healthpsi("keys", "init", "--run", str(run))
    for agency in AGENCIES:
        applications = declared_applications(run) if agency == "police" else None
        caps = ["--budget", f"identity={applications}"] if applications is not None else []
        healthpsi("node", "init", "--run", str(run), "--agency", agency, *caps)
        healthpsi("keys", "enroll", "--run", str(run), "--agency", agency)
    return run


@pytest.fixture(scope="session")
def two_day_city(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A city simulated for two epochs (`--persons 1500`, seed 7, 5 % late rows) with its PKI and enrolled
    nodes, no node or coordinator state: modules that run epochs on it work on their own copy."""
    run = tmp_path_factory.mktemp("two-days") / "run"
    simulate("city-20k", SEED, run, persons=PERSONS, days=2, late_rate=0.05)
    init_keys(run)
    enroll_nodes(run, AGENCIES)
    return run


def copy_caps(source: Path, target: Path) -> None:
    """Copy the node operators' caps (RUN/nodes/<agency>/budget.conf) of one run into another."""
    for config in (source / "nodes").glob(f"*/{CONFIG_FILE}"):
        (target / "nodes" / config.parent.name).mkdir(parents=True, exist_ok=True)
        shutil.copy2(config, target / "nodes" / config.parent.name / CONFIG_FILE)


def copy_run(source: Path, target: Path) -> Path:
    """A copy of a run's scenario, agency data, PKI, node keys and operators' caps (no node state) for a test
    that needs its own node."""
    target.mkdir(parents=True)
    shutil.copy2(source / "scenario.json", target / "scenario.json")
    shutil.copytree(source / "data", target / "data")
    shutil.copytree(source / "pki", target / "pki")
    copy_caps(source, target)
    for secrets in (source / "nodes").glob("*.secrets"):
        shutil.copytree(secrets, target / "nodes" / secrets.name)
    return target


class NodeProcess:
    """A real `healthpsi node serve` process listening on 127.0.0.1:0, its log in RUN/nodes/<agency>/."""

    def __init__(self, run: Path, agency: str, *extra: str) -> None:
        self.run = run
        self.agency = agency
        self.state = run / "nodes" / agency
        self.port_file = self.state / "port"
        self.process, self.log_path = spawn_node(
            run,
            agency,
            workers=1,
            extra=("--chunk-bytes", str(TEST_CHUNK_BYTES), *extra),
            log_path=self.state / f"serve-{time.monotonic_ns()}.log",
        )
        self.port = 0

    @property
    def address(self) -> str:
        """127.0.0.1:<port> once ready."""
        return f"127.0.0.1:{self.port}"

    def log(self) -> str:
        """Everything the process printed so far."""
        return self.log_path.read_text(errors="replace")

    def wait_ready(self, timeout: float = START_TIMEOUT) -> NodeProcess:
        """Wait until the node publishes its port (`runner.processes.wait_serving`) and its health service
        says SERVING."""
        deadline = time.monotonic() + timeout
        serving = wait_serving(self.run, self.agency, self.process, self.log_path, timeout=timeout)
        self.port = int(serving.address.rpartition(":")[2])
        while time.monotonic() < deadline and self.process.poll() is None:
            with NodeClient(self.run, self.agency, self.address) as client:
                if client.health() == health_pb2.HealthCheckResponse.SERVING:
                    return self
            time.sleep(0.1)
        self.kill()
        raise RuntimeError(f"{self.agency} node not healthy within {timeout:.0f}s:\n{self.log()[-3000:]}")

    def terminate(self, timeout: float = 30.0) -> int:
        """SIGTERM and wait; return the exit code."""
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
        return self.process.wait(timeout=timeout)

    def kill(self) -> None:
        """SIGKILL and reap."""
        if self.process.poll() is None:
            self.process.kill()
        self.process.wait(timeout=30)


class NodeClient:
    """A minimal MatchingNode client with the coordinator's credentials (or others, for refusal tests).

    `transcript` holds every byte the node sent: each response message serialized, and the status code
    and details of every error.
    """

    def __init__(
        self,
        run: Path,
        agency: str,
        address: str,
        *,
        certificate: bytes | None = None,
        key: bytes | None = None,
        use_coordinator: bool = True,
    ) -> None:
        pki = PkiPaths(run)
        if use_coordinator:
            certificate, key = pki.coordinator_cert.read_bytes(), pki.coordinator_key.read_bytes()
        credentials = grpc.ssl_channel_credentials(
            root_certificates=pki.nodes_ca_cert.read_bytes(), private_key=key, certificate_chain=certificate
        )
        self.channel = grpc.secure_channel(
            address,
            credentials,
            options=[
                ("grpc.ssl_target_name_override", agency + DNS_SUFFIX),
                ("grpc.max_receive_message_length", 64 << 20),
            ],
        )
        self.stub = node_pb2_grpc.MatchingNodeStub(self.channel)
        self.transcript: list[bytes] = []

    def __enter__(self) -> NodeClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.channel.close()

    def _record_error(self, exc: grpc.RpcError) -> None:
        """Record what an error carried from the node."""
        if isinstance(exc, grpc.Call):
            self.transcript.append(f"{exc.code().name}: {exc.details()}".encode())
            for key, value in exc.trailing_metadata() or ():
                raw = value if isinstance(value, bytes) else value.encode()
                self.transcript.append(key.encode() + b"=" + raw)

    def _call(self, fn: Callable[..., T], request: Any) -> T:
        """One unary call, its response (or error) recorded."""
        try:
            response = fn(request, timeout=60)
        except grpc.RpcError as exc:
            self._record_error(exc)
            raise
        self.transcript.append(response.SerializeToString())
        return response

    def manifest(self) -> node_pb2.SignedManifest:
        """GetManifest."""
        return self._call(self.stub.GetManifest, node_pb2.GetManifestRequest())

    def evaluate(
        self, partition_id: str, blinded: bytes, key: str = "", verifiable: bool = True
    ) -> node_pb2.EvaluateResponse:
        """Evaluate one batch."""
        request = node_pb2.EvaluateRequest(
            partition_id=partition_id, blinded_elements=blinded, verifiable=verifiable, idempotency_key=key
        )
        return self._call(self.stub.Evaluate, request)

    def stream(
        self, partition_id: str, offset: int = 0, digest: bytes = b"", limit: int | None = None
    ) -> list[node_pb2.IndexChunk]:
        """StreamIndex from `offset`; with `limit`, cancel the stream after that many chunks."""
        call = self.stub.StreamIndex(
            node_pb2.StreamIndexRequest(partition_id=partition_id, offset=offset, index_digest=digest),
            timeout=120,
        )
        chunks = []
        try:
            for chunk in call:
                self.transcript.append(chunk.SerializeToString())
                chunks.append(chunk)
                if limit is not None and len(chunks) >= limit:
                    call.cancel()
                    break
        except grpc.RpcError as exc:
            self._record_error(exc)
            raise
        return chunks

    def health(self, service: str = "") -> int:
        """The health service's status (UNKNOWN when unreachable)."""
        stub = health_pb2_grpc.HealthStub(self.channel)
        try:
            response = stub.Check(health_pb2.HealthCheckRequest(service=service), timeout=5)
        except grpc.RpcError:
            return health_pb2.HealthCheckResponse.UNKNOWN
        self.transcript.append(response.SerializeToString())
        return response.status


@pytest.fixture(scope="session")
def nodes(city_run: Path) -> Iterator[dict[str, NodeProcess]]:
    """The three agencies' nodes serving the simulated city (started together, stopped with SIGTERM)."""
    procs = {agency: NodeProcess(city_run, agency) for agency in AGENCIES}
    try:
        for proc in procs.values():
            proc.wait_ready()
        yield procs
    finally:
        for proc in procs.values():
            try:
                proc.terminate()
            except subprocess.TimeoutExpired:
                proc.kill()
