"""The coordinator's code store: idempotent writes, epochs, previous codes, revocations, and crash safety of
issuance (a process killed mid-issuance and started again ends with every code exactly once)."""

from __future__ import annotations

import datetime as dt
import signal
import sqlite3
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pandas as pd
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

from coordinator.applicants import prepare
from coordinator.issuance import Holders, Signer, code_id, holders, issue_codes, revoke_worsened
from coordinator.store import CodeRow, CodeStore, Revocation, StoreError
from crypto import codes
from crypto.pki import spki_kid
from proto import ids

SECRET = b"s" * 32
ISSUED = dt.datetime(2020, 2, 15, tzinfo=dt.UTC)


def row(
    code: str, subject: str, epoch: str, color: str = "green", expires: str = "2020-02-16T00:00:00Z"
) -> CodeRow:
    """A stored code with placeholder payload."""
    return CodeRow(code, subject, color, ("R",), "2020-02-15T00:00:00Z", expires, f"HCP1:{code}", epoch)


@pytest.fixture
def store(tmp_path: Path) -> CodeStore:
    """A fresh store."""
    return CodeStore(tmp_path / "codes.sqlite")


def test_wal_mode_and_schema(store: CodeStore) -> None:
    db = sqlite3.connect(store.path)
    assert db.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    tables = {r[0] for r in db.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
    assert {"codes", "epochs", "revocations", "refusals"} <= tables
    columns = {r[1] for r in db.execute("PRAGMA table_info(codes)")}
    assert {
        "code_id",
        "subject_id",
        "color",
        "reasons",
        "issued_at",
        "expires_at",
        "payload",
        "epoch",
    } <= columns


def test_begin_epoch_is_idempotent_and_keeps_its_start(store: CodeStore) -> None:
    assert store.begin_epoch("e1", "2020-02-14", "d1", "t1") == (1, "t1")
    assert store.begin_epoch("e1", "2020-02-14", "d1", "t2") == (1, "t1")
    assert store.begin_epoch("e2", "2020-02-15", "d2", "t3") == (2, "t3")
    with pytest.raises(StoreError, match="different inputs"):
        store.begin_epoch("e1", "2020-02-14", "other", "t4")
    assert not store.epoch_finished("e1")
    store.finish_epoch("e1", "t5", {"codes": 1})
    assert store.epoch_finished("e1") and store.epoch_seq("e2") == 2 and store.epoch_seq("nope") is None


def test_codes_are_stored_once(store: CodeStore) -> None:
    store.begin_epoch("e1", "2020-02-14", "d", "t")
    assert store.insert_codes([row("a", "s1", "e1"), row("b", "s2", "e1")]) == 2
    assert store.insert_codes([row("a", "s1", "e1"), row("c", "s1", "e1"), row("d", "s3", "e1")]) == 1
    assert store.count_codes("e1") == 3
    assert store.issued_subjects("e1") == {"s1", "s2", "s3"}
    assert [r.code_id for r in store.codes("e1")] == ["a", "b", "d"]
    assert next(store.codes()).reasons == ("R",)


def test_unknown_epoch_and_bad_colour_are_refused(store: CodeStore) -> None:
    with pytest.raises(sqlite3.IntegrityError):
        store.insert_codes([row("a", "s1", "never-started")])
    store.begin_epoch("e1", "2020-02-14", "d", "t")
    with pytest.raises(StoreError, match="colour"):
        store.insert_codes([row("b", "s2", "e1"), row("a", "s1", "e1", color="blue")])
    assert store.count_codes() == 0  # the failed transaction left nothing behind


def test_previous_codes_latest_unexpired_unrevoked(store: CodeStore) -> None:
    for n in (1, 2, 3):
        store.begin_epoch(f"e{n}", "2020-02-14", f"d{n}", "t")
    store.insert_codes(
        [row("a1", "s1", "e1", "green"), row("b1", "s2", "e1", "green"), row("c1", "s3", "e1")]
    )
    store.insert_codes(
        [row("a2", "s1", "e2", "yellow"), row("c2", "s3", "e2", expires="2020-02-15T00:00:00Z")]
    )
    store.insert_codes([row("a3", "s1", "e3", "red")])
    store.revoke([Revocation("b1", "s2", "e2", "X", "t")])
    assert list(store.previous_codes("e3", "2020-02-15T12:00:00Z")) == [("s1", "a2", "yellow")]
    assert list(store.previous_codes("e2", "2020-02-15T12:00:00Z")) == [
        ("s1", "a1", "green"),
        ("s3", "c1", "green"),
    ]


def test_revocations_and_refusals_are_idempotent(store: CodeStore) -> None:
    store.begin_epoch("e1", "2020-02-14", "d", "t")
    store.insert_codes([row("a", "s1", "e1")])
    assert store.revoke([Revocation("a", "s1", "e1", "X", "t")]) == 1
    assert store.revoke([Revocation("a", "s1", "e1", "X", "t")]) == 0
    assert [r.code_id for r in store.revocations()] == ["a"]
    assert store.insert_refusals("e1", [("s9", "BAD_ID"), ("s9", "BAD_ID")]) == 1
    assert store.refusals("e1") == {"s9": "BAD_ID"}


def test_revoke_worsened(store: CodeStore) -> None:
    store.begin_epoch("e1", "2020-02-14", "d1", "t")
    store.begin_epoch("e2", "2020-02-14", "d2", "t")
    store.insert_codes(
        [row("a", "s1", "e1", "green"), row("b", "s2", "e1", "yellow"), row("c", "s3", "e1", "red")]
    )
    revoked = revoke_worsened(store, "e2", {"s1": "yellow", "s2": "yellow", "s3": "green"}, ISSUED)
    assert [(r.code_id, r.reason) for r in revoked] == [("a", "COLOUR_WORSE")]
    assert revoke_worsened(store, "e2", {"s1": "yellow"}, ISSUED) == []  # already revoked


# ------------------------------------------------------------------------------------------ crash safety

PEOPLE = 1200
BATCH = 20
COMMIT = 3 * BATCH


def people() -> Holders:
    """Accepted applicants with a mix of colours."""
    colours = ("green", "yellow", "red")
    return Holders(
        [ids.from_int(41010219800000000 + i) for i in range(PEOPLE)],
        [f"王{chr(0x4E00 + i % 500)}明" for i in range(PEOPLE)],
        [colours[i % 3] for i in range(PEOPLE)],
        [("X",) if i % 3 else () for i in range(PEOPLE)],
        [dt.date(2020, 2, 20) if i % 3 else None for i in range(PEOPLE)],
    )


def signer() -> Signer:
    """A fixed P-256 code-signing key."""
    key = ec.derive_private_key(123456789, ec.SECP256R1())
    pem = key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    return Signer(pem, spki_kid(key.public_key()))


def issue_all(path: Path, slow: float = 0.0) -> None:
    """Issue the epoch's codes into the store at `path` (sleeping after each batch when `slow`)."""
    with CodeStore(path) as store:
        store.begin_epoch("e1", "2020-02-14", "d", "2020-02-15T00:00:00Z")
        issue_codes(
            store,
            "e1",
            people(),
            signer=signer(),
            secret=SECRET,
            policy_version="v",
            issued_at=ISSUED,
            batch_size=BATCH,
            commit_codes=COMMIT,
            progress=lambda done, total: time.sleep(slow),
        )


def count(path: Path) -> int:
    """Codes stored so far (0 before the store exists)."""
    if not path.exists():
        return 0
    try:
        return sqlite3.connect(path, timeout=5).execute("SELECT COUNT(*) FROM codes").fetchone()[0]
    except sqlite3.OperationalError:
        return 0


@pytest.mark.slow
def test_killed_issuance_resumes_without_duplicates(tmp_path: Path) -> None:
    path = tmp_path / "codes.sqlite"
    script = textwrap.dedent(f"""
        import sys
        sys.path.insert(0, {str(Path(__file__).parent)!r})
        from pathlib import Path
        import test_coordinator_store as t
        t.issue_all(Path({str(path)!r}), slow=0.02)
    """)
    proc = subprocess.Popen([sys.executable, "-c", script])
    deadline = time.monotonic() + 60
    while count(path) < 5 * COMMIT and time.monotonic() < deadline and proc.poll() is None:
        time.sleep(0.02)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    partial = count(path)
    assert COMMIT <= partial < PEOPLE, "the kill should land mid-issuance"
    assert partial % COMMIT == 0, "whole batches are committed together, COMMIT codes at a time"

    issue_all(path)
    reference = tmp_path / "reference.sqlite"
    issue_all(reference)
    with CodeStore(path) as resumed, CodeStore(reference) as clean:
        got = list(resumed.codes("e1"))
        assert got == list(clean.codes("e1"))
    assert len(got) == PEOPLE == len({r.subject_id for r in got}) == len({r.code_id for r in got})
    sample = got[7]
    claims = codes.decode_claims(codes.decode_payload(sample.payload).cose.payload)
    hcp = claims[codes.CLAIM_HCERT][codes.HCERT_ENTRY]
    assert hcp["id"] == sample.code_id == code_id(SECRET, "e1", sample.subject_id)
    assert hcp["c"] == sample.color


def test_holders_join_colours_in_subject_order() -> None:
    """Every accepted applicant is a holder, in subject-id order; the unassessed are green without reasons
    or a colour end date, the assessed keep their colour, reasons and end date."""
    subjects = [ids.from_int(41010219800000000 + i) for i in (5, 1, 9, 3)]
    accepted = pd.DataFrame({"subject_id": subjects, "name": ["甲", "乙", "丙", "丁"]})
    colours = pd.DataFrame(
        {
            "subject_id": [subjects[2], subjects[1], ids.from_int(41010219800000077)],
            "color": ["red", "yellow", "red"],
            "reasons": [("A", "B"), ("C",), ("D",)],
            "until": [dt.date(2020, 2, 20), pd.NaT, dt.date(2020, 2, 21)],
        }
    )
    people = holders(accepted, colours)
    order = [1, 3, 0, 2]
    assert people.subject_ids == [subjects[i] for i in order]
    assert people.names == ["乙", "丁", "甲", "丙"]
    assert people.colors == ["yellow", "green", "green", "red"]
    assert people.reasons == [("C",), (), (), ("A", "B")]
    assert people.untils == [None, None, None, dt.date(2020, 2, 20)]
    assert people.select([3, 0]).names == ["丙", "乙"] and len(people.select(slice(1, 3))) == 2


def test_prepare_refuses_the_ids_is_valid_refuses() -> None:
    """Applicants' ids are checked vectorised; the verdicts are `ids.is_valid`'s over each id's text."""
    good = ids.from_int(41010219900101001)
    values = [good, None, "", "4101021990010100", good[:17] + "Y", 12345, "４１" + good[2:]]
    values.append(good)
    applicants = pd.DataFrame(
        {
            "subject_id": pd.Series(values, dtype=object),
            "name": ["张三"] * len(values),
            "birth_date": ["1990-01-01"] * len(values),
        }
    )
    declarations = prepare(applicants)
    bad = {"" if v is None else str(v) for v in values if not ids.is_valid("" if v is None else str(v))}
    assert {s for s, reason in declarations.refused} == bad
    assert list(declarations.checked["subject_id"]) == [good] and declarations.duplicates == 1
