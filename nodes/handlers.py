"""The node's pure logic: manifest, index stream and Evaluate over proto messages.

`NodeHandlers` knows nothing of gRPC: it takes and returns `node_pb2` messages and raises
`proto.errors.*`. `nodes.startup.open_node` builds it from the node's state directory.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import logging
import os
import threading
from collections.abc import Callable, Generator, Mapping
from concurrent.futures import Executor
from dataclasses import dataclass, field
from typing import Any, Protocol

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from crypto import oprf
from crypto.auditlog import AuditLog
from crypto.drbg import Rng
from crypto.errors import InvalidElement
from crypto.group import ELEMENT_BYTES, split_packed
from nodes import build
from nodes import index as idx
from nodes.budget import BudgetLedger
from nodes.manifest import build_manifest, partition_info, sign_manifest
from proto.errors import FailedPrecondition, InvalidArgument, NotFound, ProtocolError
from proto.healthpsi.v1 import node_pb2
from runctx.scenario import DEFAULT_WINDOW_DAYS

log = logging.getLogger("healthpsi.node")

DEFAULT_MAX_BATCH = 8192
"""Largest number of blinded elements accepted in one Evaluate call."""


Clock = Callable[[], dt.datetime]
ProofRng = Callable[[str, bytes], Rng | None]


class Roller(Protocol):
    """Moves a serving node to a new date (`nodes.startup.NodeRoller`)."""

    def roll(self, as_of: dt.date) -> bool:
        """Serve `as_of` from now on; False when already served."""


@dataclass
class Partition:
    """A served partition: its opened index and its OPRF private key."""

    index: idx.PartitionIndex
    sk: bytes = field(repr=False)
    key_version: int = 1
    lock: threading.Lock = field(default_factory=threading.Lock)

    @property
    def meta(self) -> idx.IndexMeta:
        """The partition's index metadata."""
        return self.index.meta


def _wall_clock() -> dt.datetime:
    """The current local time, to the second."""
    return dt.datetime.now().replace(microsecond=0)


def _no_proof_rng(partition_id: str, inputs_digest: bytes) -> Rng | None:
    """System randomness for DLEQ proof nonces."""
    return None


MAX_LOGGED_CHARS = 256
"""The longest string a peer chose (a partition id, an idempotency key, an error echoing one) that is written
to the audit log or sent back whole; longer ones are cut and their length noted."""


def capped(text: str, limit: int = MAX_LOGGED_CHARS) -> str:
    """`text`, or its first `limit` characters and its length when it is longer."""
    return text if len(text) <= limit else f"{text[:limit]}… ({len(text)} characters)"


class NodeHandlers:
    """The three MatchingNode calls as pure functions of proto messages, with budgets and an audit log."""

    def __init__(
        self,
        agency: str,
        partitions: Mapping[str, Partition],
        ledger: BudgetLedger,
        audit: AuditLog,
        identity_key: Ed25519PrivateKey,
        *,
        as_of: dt.date,
        window_days: int = DEFAULT_WINDOW_DAYS,
        malformed: Mapping[str, int] | None = None,
        max_batch: int = DEFAULT_MAX_BATCH,
        chunk_bytes: int = idx.DEFAULT_CHUNK_BYTES,
        executor: Executor | None = None,
        clock: Clock = _wall_clock,
        proof_rng: ProofRng = _no_proof_rng,
        randomness: str = "system",
        lock: int | None = None,
    ) -> None:
        self.agency = agency
        self.partitions = dict(partitions)
        self.ledger = ledger
        self.audit = audit
        self.identity_key = identity_key
        self.as_of = as_of
        self.window_days = window_days
        self.malformed = dict(malformed or {})
        self.max_batch = max_batch
        self.chunk_bytes = chunk_bytes
        self.executor = executor
        self.clock = clock
        self.proof_rng = proof_rng
        self.randomness = randomness
        self._lock = lock
        self.build_stats: build.BuildStats | None = None
        """What opening (or the last roll) built (set by `open_node`)."""
        self.roller: Roller | None = None
        """What moves the node to its next date while it serves (set by `open_node`)."""

    # ------------------------------------------------------------------------------------------ helpers

    def _log(self, kind: str, **fields: Any) -> None:
        """Append one entry to the node's audit log (strings a peer chose capped at `MAX_LOGGED_CHARS`)."""
        self.audit.append(kind, {k: capped(v) if isinstance(v, str) else v for k, v in fields.items()})

    def log_refusal(self, call: str, status: str, reason: str, peer: str) -> None:
        """Record a call refused before it reached its handler (e.g. PERMISSION_DENIED)."""
        self._log("refused", call=call, status=status, reason=reason, peer=peer)

    def sign_head(self, event: str) -> None:
        """Append a signed head to the audit log, covering every entry so far (`event`: why now)."""
        data = {"event": event, "randomness": self.randomness}
        self.audit.sign_head(self.identity_key, self.as_of.isoformat(), data)

    def _partition(self, partition_id: str) -> Partition:
        """The served partition with this id, or NotFound."""
        try:
            return self.partitions[partition_id]
        except KeyError:
            raise NotFound(f"no partition {capped(partition_id)!r} on the {self.agency} node") from None

    def manifest(self) -> node_pb2.Manifest:
        """The current (unsigned) manifest, budgets as of now."""
        infos = [partition_info(p.meta, p.key_version, self.ledger.budget(pid))
                 for pid, p in self.partitions.items()]
        return build_manifest(
            self.agency, self.as_of, self.window_days, self.clock(), self.malformed, infos, self.max_batch,
            self.randomness,
        )

    # -------------------------------------------------------------------------------------------- calls

    def get_manifest(self, request: node_pb2.GetManifestRequest) -> node_pb2.SignedManifest:
        """The node's manifest, signed with its Ed25519 identity key (and logged)."""
        signed = sign_manifest(self.manifest(), self.identity_key)
        self._log(
            "manifest_published",
            manifest_sha256=hashlib.sha256(signed.manifest).hexdigest(),
            partitions=len(self.partitions),
        )
        return signed

    def stream_index(self, request: node_pb2.StreamIndexRequest) -> Generator[node_pb2.IndexChunk]:
        """A partition's index from an entry offset, in chunks each carrying its SHA-256.

        Raises (before the first chunk) NotFound, FailedPrecondition for a stale digest, InvalidArgument
        for an offset past the end.
        """
        try:
            return self._check_stream(request)
        except ProtocolError as exc:
            self._log("index_refused", partition_id=request.partition_id, offset=request.offset,
                      status=exc.status, reason=str(exc))
            raise

    def _check_stream(self, request: node_pb2.StreamIndexRequest) -> Generator[node_pb2.IndexChunk]:
        """`stream_index` before logging a refusal."""
        part = self._partition(request.partition_id)
        meta = part.meta
        if request.index_digest and request.index_digest != meta.index_digest:
            raise FailedPrecondition(
                f"index digest {request.index_digest.hex()} is not the current digest of partition "
                f"{meta.partition_id} ({meta.index_digest.hex()}); fetch the manifest again"
            )
        if request.offset > meta.entry_count:
            raise InvalidArgument(
                f"offset {request.offset} is past the end of partition {meta.partition_id} "
                f"({meta.entry_count} entries)"
            )
        return self._chunks(part, request.offset)

    def _chunks(self, part: Partition, offset: int) -> Generator[node_pb2.IndexChunk]:
        """Yield the chunks of an index from `offset`, logging how much was sent when the stream ends."""
        meta = part.meta
        sent = 0
        try:
            for first, count, data in part.index.chunks(offset, self.chunk_bytes):
                yield node_pb2.IndexChunk(
                    partition_id=meta.partition_id,
                    offset=first,
                    count=count,
                    entries=data,
                    digest=hashlib.sha256(data).digest(),
                    total=meta.entry_count,
                )
                sent += count
        finally:
            self._log(
                "index_streamed",
                partition_id=meta.partition_id,
                index_sha256=meta.index_digest.hex(),
                offset=offset,
                entries=sent,
                complete=offset + sent == meta.entry_count,
            )

    def evaluate(self, request: node_pb2.EvaluateRequest) -> node_pb2.EvaluateResponse:
        """BlindEvaluate a batch under the partition's key, charged to its budget; every call is logged.

        A retry with the same idempotency key and inputs gets the stored response, uncharged.
        """
        data = request.blinded_elements
        digest = hashlib.sha256(data).digest()
        record: dict[str, Any] = {
            "partition_id": request.partition_id,
            "count": len(data) // ELEMENT_BYTES,
            "inputs_sha256": digest.hex(),
            "idempotency_key": request.idempotency_key,
            "verifiable": request.verifiable,
        }
        try:
            response, outcome = self._evaluate(request, digest, record)
        except ProtocolError as exc:
            left = None
            if request.partition_id in self.partitions:
                left = self.ledger.budget(request.partition_id).left
            self._log("evaluate", **record, outcome="refused", status=exc.status, reason=str(exc),
                      budget_left=left)
            raise
        if outcome == "replayed":
            self._log("evaluate", **record, outcome=outcome, budget_left=response.budget_left)
        return response

    def _evaluate(
        self, request: node_pb2.EvaluateRequest, digest: bytes, record: dict[str, Any]
    ) -> tuple[node_pb2.EvaluateResponse, str]:
        """Validate, replay or charge, and evaluate; return the response and its outcome. A charge is logged
        (`record` with its outcome) inside the ledger's transaction, before it commits."""
        part = self._partition(request.partition_id)
        data = request.blinded_elements
        if not data or len(data) % ELEMENT_BYTES:
            raise InvalidArgument(
                f"blinded_elements must be a non-empty multiple of {ELEMENT_BYTES} bytes, got {len(data)}"
            )
        count = len(data) // ELEMENT_BYTES
        if count > self.max_batch:
            raise InvalidArgument(f"batch of {count} elements exceeds the node's max_batch {self.max_batch}")
        pid = request.partition_id
        with part.lock:
            stored = self.ledger.replay(pid, request.idempotency_key, digest)
            if stored is not None:
                response = node_pb2.EvaluateResponse()
                response.ParseFromString(stored)
                return response, "replayed"
            self.ledger.check(pid, count)
            try:  # the workers check each element (canonical, valid, not the identity) as they evaluate
                evaluated = oprf.blind_evaluate_packed(part.sk, data, self.executor)
            except InvalidElement as exc:
                raise InvalidArgument(f"blinded {exc}") from None
            proof = b""
            if request.verifiable:
                proof = oprf.generate_proof(
                    part.sk, part.meta.public_key, split_packed(data), split_packed(evaluated),
                    rng=self.proof_rng(pid, digest), executor=self.executor,
                )

            def respond(left: int) -> bytes:
                """The serialized response once `left` elements remain."""
                return node_pb2.EvaluateResponse(
                    partition_id=pid, evaluated_elements=evaluated, proof=proof, budget_left=left,
                    inputs_digest=digest,
                ).SerializeToString(deterministic=True)

            def log_charge(left: int) -> None:
                """The charge's audit entry, written before the charge commits."""
                self._log("evaluate", **record, outcome="charged", budget_left=left)

            stored = self.ledger.commit(pid, request.idempotency_key, digest, count, respond, log_charge)
        response = node_pb2.EvaluateResponse()
        response.ParseFromString(stored)
        return response, "charged"

    def swap(self, as_of: dt.date, partitions: Mapping[str, Partition], malformed: Mapping[str, int]) -> list[
        Partition
    ]:
        """Serve a new date's partitions from now on (a partition no longer served answers NOT_FOUND); return
        the partitions replaced, for the caller to close once their keys and files are dealt with."""
        old = self.partitions
        self.partitions = dict(partitions)
        self.as_of = as_of
        self.malformed = dict(malformed)
        return [p for pid, p in old.items() if self.partitions.get(pid) is not p]

    def close(self) -> None:
        """Sign a closing head on the audit log, then close index files, the budget database and the log."""
        self.sign_head("closed")
        for part in self.partitions.values():
            part.index.close()
        self.ledger.close()
        self.audit.close()
        if self._lock is not None:
            os.close(self._lock)
            self._lock = None
