"""The auditor's replay of a run: one verdict per audit-log entry, per query opening, per budget and per
published result, without trusting the coordinator or the nodes.

`replay(RUN)` checks, from the files of a run alone:

- **logs** — the hash chain and signed heads of `RUN/coordinator/audit.jsonl` and of every
  `RUN/nodes/<agency>/audit.jsonl`, against the root-signed identity keys in `RUN/pki/identities.json`
  (`crypto.auditlog.verify_file`: edited, deleted, reordered entries and forged heads are named); then
  what each entry says: every risk commitment equals the risk set the health records give
  (`proto.risk.risk_tokens`), every Evaluate the coordinator logged has an opening whose re-derived inputs
  digest it carries and a counterpart in the node's log, every Evaluate a node logged has an opening, every
  index the coordinator streamed was built by the node, each head agrees with the digests logged before it;
- **openings** — every sealed opening in `RUN/coordinator/openings/` opens, each blinded element re-derives
  from its token and stored blind (RFC 9497 Blind, verifiable mode), the inputs digest and idempotency key
  recompute, the DLEQ proof of the answer verifies under the partition key the node logged, and every token
  is justified by a case investigation record or a risk region in the epoch's window (an identity token by an
  application record); a query with no case behind it is named;
- **budgets** — per partition, the node's charges never exceed the cap it logged (`budget_set`), and every
  logged `budget_left` follows from the cap and the charges before it;
- **results** — `matches.parquet`, `features.parquet` and the codes in `codes.sqlite` have the digests the
  coordinator logged, and every match comes from a justified, queried token;
- **rerun** — given a fresh re-run of the same scenario, matches, features and codes have equal digests and,
  the run being seeded (deterministic), every audit log is equal byte for byte.
"""

from __future__ import annotations

import binascii
import datetime as dt
import hashlib
import json
import time
from collections import Counter, defaultdict
from collections.abc import Callable, Iterable, Mapping
from concurrent.futures import Executor
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Literal

import pandas as pd

from coordinator import applicants as appl
from coordinator.epoch import _codes_digest
from coordinator.matching import MODE, Batch, frame_digest
from coordinator.risk import InputError, load_health, tokens_digest
from coordinator.sealing import SealedFileError, read_sealed_json
from coordinator.store import CodeStore, StoreError
from crypto import oprf
from crypto.auditlog import HEAD_KIND, ChainReport, read_lines, verify_chain
from crypto.errors import CryptoError
from crypto.group import split_packed
from crypto.pki import Identities, PkiPaths, load_identities, load_storage_key
from proto import tokens as tk
from proto.risk import RiskSetError, risk_tokens, window

Status = Literal["ok", "warn", "fail"]
"""A verdict: the item holds, holds with a caveat (not a failure), or does not hold."""
STATUSES: tuple[Status, ...] = ("ok", "warn", "fail")
MATCH_COLUMNS = ["subject_id", "agency", "token", "case_id"]
COORDINATOR_LOG = "coordinator/audit.jsonl"
NAMED = 3
"""How many offending items a reason names before it says "and N more"."""

Progress = Callable[[str, int, int], None]
"""progress(stage, done, total): stages "logs", "openings", "results", "rerun"."""


def _no_progress(stage: str, done: int, total: int) -> None:
    """Discard progress."""


# ------------------------------------------------------------------------------------------------ report


@dataclass(frozen=True)
class Verdict:
    """The verdict on one item: a log entry, an opening, a partition's budget, a result file or a comparison."""

    section: str
    """Where the item lives: a log ("coordinator/audit.jsonl", "nodes/carrier/audit.jsonl"), "pki",
    "health", "openings", "budgets", "results" or "rerun"."""
    item: str
    """Which item: "line 12 (seq 11)", "carrier stays@2020-01-18 risk #0", "matches.parquet", ..."""
    kind: str
    """The entry kind, or what was checked ("opening", "budget", "matches", ...)."""
    status: Status
    reason: str


@dataclass
class ReplayReport:
    """Every verdict of a replay, the tokens no record justifies, counts and the time it took."""

    run_dir: str
    verdicts: list[Verdict] = field(default_factory=list)
    unjustified: list[dict[str, str]] = field(default_factory=list)
    """One row per token queried with nothing behind it: agency, partition_id, token, purpose, epoch, query
    (the opening's idempotency key), reason."""
    counts: dict[str, int] = field(default_factory=dict)
    seconds: float = 0.0

    @property
    def ok(self) -> bool:
        """Whether every verdict holds (warnings allowed)."""
        return all(v.status != "fail" for v in self.verdicts)

    @property
    def failures(self) -> list[Verdict]:
        """The verdicts that do not hold."""
        return [v for v in self.verdicts if v.status == "fail"]

    def summary(self) -> dict[str, dict[str, int]]:
        """Per section, how many verdicts are ok, warn and fail (sections in report order)."""
        out: dict[str, dict[str, int]] = {}
        for v in self.verdicts:
            out.setdefault(v.section, dict.fromkeys(STATUSES, 0))[v.status] += 1
        return out

    def to_json(self) -> dict[str, Any]:
        """The report as a JSON-ready dict."""
        return {
            "run": self.run_dir,
            "ok": self.ok,
            "summary": self.summary(),
            "counts": self.counts,
            "seconds": round(self.seconds, 3),
            "unjustified": self.unjustified,
            "verdicts": [asdict(v) for v in self.verdicts],
        }


class _Notes:
    """What the checks found about one item: problems (fail), caveats (warn) and what held."""

    def __init__(self) -> None:
        self.problems: list[str] = []
        self.caveats: list[str] = []
        self.held: list[str] = []

    def fail(self, text: str) -> None:
        self.problems.append(text)

    def warn(self, text: str) -> None:
        self.caveats.append(text)

    def ok(self, text: str) -> None:
        self.held.append(text)

    def verdict(self, section: str, item: str, kind: str) -> Verdict:
        """The item's verdict: its problems, else its caveats, else what held."""
        if self.problems:
            return Verdict(section, item, kind, "fail", "; ".join(self.problems))
        if self.caveats:
            return Verdict(section, item, kind, "warn", "; ".join(self.caveats + self.held))
        return Verdict(section, item, kind, "ok", "; ".join(self.held) or "ok")


def _named(items: Iterable[str], total: int | None = None) -> str:
    """The first few items, and how many more."""
    items = list(items)
    total = len(items) if total is None else total
    head = ", ".join(items[:NAMED])
    return head + (f" and {total - NAMED} more" if total > NAMED else "")


# --------------------------------------------------------------------------------------------------- logs


@dataclass
class _Log:
    """One audit log: its chain verdicts, parsed entries and per-line notes."""

    section: str
    path: Path
    chain: ChainReport | None
    entries: list[dict[str, Any] | None]
    notes: list[_Notes]
    missing: str | None = None

    def items(self) -> Iterable[tuple[int, dict[str, Any], _Notes]]:
        """(line index, entry, notes) for every parsed entry."""
        for k, entry in enumerate(self.entries):
            if entry is not None:
                yield k, entry, self.notes[k]

    def verdicts(self) -> list[Verdict]:
        """One verdict per line: the chain's verdict first, then what the entry says."""
        if self.missing is not None:
            return [Verdict(self.section, "log", "log", "fail", self.missing)]
        out = []
        assert self.chain is not None
        for k, chained in enumerate(self.chain.entries):
            notes = self.notes[k]
            item = f"line {chained.line}" + ("" if chained.seq is None else f" (seq {chained.seq})")
            kind = chained.kind or "?"
            if not chained.ok:
                extra = f" (also: {'; '.join(notes.problems)})" if notes.problems else ""
                out.append(Verdict(self.section, item, kind, "fail", chained.reason + extra))
                continue
            if chained.reason != "ok":
                notes.warn(chained.reason)
            out.append(notes.verdict(self.section, item, kind))
        return out


def _read_log(section: str, path: Path, key: Any) -> _Log:
    """Read and chain-check one log (a missing or unreadable log is one failing verdict)."""
    if key is None:
        return _Log(section, path, None, [], [], missing="no identity key in identities.json for this log")
    try:
        lines = read_lines(path)
    except OSError as exc:
        return _Log(section, path, None, [], [], missing=f"cannot read {path} ({exc.strerror or exc})")
    chain = verify_chain(lines, key)
    entries: list[dict[str, Any] | None] = []
    for raw in lines[: len(chain.entries)]:
        try:
            entry = json.loads(raw)
        except (ValueError, UnicodeDecodeError):
            entry = None
        ok = isinstance(entry, dict) and isinstance(entry.get("data"), dict) and isinstance(entry.get("kind"), str)
        entries.append(entry if ok else None)
    return _Log(section, path, chain, entries, [_Notes() for _ in entries])


# ----------------------------------------------------------------------------------------------- openings


@dataclass
class _Opening:
    """One sealed query opening, re-derived."""

    name: str
    batch: Batch | None
    notes: _Notes = field(default_factory=_Notes)
    digest: str | None = None
    """Hex SHA-256 of the re-derived blinded elements (None if they do not re-derive)."""

    @property
    def key(self) -> tuple[str, str, str]:
        """(agency, partition, idempotency key) as recorded."""
        assert self.batch is not None
        return self.batch.agency, self.batch.partition_id, self.batch.idempotency_key


def rederive(
    tokens: list[str], blinds: bytes, blinded: bytes, public_key: bytes, evaluated: bytes | None, proof: bytes | None
) -> tuple[str | None, str, str | None]:
    """Re-derive a query from its opening: (problem with the blinded elements or None, hex SHA-256 of the
    re-derived blinded elements, problem with the answer's DLEQ proof or None).

    Each blinded element must equal RFC 9497 Blind (verifiable mode) of its token under its stored blind.
    """
    scalars = split_packed(blinds)
    if len(scalars) != len(tokens):
        return f"{len(tokens)} tokens but {len(scalars)} blinds", hashlib.sha256(blinded).hexdigest(), None
    derived = b"".join(oprf.blind(t.encode(), MODE, blind=b)[1] for t, b in zip(tokens, scalars, strict=True))
    digest = hashlib.sha256(derived).hexdigest()
    problem = None
    if derived != blinded:
        stored = split_packed(blinded) if len(blinded) % 32 == 0 else []
        bad = [i for i in range(len(tokens)) if i >= len(stored) or stored[i] != derived[32 * i : 32 * i + 32]]
        problem = (
            f"stored blinded elements do not re-derive from the tokens and blinds (element "
            f"{_named(str(i) for i in bad)}; first token {tokens[bad[0]] if bad else '?'!r})"
        )
    proof_problem = None
    if evaluated is not None and proof is not None:
        try:
            oprf.verify_proof(public_key, split_packed(derived), split_packed(evaluated), proof)
        except CryptoError as exc:
            proof_problem = f"the answer's DLEQ proof does not verify ({exc})"
    return problem, digest, proof_problem


def _read_openings(
    run: Path, key: bytes | None, executor: Executor | None, progress: Progress
) -> tuple[list[_Opening], list[Verdict]]:
    """Open and re-derive every query opening under RUN/coordinator/openings/."""
    directory = run / "coordinator" / "openings"
    paths = sorted(directory.glob("*/*/*.query")) if directory.is_dir() else []
    errors: list[Verdict] = []
    if key is None:
        return [], [Verdict("openings", "storage key", "opening", "fail",
                            "cannot open the sealed openings: no coordinator storage key")] if paths else []
    openings: list[_Opening] = []
    for path in paths:
        name = str(path.relative_to(directory))
        answer_path = path.with_suffix(".answer")
        try:
            record = read_sealed_json(key, path)
            answer = read_sealed_json(key, answer_path) if answer_path.exists() else None
            batch = Batch.from_records(record, answer)
        except (SealedFileError, OSError, ValueError, KeyError, TypeError, binascii.Error, CryptoError) as exc:
            opening = _Opening(name, None)
            opening.notes.fail(f"does not open or is malformed ({exc})")
            openings.append(opening)
            continue
        opening = _Opening(name, batch)
        if (path.parent.parent.name, path.parent.name, path.stem) != (
            batch.agency, batch.partition_id, record.get("idempotency_key")
        ):
            opening.notes.fail("its file name does not match the agency, partition and key it records")
        if answer is not None and answer.get("idempotency_key") != record.get("idempotency_key"):
            opening.notes.fail("its answer file belongs to another query")
        opening.notes.ok(f"{len(batch.tokens)} tokens")
        openings.append(opening)
        errors.extend([])
        opening_record = record
        opening.batch_record = opening_record  # type: ignore[attr-defined]
    calls = [
        (o.batch.tokens, b"".join(o.batch.blinds), o.batch.blinded, o.batch.public_key, o.batch.evaluated,
         o.batch.proof)
        for o in openings if o.batch is not None
    ]
    with_batch = [o for o in openings if o.batch is not None]
    if executor is None or len(calls) < 2:
        results = []
        for n, args in enumerate(calls, 1):
            results.append(rederive(*args))
            progress("openings", n, len(calls))
    else:
        futures = [executor.submit(rederive, *args) for args in calls]
        results = []
        for n, fut in enumerate(futures, 1):
            results.append(fut.result())
            progress("openings", n, len(calls))
    for opening, (problem, digest, proof_problem) in zip(with_batch, results, strict=True):
        batch = opening.batch
        assert batch is not None
        record = opening.batch_record  # type: ignore[attr-defined]
        if problem:
            opening.notes.fail(problem)
        else:
            opening.digest = digest
            opening.notes.ok("every blinded element re-derives")
            if record.get("inputs_digest") != digest:
                opening.notes.fail(f"recorded inputs digest {record.get('inputs_digest')} is not the re-derived {digest}")
            if batch.idempotency_key != record.get("idempotency_key"):
                opening.notes.fail("recorded idempotency key does not recompute from the query")
        if proof_problem:
            opening.notes.fail(proof_problem)
        elif batch.answered:
            opening.notes.ok("answer proof verifies")
    return openings, errors
