"""The partition index download and cache: streamed chunks checked against their digests, resumed on a
cut, kept under `RUN/coordinator/cache/`, and the binary entry parser that keeps only the wanted labels.
"""

from __future__ import annotations

import hashlib
import logging
import os
import shutil
import struct
import time
from array import array
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from coordinator.errors import IndexIntegrityError
from coordinator.transport import NodeTransport, NodeUnavailable, backoff_delay
from crypto import labels
from proto.healthpsi.v1 import node_pb2

log = logging.getLogger("healthpsi.coordinator")

ENTRY_HEADER = struct.Struct(">16sI")


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
                except NodeUnavailable as exc:
                    attempts += 1
                    out.flush()
                    if attempts > resumes:
                        raise
                    delay = backoff_delay(attempts - 1, self.backoff)
                    log.warning("%s; resuming %s from entry %d (attempt %d of %d) in %.1fs", exc, pid, offset,
                                attempts, resumes, delay)
                    time.sleep(delay)
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


