"""The audit logs as the auditor reads them: each log's hash chain and signed heads checked against its
identity key, its lines parsed into entries with notes per line.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from audit.verdicts import Notes, Status, Verdict
from crypto.auditlog import ChainReport, read_lines, read_witness, verify_chain, verify_witness

COORDINATOR_LOG = "coordinator/audit.jsonl"
"""The coordinator's audit log, relative to the run directory."""

@dataclass
class Log:
    """One audit log: its chain verdicts, its parsed entries and notes per line."""

    section: str
    chain: ChainReport | None
    entries: list[dict[str, Any] | None]
    notes: list[Notes]
    unusable: str | None = None
    witness: list[Verdict] = field(default_factory=list)
    """Verdicts on the signed heads the witness holds for this log (a cut or rewritten tail)."""

    def items(self) -> Iterator[tuple[int, dict[str, Any], Notes]]:
        """(line number from 1, entry, notes) for every line that parses as an entry, in log order."""
        for k, (entry, notes) in enumerate(zip(self.entries, self.notes, strict=True), 1):
            if entry is not None:
                yield k, entry, notes

    def verdicts(self) -> list[Verdict]:
        """One verdict per line: a broken chain first, then what the entry says."""
        if self.chain is None:
            return [Verdict(self.section, "log", "log", "fail", self.unusable or "unusable")]
        out = []
        for chained, notes in zip(self.chain.entries, self.notes, strict=True):
            item = f"line {chained.line}" + ("" if chained.seq is None else f" (seq {chained.seq})")
            kind = chained.kind or "?"
            if not chained.ok:
                also = f" (also: {'; '.join(notes.problems)})" if notes.problems else ""
                out.append(Verdict(self.section, item, kind, "fail", chained.reason + also))
                continue
            if chained.reason != "ok":
                notes.warn(chained.reason)
            out.append(notes.verdict(self.section, item, kind))
        return out + self.witness


def read_log(section: str, path: Path, public_key: Any, witness: Path) -> Log:
    """Read and chain-check one log, and compare it with the heads in its `witness` directory; an unreadable
    log, or one without a key, is one failing verdict."""
    if public_key is None:
        return Log(section, None, [], [], "no identity key for this log in identities.json")
    try:
        lines = read_lines(path)
    except OSError as exc:
        return Log(section, None, [], [], f"cannot read {path} ({exc.strerror or exc})")
    chain = verify_chain(lines, public_key)
    entries: list[dict[str, Any] | None] = []
    for raw in lines[: len(chain.entries)]:
        try:
            entry = json.loads(raw)
        except (ValueError, UnicodeDecodeError):
            entry = None
        usable = (
            isinstance(entry, dict)
            and isinstance(entry.get("data"), dict)
            and isinstance(entry.get("kind"), str)
        )
        entries.append(entry if usable else None)
    return Log(section, chain, entries, [Notes() for _ in entries], witness=witness_verdicts(
        section, lines, public_key, witness, chain.heads))


def witness_verdicts(
    section: str, lines: list[bytes], public_key: Any, witness: Path, heads: int
) -> list[Verdict]:
    """One verdict per head the witness holds (and per signed head it lacks); a log with signed heads but
    no witness at all gets a warning: a cut tail could not be seen."""
    try:
        held = read_witness(witness)
    except OSError as exc:
        why = f"cannot read {witness} ({exc.strerror or exc})"
        return [Verdict(section, "witness", "witness", "fail", why)]
    if not held:
        if heads == 0:
            return []
        return [Verdict(section, "witness", "witness", "warn",
                        f"no heads in {witness}: a cut tail of this log could not be detected")]
    out = []
    for v in verify_witness(lines, held, public_key):
        item = f"witness {v.name}" if v.name in held else f"witness ({v.name})"
        status: Status = "fail" if not v.ok else ("ok" if v.name in held else "warn")
        out.append(Verdict(section, item, "witness", status, v.reason))
    return out
