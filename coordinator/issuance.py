"""Issuing health codes: one signed code per accepted applicant per epoch, stored before anything else
happens to it; revocation of still-valid codes whose colour got worse; QR images for a sample.

Code ids are an HMAC of (epoch, subject) under a coordinator secret, so they are deterministic — a resumed
epoch re-derives the same ids and `INSERT OR IGNORE` keeps each code once — yet reveal nothing about the
subject. Signing runs in batches over the executor; signed batches are stored together, up to
`COMMIT_CODES` codes per transaction (each commit rewrites the pages of the code-id index it touched, and
ids are random: fewer, larger commits write far fewer pages).
"""

from __future__ import annotations

import datetime as dt
import hashlib
import hmac
import json
from collections.abc import Callable, Iterator, Mapping, Sequence
from concurrent.futures import Executor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd
from cryptography.hazmat.primitives import serialization

from coordinator import claims
from coordinator.policy import worse
from coordinator.qr import qr_png
from coordinator.store import CodeFields, CodeStore, Revocation
from crypto import codes
from crypto.pki import DEFAULT_ISSUER
from runctx.files import write_atomic
from runctx.pki import PkiPaths, load_signing_key, write_revocations

BATCH_SIZE = 10_000
COMMIT_CODES = 250_000
"""Codes stored per transaction (whole batches): a killed epoch signs at most this many again."""
CODE_ID_BYTES = 12
REASON_WORSE = "COLOUR_WORSE"
"""Revocation reason: the holder's colour got worse in a later epoch."""


def iso(moment: dt.datetime) -> str:
    """An aware (or UTC-naive) datetime as ISO 8601 UTC with a Z suffix, to the second."""
    moment = moment.replace(tzinfo=dt.UTC) if moment.tzinfo is None else moment.astimezone(dt.UTC)
    return moment.strftime("%Y-%m-%dT%H:%M:%SZ")


def code_id(secret: bytes, epoch: str, subject_id: str) -> str:
    """The code id of a subject's code in an epoch: HMAC-SHA256 under the coordinator's secret, hex."""
    return hmac.digest(secret, f"code|{epoch}|{subject_id}".encode(), hashlib.sha256)[:CODE_ID_BYTES].hex()


@dataclass(frozen=True)
class Signer:
    """The code-signing key (PKCS8 PEM, so it can travel to worker processes) and its kid."""

    key_pem: bytes
    kid: bytes
    issuer: str = DEFAULT_ISSUER

    @classmethod
    def load(cls, paths: PkiPaths) -> Signer:
        """The code-signing key of the run's home issuer (`RUN/pki/issuers/<region>/signing.key`); codes carry
        that region code in `iss`."""
        key, kid = load_signing_key(paths)
        pem = key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        )
        return cls(pem, kid, paths.home_issuer)


def sign_job(key_pem: bytes, kid: bytes, claim_sets: list[dict[int, Any]]) -> list[str]:
    """Sign claim sets as HCP1 payloads (a worker's share of a batch)."""
    key = serialization.load_pem_private_key(key_pem, password=None)
    return [codes.issue_code(claims, key, kid) for claims in claim_sets]  # type: ignore[arg-type]


@dataclass(frozen=True)
class ClaimContext:
    """What every code of an epoch shares: the code-id secret, the epoch, issuer, policy and issue time."""

    secret: bytes
    epoch: str
    issuer: str
    policy_version: str
    issued_at: dt.datetime

    def claims(
        self, holder_code_id: str, subject_id: str, name: str, color: str, until: dt.date | None
    ) -> dict[int, Any]:
        """The claim set of a holder's code, whose id is `holder_code_id`."""
        return claims.health_claims(
            code_id=holder_code_id,
            issuer=self.issuer,
            colour=color,
            policy_version=self.policy_version,
            name=name,
            subject_id=subject_id,
            issued_at=self.issued_at,
            colour_until=until if color != "green" else None,
        )


@dataclass(frozen=True)
class Holders:
    """Accepted applicants and the colours assessed for them, as columns in subject-id order (columns, not
    one object per holder: there are millions, and batches of them go to workers)."""

    subject_ids: list[str]
    names: list[str]
    colors: list[str]
    reasons: list[tuple[str, ...]]
    untils: list[dt.date | None]

    def __len__(self) -> int:
        return len(self.subject_ids)

    def select(self, keep: Sequence[int] | slice) -> Holders:
        """The holders at the given positions (or slice), in that order."""
        if isinstance(keep, slice):
            return Holders(*(column[keep] for column in self._columns()))
        return Holders(*([column[i] for i in keep] for column in self._columns()))

    def _columns(self) -> tuple[list[Any], ...]:
        return self.subject_ids, self.names, self.colors, self.reasons, self.untils


def sign_holders_job(
    key_pem: bytes, kid: bytes, context: ClaimContext, batch: Holders
) -> tuple[list[str], list[str]]:
    """Derive the code ids of a batch of holders, build their claims and sign them (a worker's share):
    (code ids, payloads)."""
    ids = [code_id(context.secret, context.epoch, subject) for subject in batch.subject_ids]
    claims = context.claims
    return ids, sign_job(
        key_pem,
        kid,
        [
            claims(*fields)
            for fields in zip(ids, batch.subject_ids, batch.names, batch.colors, batch.untils, strict=True)
        ],
    )


def holders(accepted: pd.DataFrame, colours: pd.DataFrame) -> Holders:
    """Join accepted applicants (subject_id, name, ...) with assessed colours (green when not assessed),
    sorted by subject id (accepted subject ids are distinct)."""
    assessed = {  # NaT is a date too, but unequal to itself
        subject: (
            str(color), tuple(reasons), until if isinstance(until, dt.date) and until == until else None
        )
        for subject, color, reasons, until in zip(
            colours["subject_id"], colours["color"], colours["reasons"], colours["until"], strict=True
        )
    }
    subjects, names = accepted["subject_id"].tolist(), accepted["name"].tolist()
    order = sorted(range(len(subjects)), key=subjects.__getitem__)
    subjects, names = [subjects[i] for i in order], [names[i] for i in order]
    green: tuple[str, tuple[str, ...], dt.date | None] = ("green", (), None)
    get = assessed.get
    assessments = [get(s, green) for s in subjects]
    return Holders(
        subjects, names, [a[0] for a in assessments], [a[1] for a in assessments], [a[2] for a in assessments]
    )


@dataclass(frozen=True)
class IssueStats:
    """Codes of an epoch: newly stored in this run, and in total."""

    new: int
    total: int


def _chunks(people: Holders, size: int) -> Iterator[Holders]:
    for first in range(0, len(people), size):
        yield people.select(slice(first, first + size))


def issue_codes(
    store: CodeStore,
    epoch: str,
    people: Holders,
    *,
    signer: Signer,
    secret: bytes,
    policy_version: str,
    issued_at: dt.datetime,
    executor: Executor | None = None,
    batch_size: int = BATCH_SIZE,
    commit_codes: int = COMMIT_CODES,
    progress: Callable[[int, int], None] | None = None,
) -> IssueStats:
    """Issue and store one code per holder for the epoch, skipping holders who already have one (a resumed
    epoch). Batches are signed over the executor; whole batches are stored in transactions of at least
    `commit_codes` codes (the last one smaller)."""
    done = store.issued_subjects(epoch)
    todo = people.select([i for i, s in enumerate(people.subject_ids) if s not in done]) if done else people
    expires_at = issued_at + codes.CODE_VALIDITY
    batches = list(_chunks(todo, batch_size))
    context = ClaimContext(secret, epoch, signer.issuer, policy_version, issued_at)
    issued_text, expires_text = iso(issued_at), iso(expires_at)

    def rows(batch: Holders, signed: tuple[list[str], list[str]]) -> list[CodeFields]:
        ids, payloads = signed
        n = len(batch)
        return list(
            zip(
                ids, batch.subject_ids, batch.colors, batch.reasons, [issued_text] * n, [expires_text] * n,
                payloads, [epoch] * n, strict=True,
            )
        )

    new = handled = 0
    pending: list[CodeFields] = []
    if executor is None:
        signed: Iterator[tuple[list[str], list[str]]] = (
            sign_holders_job(signer.key_pem, signer.kid, context, b) for b in batches
        )
    else:
        futures = [executor.submit(sign_holders_job, signer.key_pem, signer.kid, context, b) for b in batches]
        signed = (future.result() for future in futures)
    for batch, answer in zip(batches, signed, strict=True):
        pending += rows(batch, answer)
        if len(pending) >= commit_codes:
            new += store.insert_codes(pending)
            pending = []
        handled += len(batch)
        if progress is not None:
            progress(handled, len(todo))
    if pending:
        new += store.insert_codes(pending)
    return IssueStats(new=new, total=store.count_codes(epoch))


def revoke_worsened(
    store: CodeStore, epoch: str, colour_of: Mapping[str, str], issued_at: dt.datetime
) -> list[Revocation]:
    """Revoke every still-valid code of an earlier epoch whose holder's colour is now worse (subjects
    without an assessment are green); return the new revocations."""
    revoked = [
        Revocation(code, subject, epoch, REASON_WORSE, iso(issued_at))
        for subject, code, old in store.previous_codes(epoch, iso(issued_at))
        if worse(colour_of.get(subject, "green"), old)
    ]
    store.revoke(revoked)
    return revoked


def publish_revocations(paths: PkiPaths, store: CodeStore, issued_at: dt.datetime) -> int:
    """Re-sign the home issuer's revocation list with every revoked code id; return how many it lists."""
    ids = [r.code_id for r in store.revocations()]
    write_revocations(paths, ids, issued_at=issued_at)
    return len(ids)


def write_qr_sample(store: CodeStore, epoch: str, directory: Path, per_colour: int) -> list[Path]:
    """QR PNGs (and payload texts) for the first `per_colour` codes of each colour of the epoch, by code id,
    with an index.json listing code id, colour, reasons and validity."""
    directory.mkdir(parents=True, exist_ok=True)
    for old in [*directory.glob("*.png"), *directory.glob("*.txt")]:
        old.unlink()
    index = []
    written = []
    first = [row for colour in codes.COLOURS for row in store.first_codes(epoch, colour, per_colour)]
    for row in sorted(first, key=lambda r: r.code_id):
        png = directory / f"{row.code_id}.png"
        write_atomic(png, qr_png(row.payload))
        write_atomic(directory / f"{row.code_id}.txt", (row.payload + "\n").encode())
        written.append(png)
        index.append(
            {
                "code_id": row.code_id,
                "color": row.color,
                "reasons": list(row.reasons),
                "issued_at": row.issued_at,
                "expires_at": row.expires_at,
                "png": png.name,
                "payload": f"{row.code_id}.txt",
            }
        )
    write_atomic(directory / "index.json", (json.dumps(index, indent=2, ensure_ascii=False) + "\n").encode())
    return written
