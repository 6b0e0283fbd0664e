"""The auditor's check of what the code service issued between epochs (`coordinator.service_log`): every
application in codes.sqlite bound by an `applications_recorded` entry of the service's signed log, every
code the service issued bound by the digest of its line, the identity tokens its checks asked justified by
those applications — and every code the store holds bound by some entry, an epoch's or the service's.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

from audit.logs import Log, read_log
from audit.verdicts import Notes, Verdict, differences, named
from coordinator.service_log import (
    APPEAL_FILED,
    RECORDED,
    SERVICE_LOG,
    SERVICE_WITNESS,
    appeal_digest,
    application_digest,
    line_digest,
    token_mac,
)
from coordinator.store import CodeStore, StoreError
from runctx.files import witness_dir

SECTION = SERVICE_LOG.as_posix()
Row = TypeVar("Row")


def read_service_log(run: Path, public_key: Any) -> Log | None:
    """The service's log, chain-checked against the coordinator's key (None when the service never wrote
    one and its witness holds no head of it)."""
    witness = witness_dir(run, SERVICE_WITNESS)
    if not (run / SERVICE_LOG).exists() and not any(witness.glob("*")):
        return None
    return read_log(SECTION, run / SERVICE_LOG, public_key, witness)


def epoch_codes_digest_without(store: CodeStore, epoch: str, exclude: Iterable[str]) -> tuple[str, int]:
    """`coordinator.results.epoch_codes_digest` of an epoch's codes other than `exclude` (the codes the
    service issued under the epoch's id), and how many codes that covers."""
    left_out = set(exclude)
    digest, count = hashlib.sha256(), 0
    for lines in store.code_lines(epoch):
        kept = [line for line in lines if line.partition("|")[0] not in left_out]
        digest.update("".join(kept).encode())
        count += len(kept)
    return digest.hexdigest(), count


@dataclass(frozen=True)
class Bound:
    """What one entry of the service's log binds: where, whether a signed head covers it, the digest."""

    where: str
    signed: bool
    digest: str


@dataclass
class ServiceIssuance:
    """The applications and codes the service's log binds, gathered entry by entry."""

    log: Log | None = None
    applications: dict[str, Bound] = field(default_factory=dict)
    codes: dict[str, Bound] = field(default_factory=dict)
    """Codes the service issued (new codes only), by id."""
    held: dict[str, Bound] = field(default_factory=dict)
    """Codes the subjects already held when they applied (an epoch's, or the service's), by id."""
    tokens: set[str] = field(default_factory=set)
    """MACs of the identity tokens the logged applications declared."""
    checks: set[str] = field(default_factory=set)
    """Labels of the identity checks the logged applications went through."""
    appeals: dict[str, Bound] = field(default_factory=dict)
    """Appeals as filed, by id."""
    decisions: dict[str, str] = field(default_factory=dict)
    """Each decided appeal's logged decision, by id."""

    def signed(self, line: int) -> bool:
        """Whether a signed head covers the log's line (1-based)."""
        chain = self.log.chain if self.log is not None else None
        return chain is not None and line <= len(chain.entries) - chain.unsigned_tail

    def record(self, line: int, data: dict[str, Any], epochs: set[str], notes: Notes) -> None:
        """Gather one `applications_recorded` entry (its form checked)."""
        applications = data.get("applications")
        if str(data.get("epoch")) not in epochs or not isinstance(applications, list):
            notes.fail("an applications entry without a logged epoch or a list of applications")
            return
        where, signed = f"{SECTION} line {line}", self.signed(line)
        self.checks.add(str(data.get("check")))
        for item in applications:
            if not isinstance(item, dict) or not isinstance(item.get("application_id"), str):
                notes.fail("an application without an id")
                continue
            self.applications[item["application_id"]] = Bound(where, signed, str(item.get("digest")))
            self.tokens.add(str(item.get("token")))
            if isinstance(item.get("code_id"), str):
                into = self.codes if item.get("new") is True else self.held
                into[item["code_id"]] = Bound(where, signed, str(item.get("code")))
        notes.ok(f"{len(applications)} applications of epoch {data.get('epoch')}, check {data.get('check')}")

    def appeal_filed(self, line: int, data: dict[str, Any], notes: Notes) -> None:
        """Gather one `appeal_filed` entry."""
        appeal_id = data.get("appeal_id")
        if not isinstance(appeal_id, str) or appeal_id in self.appeals:
            notes.fail(f"an appeal entry without an id, or filing appeal {appeal_id} again")
            return
        self.appeals[appeal_id] = Bound(f"{SECTION} line {line}", self.signed(line), str(data.get("digest")))
        notes.ok(f"files appeal {appeal_id}")

    def appeal_decided(self, data: dict[str, Any], notes: Notes) -> None:
        """Gather one `appeal_decided` entry: a decision on an appeal filed before it, taken once."""
        appeal_id, decision = data.get("appeal_id"), data.get("decision")
        if not isinstance(appeal_id, str) or appeal_id not in self.appeals:
            notes.fail(f"a decision on appeal {appeal_id}, which no entry before it filed")
        elif appeal_id in self.decisions:
            notes.fail(f"appeal {appeal_id} decided again (first {self.decisions[appeal_id]})")
        elif decision not in ("upheld", "rejected"):
            notes.fail(f"appeal {appeal_id} decided {decision!r}, neither upheld nor rejected")
        else:
            self.decisions[appeal_id] = decision
            notes.ok(f"appeal {appeal_id} {decision} by {data.get('operator')}")

    def declared(self, storage_key: bytes | None, token: str) -> bool:
        """Whether a logged application declared this identity token."""
        return storage_key is not None and token_mac(storage_key, token) in self.tokens


def _signed_note(notes: Notes, bound: list[tuple[str, Bound]], what: str) -> None:
    unsigned = sorted(name for name, b in bound if not b.signed)
    if unsigned:
        notes.warn(
            f"{len(unsigned)} {what} bound only by entries no signed head covers yet: {named(unsigned)}"
        )


def service_verdicts(
    store: CodeStore, issuance: ServiceIssuance, issued_at: dict[str, set[str]], epochs_bound: set[str]
) -> list[Verdict]:
    """The applications and codes in the store against the service's log: rows bound by their digests,
    codes the service issued bound by their lines, and no code that no entry covers. `issued_at` gives each
    epoch's logged issue time, `epochs_bound` the epochs whose codes a codes_issued entry binds."""
    out = []
    try:
        out.append(_applications_verdict(store, issuance))
        out.append(_codes_verdict(store, issuance, issued_at, epochs_bound))
        out.append(_appeals_verdict(store, issuance))
    except (StoreError, OSError, ValueError) as exc:
        out.append(Verdict("results", "codes.sqlite applications", RECORDED, "fail", f"unreadable ({exc})"))
    return out


def _rows_bound(
    notes: Notes,
    what: str,
    stored: Mapping[str, Row],
    bound: Mapping[str, Bound],
    digest: Callable[[Row], str],
    verb: str,
) -> None:
    """Stored rows (by id) against the entries that bound their digests: rows no entry `verb`, rows altered
    since, logged rows gone; a warning for rows that only entries no signed head covers yet bind."""
    altered, unlogged, missing = differences(
        stored, bound, lambda found, entry: digest(found) == entry.digest
    )
    if unlogged:
        notes.fail(f"{len(unlogged)} {what} no entry of the service's log {verb}: {named(unlogged)}")
    if altered:
        notes.fail(f"{len(altered)} {what} differ from the digest their entry logged: {named(altered)}")
    if missing:
        notes.fail(f"{len(missing)} logged {what} are missing from the store: {named(missing)}")
    _signed_note(notes, [(i, bound[i]) for i in stored if i in bound], what)


def _applications_verdict(store: CodeStore, issuance: ServiceIssuance) -> Verdict:
    notes = Notes()
    stored = {a.application_id: a for a in store.applications()}
    _rows_bound(notes, "applications", stored, issuance.applications, application_digest, "binds")
    notes.ok(f"{len(stored)} applications, each with the digest the service's log bound")
    return notes.verdict("results", "codes.sqlite applications", RECORDED)


def _appeals_verdict(store: CodeStore, issuance: ServiceIssuance) -> Verdict:
    """Every stored appeal filed as an entry bound it, with the status its logged decision (or none: open)
    gives."""
    notes = Notes()
    stored = {a.appeal_id: a for a in store.appeals()}
    _rows_bound(notes, "appeals", stored, issuance.appeals, appeal_digest, "filed")
    wrong = sorted(
        f"{i} ({a.status}; logged: {issuance.decisions.get(i, 'open')})"
        for i, a in stored.items()
        if a.status != issuance.decisions.get(i, "open")
    )
    if wrong:
        notes.fail(f"{len(wrong)} appeals whose status is not the decision the log binds: {named(wrong)}")
    notes.ok(f"{len(stored)} appeals, each filed and decided as the service's log binds")
    return notes.verdict("results", "codes.sqlite appeals", APPEAL_FILED)


def _codes_verdict(
    store: CodeStore, issuance: ServiceIssuance, issued_at: dict[str, set[str]], epochs_bound: set[str]
) -> Verdict:
    """Every code the service's log names has the line digest it logged; every other code belongs to an epoch
    whose codes_issued entry binds it, at that epoch's issue time."""
    notes = Notes()
    lines: dict[str, str] = {}
    unbound: list[str] = []
    epochs = sorted(issued_at)
    for epoch in epochs:
        for batch in store.code_lines(epoch):
            for line in batch:
                code_id, issued = line.split("|", 1)[0], line.split("|")[4]
                lines[code_id] = line
                if code_id in issuance.codes or code_id in issuance.held:
                    continue
                if epoch not in epochs_bound or issued not in issued_at.get(epoch, set()):
                    unbound.append(f"{code_id} (epoch {epoch}, issued {issued})")
    named_codes = {**issuance.held, **issuance.codes}
    altered = sorted(c for c, b in named_codes.items() if c in lines and line_digest(lines[c]) != b.digest)
    missing = sorted(c for c in issuance.codes if c not in lines)
    elsewhere = store.count_codes() - len(lines)
    if elsewhere:
        notes.fail(f"{elsewhere} codes under epochs the coordinator's log never started")
    if unbound:
        notes.fail(
            f"{len(unbound)} codes no entry binds (neither an epoch's codes_issued, which issues at the "
            f"epoch's time, nor the service's log): {named(unbound)}"
        )
    if altered:
        notes.fail(f"{len(altered)} codes differ from the line digest the service logged: {named(altered)}")
    if missing:
        notes.fail(f"{len(missing)} codes the service logged are missing from the store: {named(missing)}")
    _signed_note(notes, [(c, b) for c, b in issuance.codes.items() if c in lines], "codes")
    notes.ok(
        f"{len(issuance.codes)} codes issued by the service, each with the line digest its entry logged; "
        f"every other code of {len(epochs)} epochs at its epoch's issue time"
    )
    return notes.verdict("results", "codes.sqlite service codes", RECORDED)


def epoch_issue_times(coordinator: Log | None) -> dict[str, set[str]]:
    """epoch → the issue times its epoch_started entries logged (a resumed epoch logs its start again)."""
    out: dict[str, set[str]] = {}
    if coordinator is None:
        return out
    for _, entry, _ in coordinator.items():
        data = entry["data"]
        if entry["kind"] == "epoch_started" and isinstance(data.get("issued_at"), str):
            out.setdefault(str(data.get("epoch")), set()).add(str(data["issued_at"]))
    return out
