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

import base64
import contextlib
import functools
import hashlib
import itertools
import os
import shutil
import struct
import time
from array import array
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from concurrent.futures import Executor, Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

from coordinator.sealing import read_sealed_json, write_sealed_json
from coordinator.transport import NodeTransport, NodeUnavailable
from crypto import labels, oprf
from crypto.drbg import Rng
from crypto.errors import CryptoError
from crypto.group import ELEMENT_BYTES, split_packed
from crypto.pki import Identities
from proto import ids
from proto.errors import ProtocolError
from proto.healthpsi.v1 import node_pb2

SUITE = "ristretto255-SHA512"
MODE = oprf.Mode.VOPRF
ENTRY_HEADER = struct.Struct(">16sI")
OPENING_VERSION = 1
OPEN_PART = 16384
"""Labels opened per executor job."""
MATCHES_SCHEMA = pa.schema(
    [("subject_id", pa.string()), ("agency", pa.string()), ("token", pa.string()), ("case_id", pa.string())]
)
"""Schema of RUN/coordinator/matches.parquet."""

AuditSink = Callable[..., None]
"""audit(event, **fields): append one entry to the coordinator's audit log."""
Progress = Callable[[str, int, int], None]
"""progress(stage, done, total)."""


class MatchingError(RuntimeError):
    """The matching could not be completed safely: a bad manifest, proof, index or budget."""


class ManifestError(MatchingError):
    """A node's manifest does not verify against the identity list or does not fit the epoch."""


class BudgetError(MatchingError):
    """The queries planned for a partition exceed the budget the node has left; nothing was sent."""


class IndexIntegrityError(MatchingError):
    """An index chunk or a whole index does not match its digest or is malformed."""


def _no_audit(event: str, **fields: Any) -> None:
    """Discard an audit entry."""


def _no_progress(stage: str, done: int, total: int) -> None:
    """Discard a progress report."""


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


@dataclass
class Batch:
    """One Evaluate call: the tokens, their blinds (the opening) and, once answered, the node's answer."""

    agency: str
    partition_id: str
    purpose: str
    epoch: str
    number: int
    public_key: bytes
    tokens: list[str]
    blinds: list[bytes]
    blinded: bytes
    evaluated: bytes | None = None
    proof: bytes | None = None
    budget_left: int | None = None
    verified: bool = False
    """Whether the proof was checked in this process (answers read back from disk are checked again)."""

    @property
    def inputs_digest(self) -> bytes:
        """SHA-256 of the packed blinded elements (what both sides log)."""
        return hashlib.sha256(self.blinded).digest()

    @property
    def idempotency_key(self) -> str:
        """A key that names this exact request and reveals nothing about its purpose."""
        label = f"{self.epoch}|{self.agency}|{self.partition_id}|{self.purpose}|{self.number}|"
        return hashlib.sha256(label.encode() + self.inputs_digest).hexdigest()[:32]

    @property
    def answered(self) -> bool:
        """Whether the node's answer is recorded."""
        return self.evaluated is not None

    def request(self) -> node_pb2.EvaluateRequest:
        """The Evaluate request of this batch."""
        return node_pb2.EvaluateRequest(
            partition_id=self.partition_id,
            blinded_elements=self.blinded,
            verifiable=True,
            idempotency_key=self.idempotency_key,
        )

    def finish_args(self, check_proof: bool) -> tuple[Any, ...]:
        """The arguments of `finish_job` for this answered batch."""
        return (
            self.public_key, self.tokens, self.blinds, self.blinded, self.evaluated, self.proof, check_proof
        )

    def opening(self) -> dict[str, Any]:
        """The sealed-at-rest record of the query: what an auditor needs to re-derive the blinded inputs."""
        return {
            "version": OPENING_VERSION,
            "agency": self.agency,
            "partition_id": self.partition_id,
            "purpose": self.purpose,
            "epoch": self.epoch,
            "batch": self.number,
            "idempotency_key": self.idempotency_key,
            "inputs_digest": self.inputs_digest.hex(),
            "public_key": self.public_key.hex(),
            "tokens": self.tokens,
            "blinds": _b64(b"".join(self.blinds)),
            "blinded": _b64(self.blinded),
        }

    def answer(self) -> dict[str, Any]:
        """The sealed-at-rest record of the node's answer."""
        assert self.evaluated is not None and self.proof is not None
        return {
            "idempotency_key": self.idempotency_key,
            "evaluated": _b64(self.evaluated),
            "proof": _b64(self.proof),
            "budget_left": self.budget_left,
        }

    @classmethod
    def from_records(cls, opening: Mapping[str, Any], answer: Mapping[str, Any] | None) -> Batch:
        """Rebuild a batch from its opening and (if any) its answer."""
        batch = cls(
            agency=opening["agency"],
            partition_id=opening["partition_id"],
            purpose=opening["purpose"],
            epoch=opening["epoch"],
            number=int(opening["batch"]),
            public_key=bytes.fromhex(opening["public_key"]),
            tokens=list(opening["tokens"]),
            blinds=split_packed(_unb64(opening["blinds"])),
            blinded=_unb64(opening["blinded"]),
        )
        if answer is not None:
            batch.evaluated = _unb64(answer["evaluated"])
            batch.proof = _unb64(answer["proof"])
            batch.budget_left = answer.get("budget_left")
        return batch


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


def _unb64(text: str) -> bytes:
    return base64.b64decode(text, validate=True)


class OpeningStore:
    """`RUN/coordinator/openings/<agency>/<partition>/<key>.query|.answer`, each sealed (AES-256-GCM)."""

    def __init__(self, directory: Path, key: bytes) -> None:
        self.directory = Path(directory)
        self.key = key

    def _dir(self, agency: str, partition_id: str) -> Path:
        return self.directory / agency / partition_id

    def save_query(self, batch: Batch) -> None:
        """Record a batch's opening (before it is sent)."""
        path = self._dir(batch.agency, batch.partition_id) / f"{batch.idempotency_key}.query"
        write_sealed_json(self.key, path, batch.opening())

    def save_answer(self, batch: Batch) -> None:
        """Record a batch's answer (after its proof verified)."""
        path = self._dir(batch.agency, batch.partition_id) / f"{batch.idempotency_key}.answer"
        write_sealed_json(self.key, path, batch.answer())

    def batches(self, agency: str, partition_id: str) -> list[Batch]:
        """Every recorded batch of a partition, ordered by (epoch, purpose, number)."""
        out = []
        directory = self._dir(agency, partition_id)
        for query in sorted(directory.glob("*.query")) if directory.is_dir() else []:
            answer_path = query.with_suffix(".answer")
            answer = read_sealed_json(self.key, answer_path) if answer_path.exists() else None
            out.append(Batch.from_records(read_sealed_json(self.key, query), answer))
        return sorted(out, key=lambda b: (b.epoch, b.purpose, b.number))

    def all_batches(self) -> Iterator[Batch]:
        """Every recorded batch of every partition."""
        for agency_dir in sorted(p for p in self.directory.glob("*") if p.is_dir()):
            for part_dir in sorted(p for p in agency_dir.glob("*") if p.is_dir()):
                yield from self.batches(agency_dir.name, part_dir.name)


def read_openings(run_dir: Path, key: bytes) -> list[dict[str, Any]]:
    """Every query opening of a run with its answer, for auditors: the opening fields (tokens, blinds,
    blinded inputs, idempotency key, inputs digest, partition, public key) plus `answered`, `evaluated`,
    `proof` and `budget_left`."""
    store = OpeningStore(Path(run_dir) / "coordinator" / "openings", key)
    records = []
    for batch in store.all_batches():
        record = batch.opening()
        record["answered"] = batch.answered
        if batch.answered:
            record.update({k: v for k, v in batch.answer().items() if k != "idempotency_key"})
        records.append(record)
    return records


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


# ---------------------------------------------------------------------------------------------- index


@dataclass
class Wanted:
    """The tags asked about in one partition: tag → (token, label key); and what was found."""

    keys: dict[bytes, tuple[str, bytes]]
    found: dict[str, bytes] = field(default_factory=dict)

    def take(self, data: bytes, what: str, entry_map: EntryMap | None = None) -> int:
        """Keep the sealed labels of wanted tags among the entries in `data`, which must hold whole entries
        only (IndexIntegrityError otherwise), noting each entry in `entry_map`; return how many entries it
        holds."""
        return self._walk(data, what, entry_map)[0]

    def take_prefix(self, data: bytes, entry_map: EntryMap | None = None) -> tuple[int, int]:
        """`take` over the whole entries at the head of `data`: (entries, bytes) of that prefix."""
        return self._walk(data, None, entry_map)

    def _walk(self, data: bytes, what: str | None, entry_map: EntryMap | None = None) -> tuple[int, int]:
        """Walk the entries of `data`, keeping wanted labels (and noting each entry in `entry_map`); a
        partial entry at the end raises IndexIntegrityError naming `what`, or (when `what` is None) ends
        the walk."""
        keys, found = self.keys, self.found
        unpack, size = ENTRY_HEADER.unpack_from, ENTRY_HEADER.size
        pos, end, seen = 0, len(data), 0
        if entry_map is not None:
            tags, starts, base = entry_map.tags, entry_map.starts, entry_map.size
        while pos < end:
            if end - pos < size:
                if what is None:
                    break
                raise IndexIntegrityError(f"{what}: truncated entry header at byte {pos}")
            tag, length = unpack(data, pos)
            stop = pos + size + length
            if stop > end:
                if what is None:
                    break
                raise IndexIntegrityError(f"{what}: entry at byte {pos} overruns the data")
            if tag in keys:  # only the few wanted labels are copied out of the chunk
                found[keys[tag][0]] = data[pos + size : stop]
            if entry_map is not None:
                tags += tag
                starts.append(base + pos)
            pos = stop
            seen += 1
        if entry_map is not None:
            entry_map.size = base + pos
        return seen, pos


class EntryMap:
    """Where each entry of an index starts, by tag: noted while the index streams in, so that a later lookup
    of a few tags reads just their labels from the cached file instead of the whole file again."""

    SPARSE = 16
    """Used when at most one entry in SPARSE is wanted; a denser lookup reads the whole file."""

    def __init__(self) -> None:
        self.tags = bytearray()
        self.starts = array("q")
        self.size = 0

    def read_labels(self, path: Path, wanted: Wanted) -> bool:
        """Fill `wanted.found` from the labels of the wanted tags in the index at `path`; False (nothing
        read) when too many tags are wanted or the tags are not in order."""
        count = len(self.starts)
        if len(wanted.keys) * self.SPARSE > count:
            return False
        heads = np.frombuffer(self.tags, dtype=">u8")[0::2]  # each 16-byte tag's first 8 bytes, in order
        if count and not bool(np.all(heads[1:] >= heads[:-1])):
            return False
        asked = list(wanted.keys)
        firsts = np.searchsorted(heads, np.frombuffer(b"".join(asked), dtype=">u8")[0::2]).tolist()
        tags, starts, header, width = self.tags, self.starts, ENTRY_HEADER.size, labels.TAG_BYTES
        with path.open("rb") as f:
            for tag, at in zip(asked, firsts, strict=True):
                while at < count and tags[at * width : at * width + 8] == tag[:8]:
                    if tags[at * width : (at + 1) * width] == tag:
                        stop = starts[at + 1] if at + 1 < count else self.size
                        start = starts[at] + header
                        wanted.found[wanted.keys[tag][0]] = os.pread(f.fileno(), stop - start, start)
                        break
                    at += 1
        return True


class IndexCache:
    """Verified index downloads under `RUN/coordinator/cache/<agency>/<partition>/<digest>.idx`."""

    def __init__(self, directory: Path, *, resume_attempts: int = 8, backoff: float = 0.2) -> None:
        self.directory = Path(directory)
        self.resume_attempts = resume_attempts
        self.backoff = backoff
        self._fresh: set[Path] = set()
        """Indexes this cache downloaded and checked against their digest since it was made."""
        self._prefetched: dict[Path, EntryMap | None] = {}
        """Indexes a `prefetch` downloaded that no `lookup` has used yet, and where their entries start
        (when the lookup will want few enough of them)."""

    def path(self, agency: str, info: node_pb2.PartitionInfo) -> Path:
        """Where a partition's index with the manifest's digest is cached."""
        return self.directory / agency / info.partition_id / f"{info.index_digest.hex()}.idx"

    def lookup(self, transport: NodeTransport, info: node_pb2.PartitionInfo, wanted: Wanted) -> bool:
        """Fill `wanted.found` from the partition's index, downloading it unless cached; return True if
        it was downloaded for this lookup (now or by a `prefetch`)."""
        path = self.path(transport.agency, info)
        prefetched = path in self._prefetched
        entry_map = self._prefetched.pop(path, None)
        if path.exists():
            if entry_map is not None and entry_map.read_labels(path, wanted):
                return True
            try:
                self._scan(path, info, wanted)
                return prefetched
            except IndexIntegrityError:
                path.unlink()
                wanted.found.clear()
        self._download(transport, info, path, wanted, self.resume_attempts)
        return True

    def prefetch(self, transport: NodeTransport, info: node_pb2.PartitionInfo, wanted: int) -> None:
        """Download a partition's index ahead of its `lookup` of `wanted` tags, unless cached; one attempt, no
        resuming (the lookup tries again, and reports what went wrong)."""
        path = self.path(transport.agency, info)
        if not path.exists():
            entry_map = EntryMap() if wanted * EntryMap.SPARSE <= info.entry_count else None
            self._download(transport, info, path, Wanted({}), 0, entry_map)
            self._prefetched[path] = entry_map

    def _scan(self, path: Path, info: node_pb2.PartitionInfo, wanted: Wanted) -> None:
        """Look up wanted tags in a cached index, re-checking its digest (unless this cache downloaded and
        checked it) and its entry count."""
        checked = path in self._fresh
        data = path.read_bytes() if info.index_bytes <= (64 << 20) else None
        h = hashlib.sha256()
        seen = 0
        if data is not None:
            if not checked:
                h.update(data)
            seen = wanted.take(data, str(path))
        else:
            with path.open("rb") as f:
                rest = b""
                while block := f.read(8 << 20):
                    if not checked:
                        h.update(block)
                    buffer = rest + block
                    count, cut = wanted.take_prefix(buffer)
                    seen += count
                    rest = buffer[cut:]
                if rest:
                    raise IndexIntegrityError(f"{path}: trailing partial entry")
        if (not checked and h.digest() != info.index_digest) or seen != info.entry_count:
            self._fresh.discard(path)
            raise IndexIntegrityError(f"{path}: cached index does not match the manifest")

    def _download(
        self,
        transport: NodeTransport,
        info: node_pb2.PartitionInfo,
        path: Path,
        wanted: Wanted,
        resumes: int,
        entry_map: EntryMap | None = None,
    ) -> None:
        """Stream an index into the cache (resuming from a partial file, and up to `resumes` times from a cut
        stream), noting where its entries start in `entry_map`, then check it."""
        agency, pid = transport.agency, info.partition_id
        part = path.with_name(path.name + ".part")
        path.parent.mkdir(parents=True, exist_ok=True)
        for stale in path.parent.glob("*.idx"):
            stale.unlink()
        h = hashlib.sha256()
        offset = 0
        if part.exists():
            data = part.read_bytes()
            offset, keep = wanted.take_prefix(data, entry_map)
            h.update(data[:keep])
            with part.open("r+b") as f:
                f.truncate(keep)
        attempts = 0
        with part.open("ab") as out:
            while offset < info.entry_count:
                try:
                    for chunk in transport.stream_index(pid, offset, info.index_digest):
                        what = f"node {agency} partition {pid} chunk at entry {chunk.offset}"
                        if (
                            chunk.partition_id != pid
                            or chunk.offset != offset
                            or chunk.total != info.entry_count
                        ):
                            raise IndexIntegrityError(
                                f"{what}: expected partition {pid} from entry {offset} of {info.entry_count}"
                            )
                        if hashlib.sha256(chunk.entries).digest() != chunk.digest:
                            raise IndexIntegrityError(f"{what}: chunk digest does not match its entries")
                        seen = wanted.take(chunk.entries, what, entry_map)
                        if seen != chunk.count:
                            raise IndexIntegrityError(f"{what}: {seen} entries, the chunk says {chunk.count}")
                        out.write(chunk.entries)
                        h.update(chunk.entries)
                        offset += seen
                    if offset < info.entry_count:
                        raise NodeUnavailable(f"node {agency}: index stream of {pid} ended at entry {offset}")
                except NodeUnavailable:
                    attempts += 1
                    out.flush()
                    if attempts > resumes:
                        raise
                    time.sleep(self.backoff * 2 ** min(attempts - 1, 5))
            out.flush()
        if offset != info.entry_count or h.digest() != info.index_digest:
            part.unlink()
            raise IndexIntegrityError(
                f"node {agency} partition {pid}: downloaded index does not match the manifest digest"
            )
        part.replace(path)
        self._fresh.add(path)

    def prune(self, agency: str, keep: Iterable[str]) -> None:
        """Remove cached indexes of an agency's partitions that are no longer served."""
        base = self.directory / agency
        keep = set(keep)
        for part_dir in base.glob("*") if base.is_dir() else []:
            if part_dir.name not in keep:
                shutil.rmtree(part_dir)


# -------------------------------------------------------------------------------------------- queries


@dataclass(frozen=True)
class Query:
    """Tokens to look up in one partition of one node, and why ("risk", "identity")."""

    agency: str
    partition_id: str
    purpose: str
    tokens: tuple[str, ...]


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
        executor: Executor | None = None,
        audit: AuditSink = _no_audit,
        progress: Progress = _no_progress,
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
        self.stats = MatchStats()
        self.manifests: dict[str, node_pb2.Manifest] = {}

    def _bytes(self, kind: str = "total") -> int:
        """Bytes the transports have counted so far: all of them, or (`kind="streamed"`) the indexes'."""
        return sum(int(getattr(getattr(t, "counter", None), kind, 0)) for t in self.transports.values())

    def _transport(self, agency: str) -> NodeTransport:
        try:
            return self.transports[agency]
        except KeyError:
            raise MatchingError(f"no transport for node {agency!r}; give one for every agency") from None

    def fetch_manifests(self, agencies: Iterable[str]) -> dict[str, node_pb2.Manifest]:
        """Fetch and verify the manifests of these nodes (their window must end on the epoch's as_of); return
        every manifest fetched so far."""
        start, before = time.perf_counter(), self._bytes()
        for agency in sorted(set(agencies)):
            manifest = verify_manifest(self._transport(agency).get_manifest(), agency, self.identities)
            if (manifest.as_of, manifest.window_days) != (self.as_of, self.window_days):
                raise ManifestError(
                    f"node {agency} serves the {manifest.window_days} days ending {manifest.as_of}; "
                    f"this epoch is for the {self.window_days} days ending {self.as_of}"
                )
            self.manifests[agency] = manifest
            self.stats.malformed[agency] = dict(manifest.malformed)
        self.stats.add("manifests", time.perf_counter() - start, self._bytes() - before)
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
                key: fetcher.submit(self.cache.prefetch, self._transport(key[0]), info, len(by_part[key]))
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
            downloaded = self.cache.lookup(self._transport(key[0]), info, wanted)
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
            response = self._transport(batch.agency).evaluate(batch.request())
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


def assemble_matches(
    risk_rows: pd.DataFrame, found: Mapping[tuple[str, str], Mapping[str, list[str]]]
) -> pd.DataFrame:
    """matches.parquet rows: each subject recorded at a risk token, per case that token came from, the case's
    own subject excluded; sorted and distinct.

    Joined and sorted in Arrow: a label holds distinct subjects, a token lies in one partition and the risk
    rows are made distinct per (agency, token, case), so the joined rows are distinct.
    """
    agencies, tokens, counts, subjects = [], [], [], []
    for (agency, _), by_token in found.items():
        for token, recorded in by_token.items():
            agencies.append(agency)
            tokens.append(token)
            counts.append(len(recorded))
            subjects.append(recorded)
    repeat = np.asarray(counts, dtype=np.int64)
    hits = pa.table(
        {
            "agency": pa.array(np.repeat(np.asarray(agencies, dtype=object), repeat), pa.string()),
            "token": pa.array(np.repeat(np.asarray(tokens, dtype=object), repeat), pa.string()),
            "subject_id": pa.array(list(itertools.chain.from_iterable(subjects)), pa.string()),
        }
    )
    risk = risk_rows[["agency", "token", "case_id", "case_subject_id"]].drop_duplicates()
    risk_table = pa.table(
        {c: pa.array(risk[c].astype(object).where(risk[c].notna(), None), pa.string()) for c in risk.columns}
    )
    rows = hits.join(risk_table, keys=["agency", "token"], join_type="inner")
    own = pc.fill_null(pc.equal(rows["subject_id"], rows["case_subject_id"]), False)
    rows = rows.filter(pc.invert(own)).select(list(MATCHES_SCHEMA.names))
    rows = rows.sort_by([(c, "ascending", "at_end") for c in MATCHES_SCHEMA.names])
    out = rows.to_pandas()
    out = out.astype({"subject_id": str, "agency": str, "token": str})
    out["case_id"] = out["case_id"].astype(object).where(out["case_id"].notna(), None)
    return out


def matches_table(matches: pd.DataFrame) -> pa.Table:
    """The matches frame as an Arrow table with the published schema."""
    return pa.Table.from_pandas(matches, schema=MATCHES_SCHEMA, preserve_index=False)


def frame_digest(frame: pd.DataFrame, columns: Sequence[str]) -> str:
    """SHA-256 (hex) over rows as "|"-joined fields (empty for null), one line each, in frame order."""
    if frame.empty:
        return hashlib.sha256(b"").hexdigest()
    lines = _joined_lines(frame, columns)
    if lines is not None:
        return hashlib.sha256(lines).hexdigest()
    fields = [frame[c].astype(object).where(frame[c].notna(), "").astype(str) for c in columns]
    text = fields[0]
    for field_values in fields[1:]:
        text = text + "|" + field_values
    return hashlib.sha256(("\n".join(text) + "\n").encode()).hexdigest()


_ARROW_AS_STR = (pa.types.is_string, pa.types.is_large_string, pa.types.is_integer, pa.types.is_date32)
"""Arrow types whose cast to string is what `str()` gives for the same Python value."""


def _joined_lines(frame: pd.DataFrame, columns: Sequence[str]) -> bytes | None:
    """`frame_digest`'s bytes built in Arrow, or None when a column's type might print differently there
    (booleans, floats, timestamps...): the caller then takes the Python path."""
    arrays = []
    for c in columns:
        try:
            array = pa.array(frame[c], from_pandas=True)
        except (pa.ArrowException, TypeError, ValueError):
            return None
        if not any(check(array.type) for check in _ARROW_AS_STR):
            return None
        arrays.append(pc.fill_null(array.cast(pa.large_string()), ""))
    bar, newline = pa.scalar("|", pa.large_string()), pa.scalar("\n", pa.large_string())
    lines = pc.binary_join_element_wise(*arrays, bar)
    lines = pc.binary_join_element_wise(lines, pa.scalar("", pa.large_string()), newline)
    if isinstance(lines, pa.ChunkedArray):
        lines = lines.combine_chunks()
    offsets = np.frombuffer(lines.buffers()[1], dtype=np.int64)[lines.offset : lines.offset + len(lines) + 1]
    return lines.buffers()[2].to_pybytes()[int(offsets[0]) : int(offsets[-1])]
