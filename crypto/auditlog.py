"""Append-only, hash-chained JSON Lines audit logs with Ed25519-signed heads.

Each line is one entry in canonical JSON (sorted keys, no whitespace, UTF-8):
`{"data": {...}, "kind": str, "prev": hex SHA-256 of the previous line's bytes (64 zeros for the first),
"seq": n}`. At the end of an epoch the writer appends a head entry, `kind` "head" with
`data` {"epoch": ...}, whose extra member `sig` is the hex Ed25519 signature over
`HEAD_CONTEXT || canonical JSON of the entry without "sig"` — through `prev`, it commits to every entry
before it. `verify_chain` checks a log line by line and names the first entry that is edited, deleted,
reordered, malformed or carries a forged head signature.

Each signed head is also delivered to a witness directory the writer does not read back (the auditor's
inbox), one file per head; `verify_witness` compares a log with the heads its witness holds, so a log whose
tail (signed heads included) was cut, or rewritten after a head was witnessed, is named. An append that
fails (a full disk) leaves the file as it was before the entry and raises `AuditLogError`.
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import io
import json
import math
import os
import threading
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from crypto.errors import CryptoError

GENESIS = "0" * 64
"""The `prev` of the first entry."""
HEAD_KIND = "head"
HEAD_CONTEXT = b"healthpsi audit head v1\n"
"""Domain separation prepended to what a head signature covers."""
_TAIL_BLOCK = 65536


def witness_name(seq: int) -> str:
    """The file name under which a witness keeps the head with this seq."""
    return f"head-{seq:012d}.jsonl"


class AuditLogError(CryptoError):
    """An audit log cannot be opened or appended to: it is corrupt, or an entry is not valid JSON data."""


def canonical_line(entry: Mapping[str, Any]) -> bytes:
    """The canonical bytes of an entry (sorted keys, compact, UTF-8, no NaN/Infinity), without newline."""
    try:
        return json.dumps(entry, sort_keys=True, separators=(",", ":"), ensure_ascii=False,
                          allow_nan=False).encode("utf-8")
    except (TypeError, ValueError) as exc:
        raise AuditLogError(f"audit entry is not JSON data: {exc}") from None


def line_hash(line: bytes) -> str:
    """Hex SHA-256 of a line's bytes (without its newline): what the next entry's `prev` holds."""
    return hashlib.sha256(line).hexdigest()


def head_message(entry: Mapping[str, Any]) -> bytes:
    """What a head's signature covers: the context string and the entry without its `sig`."""
    return HEAD_CONTEXT + canonical_line({k: v for k, v in entry.items() if k != "sig"})


# ---------------------------------------------------------------------------------------------- writer


class AuditLog:
    """Appends chained entries to a log file, fsyncing each one; reopening continues the existing chain.

    `target` is a path, or a binary file object that is readable and seekable (e.g. opened "a+b", or
    BytesIO). On open, a torn last line (no newline: a write cut by a crash) is truncated away and the
    chain resumes from the last complete entry. One writer per log: appends are serialised by a lock
    within the process, not across processes.
    """

    def __init__(
        self,
        target: str | os.PathLike[str] | BinaryIO,
        *,
        fsync: bool = True,
        witness: str | os.PathLike[str] | None = None,
    ) -> None:
        self._fsync = fsync
        self._lock = threading.Lock()
        self._path: Path | None = None
        self.witness = None if witness is None else Path(witness)
        if isinstance(target, str | os.PathLike):
            path = Path(target)
            path.parent.mkdir(parents=True, exist_ok=True)
            self._path = path
            self._file: BinaryIO = self._open()
            self._owned = True
            self.name = str(path)
        else:
            if isinstance(target, io.TextIOBase):
                raise TypeError("audit log file object must be binary, not text")
            if not (target.readable() and target.seekable()):
                raise TypeError("audit log file object must be readable and seekable to resume its chain")
            self._file = target
            self._owned = False
            self.name = str(getattr(target, "name", "<stream>"))
        try:
            self._seq, self._last_hash = self._recover()
        except BaseException:
            self.close()
            raise

    def _open(self) -> BinaryIO:
        """Open the owned log file unbuffered for appending, so a failed write leaves nothing pending."""
        assert self._path is not None
        return open(self._path, "a+b", buffering=0)

    def _recover(self) -> tuple[int, str]:
        """Drop a torn last line, then return the next seq and the hash of the last complete line."""
        f = self._file
        end = f.seek(0, os.SEEK_END)
        if end == 0:
            return 0, GENESIS
        pos, tail = end, b""
        while pos > 0:  # read backwards until the tail holds the last two newlines (or the file start)
            step = min(_TAIL_BLOCK, pos)
            pos -= step
            f.seek(pos)
            tail = f.read(step) + tail
            last_nl = tail.rfind(b"\n")
            if last_nl != -1 and tail.rfind(b"\n", 0, last_nl) != -1:
                break
        last_nl = tail.rfind(b"\n")
        if last_nl + 1 < len(tail):  # a torn line after the last newline: a crash cut its write short
            f.truncate(pos + last_nl + 1)
            self._sync()
        if last_nl == -1:
            return 0, GENESIS
        last = tail[tail.rfind(b"\n", 0, last_nl) + 1 : last_nl]
        try:
            entry = json.loads(last)
            seq = entry["seq"]
            if not isinstance(seq, int) or isinstance(seq, bool) or seq < 0:
                raise ValueError("seq is not a non-negative integer")
        except (ValueError, KeyError, TypeError) as exc:
            raise AuditLogError(f"audit log {self.name}: last entry is not a valid entry ({exc})") from None
        return seq + 1, line_hash(last)

    @property
    def next_seq(self) -> int:
        """The seq the next entry will carry."""
        return self._seq

    @property
    def last_hash(self) -> str:
        """Hash of the last line written (GENESIS for an empty log)."""
        return self._last_hash

    def append(self, kind: str, data: Mapping[str, Any] | None = None) -> dict[str, Any]:
        """Append one entry and fsync it; returns the entry as written."""
        if not isinstance(kind, str) or not kind or kind == HEAD_KIND:
            raise AuditLogError(f"entry kind must be a non-empty string, not {HEAD_KIND!r}; got {kind!r}")
        return self._write(kind, dict(data or {}), None)

    def sign_head(
        self, key: Ed25519PrivateKey, epoch: str | int, data: Mapping[str, Any] | None = None
    ) -> dict[str, Any]:
        """Append the signed head entry that closes `epoch`; returns it."""
        return self._write(HEAD_KIND, {**(data or {}), "epoch": epoch}, key)

    def _write(self, kind: str, data: dict[str, Any], key: Ed25519PrivateKey | None) -> dict[str, Any]:
        """Build, (sign,) write and fsync the next entry under the lock."""
        _check_finite(data)
        with self._lock:
            entry: dict[str, Any] = {"seq": self._seq, "prev": self._last_hash, "kind": kind, "data": data}
            if key is not None:
                entry["sig"] = key.sign(head_message(entry)).hex()
            line = canonical_line(entry)
            self._append_line(line + b"\n")
            self._seq += 1
            self._last_hash = line_hash(line)
            if key is not None and self.witness is not None:
                self._deliver(entry["seq"], line)
        return entry

    def _append_line(self, data: bytes) -> None:
        """Write one whole line and sync it; on failure cut the file back to where it was, reopen it and
        raise AuditLogError (the chain continues from the last entry that was written)."""
        f = self._file
        start = f.seek(0, os.SEEK_END)
        try:
            view = memoryview(data)
            while view:  # an unbuffered write may be short
                written = f.write(view)
                if written is None or written <= 0:
                    raise OSError(errno.EIO, "short write")
                view = view[written:]
            self._sync()
        except OSError as exc:
            self._restore(start)
            raise AuditLogError(
                f"audit log {self.name}: entry seq {self._seq} not written ({exc.strerror or exc}); "
                "the log is unchanged"
            ) from exc

    def _restore(self, size: int) -> None:
        """Truncate the log back to `size` bytes after a failed append, and reopen an owned file."""
        with contextlib.suppress(OSError, ValueError):
            self._file.truncate(size)
            self._file.seek(size)
            if self._fsync:
                with contextlib.suppress(io.UnsupportedOperation, AttributeError):
                    os.fsync(self._file.fileno())
        if self._owned:
            with contextlib.suppress(OSError):
                self._file.close()
            self._file = self._open()

    def _deliver(self, seq: int, line: bytes) -> None:
        """Hand a signed head to the witness: one file per head, written whole (temporary file, rename)."""
        assert self.witness is not None
        target = self.witness / witness_name(seq)
        tmp = target.with_name(target.name + ".tmp")
        try:
            self.witness.mkdir(parents=True, exist_ok=True)
            with open(tmp, "wb") as fh:
                fh.write(line + b"\n")
                fh.flush()
                os.fsync(fh.fileno())
            os.replace(tmp, target)
        except OSError as exc:
            with contextlib.suppress(OSError):
                tmp.unlink()
            raise AuditLogError(
                f"audit log {self.name}: head seq {seq} written but not delivered to the witness "
                f"{self.witness} ({exc.strerror or exc})"
            ) from exc

    def _sync(self) -> None:
        """Flush to the OS and, when enabled and possible, to disk."""
        self._file.flush()
        if not self._fsync:
            return
        try:
            fd = self._file.fileno()
        except (io.UnsupportedOperation, AttributeError):
            return  # in-memory streams have no file descriptor
        os.fsync(fd)

    def close(self) -> None:
        """Close the file if this log opened it."""
        if self._owned and not self._file.closed:
            self._file.close()

    def __enter__(self) -> AuditLog:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _check_finite(value: Any) -> None:
    """Reject NaN and infinities anywhere in entry data (they have no canonical JSON form)."""
    if isinstance(value, float) and not math.isfinite(value):
        raise AuditLogError(f"audit entry data holds a non-finite number: {value}")
    if isinstance(value, Mapping):
        for v in value.values():
            _check_finite(v)
    elif isinstance(value, list | tuple):
        for v in value:
            _check_finite(v)


# -------------------------------------------------------------------------------------------- verifier


@dataclass(frozen=True)
class EntryVerdict:
    """The verdict on one line of a log (line numbers from 1)."""

    line: int
    seq: int | None
    kind: str | None
    ok: bool
    reason: str


@dataclass(frozen=True)
class ChainReport:
    """Per-entry verdicts of a log, the number of heads whose signatures verify, and the unsigned tail."""

    entries: tuple[EntryVerdict, ...]
    heads: int
    unsigned_tail: int

    @property
    def ok(self) -> bool:
        """Whether every entry holds."""
        return all(e.ok for e in self.entries)

    @property
    def first_broken(self) -> EntryVerdict | None:
        """The first entry that does not hold, or None."""
        return next((e for e in self.entries if not e.ok), None)

    def summary(self) -> str:
        """One line: intact (with counts) or the first broken entry and why."""
        bad = self.first_broken
        if bad is None:
            return (f"chain intact: {len(self.entries)} entries, {self.heads} signed heads, "
                    f"{self.unsigned_tail} entries after the last head")
        return f"chain broken at line {bad.line} (seq {bad.seq}): {bad.reason}"


@dataclass
class _Line:
    """One line as parsed for verification."""

    raw: bytes
    hash: str
    entry: dict[str, Any] | None
    problem: str | None

    @property
    def seq(self) -> int | None:
        return None if self.entry is None else self.entry["seq"]

    @property
    def kind(self) -> str | None:
        return None if self.entry is None else self.entry["kind"]


def _parse(raw: bytes) -> _Line:
    """Parse and shape-check one line."""
    h = line_hash(raw)
    try:
        entry = json.loads(raw.decode("utf-8"))
    except (UnicodeDecodeError, ValueError):
        return _Line(raw, h, None, "malformed: not a JSON line")
    shape_ok = (
        isinstance(entry, dict)
        and isinstance(entry.get("seq"), int) and not isinstance(entry.get("seq"), bool) and entry["seq"] >= 0
        and isinstance(entry.get("prev"), str) and len(entry["prev"]) == 64
        and isinstance(entry.get("kind"), str) and isinstance(entry.get("data"), dict)
        and set(entry) <= {"seq", "prev", "kind", "data", "sig"}
        and (entry["kind"] == HEAD_KIND) == ("sig" in entry)
    )
    if not shape_ok:
        return _Line(raw, h, None, "malformed: not an audit entry (seq, prev, kind, data[, sig])")
    try:
        canonical = canonical_line(entry) == raw
    except AuditLogError:
        canonical = False
    if not canonical:
        return _Line(raw, h, entry, "edited: entry is not in canonical form")
    return _Line(raw, h, entry, None)


def _head_ok(entry: Mapping[str, Any], public_key: Ed25519PublicKey) -> bool:
    """Whether a head entry's signature verifies."""
    try:
        public_key.verify(bytes.fromhex(entry["sig"]), head_message(entry))
        return True
    except (InvalidSignature, ValueError, TypeError):
        return False


def verify_chain(lines: Iterable[str | bytes], public_key: Ed25519PublicKey) -> ChainReport:
    """Check a log's chain and head signatures line by line; name each broken entry and why.

    Detects edited entries (the next entry's `prev` no longer matches), deleted entries (a gap in `seq`),
    reordered entries (`seq` out of order), malformed lines and head signatures that do not verify. Entries
    after the last valid head are reported ok but counted in `unsigned_tail` (they could still be cut off
    unnoticed).
    """
    parsed = [_parse(_line_bytes(x)) for x in _strip_final_empty(lines)]
    n = len(parsed)
    seqs_after: list[set[int]] = [set() for _ in range(n + 1)]
    for k in range(n - 1, -1, -1):
        seq = parsed[k].seq
        seqs_after[k] = seqs_after[k + 1] | ({seq} if seq is not None else set())

    def link_ok(k: int) -> bool:
        entry = parsed[k].entry
        return entry is not None and entry["prev"] == (GENESIS if k == 0 else parsed[k - 1].hash)

    reasons: list[str | None] = [p.problem for p in parsed]
    seq_ok = [True] * n
    max_seen = -1
    for k, p in enumerate(parsed):
        if p.seq is None:  # a malformed line stands in for the entry expected at its place
            max_seen += 1
            continue
        expected = max_seen + 1
        if p.seq != expected:
            seq_ok[k] = False
            if p.seq < expected:
                why = f"reordered: seq {p.seq} comes after seq {max_seen}"
            elif expected in seqs_after[k + 1]:
                why = f"reordered: seq {p.seq} comes before seq {expected}"
            else:
                missing = f"seq {expected}" if p.seq == expected + 1 else f"seq {expected}..{p.seq - 1}"
                why = f"deleted: {missing} missing before this entry"
            reasons[k] = reasons[k] or why
        max_seen = max(max_seen, p.seq)
    last_head = -1
    heads = 0
    for k, p in enumerate(parsed):
        if p.entry is not None and p.kind == HEAD_KIND:
            if _head_ok(p.entry, public_key):
                heads += 1
                last_head = k
            else:
                reasons[k] = reasons[k] or "head signature does not verify (forged, or the chain rewritten)"
    explained = [False] * n
    for k in range(n):
        if parsed[k].entry is None or not seq_ok[k] or link_ok(k) or explained[k]:
            continue
        nxt = k + 1
        if nxt < n and parsed[nxt].entry is not None and seq_ok[nxt] and not link_ok(nxt):
            reasons[k] = reasons[k] or "edited: prev does not match the previous entry's hash"
            explained[nxt] = True
        elif k == 0:
            reasons[k] = reasons[k] or "edited: the first entry's prev is not the genesis value"
        else:
            reasons[k - 1] = reasons[k - 1] or "edited: its hash does not match the next entry's prev"
    verdicts = tuple(
        EntryVerdict(
            line=k + 1,
            seq=p.seq,
            kind=p.kind,
            ok=reasons[k] is None,
            reason=reasons[k] or ("ok" if k <= last_head else "ok, not yet covered by a signed head"),
        )
        for k, p in enumerate(parsed)
    )
    return ChainReport(entries=verdicts, heads=heads, unsigned_tail=n - 1 - last_head)


def _line_bytes(line: str | bytes) -> bytes:
    """A line's bytes without its trailing newline."""
    raw = line.encode("utf-8") if isinstance(line, str) else bytes(line)
    return raw[:-1] if raw.endswith(b"\n") else raw


def _strip_final_empty(lines: Iterable[str | bytes]) -> list[str | bytes]:
    """The lines, without one empty final line (what splitting a newline-terminated file leaves)."""
    out = list(lines)
    if out and out[-1] in ("", b""):
        out.pop()
    return out


def read_lines(path: str | os.PathLike[str]) -> list[bytes]:
    """A log file's lines as bytes, newlines removed."""
    return Path(path).read_bytes().split(b"\n")


def verify_file(path: str | os.PathLike[str], public_key: Ed25519PublicKey) -> ChainReport:
    """`verify_chain` over a log file."""
    return verify_chain(read_lines(path), public_key)


# --------------------------------------------------------------------------------------------- witness


@dataclass(frozen=True)
class WitnessVerdict:
    """The verdict on one head a witness holds (`name`: its file name), or on a head it lacks."""

    name: str
    seq: int | None
    ok: bool
    reason: str


def verify_witness(
    lines: Iterable[str | bytes], heads: Mapping[str, bytes], public_key: Ed25519PublicKey
) -> list[WitnessVerdict]:
    """Compare a log with the signed heads its witness holds (file name → the head's line).

    Each witnessed head must be signed by the log's key and be, byte for byte, the log's line at its seq: a
    head beyond the log's end names a cut tail, a different line a log rewritten after the head was
    witnessed. A signed head in the log that the witness lacks is reported ok but says so.
    """
    log = [_line_bytes(x) for x in _strip_final_empty(lines)]
    out = []
    witnessed: set[int] = set()
    for name in sorted(heads):
        head = _parse(_line_bytes(heads[name]))
        entry = head.entry
        if head.problem is not None or entry is None or entry["kind"] != HEAD_KIND:
            out.append(WitnessVerdict(name, None, False, "not a signed head entry"))
            continue
        seq = entry["seq"]
        if not _head_ok(entry, public_key):
            out.append(WitnessVerdict(name, seq, False, "its signature does not verify under the log's key"))
            continue
        witnessed.add(seq)
        epoch = entry["data"].get("epoch")
        if seq >= len(log):
            out.append(WitnessVerdict(
                name, seq, False,
                f"tail cut: the witness holds the signed head seq {seq} (epoch {epoch}), but the log has "
                f"only {len(log)} entries",
            ))
        elif log[seq] != head.raw:
            out.append(WitnessVerdict(
                name, seq, False,
                f"the log's line {seq + 1} is not the head seq {seq} (epoch {epoch}) the witness holds: "
                "the log was cut or rewritten after the head was witnessed",
            ))
        else:
            out.append(WitnessVerdict(name, seq, True, f"head seq {seq} (epoch {epoch}) is in the log"))
    for k, raw in enumerate(log):
        parsed = _parse(raw)
        entry = parsed.entry
        if entry is not None and parsed.kind == HEAD_KIND and parsed.seq not in witnessed \
                and _head_ok(entry, public_key):
            out.append(WitnessVerdict(f"line {k + 1}", parsed.seq, True, "a signed head the witness lacks"))
    return out


def read_witness(directory: str | os.PathLike[str]) -> dict[str, bytes]:
    """The heads a witness directory holds (file name → bytes); empty when there is none."""
    path = Path(directory)
    if not path.is_dir():
        return {}
    return {p.name: p.read_bytes() for p in sorted(path.glob("head-*.jsonl"))}
