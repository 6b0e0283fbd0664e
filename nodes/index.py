"""A partition's index: one (tag, sealed label) entry per distinct token, sorted by tag.

For each distinct token `t` of the partition, `y = OPRF-Evaluate(k_p, t)` (VOPRF mode, one evaluation
per distinct token, batched over the executor), `(tag, label_key) = derive_tag_key(y)`, and the label
seals the sorted 8-byte bodies of the subjects recorded at `t`. The canonical entry bytes are

    tag (16 bytes) || label length (u32 big-endian) || sealed label

and the index digest is SHA-256 over all entries in tag order. On disk, per partition:
`<dir>/<partition_id>.idx` (the canonical bytes) and `<dir>/<partition_id>.json` (its metadata, written
last, so its presence marks a complete index).
"""

from __future__ import annotations

import hashlib
import itertools
import json
import os
import struct
from collections.abc import Iterable, Iterator
from concurrent.futures import Executor
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from crypto import labels, oprf
from proto import ids, tokenize, tokens
from runctx.files import write_atomic

ENTRY_HEADER = struct.Struct(">16sI")
"""Tag and label length at the head of every canonical entry."""
FORMAT_VERSION = 1
DEFAULT_CHUNK_BYTES = 1 << 20
"""Target size of one streamed chunk; a chunk always carries at least one whole entry."""
_ROWS_DIGEST_TAG = b"healthpsi index rows v1"


class IndexFileError(Exception):
    """An index file that is missing, incomplete or does not match its metadata."""


@dataclass(frozen=True)
class IndexMeta:
    """What the manifest states about a partition's index, plus a fingerprint of the rows behind it."""

    partition_id: str
    dataset: str
    day: str
    token_kinds: tuple[str, ...]
    entry_count: int
    index_bytes: int
    index_digest: bytes
    public_key: bytes
    rows_digest: bytes
    format: int = FORMAT_VERSION

    def to_json(self) -> str:
        """The metadata as JSON (bytes as hex)."""
        data = asdict(self)
        data["token_kinds"] = list(self.token_kinds)
        for name in ("index_digest", "public_key", "rows_digest"):
            data[name] = data[name].hex()
        return json.dumps(data, indent=1, sort_keys=True)

    @classmethod
    def from_json(cls, text: str) -> IndexMeta:
        """Parse metadata written by `to_json`; raise IndexFileError when malformed."""
        try:
            data = json.loads(text)
            for name in ("index_digest", "public_key", "rows_digest"):
                data[name] = bytes.fromhex(data[name])
            data["token_kinds"] = tuple(data["token_kinds"])
            return cls(**data)
        except (ValueError, TypeError, KeyError) as exc:
            raise IndexFileError(f"malformed index metadata: {exc}") from exc


@dataclass(frozen=True)
class Groups:
    """A partition's distinct (token, subject) rows, grouped: the distinct tokens (sorted), every pair's
    subject body sorted by (token, body), and where each token's run of bodies starts (plus the end)."""

    tokens: list[str]
    bodies: np.ndarray
    bounds: np.ndarray

    def digest(self) -> bytes:
        """A fingerprint of the rows behind the groups: the same for the same set of distinct rows, whatever
        their order or dtype."""
        text = [t.encode() for t in self.tokens]
        h = hashlib.sha256(_ROWS_DIGEST_TAG)
        h.update(np.array([len(t) for t in text], dtype="<u4").tobytes())
        h.update(b"".join(text))
        h.update(self.bounds.astype("<i8").tobytes())
        h.update(self.bodies.astype("<u8").tobytes())
        return h.digest()


def _ranks(column: pd.Series) -> tuple[np.ndarray, pd.Index]:
    """Each row's rank among the column's distinct values, and those values in ascending order.

    A Categorical with sorted categories (as the tokeniser makes them) is used through its codes.
    """
    if isinstance(column.dtype, pd.CategoricalDtype) and column.cat.categories.is_monotonic_increasing:
        codes = column.cat.codes.to_numpy()
        if not len(codes) or codes.min() >= 0:
            used, ranks = tokenize.dense_ranks(codes, len(column.cat.categories))
            return ranks, column.cat.categories[used]
    ranks, values = pd.factorize(column, sort=True)
    return ranks, pd.Index(values)


def group_rows(rows: pd.DataFrame) -> Groups:
    """Group a partition's (subject_id, token) rows by token (duplicates dropped)."""
    subject_codes, subjects = _ranks(rows["subject_id"])
    subject_text = pd.Series(subjects, dtype="str")
    valid, subject_bodies = ids.parse(subject_text)
    if not valid.all():
        raise ValueError(f"not a valid subject id: {subject_text[~valid].iloc[0]!r}")
    bodies = subject_bodies[subject_codes]
    token_codes, token_values = _ranks(rows["token"])
    step_token, step_body = np.diff(token_codes), np.diff(bodies)
    if not ((step_token >= 0).all() and ((step_token > 0) | (step_body > 0)).all()):
        # not already sorted by (token, body) and distinct, as the store yields partitions
        order = np.lexsort((bodies, token_codes))
        token_codes, bodies = token_codes[order], bodies[order]
        keep = np.ones(len(bodies), dtype=bool)
        keep[1:] = (np.diff(token_codes) != 0) | (np.diff(bodies) != 0)
        token_codes, bodies = token_codes[keep], bodies[keep]
    bounds = np.concatenate([[0], np.flatnonzero(np.diff(token_codes)) + 1, [len(bodies)]])
    if not len(bodies):
        bounds = np.zeros(1, dtype=np.int64)
    return Groups([str(t) for t in token_values], bodies, bounds)


def split_kinds(groups: Groups) -> dict[str, Groups]:
    """A day's grouped rows split by token kind (each kind's tokens are one run of the sorted tokens: they
    share the prefix "<kind>|")."""
    out: dict[str, Groups] = {}
    kinds = [t.split(tokens.SEP, 1)[0] for t in groups.tokens]
    start = 0
    for kind, run in itertools.groupby(kinds):
        stop = start + sum(1 for _ in run)
        if kind in out:
            raise ValueError(f"tokens of kind {kind!r} are not contiguous: the rows are not sorted by token")
        lo, hi = int(groups.bounds[start]), int(groups.bounds[stop])
        bounds = groups.bounds[start : stop + 1] - lo
        out[kind] = Groups(groups.tokens[start:stop], groups.bodies[lo:hi], bounds)
        start = stop
    return out


def build_entries(sk: bytes, rows: pd.DataFrame, executor: Executor | None = None) -> list[bytes]:
    """The canonical entries of a partition, sorted by tag: one VOPRF evaluation per distinct token."""
    return _entries(sk, group_rows(rows), executor)


def _entries(sk: bytes, groups: Groups, executor: Executor | None) -> list[bytes]:
    """`build_entries` from the partition's grouped rows."""
    outputs = oprf.evaluate_many(sk, [t.encode() for t in groups.tokens], oprf.Mode.VOPRF, executor)
    packed = groups.bodies.astype(">u8").tobytes()
    offsets = (groups.bounds * labels.ENTRY_BYTES).tolist()
    derive, seal, header = labels.derive_tag_key, labels.seal_packed, ENTRY_HEADER.pack
    entries = []
    for y, first, stop in zip(outputs, offsets[:-1], offsets[1:], strict=True):
        tag, key = derive(y)
        sealed = seal(key, packed[first:stop])
        entries.append(header(tag, len(sealed)) + sealed)
    entries.sort()
    for previous, entry in itertools.pairwise(entries):
        if previous[: labels.TAG_BYTES] == entry[: labels.TAG_BYTES]:
            raise IndexFileError("two tokens derived the same tag")
    return entries


def _kinds(distinct_tokens: Iterable[str]) -> tuple[str, ...]:
    """The sorted distinct kinds of distinct tokens."""
    return tuple(sorted({str(t).split(tokens.SEP, 1)[0] for t in distinct_tokens}))


def paths(directory: Path, partition_id: str) -> tuple[Path, Path]:
    """The index file and the metadata file of a partition."""
    return directory / f"{partition_id}.idx", directory / f"{partition_id}.json"


def build_index(
    directory: Path,
    partition_id: str,
    sk: bytes,
    pk: bytes,
    rows: pd.DataFrame | Groups,
    executor: Executor | None = None,
) -> tuple[IndexMeta, np.ndarray]:
    """Build a partition's index from its distinct (subject_id, token) rows (or those rows grouped) and
    write it to `directory`: its metadata, and the byte offset of every entry plus the end (see
    `entry_offsets`)."""
    groups = rows if isinstance(rows, Groups) else group_rows(rows)
    entries = _entries(sk, groups, executor)
    offsets = np.zeros(len(entries) + 1, dtype=np.int64)
    np.cumsum([len(e) for e in entries], out=offsets[1:])
    data = b"".join(entries)
    kind, day = tokens.parse_partition_id(partition_id)
    found = _kinds(groups.tokens)
    if found and found != (kind,):
        raise ValueError(f"partition {partition_id} holds {kind} tokens only, not {', '.join(found)}")
    meta = IndexMeta(
        partition_id=partition_id,
        dataset=tokens.partition_dataset(partition_id),
        day=tokens.STATIC if day is None else day.isoformat(),
        token_kinds=_kinds(groups.tokens),
        entry_count=len(entries),
        index_bytes=len(data),
        index_digest=hashlib.sha256(data).digest(),
        public_key=pk,
        rows_digest=groups.digest(),
    )
    index_path, meta_path = paths(directory, partition_id)
    meta_path.unlink(missing_ok=True)
    # no fsync for the index itself: an index is reused only after its digest is checked again
    write_atomic(index_path, data, durable=False)
    write_atomic(meta_path, meta.to_json().encode())
    return meta, offsets


def entry_offsets(data: bytes) -> np.ndarray:
    """Byte offsets of every entry in canonical index bytes, plus the end; raise IndexFileError if ragged."""
    offsets = [0]
    at, end = 0, len(data)
    while at < end:
        if at + ENTRY_HEADER.size > end:
            raise IndexFileError(f"truncated entry header at byte {at}")
        _, length = ENTRY_HEADER.unpack_from(data, at)
        at += ENTRY_HEADER.size + length
        if at > end:
            raise IndexFileError(f"entry at byte {offsets[-1]} runs past the end of the index")
        offsets.append(at)
    return np.array(offsets, dtype=np.int64)


class PartitionIndex:
    """A built index on disk, opened for chunked reading by entry offset."""

    def __init__(self, meta: IndexMeta, path: Path, offsets: np.ndarray) -> None:
        self.meta = meta
        self.path = path
        self.offsets = offsets
        self._fd = os.open(path, os.O_RDONLY)

    @property
    def entry_count(self) -> int:
        """Number of entries (distinct tokens)."""
        return len(self.offsets) - 1

    def read(self, first: int, count: int) -> bytes:
        """The canonical bytes of entries [first, first + count)."""
        start, stop = int(self.offsets[first]), int(self.offsets[first + count])
        return os.pread(self._fd, stop - start, start)

    def chunks(self, offset: int, max_bytes: int = DEFAULT_CHUNK_BYTES) -> Iterator[tuple[int, int, bytes]]:
        """Yield (first entry, entry count, entry bytes) from `offset` to the end, each about max_bytes."""
        first = offset
        while first < self.entry_count:
            stop = int(np.searchsorted(self.offsets, self.offsets[first] + max_bytes, side="right")) - 1
            stop = min(max(stop, first + 1), self.entry_count)
            yield first, stop - first, self.read(first, stop - first)
            first = stop

    def close(self) -> None:
        """Close the index file."""
        if self._fd >= 0:
            os.close(self._fd)
            self._fd = -1


def load_meta(directory: Path, partition_id: str) -> IndexMeta | None:
    """A partition's index metadata, or None when it has no complete index."""
    _, meta_path = paths(directory, partition_id)
    if not meta_path.exists():
        return None
    try:
        return IndexMeta.from_json(meta_path.read_text())
    except IndexFileError:
        return None


def open_index(directory: Path, meta: IndexMeta, offsets: np.ndarray | None = None) -> PartitionIndex:
    """Open a built index after checking its size, entry structure and digest against its metadata.

    `offsets`: the entry offsets the builder computed as it wrote the file and its digest just now; the
    file's size and the offsets are checked, but its bytes are not read and hashed again.
    """
    index_path, _ = paths(directory, meta.partition_id)
    if offsets is not None and len(offsets) == meta.entry_count + 1 and offsets[0] == 0:
        try:
            size = index_path.stat().st_size
        except OSError as exc:
            raise IndexFileError(f"{index_path}: {exc}") from exc
        if size != meta.index_bytes or offsets[-1] != size:
            raise IndexFileError(f"{index_path}: {size} bytes, metadata says {meta.index_bytes}")
        return PartitionIndex(meta, index_path, offsets)
    try:
        data = index_path.read_bytes()
    except OSError as exc:
        raise IndexFileError(f"{index_path}: {exc}") from exc
    if len(data) != meta.index_bytes or hashlib.sha256(data).digest() != meta.index_digest:
        raise IndexFileError(f"{index_path}: contents do not match the recorded digest")
    offsets = entry_offsets(data)
    if len(offsets) - 1 != meta.entry_count:
        raise IndexFileError(f"{index_path}: {len(offsets) - 1} entries, metadata says {meta.entry_count}")
    return PartitionIndex(meta, index_path, offsets)


def remove_index(directory: Path, partition_id: str) -> bool:
    """Delete a partition's index and metadata; True if there was anything to delete."""
    found = False
    for path in paths(directory, partition_id):
        if path.exists():
            path.unlink()
            found = True
    return found


def indexed_partitions(directory: Path) -> list[str]:
    """Partition ids with an index or metadata file in `directory`, sorted."""
    if not directory.is_dir():
        return []
    names = {p.stem for p in directory.glob("*.idx")} | {p.stem for p in directory.glob("*.json")}
    return sorted(names)
