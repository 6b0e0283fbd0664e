"""The node's pure logic: manifest, index stream and Evaluate over proto messages, plus `open_node`.

`NodeHandlers` knows nothing of gRPC: it takes and returns `node_pb2` messages and raises
`proto.errors.*`. `open_node` loads an agency's data one partition at a time, builds the indexes that
are missing or stale (one OPRF evaluation per distinct token), reuses the others, destroys the keys of
partitions that left the window, and returns the handlers.
"""

from __future__ import annotations

import datetime as dt
import fcntl
import hashlib
import json
import logging
import os
import threading
import time
from collections.abc import Callable, Generator, Iterator, Mapping
from concurrent.futures import Executor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from crypto import oprf
from crypto.auditlog import AuditLog
from crypto.drbg import Drbg, Rng, default_rng
from crypto.errors import InvalidElement
from crypto.group import ELEMENT_BYTES, split_packed
from crypto.pki import PkiPaths, load_identity_key, load_storage_key, write_atomic
from nodes import build
from nodes import index as idx
from nodes.budget import BudgetLedger, BudgetPolicy
from nodes.keys import KeyStore, KeyStoreError
from nodes.manifest import build_manifest, partition_info, sign_manifest
from nodes.store import AgencyStore, StoreError
from proto import layout, risk, tokens
from proto.errors import FailedPrecondition, InvalidArgument, NotFound, ProtocolError
from proto.healthpsi.v1 import node_pb2

log = logging.getLogger("healthpsi.node")

DEFAULT_MAX_BATCH = 8192
"""Largest number of blinded elements accepted in one Evaluate call."""
DEFAULT_WINDOW_DAYS = 14
SOURCES_FILE = "sources.json"
"""In RUN/nodes/<agency>/: the data-file digest, window, partitions and malformed counts of the last build."""
BUILD_FILE = "build.json"
"""In RUN/nodes/<agency>/: what the last build did (`nodes.build.BuildStats`: partitions, rows, seconds)."""


class NodeBusy(ValueError):
    """The node's state directory is already in use by another node process."""


Clock = Callable[[], dt.datetime]
ProofRng = Callable[[str, bytes], Rng | None]
Progress = Callable[[str, int, int, bool], None]
"""progress(partition_id, partitions done, partitions expected, reused)."""


@dataclass
class Partition:
    """A served partition: its opened index and its OPRF private key."""

    index: idx.PartitionIndex
    sk: bytes
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
        self._lock = lock
        self.build_stats: build.BuildStats | None = None
        """What opening the node built (set by `open_node`)."""

    # ------------------------------------------------------------------------------------------ helpers

    def _log(self, kind: str, **fields: Any) -> None:
        """Append one entry to the node's audit log."""
        self.audit.append(kind, fields)

    def sign_head(self, event: str) -> None:
        """Append a signed head to the audit log, covering every entry so far (`event`: why now)."""
        self.audit.sign_head(self.identity_key, self.as_of.isoformat(), {"event": event})

    def _partition(self, partition_id: str) -> Partition:
        """The served partition with this id, or NotFound."""
        try:
            return self.partitions[partition_id]
        except KeyError:
            raise NotFound(f"no partition {partition_id!r} on the {self.agency} node") from None

    def manifest(self) -> node_pb2.Manifest:
        """The current (unsigned) manifest, budgets as of now."""
        infos = [partition_info(p.meta, self.ledger.budget(pid)) for pid, p in self.partitions.items()]
        return build_manifest(
            self.agency, self.as_of, self.window_days, self.clock(), self.malformed, infos, self.max_batch
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
            response, outcome = self._evaluate(request, digest)
        except ProtocolError as exc:
            left = None
            if request.partition_id in self.partitions:
                left = self.ledger.budget(request.partition_id).left
            self._log("evaluate", **record, outcome="refused", status=exc.status, reason=str(exc),
                      budget_left=left)
            raise
        self._log("evaluate", **record, outcome=outcome, budget_left=response.budget_left)
        return response

    def _evaluate(
        self, request: node_pb2.EvaluateRequest, digest: bytes
    ) -> tuple[node_pb2.EvaluateResponse, str]:
        """Validate, replay or charge, and evaluate; return the response and its outcome for the log."""
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

            stored = self.ledger.commit(pid, request.idempotency_key, digest, count, respond)
        response = node_pb2.EvaluateResponse()
        response.ParseFromString(stored)
        return response, "charged"

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


# ------------------------------------------------------------------------------------------ open_node


@dataclass(frozen=True)
class RunSettings:
    """What a node takes from RUN/scenario.json (or the command line): window and optional seed."""

    as_of: dt.date
    window_days: int
    seed: int | None

    @property
    def window(self) -> tuple[dt.date, dt.date]:
        """First and last day of the window, inclusive."""
        return risk.window(self.as_of, self.window_days)

    def clock(self) -> dt.datetime:
        """Now: the wall clock, or in a seeded simulation run the simulated time (end of the as_of day)."""
        if self.seed is None:
            return _wall_clock()
        return dt.datetime.combine(self.as_of + dt.timedelta(days=1), dt.time())

    def in_window(self, partition_id: str) -> bool:
        """Whether a partition is static or its day lies in the window."""
        _, day = tokens.parse_partition_id(partition_id)
        first, last = self.window
        return day is None or first <= day <= last


def run_settings(run_dir: Path, as_of: dt.date | None = None, window_days: int | None = None) -> RunSettings:
    """Window and seed from RUN/scenario.json, overridden by explicit arguments.

    Without a scenario file (an agency's own deployment) the window ends today; a scenario file without
    an as_of date, or with a malformed one, is a ValueError.
    """
    scenario: dict[str, Any] = {}
    path = Path(run_dir) / "scenario.json"
    if path.exists():
        try:
            scenario = json.loads(path.read_text())
        except json.JSONDecodeError as exc:
            raise ValueError(f"{path}: not valid JSON ({exc})") from None
        if not isinstance(scenario, dict):
            raise ValueError(f"{path}: expected a JSON object")
    if as_of is None:
        if not path.exists():
            as_of = dt.date.today()
        else:
            try:
                as_of = dt.date.fromisoformat(str(scenario["as_of"]))
            except (KeyError, ValueError):
                raise ValueError(f"{path}: needs an as_of date (YYYY-MM-DD)") from None
    seed = scenario.get("seed")
    if seed is not None and (not isinstance(seed, int) or isinstance(seed, bool) or not 0 <= seed < 2**64):
        raise ValueError(f"{path}: seed must be an integer in [0, 2^64), got {seed!r}")
    days = int(window_days or scenario.get("window_days") or DEFAULT_WINDOW_DAYS)
    if days < 1:
        raise ValueError(f"window_days must be at least 1, got {days}")
    return RunSettings(as_of=as_of, window_days=days, seed=seed)


def node_dir(run_dir: Path, agency: str) -> Path:
    """RUN/nodes/<agency>: the node's state directory."""
    return Path(run_dir) / "nodes" / agency


def open_node(
    run_dir: Path,
    agency: str,
    executor: Executor | None = None,
    *,
    budget: BudgetPolicy | None = None,
    max_batch: int = DEFAULT_MAX_BATCH,
    chunk_bytes: int = idx.DEFAULT_CHUNK_BYTES,
    as_of: dt.date | None = None,
    window_days: int | None = None,
    progress: Progress | None = None,
    clock: Clock | None = None,
) -> NodeHandlers:
    """Load an agency node's state from RUN/nodes/<agency>/, building missing or stale indexes, and return
    its handlers.

    Partition data comes from `nodes.store.AgencyStore` one partition at a time. An index is reused when
    its metadata, key and digest match the partition's current rows; otherwise it is (re)built with one
    VOPRF evaluation per distinct token over `executor`. Keys and indexes of partitions that left the
    window are destroyed and the destruction is logged. In a simulation run (RUN/scenario.json with a
    seed) keys and proof nonces come from the run's DRBG, so the node's outputs are reproducible.
    """
    run_dir = Path(run_dir)
    settings = run_settings(run_dir, as_of, window_days)
    policy = budget or BudgetPolicy()
    state = node_dir(run_dir, agency)
    state.mkdir(parents=True, exist_ok=True)
    lock = lock_state(state)
    try:
        return _open(run_dir, agency, executor, settings, policy, state, lock, max_batch, chunk_bytes,
                     progress, clock)
    except BaseException:
        os.close(lock)
        raise


def lock_state(state: Path) -> int:
    """Take the node's state directory for this process (an exclusive lock, released when the process
    ends); NodeBusy when another node process or handler already holds it."""
    fd = os.open(state / "lock", os.O_RDWR | os.O_CREAT, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        os.close(fd)
        raise NodeBusy(f"{state} is in use by another node (one node process per agency and run)") from None
    return fd


def _open(
    run_dir: Path,
    agency: str,
    executor: Executor | None,
    settings: RunSettings,
    policy: BudgetPolicy,
    state: Path,
    lock: int,
    max_batch: int,
    chunk_bytes: int,
    progress: Progress | None,
    clock: Clock | None,
) -> NodeHandlers:
    """open_node's work once the state directory is locked."""
    index_dir = state / "index"
    pki = PkiPaths(run_dir)
    identity_key = load_identity_key(pki.node_identity_key(agency))
    keystore = KeyStore(state / "keys", agency, load_storage_key(pki.node_storage_key(agency)))
    ledger = BudgetLedger(state / "state.sqlite")
    audit = AuditLog(state / "audit.jsonl")
    root_rng = Drbg(b"healthpsi" + settings.seed.to_bytes(8, "big")) if settings.seed is not None else None

    def partition_rng(partition_id: str) -> Rng | None:
        """The DRBG stream of a partition in a simulation run (None: system randomness)."""
        return None if root_rng is None else root_rng.child(f"node/{agency}/{partition_id}")

    for pid in sorted(set(keystore.partitions()) | set(idx.indexed_partitions(index_dir))):
        if not settings.in_window(pid):
            destroyed = keystore.destroy(pid)
            idx.remove_index(index_dir, pid)
            forgotten = ledger.forget_responses(pid)
            audit.append("partition_key_destroyed", {"partition_id": pid, "key_found": destroyed,
                                                     "stored_responses_deleted": forgotten,
                                                     "window": [d.isoformat() for d in settings.window]})
            log.info("partition %s left the window: key destroyed", pid)

    sources = source_digest(run_dir, agency, settings.as_of)
    reused_all = _reuse_all(state / SOURCES_FILE, sources, settings, index_dir, keystore)
    stats = build.BuildStats()
    if reused_all is not None:
        partitions, malformed = reused_all
        stats.partitions = stats.reused = len(partitions)
        for done, pid in enumerate(partitions, start=1):
            if progress is not None:
                progress(pid, done, len(partitions), True)
    else:
        store = AgencyStore(run_dir, agency, settings.as_of)
        partitions, stats = _build_partitions(
            run_dir, agency, store, settings, index_dir, keystore, audit, executor, partition_rng, progress
        )
        malformed = store.malformed
        _save_sources(state / SOURCES_FILE, sources, settings, list(partitions), malformed)
        write_atomic(state / BUILD_FILE, json.dumps(stats.to_json(), indent=1, sort_keys=True).encode())
    for pid, part in partitions.items():
        _set_budget(ledger, audit, pid, policy.cap(pid, part.meta.entry_count))

    def proof_rng(partition_id: str, inputs_digest: bytes) -> Rng | None:
        """Per-request proof nonce stream in a simulation run, keyed by the partition and the inputs."""
        stream = partition_rng(partition_id)
        return None if stream is None else stream.child(f"proof/{inputs_digest.hex()}")

    handlers = NodeHandlers(
        agency,
        partitions,
        ledger,
        audit,
        identity_key,
        as_of=settings.as_of,
        window_days=settings.window_days,
        malformed=malformed,
        max_batch=max_batch,
        chunk_bytes=chunk_bytes,
        executor=executor,
        clock=clock or settings.clock,
        proof_rng=proof_rng,
        lock=lock,
    )
    handlers.build_stats = stats
    handlers.sign_head("opened")
    return handlers


def _set_budget(ledger: BudgetLedger, audit: AuditLog, partition_id: str, cap: int) -> None:
    """Set a partition's budget cap and, when it is new or changed, log it (`budget_set`: total and used)
    so that an auditor can check every charge in the log against the cap in force."""
    try:
        previous: int | None = ledger.budget(partition_id).total
    except KeyError:
        previous = None
    budget = ledger.set_total(partition_id, cap)
    if previous != cap:
        audit.append("budget_set", {"partition_id": partition_id, "total": budget.total, "used": budget.used})


def source_digest(run_dir: Path, agency: str, as_of: dt.date | None = None) -> str:
    """Hex SHA-256 over the paths (relative to RUN/data/<agency>/) and contents of the agency's data files
    delivered by `as_of` (`proto.layout.agency_files`)."""
    digest = hashlib.sha256()
    root = Path(run_dir) / "data" / agency
    try:
        paths = layout.agency_files(root, as_of) if root.is_dir() else []
    except layout.LayoutError as exc:
        raise StoreError(str(exc)) from None
    for path in paths:
        with path.open("rb") as fh:
            name = path.relative_to(root).as_posix()
            digest.update(name.encode() + b"\0" + hashlib.file_digest(fh, "sha256").digest())
    return digest.hexdigest()


def _save_sources(
    path: Path, sources: str, settings: RunSettings, partitions: list[str], malformed: Mapping[str, int]
) -> None:
    """Record which data files and window the indexes were built from, so a restart can skip re-reading."""
    record = {"sources": sources, "window": [d.isoformat() for d in settings.window],
              "partitions": partitions, "malformed": dict(malformed)}
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(record, indent=1, sort_keys=True))
    os.replace(tmp, path)


def _reuse_all(
    path: Path, sources: str, settings: RunSettings, index_dir: Path, keystore: KeyStore
) -> tuple[dict[str, Partition], dict[str, int]] | None:
    """Every partition reused without reading the data, when the data files and window are those the
    indexes were built from and every index and key checks out; else None."""
    try:
        record = json.loads(path.read_text())
        window = [d.isoformat() for d in settings.window]
        current = record["sources"] == sources and record["window"] == window
        pids = [str(pid) for pid in record["partitions"]]
        malformed = {str(k): int(v) for k, v in record["malformed"].items()}
    except (OSError, ValueError, KeyError, TypeError, AttributeError):
        return None
    if not current:
        return None
    partitions: dict[str, Partition] = {}
    for pid in pids:
        part = _reuse(pid, index_dir, keystore, None)
        if part is None:
            for opened in partitions.values():
                opened.index.close()
            return None
        partitions[pid] = part
    return partitions, malformed


def _reuse(
    partition_id: str, index_dir: Path, keystore: KeyStore, fingerprint: bytes | None
) -> Partition | None:
    """The partition's existing index and key if they are intact, consistent and (when `fingerprint` is
    given) built from rows with that fingerprint; else None."""
    meta = idx.load_meta(index_dir, partition_id)
    try:
        pair = keystore.load(partition_id)
    except KeyStoreError as exc:
        log.warning("sealed key of %s is unusable (%s)", partition_id, exc)
        return None
    if meta is None or pair is None or meta.public_key != pair[1]:
        return None
    if fingerprint is not None and meta.rows_digest != fingerprint:
        return None
    try:
        index = idx.open_index(index_dir, meta)
    except idx.IndexFileError as exc:
        log.warning("index of %s is unusable (%s)", partition_id, exc)
        return None
    log.info("index reused for %s: %d entries, digest %s", partition_id, meta.entry_count,
             meta.index_digest.hex()[:16])
    return Partition(index, pair[0])


@dataclass
class _Planned:
    """A partition about to be built: its job, the key to build with, and whether that key is new."""

    job: build.PartitionJob
    sk: bytes
    pk: bytes
    created: bool
    rng: Rng
    previous: str | None


def _plan(
    job: build.PartitionJob, index_dir: Path, keystore: KeyStore, partition_rng: Callable[[str], Rng | None]
) -> _Planned:
    """The key a partition's index is built with: its sealed key, or a new one (sealed only if the partition
    turns out to have records), and the metadata of its index on disk, if any."""
    pid = job.partition_id
    try:
        pair = keystore.load(pid)
    except KeyStoreError:
        pair = None
    rng = default_rng(partition_rng(pid))
    created = pair is None
    sk, pk = oprf.generate_key_pair(rng) if pair is None else pair
    meta = idx.load_meta(index_dir, pid)
    return _Planned(job, sk, pk, created, rng, None if meta is None else meta.to_json())


def _build_partitions(
    run_dir: Path,
    agency: str,
    store: AgencyStore,
    settings: RunSettings,
    index_dir: Path,
    keystore: KeyStore,
    audit: AuditLog,
    executor: Executor | None,
    partition_rng: Callable[[str], Rng | None],
    progress: Progress | None,
) -> tuple[dict[str, Partition], build.BuildStats]:
    """Tokenise and index every partition of the window, one `nodes.build.build_partition` job each over the
    executor (in order, in-process without one); reuse indexes built from the same rows under the same key.

    Keys, audit entries and progress follow the partitions' order whatever order the jobs finish in.
    """
    started = time.perf_counter()
    jobs = build.partition_jobs(store, settings.window)
    plans = [_plan(job, index_dir, keystore, partition_rng) for job in jobs]
    stats = build.BuildStats(workers=type(executor).__name__ if executor is not None else "in-process")

    def args(plan: _Planned, previous: str | None) -> tuple[Any, ...]:
        return (str(run_dir), agency, plan.job, str(index_dir), plan.sk, plan.pk, previous)

    if executor is None:
        outcomes: Iterator[build.BuildOutcome] = (build.build_partition(*args(p, p.previous)) for p in plans)
    else:
        futures = [executor.submit(build.build_partition, *args(p, p.previous)) for p in plans]
        outcomes = (f.result() for f in futures)
    partitions: dict[str, Partition] = {}
    for done, (plan, outcome) in enumerate(zip(plans, outcomes, strict=True), start=1):
        pid = plan.job.partition_id
        store.merge_counts(outcome.counts)
        part = None
        if outcome.fingerprint is not None and outcome.reused:
            part = _reuse(pid, index_dir, keystore, outcome.fingerprint)
            if part is None:  # the index on disk is unusable after all: build it here
                outcome = build.build_partition(*args(plan, None))
        meta = None
        if outcome.fingerprint is not None and part is None:
            assert outcome.meta is not None
            meta = idx.IndexMeta.from_json(outcome.meta)
            if plan.created:
                keystore.adopt(pid, plan.sk, plan.rng)
                audit.append("partition_key_created", {"partition_id": pid, "public_key": plan.pk.hex()})
            audit.append("index_built", {"partition_id": pid, "entry_count": meta.entry_count,
                                         "index_sha256": meta.index_digest.hex()})
            log.info("index built for %s: %d entries from %d rows in %.2fs, digest %s", pid,
                     meta.entry_count, outcome.rows, outcome.tokenise_seconds + outcome.index_seconds,
                     meta.index_digest.hex()[:16])
            offsets = np.frombuffer(outcome.offsets, dtype=np.int64) if outcome.offsets else None
            part = Partition(idx.open_index(index_dir, meta, offsets), plan.sk)
        if part is not None:
            partitions[pid] = part
        stats.add(outcome, part.meta if part is not None else None)
        if progress is not None:
            progress(pid, done, len(plans), outcome.fingerprint is None or outcome.reused)
    stats.wall_seconds = time.perf_counter() - started
    return partitions, stats
