"""The node's gRPC server: mutual TLS from RUN/pki, health and reflection, limits, graceful shutdown.

The server binds first and reports NOT_SERVING on the standard health service while it builds or loads
its indexes; once ready it reports SERVING, prints the address and writes the bound port to
RUN/nodes/<agency>/port (so `--listen 127.0.0.1:0` works for a parent process). SIGTERM or SIGINT
stops accepting calls, drains the running ones for a grace period, and stops; a second signal stops at
once. The port file is removed on a clean stop.
"""

from __future__ import annotations

import datetime as dt
import logging
import signal
import threading
import types
from collections.abc import Callable
from concurrent.futures import Executor
from dataclasses import dataclass
from pathlib import Path

import grpc
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection

from nodes.admission import CallGate, CountingExecutor
from nodes.budget import BudgetPolicy
from nodes.handlers import DEFAULT_MAX_BATCH, NodeHandlers
from nodes.index import DEFAULT_CHUNK_BYTES
from nodes.secrets import NodeSecrets
from nodes.service import SERVICE_NAME, MatchingNodeServicer, add_to_server, certificate_fingerprint
from nodes.startup import Progress, date_source, node_dir, open_node
from runctx.files import write_atomic
from runctx.pki import PkiPaths

log = logging.getLogger("healthpsi.node")

MiB = 1 << 20


@dataclass(frozen=True)
class ServerLimits:
    """Resource limits of a node server."""

    max_batch: int = DEFAULT_MAX_BATCH
    """Blinded elements per Evaluate call."""
    max_receive_bytes: int = 4 * MiB
    """Largest request message (an Evaluate of max_batch elements is 32·max_batch bytes)."""
    max_send_bytes: int = 64 * MiB
    """Largest response message (an index chunk holds at least one whole entry)."""
    chunk_bytes: int = DEFAULT_CHUNK_BYTES
    """Target size of one index chunk."""
    max_concurrent_rpcs: int = 32
    """Calls running or waiting for a thread at once over all connections; more get UNAVAILABLE (retryable;
    RESOURCE_EXHAUSTED means a spent budget only)."""
    max_concurrent_streams: int = 16
    """HTTP/2 streams at once per connection."""
    rpc_threads: int = 8
    """Threads running handlers."""
    grace_seconds: float = 10.0
    """How long running calls may finish after SIGTERM."""


class _Interrupted(BaseException):
    """Raised in the main thread by a stop signal that arrives while indexes are being built."""


def tls_credentials(run_dir: Path, agency: str) -> tuple[grpc.ServerCredentials, bytes]:
    """Server credentials (node certificate; clients must chain to the root CA) and the coordinator
    certificate's fingerprint, the only peer served."""
    pki = PkiPaths(run_dir)
    secrets = NodeSecrets.of(run_dir, agency)
    secrets.check()
    credentials = grpc.ssl_server_credentials(
        [(secrets.tls_key.read_bytes(), pki.node_cert(agency).read_bytes())],
        root_certificates=pki.root_cert.read_bytes(),
        require_client_auth=True,
    )
    return credentials, certificate_fingerprint(pki.coordinator_cert.read_bytes())


class NodeServer:
    """A node's gRPC server, bound and started, serving once `load` has built or loaded the indexes."""

    def __init__(self, run_dir: Path, agency: str, listen: str, limits: ServerLimits | None = None) -> None:
        self.run_dir = Path(run_dir)
        self.agency = agency
        self.limits = limits or ServerLimits()
        self.port_file = node_dir(self.run_dir, agency) / "port"
        credentials, coordinator = tls_credentials(self.run_dir, agency)
        lim = self.limits
        self.executor = CountingExecutor(lim.rpc_threads)
        self.gate = CallGate(lim.max_concurrent_rpcs, self.executor)
        self.server = grpc.server(
            self.executor,
            interceptors=[self.gate],
            options=[
                ("grpc.max_receive_message_length", lim.max_receive_bytes),
                ("grpc.max_send_message_length", lim.max_send_bytes),
                ("grpc.max_concurrent_streams", lim.max_concurrent_streams),
                ("grpc.so_reuseport", 0),
                # the coordinator pings every 30 s on long calls; accept that without GOAWAY
                ("grpc.http2.min_ping_interval_without_data_ms", 10_000),
                ("grpc.keepalive_permit_without_calls", 1),
            ],
        )
        self.servicer = MatchingNodeServicer(None, coordinator)
        add_to_server(self.servicer, self.server)
        self.health = health.HealthServicer()
        health_pb2_grpc.add_HealthServicer_to_server(self.health, self.server)
        reflection.enable_server_reflection(
            (SERVICE_NAME, health.SERVICE_NAME, reflection.SERVICE_NAME), self.server
        )
        self._set_health(health_pb2.HealthCheckResponse.NOT_SERVING)
        try:
            self.port = self.server.add_secure_port(listen, credentials)
        except RuntimeError as exc:
            raise OSError(f"cannot listen on {listen}: {exc}") from None
        if not self.port:
            raise OSError(f"cannot listen on {listen}")
        self.host = listen.rsplit(":", 1)[0]
        self.handlers: NodeHandlers | None = None

    @property
    def address(self) -> str:
        """host:port the server is bound to."""
        return f"{self.host}:{self.port}"

    def _set_health(self, status: health_pb2.HealthCheckResponse.ServingStatus.ValueType) -> None:
        """Report the same status for the server as a whole and for the MatchingNode service."""
        self.health.set("", status)
        self.health.set(SERVICE_NAME, status)

    def start(self) -> None:
        """Start accepting connections (calls to MatchingNode get UNAVAILABLE until `ready`)."""
        self.server.start()

    def ready(self, handlers: NodeHandlers) -> None:
        """Serve these handlers: health SERVING and the port published to RUN/nodes/<agency>/port."""
        self.handlers = handlers
        self.servicer.handlers = handlers
        self._set_health(health_pb2.HealthCheckResponse.SERVING)
        self.port_file.parent.mkdir(parents=True, exist_ok=True)
        write_atomic(self.port_file, f"{self.port}\n".encode(), durable=False)  # never a partial number

    def stop(self, grace: float | None = None) -> None:
        """Stop: NOT_SERVING, refuse new calls, let running ones finish within `grace`, close the state."""
        self.health.enter_graceful_shutdown()
        self.server.stop(self.limits.grace_seconds if grace is None else grace).wait()
        self.executor.shutdown(wait=False)
        if self.handlers is not None:
            self.handlers.close()
        self.port_file.unlink(missing_ok=True)


def serve(
    run_dir: Path,
    agency: str,
    listen: str,
    *,
    executor: Executor | None = None,
    budget: BudgetPolicy | None = None,
    limits: ServerLimits | None = None,
    progress: Progress | None = None,
    on_listening: Callable[[str], None] | None = None,
    on_ready: Callable[[str], None] | None = None,
    as_of: dt.date | None = None,
    clock: str = "auto",
) -> int:
    """Run a node until SIGTERM or SIGINT, then drain and stop; return the exit code (0 on a clean stop).

    While serving, the node follows its date (`nodes.startup.date_source`: the wall clock, or the run's
    clock in RUN/nodes/<agency>/date) and rolls to each new one without a restart. Must run in the main
    thread (it installs the signal handlers).
    """
    limits = limits or ServerLimits()
    node = NodeServer(run_dir, agency, listen, limits)
    stop = threading.Event()
    building = True

    def on_signal(signum: int, frame: types.FrameType | None) -> None:
        """First signal: stop (interrupting a build); second: stop without grace."""
        if stop.is_set():
            node.server.stop(0)
            return
        log.info("received %s; stopping", signal.Signals(signum).name)
        stop.set()
        if building:
            raise _Interrupted

    previous = {sig: signal.signal(sig, on_signal) for sig in (signal.SIGTERM, signal.SIGINT)}
    try:
        node.start()
        if on_listening:
            on_listening(node.address)
        next_date = date_source(run_dir, agency, clock)
        try:
            handlers = open_node(run_dir, agency, executor, budget=budget, max_batch=limits.max_batch,
                                 chunk_bytes=limits.chunk_bytes, progress=progress,
                                 as_of=as_of or next_date())
            building = False
            node.ready(handlers)
            if on_ready:
                on_ready(node.address)
            failed: dt.date | None = None
            while not stop.wait(1.0):
                wanted = next_date()
                if wanted is None or wanted <= handlers.as_of or wanted == failed or handlers.roller is None:
                    continue
                try:
                    handlers.roller.roll(wanted)
                except Exception:  # keep serving the date it has; try again when the date changes
                    log.exception("could not roll to %s; still serving %s", wanted, handlers.as_of)
                    failed = wanted
        except _Interrupted:
            log.info("interrupted while building indexes")
        node.stop()
        log.info("stopped")
        return 0
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
