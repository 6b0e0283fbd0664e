"""Hash-chained audit logs: writing, crash recovery, and naming every kind of tampering."""

from __future__ import annotations

import hashlib
import io
import json
import threading
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from hypothesis import given, settings
from hypothesis import strategies as st

from crypto import auditlog
from crypto.auditlog import GENESIS, AuditLog, AuditLogError, verify_chain
from crypto.errors import CryptoError

KEY = Ed25519PrivateKey.from_private_bytes(bytes(range(32)))
PUBLIC = KEY.public_key()


def _log(entries: int = 6, head_after: tuple[int, ...] = (3,)) -> list[bytes]:
    """A log with `entries` evaluate entries and a signed head after each index in `head_after`, plus one
    closing head; returned as lines."""
    stream = io.BytesIO()
    log = AuditLog(stream)
    for i in range(entries):
        log.append("evaluate", {"partition": f"stays@2020-02-{i + 1:02d}", "count": i, "who": "张三"})
        if i in head_after:
            log.sign_head(KEY, f"epoch-{i}")
    log.sign_head(KEY, "final")
    return stream.getvalue().split(b"\n")[:-1]


def _broken(lines: list[bytes]) -> auditlog.EntryVerdict:
    report = verify_chain(lines, PUBLIC)
    assert not report.ok
    assert report.first_broken is not None
    return report.first_broken


def _edit(line: bytes, old: bytes, new: bytes) -> bytes:
    assert old in line
    return line.replace(old, new, 1)


def test_entries_chain_and_heads_sign() -> None:
    lines = _log()
    entries = [json.loads(x) for x in lines]
    assert [e["seq"] for e in entries] == list(range(len(lines)))
    assert entries[0]["prev"] == GENESIS
    for before, entry, line in zip(lines, entries[1:], lines[1:], strict=False):
        assert entry["prev"] == hashlib.sha256(before).hexdigest()
        assert line == auditlog.canonical_line(entry)
    heads = [e for e in entries if e["kind"] == "head"]
    assert [h["data"]["epoch"] for h in heads] == ["epoch-3", "final"]
    report = verify_chain(lines, PUBLIC)
    assert report.ok and report.heads == 2 and report.unsigned_tail == 0
    assert report.summary().startswith("chain intact")
    assert all(v.reason == "ok" for v in report.entries)


def test_logs_are_deterministic() -> None:
    assert _log() == _log()


def test_edited_entry_is_named() -> None:
    lines = _log()
    lines[2] = _edit(lines[2], b'"count":2', b'"count":7')
    bad = _broken(lines)
    assert (bad.line, bad.seq) == (3, 2) and bad.reason.startswith("edited")


def test_edited_prev_is_named() -> None:
    lines = _log()
    entry = json.loads(lines[2])
    entry["prev"] = "f" * 64
    lines[2] = auditlog.canonical_line(entry)
    bad = _broken(lines)
    assert (bad.line, bad.reason) == (3, "edited: prev does not match the previous entry's hash")
    assert [v.line for v in verify_chain(lines, PUBLIC).entries if not v.ok] == [3]


def test_rewritten_chain_is_caught_by_the_head() -> None:
    """Editing an entry and recomputing every later prev leaves only the head signature to object."""
    lines = _log(entries=4, head_after=())
    entries = [json.loads(x) for x in lines]
    entries[1]["data"]["count"] = 99
    rebuilt: list[bytes] = []
    for entry in entries:
        entry["prev"] = auditlog.line_hash(rebuilt[-1]) if rebuilt else GENESIS
        rebuilt.append(auditlog.canonical_line(entry))
    bad = _broken(rebuilt)
    assert bad.kind == "head" and "signature does not verify" in bad.reason


def test_deleted_entry_is_named() -> None:
    lines = _log()
    del lines[2]
    bad = _broken(lines)
    assert (bad.line, bad.seq, bad.reason) == (3, 3, "deleted: seq 2 missing before this entry")
    first = _log()[1:]
    assert _broken(first).reason == "deleted: seq 0 missing before this entry"
    several = _log()
    del several[1:4]
    assert _broken(several).reason == "deleted: seq 1..3 missing before this entry"


def test_reordered_entries_are_named() -> None:
    lines = _log()
    lines[2], lines[3] = lines[3], lines[2]
    report = verify_chain(lines, PUBLIC)
    bad = report.first_broken
    assert bad is not None and (bad.line, bad.seq) == (3, 3) and bad.reason.startswith("reordered")
    assert report.entries[3].reason.startswith("reordered")


def test_forged_head_signature_is_named() -> None:
    lines = _log()
    head = json.loads(lines[4])
    assert head["kind"] == "head"
    head["sig"] = Ed25519PrivateKey.generate().sign(auditlog.head_message(head)).hex()
    lines[4] = auditlog.canonical_line(head)
    bad = _broken(lines)
    assert (bad.line, bad.kind) == (5, "head") and "head signature does not verify" in bad.reason


def test_wrong_key_fails_every_head() -> None:
    report = verify_chain(_log(), Ed25519PrivateKey.generate().public_key())
    assert [v.kind for v in report.entries if not v.ok] == ["head", "head"]
    assert report.heads == 0


def test_malformed_and_reformatted_lines() -> None:
    lines = _log()
    lines[1] = b"{not json"
    bad = _broken(lines)
    assert (bad.line, bad.reason) == (2, "malformed: not a JSON line")
    assert [v.line for v in verify_chain(lines, PUBLIC).entries if not v.ok] == [2]
    spaced = _log()
    spaced[2] = json.dumps(json.loads(spaced[2]), sort_keys=True).encode()
    assert _broken(spaced).reason == "edited: entry is not in canonical form"
    extra = _log()
    entry = json.loads(extra[1])
    entry["note"] = "x"
    extra[1] = auditlog.canonical_line(entry)
    assert _broken(extra).reason.startswith("malformed: not an audit entry")


def test_unsigned_tail_and_text_lines() -> None:
    stream = io.BytesIO()
    log = AuditLog(stream)
    log.append("a")
    log.sign_head(KEY, 1)
    log.append("b", {"x": 1})
    text = stream.getvalue().decode().splitlines()
    report = verify_chain(text, PUBLIC)
    assert report.ok and report.heads == 1 and report.unsigned_tail == 1
    assert report.entries[-1].reason == "ok, not yet covered by a signed head"
    assert verify_chain([], PUBLIC).ok


def test_reopen_continues_the_chain(tmp_path: Path) -> None:
    path = tmp_path / "nodes" / "carrier" / "audit.jsonl"
    with AuditLog(path) as log:
        log.append("manifest", {"partitions": 3})
        log.sign_head(KEY, "e1")
    with AuditLog(path) as log:
        assert log.next_seq == 2
        assert log.last_hash == auditlog.line_hash(path.read_bytes().split(b"\n")[1])
        log.append("evaluate", {"count": 4})
        log.sign_head(KEY, "e2")
    report = auditlog.verify_file(path, PUBLIC)
    assert report.ok and len(report.entries) == 4 and report.heads == 2


def test_torn_last_line_is_dropped_on_open(tmp_path: Path) -> None:
    path = tmp_path / "audit.jsonl"
    with AuditLog(path) as log:
        log.append("a")
        log.append("b")
    whole = path.read_bytes()
    path.write_bytes(whole + b'{"data":{},"kind":"c","pr')  # a crash in the middle of a write
    with AuditLog(path) as log:
        assert log.next_seq == 2
        log.append("c")
    assert path.read_bytes().startswith(whole)
    assert auditlog.verify_file(path, PUBLIC).ok
    only_torn = tmp_path / "torn.jsonl"
    only_torn.write_bytes(b'{"seq":0')
    with AuditLog(only_torn) as log:
        assert (log.next_seq, log.last_hash) == (0, GENESIS)
    assert only_torn.read_bytes() == b""


def test_long_entries_recover(tmp_path: Path) -> None:
    """Recovery reads the file backwards in blocks; entries longer than a block still resume."""
    path = tmp_path / "audit.jsonl"
    with AuditLog(path) as log:
        log.append("big", {"blob": "x" * 150_000})
        log.append("big", {"blob": "y" * 150_000})
        last = log.last_hash
    with AuditLog(path) as log:
        assert (log.next_seq, log.last_hash) == (2, last)


def test_corrupt_last_line_refuses_to_open(tmp_path: Path) -> None:
    path = tmp_path / "audit.jsonl"
    path.write_bytes(b'{"seq": 0}\nnot json\n')
    with pytest.raises(AuditLogError, match="last entry"):
        AuditLog(path)


def test_bad_entries_are_refused() -> None:
    log = AuditLog(io.BytesIO())
    with pytest.raises(AuditLogError, match="kind"):
        log.append("head")
    with pytest.raises(AuditLogError, match="non-finite"):
        log.append("x", {"v": float("nan")})
    with pytest.raises(AuditLogError, match="JSON"):
        log.append("x", {"v": object()})
    assert log.next_seq == 0
    with pytest.raises(TypeError, match="binary"):
        AuditLog(io.StringIO())
    assert issubclass(AuditLogError, CryptoError)


def test_concurrent_appends_keep_the_chain() -> None:
    stream = io.BytesIO()
    log = AuditLog(stream)

    def work(n: int) -> None:
        for i in range(50):
            log.append("evaluate", {"thread": n, "i": i})

    threads = [threading.Thread(target=work, args=(n,)) for n in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    log.sign_head(KEY, "e")
    report = verify_chain(stream.getvalue().split(b"\n"), PUBLIC)
    assert report.ok and len(report.entries) == 201


@settings(max_examples=60, deadline=None)
@given(data=st.data())
def test_any_single_tampering_is_found_at_the_right_entry(data: st.DataObject) -> None:
    lines = _log(entries=8, head_after=(2, 5))
    n = len(lines)
    action = data.draw(st.sampled_from(["edit", "delete", "swap"]))
    i = data.draw(st.integers(0, n - 2))  # the final head is the last line; keep one line after i
    if action == "edit":
        entry = json.loads(lines[i])
        entry["data"]["tampered"] = True
        lines[i] = auditlog.canonical_line(entry)
        named = ("head signature does not verify",) if entry["kind"] == "head" else ("edited",)
    elif action == "delete":
        del lines[i]
        named = ("deleted",)
    else:
        lines[i], lines[i + 1] = lines[i + 1], lines[i]
        named = ("reordered",)
    bad = _broken(lines)
    assert bad.line == i + 1
    assert bad.reason.startswith(named)
