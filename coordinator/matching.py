"""PSI matching against the nodes: verified manifests, blinded VOPRF queries within budget, streamed and
cached indexes, opened labels.

Per node, the coordinator checks the signed manifest against the root-signed identity list; per partition
it blinds the tokens it needs (`Query`), records each batch's opening sealed at rest *before* sending it
(so a crashed epoch resends the same request under the same idempotency key and the node does not charge
twice), calls Evaluate in verifiable mode, checks every DLEQ proof against the manifest's key, finalizes
and derives tags. It then streams the partition's index — checking each chunk's digest and the whole
digest, resuming from the last entry on a cut — into `RUN/coordinator/cache/`, keeping in memory only the
entries whose tags it asked for, and opens their labels. Answers are kept, so a later epoch only queries
tokens it has not asked before and only downloads indexes whose digest changed.
"""

from __future__ import annotations

import contextlib
import functools
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from concurrent.futures import Executor, Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

from coordinator.errors import BudgetError, IndexIntegrityError, ManifestError, MatchingError
from coordinator.index_cache import IndexCache, Wanted
from coordinator.openings import MODE, Batch, OpeningStore, Query
from coordinator.transport import NodeTransport
from crypto import labels, oprf
from crypto.drbg import Rng
from crypto.errors import CryptoError
from crypto.group import ELEMENT_BYTES, split_packed
from crypto.pki import Identities
from proto import ids
from proto.errors import ProtocolError
from proto.healthpsi.v1 import node_pb2
from runctx.progress import Progress, no_progress

SUITE = "ristretto255-SHA512"
OPEN_PART = 16384
"""Labels opened per executor job."""


AuditSink = Callable[..., None]
"""audit(event, **fields): append one entry to the coordinator's audit log."""



def _no_audit(event: str, **fields: Any) -> None:
    """Discard an audit entry."""



# ------------------------------------------------------------------------------------------ manifests


def verify_manifest(
    signed: node_pb2.SignedManifest, agency: str, identities: Identities
) -> node_pb2.Manifest:
    """Check a node's signed manifest against its identity key in the root-signed identity list; parse it."""
    expected = identities.node(agency).public_bytes(Encoding.Raw, PublicFormat.Raw)
    if signed.identity_key != expected:
        raise ManifestError(f"node {agency}: manifest identity key is not the one in identities.json")
    try:
        identities.node(agency).verify(signed.signature, signed.manifest)
    except InvalidSignature:
        raise ManifestError(f"node {agency}: manifest signature does not verify") from None
    manifest = node_pb2.Manifest()
    try:
        manifest.ParseFromString(signed.manifest)
    except Exception as exc:  # protobuf's DecodeError
        raise ManifestError(f"node {agency}: manifest does not parse ({exc})") from None
    if manifest.agency != agency:
        raise ManifestError(f"node {agency}: manifest names agency {manifest.agency!r}")
    if manifest.suite != SUITE:
        raise ManifestError(f"node {agency}: OPRF suite {manifest.suite!r}, expected {SUITE}")
    if manifest.max_batch < 1:
        raise ManifestError(f"node {agency}: manifest max_batch is {manifest.max_batch}")
    return manifest


# ------------------------------------------------------------------------------------------- openings


# ------------------------------------------------------------------------------------- CPU-bound jobs


def blind_job(tokens: list[str], rng: Rng | None) -> tuple[list[bytes], bytes]:
    """Blind tokens (VOPRF mode): (blinds, packed blinded elements)."""
    return oprf.blind_many([t.encode() for t in tokens], MODE, rng)


def finish_job(
    public_key: bytes,
    tokens: list[str],
    blinds: list[bytes],
    blinded: bytes,
    evaluated: bytes,
    proof: bytes,
    check_proof: bool,
) -> list[tuple[bytes, bytes]]:
    """Check a batch's DLEQ proof (unless already checked), finalize, and derive (tag, label key) per token;
    ProofError if the proof does not verify."""
    if check_proof:
        oprf.verify_proof(public_key, split_packed(blinded), split_packed(evaluated), proof)
    outputs = oprf.finalize_many([t.encode() for t in tokens], blinds, evaluated)
    return [labels.derive_tag_key(y) for y in outputs]


def open_job(labels_found: list[tuple[str, bytes, bytes]]) -> dict[str, list[str]]:
    """Open sealed labels, (token, label key, sealed label) each: token → subject ids (CryptoError if one
    does not open)."""
    tokens, bodies, counts = [], [], []
    for token, label_key, sealed in labels_found:
        opened = labels.open_label(label_key, sealed)
        tokens.append(token)
        bodies.extend(opened)
        counts.append(len(opened))
    subjects = list(ids.from_bodies(np.array(bodies, dtype=np.int64))) if bodies else []
    out, first = {}, 0
    for token, n in zip(tokens, counts, strict=True):
        out[token] = subjects[first : first + n]
        first += n
    return out


def _map(executor: Executor | None, fn: Callable[..., Any], calls: Sequence[tuple[Any, ...]]) -> list[Any]:
    """Run calls in order, over the executor when there is more than one."""
    if executor is None or len(calls) < 2:
        return [fn(*args) for args in calls]
    return [f.result() for f in [executor.submit(fn, *args) for args in calls]]




@dataclass
class MatchStats:
    """What the matching did: per-stage seconds and bytes, and counts."""

    seconds: dict[str, float] = field(default_factory=dict)
    bytes: dict[str, int] = field(default_factory=dict)
    evaluated: int = 0
    batches: int = 0
    reused_answers: int = 0
    indexes_downloaded: int = 0
    indexes_cached: int = 0
    absent_partitions: int = 0
    malformed: dict[str, dict[str, int]] = field(default_factory=dict)

    def add(self, stage: str, seconds: float, nbytes: int) -> None:
        """Account time and bytes to a stage."""
        self.seconds[stage] = self.seconds.get(stage, 0.0) + seconds
        self.bytes[stage] = self.bytes.get(stage, 0) + nbytes


def _counted(transports: Mapping[str, NodeTransport], kind: str = "total") -> int:
    """Bytes the transports have counted so far: all of them, or (`kind="streamed"`) the indexes'."""
    return sum(int(getattr(getattr(t, "counter", None), kind, 0)) for t in transports.values())


def _transport(transports: Mapping[str, NodeTransport], agency: str) -> NodeTransport:
    """The transport to a node; MatchingError when there is none."""
    try:
        return transports[agency]
    except KeyError:
        raise MatchingError(f"no transport for node {agency!r}; give one for every agency") from None


def fetch_manifests(
    transports: Mapping[str, NodeTransport],
    identities: Identities,
    agencies: Iterable[str],
    as_of: str,
    window_days: int,
    stats: MatchStats,
) -> dict[str, node_pb2.Manifest]:
    """Fetch and verify the manifests of these nodes, whose window must be the epoch's (as_of, window_days);
    their malformed counts, time and bytes go to `stats`."""
    start, before = time.perf_counter(), _counted(transports)
    manifests = {}
    for agency in sorted(set(agencies)):
        manifest = verify_manifest(_transport(transports, agency).get_manifest(), agency, identities)
        if (manifest.as_of, manifest.window_days) != (as_of, window_days):
            raise ManifestError(
                f"node {agency} serves the {manifest.window_days} days ending {manifest.as_of}; "
                f"this epoch is for the {window_days} days ending {as_of}"
            )
        manifests[agency] = manifest
        stats.malformed[agency] = dict(manifest.malformed)
    stats.add("manifests", time.perf_counter() - start, _counted(transports) - before)
    return manifests


class Matcher:
    """Runs one epoch's queries against the nodes (see the module docstring)."""

    def __init__(
        self,
        epoch: str,
        transports: Mapping[str, NodeTransport],
        identities: Identities,
        openings: OpeningStore,
        cache: IndexCache,
        *,
        as_of: str,
        window_days: int,
        blind_rng: Callable[[str, str], Rng | None],
        manifests: Mapping[str, node_pb2.Manifest] | None = None,
        stats: MatchStats | None = None,
        executor: Executor | None = None,
        audit: AuditSink = _no_audit,
        progress: Progress = no_progress,
    ) -> None:
        self.epoch = epoch
        self.transports = dict(transports)
        self.identities = identities
        self.openings = openings
        self.cache = cache
        self.as_of = as_of
        self.window_days = window_days
        self.blind_rng = blind_rng
        self.executor = executor
        self.audit = audit
        self.progress = progress
        self.stats = stats or MatchStats()
        self.manifests: dict[str, node_pb2.Manifest] = dict(manifests or {})

    def _bytes(self, kind: str = "total") -> int:
        """Bytes the transports have counted so far: all of them, or (`kind="streamed"`) the indexes'."""
        return _counted(self.transports, kind)

    def fetch_manifests(self, agencies: Iterable[str]) -> dict[str, node_pb2.Manifest]:
        """Fetch and verify the manifests of these nodes (`fetch_manifests`); return every manifest fetched so
        far."""
        fetched = fetch_manifests(
            self.transports, self.identities, agencies, self.as_of, self.window_days, self.stats
        )
        self.manifests.update(fetched)
        return self.manifests

    def _info(self, agency: str, partition_id: str) -> node_pb2.PartitionInfo | None:
        for info in self.manifests[agency].partitions:
            if info.partition_id == partition_id:
                return info
        return None

    def run(self, queries: Sequence[Query]) -> dict[tuple[str, str], dict[str, list[str]]]:
        """Answer every query: (agency, partition) → token → subject ids recorded there (found only)."""
        by_part: dict[tuple[str, str], set[str]] = {}
        for q in queries:
            by_part.setdefault((q.agency, q.partition_id), set()).update(q.tokens)
        purposes = {(q.agency, q.partition_id, t): q.purpose for q in reversed(queries) for t in q.tokens}
        self.fetch_manifests({agency for agency, _ in by_part} - set(self.manifests))
        live = {}
        for key in sorted(by_part):
            info = self._info(*key)
            if info is None:
                self.stats.absent_partitions += 1
            else:
                live[key] = info

        # the indexes stream in on a helper thread while the batches are evaluated: both need the nodes,
        # but neither needs the other until the tags are looked up
        with ThreadPoolExecutor(max_workers=1, thread_name_prefix="prefetch-indexes") as fetcher:
            prefetched = {
                key: fetcher.submit(
                    self.cache.prefetch, _transport(self.transports, key[0]), info, len(by_part[key])
                )
                for key, info in sorted(live.items())
            }
            try:
                return self._match(by_part, purposes, live, prefetched)
            finally:
                for future in prefetched.values():
                    future.cancel()

    def _match(
        self,
        by_part: Mapping[tuple[str, str], set[str]],
        purposes: Mapping[tuple[str, str, str], str],
        live: dict[tuple[str, str], node_pb2.PartitionInfo],
        prefetched: Mapping[tuple[str, str], Future[None]],
    ) -> dict[tuple[str, str], dict[str, list[str]]]:
        """`run` once the live partitions are known and their indexes are being fetched."""
        start, before, streamed = time.perf_counter(), self._bytes(), self._bytes("streamed")
        stored = {key: self.openings.batches(key[0], key[1]) for key in live}
        stored = {
            key: [b for b in batches if b.public_key == live[key].public_key]
            for key, batches in stored.items()
        }
        pending = [b for batches in stored.values() for b in batches if not b.answered]
        self._send(pending)
        if pending:
            self.fetch_manifests(self.manifests)
            live = {key: self._info(*key) or info for key, info in live.items()}

        fresh: dict[tuple[str, str], list[str]] = {}
        for key, tokens in by_part.items():
            if key in live:
                asked = {t for b in stored[key] for t in b.tokens}
                fresh[key] = sorted(tokens - asked)
        self._check_budgets(live, fresh)
        new_batches = self._blind(live, fresh, purposes, stored)
        for batch in new_batches:
            self.openings.save_query(batch)
        self._send(new_batches)
        evaluated_bytes = self._bytes() - before - (self._bytes("streamed") - streamed)
        self.stats.add("evaluate", time.perf_counter() - start, evaluated_bytes)

        start = time.perf_counter()
        answered = [b for batches in stored.values() for b in batches] + new_batches
        self.stats.reused_answers = sum(len(b.tokens) for batches in stored.values() for b in batches)
        keys = self._finish_async(answered)
        self.stats.add("finalize", time.perf_counter() - start, 0)

        start = time.perf_counter()
        waited = 0.0
        opening: dict[tuple[str, str], list[Callable[[], dict[str, list[str]]]]] = {}
        for n, (key, info) in enumerate(sorted(live.items()), 1):
            tokens = by_part[key]
            started_wait = time.perf_counter()
            part_keys = keys[key]()
            waited += time.perf_counter() - started_wait
            wanted = Wanted({part_keys[t][0]: (t, part_keys[t][1]) for t in tokens})
            # a failed prefetch is retried (and reported) by the lookup
            with contextlib.suppress(ProtocolError, IndexIntegrityError, OSError):
                prefetched[key].result()
            downloaded = self.cache.lookup(_transport(self.transports, key[0]), info, wanted)
            if downloaded:
                self.stats.indexes_downloaded += 1
            else:
                self.stats.indexes_cached += 1
            self.audit(
                "index_streamed",
                agency=key[0],
                partition_id=key[1],
                index_digest=info.index_digest.hex(),
                entries=info.entry_count,
                bytes=info.index_bytes,
                found=len(wanted.found),
            )
            opening[key] = self._open_async(wanted)
            self.progress("index", n, len(live))
        results: dict[tuple[str, str], dict[str, list[str]]] = {}
        for key, parts in opening.items():
            results[key] = {}
            for part in parts:
                try:
                    results[key].update(part())
                except CryptoError as exc:
                    raise IndexIntegrityError(
                        f"node {key[0]} partition {key[1]}: label does not open ({exc})"
                    ) from exc
        for agency, manifest in self.manifests.items():
            self.cache.prune(agency, [p.partition_id for p in manifest.partitions])
        self.stats.add("finalize", waited, 0)
        streamed_bytes = self._bytes() - before - evaluated_bytes
        self.stats.add("index", time.perf_counter() - start - waited, streamed_bytes)
        return results

    def _check_budgets(
        self,
        live: Mapping[tuple[str, str], node_pb2.PartitionInfo],
        fresh: Mapping[tuple[str, str], list[str]],
    ) -> None:
        """Refuse, before sending anything new, every partition whose new tokens exceed its budget left."""
        over = [
            f"{agency} {pid}: {len(tokens)} new tokens, budget left {live[(agency, pid)].budget_left}"
            for (agency, pid), tokens in sorted(fresh.items())
            if len(tokens) > live[(agency, pid)].budget_left
        ]
        if over:
            raise BudgetError("queries exceed the nodes' budgets; nothing new was sent: " + "; ".join(over))

    def _blind(
        self,
        live: Mapping[tuple[str, str], node_pb2.PartitionInfo],
        fresh: Mapping[tuple[str, str], list[str]],
        purposes: Mapping[tuple[str, str, str], str],
        stored: Mapping[tuple[str, str], list[Batch]],
    ) -> list[Batch]:
        """Split each partition's new tokens into batches (≤ max_batch, per purpose) and blind them; batch
        numbers continue after this epoch's recorded ones, so no blinding stream is used twice."""
        plans: list[tuple[tuple[str, str], str, int, list[str]]] = []
        for key, tokens in sorted(fresh.items()):
            max_batch = self.manifests[key[0]].max_batch
            by_purpose: dict[str, list[str]] = {}
            for t in tokens:
                by_purpose.setdefault(purposes[(key[0], key[1], t)], []).append(t)
            for purpose, items in sorted(by_purpose.items()):
                done = [b.number for b in stored[key] if (b.epoch, b.purpose) == (self.epoch, purpose)]
                offset = max(done, default=-1) + 1
                for number, first in enumerate(range(0, len(items), max_batch), offset):
                    plans.append((key, purpose, number, items[first : first + max_batch]))
        calls = []
        for (agency, pid), purpose, number, items in plans:
            rng = self.blind_rng(agency, pid)
            calls.append((items, None if rng is None else rng.child(f"{self.epoch}/{purpose}/{number}")))
        blinded = _map(self.executor, blind_job, calls)
        return [
            Batch(
                agency,
                pid,
                purpose,
                self.epoch,
                number,
                live[(agency, pid)].public_key,
                items,
                blinds,
                packed,
            )
            for ((agency, pid), purpose, number, items), (blinds, packed) in zip(plans, blinded, strict=True)
        ]

    def _send(self, batches: Sequence[Batch]) -> None:
        """Evaluate each batch, check its answer and its proof, log it, then record the answer (a crash
        before the record resends the batch under the same idempotency key: the node replays it, and the
        identical log entry is not repeated).

        A batch's proof is checked on a helper thread while the node evaluates the next batch, so the
        workers always have work; batches are still logged and recorded in order, each after its proof.
        """
        checking: tuple[int, Batch, Future[None]] | None = None
        with ThreadPoolExecutor(max_workers=1, thread_name_prefix="verify-proofs") as checker:
            for n, batch in enumerate(batches, 1):
                self._ask(batch)
                future = checker.submit(self._verify, batch)
                if checking is not None:
                    self._record(*checking, len(batches))
                checking = (n, batch, future)
            if checking is not None:
                self._record(*checking, len(batches))

    def _ask(self, batch: Batch) -> None:
        """Call Evaluate for a batch and check the answer fits the request (the proof is checked later)."""
        where = f"node {batch.agency} partition {batch.partition_id}"
        try:
            response = _transport(self.transports, batch.agency).evaluate(batch.request())
        except ProtocolError as exc:
            raise MatchingError(f"{where}: Evaluate refused ({exc.status}): {exc}") from exc
        count = len(batch.tokens)
        if (
            response.partition_id != batch.partition_id
            or len(response.evaluated_elements) != count * ELEMENT_BYTES
        ):
            raise MatchingError(f"{where}: Evaluate answer does not fit the request of {count} elements")
        if response.inputs_digest and response.inputs_digest != batch.inputs_digest:
            raise MatchingError(f"{where}: the node logged a different inputs digest")
        batch.evaluated = response.evaluated_elements
        batch.proof = response.proof
        batch.budget_left = response.budget_left

    def _record(self, n: int, batch: Batch, verified: Future[None], total: int) -> None:
        """Once a batch's proof has verified (else MatchingError), log the batch and record its answer."""
        verified.result()
        count = len(batch.tokens)
        self.stats.evaluated += count
        self.stats.batches += 1
        self.audit(
            "evaluate",
            agency=batch.agency,
            partition_id=batch.partition_id,
            purpose=batch.purpose,
            count=count,
            inputs_digest=batch.inputs_digest.hex(),
            idempotency_key=batch.idempotency_key,
            budget_left=batch.budget_left,
        )
        self.openings.save_answer(batch)
        self.progress("evaluate", n, total)

    def _verify(self, batch: Batch) -> None:
        """Check a batch's DLEQ proof against the manifest key before its answer is recorded."""
        assert batch.evaluated is not None and batch.proof is not None
        try:
            oprf.verify_proof(
                batch.public_key,
                split_packed(batch.blinded),
                split_packed(batch.evaluated),
                batch.proof,
                executor=self.executor,
            )
        except CryptoError as exc:
            raise MatchingError(
                f"node {batch.agency} partition {batch.partition_id}: DLEQ proof rejected ({exc})"
            ) from exc
        batch.verified = True

    def _finish_async(
        self, batches: Sequence[Batch]
    ) -> dict[tuple[str, str], Callable[[], dict[str, tuple[bytes, bytes]]]]:
        """Per partition, a call that returns its (tag, label key) per token: finalizing runs on the executor
        while the caller streams the partitions already finalized. Answers read back from disk (a resumed
        epoch) have their proofs checked first, before anything is streamed."""
        if self.executor is None or len(batches) < 2 or not all(b.verified for b in batches):
            done = self._finish(batches)
            return {key: functools.partial(done.__getitem__, key) for key in done}
        futures: dict[tuple[str, str], list[tuple[Batch, Future[list[tuple[bytes, bytes]]]]]] = {}
        for b in batches:
            future = self.executor.submit(finish_job, *b.finish_args(check_proof=False))
            futures.setdefault((b.agency, b.partition_id), []).append((b, future))

        def resolve(key: tuple[str, str]) -> dict[str, tuple[bytes, bytes]]:
            out: dict[str, tuple[bytes, bytes]] = {}
            for batch, future in futures[key]:
                try:
                    out.update(zip(batch.tokens, future.result(), strict=True))
                except CryptoError as exc:
                    raise MatchingError(f"an Evaluate answer does not finalize: {exc}") from exc
            return out

        return {key: functools.partial(resolve, key) for key in futures}

    def _finish(self, batches: Sequence[Batch]) -> dict[tuple[str, str], dict[str, tuple[bytes, bytes]]]:
        """(tag, label key) per token of every answered batch (proofs read back from disk checked again)."""
        calls = [b.finish_args(check_proof=not b.verified) for b in batches]
        try:
            derived = _map(self.executor, finish_job, calls)
        except CryptoError as exc:
            raise MatchingError(f"a recorded Evaluate answer does not verify: {exc}") from exc
        out: dict[tuple[str, str], dict[str, tuple[bytes, bytes]]] = {}
        for batch, pairs in zip(batches, derived, strict=True):
            out.setdefault((batch.agency, batch.partition_id), {}).update(
                zip(batch.tokens, pairs, strict=True)
            )
        return out

    def _open_async(self, wanted: Wanted) -> list[Callable[[], dict[str, list[str]]]]:
        """Open the labels found (token → subject ids) on the executor, in parts of `OPEN_PART` labels, while
        the caller streams the next partition; each call returns one part's result."""
        keys_by_token = {token: label_key for token, label_key in wanted.keys.values()}
        found = list(wanted.found.items())  # the results are keyed by token: their order does not matter
        calls = [
            ([(token, keys_by_token[token], sealed) for token, sealed in found[first : first + OPEN_PART]],)
            for first in range(0, len(found), OPEN_PART)
        ]
        if self.executor is None:
            return [functools.partial(open_job, *args) for args in calls]
        futures = [self.executor.submit(open_job, *args) for args in calls]
        return [future.result for future in futures]


# -------------------------------------------------------------------------------------------- matches


