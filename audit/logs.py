"""The audit logs as the auditor reads them: each log's hash chain and signed heads checked against its
identity key, its lines parsed into entries with notes per line.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from audit.verdicts import Notes, Verdict
from crypto.auditlog import ChainReport, read_lines, verify_chain

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
        return out


def read_log(section: str, path: Path, public_key: Any) -> Log:
    """Read and chain-check one log; an unreadable log, or one without a key, is one failing verdict."""
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
    return Log(section, chain, entries, [Notes() for _ in entries])
