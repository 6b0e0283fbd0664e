"""The query openings as the auditor reads them: every sealed opening opened in the coordinator's on-disk
format (`coordinator.openings`), its blinded inputs re-derived and its answer's proof checked.
"""

from __future__ import annotations

import binascii
import hashlib
from concurrent.futures import Executor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from audit.verdicts import Notes, named, short
from coordinator.openings import MODE, Batch
from coordinator.sealing import SealedFileError, read_sealed_json
from crypto import oprf
from crypto.errors import CryptoError
from crypto.group import ELEMENT_BYTES, split_packed
from runctx.progress import Progress


@dataclass
class Opening:
    """One sealed query opening and what re-deriving it found."""

    name: str
    batch: Batch | None = None
    recorded: dict[str, Any] = field(default_factory=dict)
    digest: str | None = None
    """Hex SHA-256 of the re-derived blinded elements (None when they do not re-derive)."""
    notes: Notes = field(default_factory=Notes)


def rederive(
    tokens: list[str],
    blinds: bytes,
    blinded: bytes,
    public_key: bytes,
    evaluated: bytes | None,
    proof: bytes | None,
) -> tuple[str | None, str | None, str | None]:
    """Re-derive one query from its opening: (a problem with its blinded elements or None, hex SHA-256 of
    the re-derived blinded elements or None, a problem with its answer's DLEQ proof or None).

    Each blinded element must equal RFC 9497 Blind (verifiable mode) of its token under its stored blind;
    the proof must show the answer was computed with the key behind `public_key`.
    """
    try:
        scalars = split_packed(blinds)
        if len(scalars) != len(tokens):
            return f"{len(tokens)} tokens but {len(scalars)} blinds", None, None
        derived = [oprf.blind(t.encode(), MODE, blind=b)[1] for t, b in zip(tokens, scalars, strict=True)]
    except CryptoError as exc:
        return f"blinds do not re-derive ({exc})", None, None
    packed = b"".join(derived)
    if packed != blinded:
        stored = [blinded[i : i + ELEMENT_BYTES] for i in range(0, len(blinded), ELEMENT_BYTES)]
        bad = [i for i, e in enumerate(derived) if i >= len(stored) or stored[i] != e]
        first = f"; first: {tokens[bad[0]]!r}" if bad else f"; {len(stored)} stored for {len(tokens)} tokens"
        return (
            (
                f"stored blinded elements do not re-derive from the tokens and blinds (element "
                f"{named(str(i) for i in bad)}{first})"
            ),
            None,
            None,
        )
    proof_problem = None
    if evaluated is not None and proof is not None:
        try:
            oprf.verify_proof(public_key, derived, split_packed(evaluated), proof)
        except CryptoError as exc:
            proof_problem = f"the answer's DLEQ proof does not verify under the query's partition key ({exc})"
    return None, hashlib.sha256(packed).hexdigest(), proof_problem


def open_query(directory: Path, path: Path, key: bytes) -> Opening:
    """Open one sealed query (and its answer, if any) and check that its files are where it says."""
    opening = Opening(str(path.relative_to(directory)))
    answer_path = path.with_suffix(".answer")
    try:
        opening.recorded = read_sealed_json(key, path)
        answer = read_sealed_json(key, answer_path) if answer_path.exists() else None
        opening.batch = Batch.from_records(opening.recorded, answer)
    except (SealedFileError, OSError, ValueError, KeyError, TypeError, binascii.Error, CryptoError) as exc:
        opening.notes.fail(f"does not open or is malformed ({type(exc).__name__}: {exc})")
        return opening
    batch = opening.batch
    recorded_key = opening.recorded.get("idempotency_key")
    if (path.parent.parent.name, path.parent.name, path.stem) != (
        batch.agency,
        batch.partition_id,
        recorded_key,
    ):
        opening.notes.fail("its file name does not match the agency, partition and key it records")
    if answer is not None and answer.get("idempotency_key") != recorded_key:
        opening.notes.fail("its answer file belongs to another query")
    return opening


def read_openings(
    run: Path, key: bytes | None, executor: Executor | None, progress: Progress
) -> list[Opening]:
    """Open and re-derive every query opening under RUN/coordinator/openings/."""
    directory = run / "coordinator" / "openings"
    paths = sorted(directory.glob("*/*/*.query")) if directory.is_dir() else []
    if key is None:
        openings = [Opening(str(p.relative_to(directory))) for p in paths]
        for o in openings:
            o.notes.fail("cannot be opened: the coordinator's storage key is unusable")
        return openings
    openings = [open_query(directory, p, key) for p in paths]
    todo = [o for o in openings if o.batch is not None]
    calls = [
        (b.tokens, b"".join(b.blinds), b.blinded, b.public_key, b.evaluated, b.proof)
        for b in (o.batch for o in todo)
        if b is not None
    ]
    if executor is None or len(calls) < 2:
        results = []
        for n, args in enumerate(calls, 1):
            results.append(rederive(*args))
            progress("openings", n, len(calls))
    else:
        futures = [executor.submit(rederive, *args) for args in calls]
        results = []
        for n, future in enumerate(futures, 1):
            results.append(future.result())
            progress("openings", n, len(calls))
    for opening, (problem, digest, proof_problem) in zip(todo, results, strict=True):
        batch = opening.batch
        assert batch is not None
        if problem is not None:
            opening.notes.fail(problem)
            continue
        opening.digest = digest
        opening.notes.ok(f"{len(batch.tokens)} blinded elements re-derive")
        if opening.recorded.get("inputs_digest") != digest:
            opening.notes.fail(
                f"its recorded inputs digest {short(opening.recorded.get('inputs_digest'))} is not the "
                f"re-derived {short(digest)}"
            )
        if batch.idempotency_key != opening.recorded.get("idempotency_key"):
            opening.notes.fail("its recorded idempotency key does not recompute from the query")
        if proof_problem is not None:
            opening.notes.fail(proof_problem)
        elif batch.answered:
            opening.notes.ok("answer proof verifies")
    return openings
