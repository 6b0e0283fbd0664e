"""Audit logs under faults: a full disk leaves the log as it was and the next entry chains on; signed heads
reach the witness, which names a cut or rewritten tail."""

from __future__ import annotations

import errno
import io
import json
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import BinaryIO, cast

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from crypto.auditlog import AuditLog, AuditLogError, read_witness, verify_chain, verify_witness

KEY = Ed25519PrivateKey.from_private_bytes(bytes(range(32)))
PUBLIC = KEY.public_key()


@pytest.fixture
def small_disk(tmp_path: Path) -> Iterator[Path]:
    """A 1 MiB tmpfs (tests run as root; skipped only where mounting is not permitted)."""
    disk = tmp_path / "disk"
    disk.mkdir()
    try:
        mounted = subprocess.run(
            ["mount", "-t", "tmpfs", "-o", "size=1M", "tmpfs", str(disk)], capture_output=True, timeout=30
        )
    except (OSError, subprocess.TimeoutExpired) as exc:
        pytest.skip(f"cannot mount a tmpfs ({exc}); the injected failing writer test covers the check")
    if mounted.returncode != 0:
        pytest.skip(f"mounting a tmpfs is not permitted ({mounted.stderr.decode().strip()}); "
                    "the injected failing writer test covers the check")
    try:
        yield disk
    finally:
        subprocess.run(["umount", "-l", str(disk)], capture_output=True, timeout=30)


def fill(disk: Path) -> list[Path]:
    """Fill a file system with 4 KiB files until it is full; returns them."""
    files: list[Path] = []
    while True:
        path = disk / f"filler-{len(files):05d}"
        try:
            with open(path, "wb") as fh:
                fh.write(b"\0" * 4096)
        except OSError as exc:
            assert exc.errno == errno.ENOSPC
            path.unlink(missing_ok=True)
            return files
        files.append(path)


def test_full_disk_leaves_the_log_as_it_was(small_disk: Path) -> None:
    path = small_disk / "audit.jsonl"
    log = AuditLog(path)
    for i in range(5):
        log.append("evaluate", {"count": i})
    log.sign_head(KEY, "before")
    before = path.read_bytes()
    fillers = fill(small_disk)
    fillers.pop().unlink()  # one page free: a large entry is written in part, then the disk is full
    for _ in range(2):  # twice: a failed append leaves nothing behind for the next one to carry
        with pytest.raises(AuditLogError, match=r"not written.*No space left.*the log is unchanged"):
            log.append("evaluate", {"blob": "x" * 20_000})
        assert path.read_bytes() == before
    for f in fillers:
        f.unlink()
    written = log.append("evaluate", {"after": True})
    log.sign_head(KEY, "after")
    log.close()
    lines = path.read_bytes().split(b"\n")[:-1]
    assert written["seq"] == 6 and [json.loads(x)["seq"] for x in lines] == list(range(8))
    report = verify_chain(lines, PUBLIC)
    assert report.ok and report.heads == 2, report.summary()
    assert AuditLog(path).next_seq == 8


class FailingDisk(io.RawIOBase):
    """An in-memory file that accepts `room` more bytes, then fails writes with ENOSPC (after a short write,
    as a real file system does)."""

    def __init__(self) -> None:
        self.data = io.BytesIO()
        self.room: int | None = None

    def readable(self) -> bool:
        return True

    def writable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    def seek(self, offset: int, whence: int = io.SEEK_SET) -> int:
        return self.data.seek(offset, whence)

    def tell(self) -> int:
        return self.data.tell()

    def truncate(self, size: int | None = None) -> int:
        return self.data.truncate(size)

    def readinto(self, buffer: memoryview) -> int:  # type: ignore[override]
        return self.data.readinto(buffer)

    def write(self, b: bytes) -> int:  # type: ignore[override]
        data = bytes(b)
        if self.room is None:
            return self.data.write(data)
        if self.room == 0:
            raise OSError(errno.ENOSPC, "No space left on device")
        part = data[: self.room]
        self.room -= len(part)
        return self.data.write(part)


def test_injected_failing_writer_leaves_the_log_as_it_was() -> None:
    disk = FailingDisk()
    log = AuditLog(cast(BinaryIO, disk))
    log.append("evaluate", {"count": 1})
    log.sign_head(KEY, "e1")
    before = disk.data.getvalue()
    disk.room = 10
    with pytest.raises(AuditLogError, match=r"seq 2 not written.*No space left"):
        log.append("evaluate", {"count": 2})
    assert disk.data.getvalue() == before and log.next_seq == 2
    disk.room = None
    log.append("evaluate", {"count": 3})
    lines = disk.data.getvalue().split(b"\n")[:-1]
    assert [json.loads(x)["seq"] for x in lines] == [0, 1, 2]
    assert verify_chain(lines, PUBLIC).ok


def witnessed_log(tmp_path: Path) -> tuple[Path, Path]:
    """A log with three epochs' heads, each delivered to a witness directory."""
    path, witness = tmp_path / "audit.jsonl", tmp_path / "heads"
    with AuditLog(path, witness=witness) as log:
        for epoch in range(3):
            log.append("evaluate", {"epoch": epoch})
            log.sign_head(KEY, epoch)
        log.append("evaluate", {"after": "last head"})
    return path, witness


def test_heads_reach_the_witness_and_agree(tmp_path: Path) -> None:
    path, witness = witnessed_log(tmp_path)
    held = read_witness(witness)
    assert sorted(held) == [f"head-{seq:012d}.jsonl" for seq in (1, 3, 5)]
    verdicts = verify_witness(path.read_bytes().split(b"\n"), held, PUBLIC)
    assert [v.ok for v in verdicts] == [True] * 3


def test_witness_names_a_cut_tail(tmp_path: Path) -> None:
    path, witness = witnessed_log(tmp_path)
    lines = path.read_bytes().split(b"\n")[:-1]
    cut = lines[:4]  # the last head (seq 5) and what follows cut off
    assert verify_chain(cut, PUBLIC).ok  # the chain alone cannot tell
    verdicts = verify_witness(cut, read_witness(witness), PUBLIC)
    bad = [v for v in verdicts if not v.ok]
    assert len(bad) == 1 and bad[0].seq == 5 and bad[0].reason.startswith("tail cut")


def test_witness_names_a_rewritten_log_and_a_forged_witness_head(tmp_path: Path) -> None:
    path, witness = witnessed_log(tmp_path)
    lines = path.read_bytes().split(b"\n")[:-1]
    rewritten = tmp_path / "rewritten.jsonl"
    with AuditLog(rewritten) as log:  # the key holder re-makes the log with other data
        for epoch in range(3):
            log.append("evaluate", {"epoch": epoch, "edited": True})
            log.sign_head(KEY, epoch)
    verdicts = verify_witness(rewritten.read_bytes().split(b"\n"), read_witness(witness), PUBLIC)
    assert [v.ok for v in verdicts if v.name.startswith("head-")] == [False] * 3
    assert all("rewritten" in v.reason for v in verdicts if not v.ok)
    impostor = Ed25519PrivateKey.from_private_bytes(bytes(32))
    forged = tmp_path / "forged"
    with AuditLog(tmp_path / "other.jsonl", witness=forged) as log:
        log.append("evaluate", {})
        log.sign_head(impostor, 0)
    verdicts = verify_witness(lines, read_witness(forged), PUBLIC)
    assert any(not v.ok and "signature does not verify" in v.reason for v in verdicts)
