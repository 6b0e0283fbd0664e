"""The re-run comparison of audit logs: byte for byte, or the same entries of each kind in the same order when
concurrent calls of different kinds (an index streamed while a batch is evaluated) interleaved differently."""

from __future__ import annotations

import io
from pathlib import Path

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from audit.rerun import compare_log
from crypto.auditlog import AuditLog

KEY = Ed25519PrivateKey.generate()


def write_log(path: Path, entries: list[tuple[str, dict[str, object]]]) -> Path:
    """A signed, chained audit log of these entries, then a head."""
    stream = io.BytesIO()
    log = AuditLog(stream)
    for kind, data in entries:
        log.append(kind, data)
    log.sign_head(KEY, "e")
    path.write_bytes(stream.getvalue())
    return path


STREAMED = ("index_streamed", {"partition_id": "stays@2020-01-30", "entries": 10})
EVALUATED = [("evaluate", {"partition_id": f"stays@2020-01-2{i}", "count": 2}) for i in range(3)]


def test_the_same_log_holds_byte_for_byte(tmp_path: Path) -> None:
    a = write_log(tmp_path / "a", [STREAMED, *EVALUATED])
    b = write_log(tmp_path / "b", [STREAMED, *EVALUATED])
    verdict = compare_log("nodes/carrier/audit.jsonl", a, b, deterministic=True)
    assert (verdict.status, verdict.reason) == ("ok", "byte for byte equal to the re-run (5 entries)")


def test_calls_of_different_kinds_interleaved_otherwise_hold(tmp_path: Path) -> None:
    a = write_log(tmp_path / "a", [STREAMED, *EVALUATED])
    b = write_log(tmp_path / "b", [EVALUATED[0], STREAMED, *EVALUATED[1:]])
    verdict = compare_log("nodes/carrier/audit.jsonl", a, b, deterministic=True)
    assert verdict.status == "ok" and "interleaved differently from line 1" in verdict.reason


def test_reordered_calls_of_one_kind_or_an_edited_entry_fail(tmp_path: Path) -> None:
    a = write_log(tmp_path / "a", [STREAMED, *EVALUATED])
    swapped = write_log(tmp_path / "b", [STREAMED, EVALUATED[1], EVALUATED[0], EVALUATED[2]])
    forged = ("evaluate", {"partition_id": "x", "count": 2})
    edited = write_log(tmp_path / "c", [STREAMED, *EVALUATED[:2], forged])
    for other in (swapped, edited):
        verdict = compare_log("nodes/carrier/audit.jsonl", a, other, deterministic=True)
        assert verdict.status == "fail" and "differs from the re-run" in verdict.reason
