"""The auditor's replay of a run: one verdict per audit-log entry, per query opening, per budget and per
published result, trusting neither the coordinator nor the nodes.

`replay(RUN)` checks, from the files of a run alone:

- **logs** — the hash chain and signed heads of `RUN/coordinator/audit.jsonl` and of every
  `RUN/nodes/<agency>/audit.jsonl` against the root-signed identity keys of `RUN/pki/identities.json`
  (`crypto.auditlog.verify_chain` names edited, deleted and reordered entries and forged heads); then what
  each entry says: a risk commitment equals the risk set the health records give (`proto.risk.risk_tokens`),
  an Evaluate the coordinator logged has an opening whose re-derived inputs digest it carries and a
  counterpart in the node's log, an Evaluate a node logged has an opening, an index the coordinator streamed
  was built by the node, a head agrees with the digests logged before it;
- **openings** — every sealed opening in `RUN/coordinator/openings/` opens; each blinded element re-derives
  from its token and stored blind (RFC 9497 Blind, verifiable mode); the inputs digest and idempotency key
  recompute; the answer's DLEQ proof verifies under a partition key the node logged; every token is
  justified by a case investigation record or a risk region in the epoch's window (an identity token by an
  application record) — a query with no case behind it is named;
- **budgets** — per partition, the node's charges never exceed the cap it logged (`budget_set`), and every
  logged `budget_left` follows from the cap and the charges before it;
- **results** — `matches.parquet`, `features.parquet` and each epoch's codes in `codes.sqlite` have the
  digests the coordinator logged, and so has each epoch's own `epochs/<date>/` (matches, features, summary)
  against the entries of the last epoch logged for that date; every match comes from a queried token its
  record justifies, under the risk set of its own epoch's window;
- **rerun** — given a fresh re-run of the same scenario, matches, features and codes have equal digests and,
  in a seeded (deterministic) run, every audit log is equal byte for byte.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import time
from collections import defaultdict
from concurrent.futures import Executor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from audit.justify import Justifier
from audit.logs import COORDINATOR_LOG, Log, read_log
from audit.openings import Opening, read_openings
from audit.rerun import rerun_verdicts
from audit.results import ResultChecks
from audit.service import RECORDED, ServiceIssuance, epoch_issue_times, read_service_log
from audit.verdicts import Notes, ReplayReport, Status, Verdict, named, short
from coordinator import applicants as appl
from coordinator.risk import (
    InputError,
    load_health,
    load_scenario,
    tokens_digest,
)
from coordinator.service_log import APPEAL_DECIDED, APPEAL_FILED
from crypto.errors import CryptoError
from crypto.pki import Identities, load_storage_key
from runctx.files import witness_dir
from runctx.pki import PkiPaths, load_identities
from runctx.progress import Progress, no_progress
from runctx.scenario import DEFAULT_WINDOW_DAYS, Scenario

PUBLISHED = (
    "matches_written",
    "features_written",
    "codes_issued",
    "revocations",
    "qr_written",
    "summary_written",
)
"""Coordinator entries that bind a published artefact by its digest (checked under results)."""

Key = tuple[str, str, str]
"""(agency, partition id, idempotency key): names one query on both sides."""


@dataclass
class _Budget:
    """A partition's budget as the node's log tells it."""

    total: int | None = None
    used: int = 0
    evaluations: int = 0
    problems: list[str] = field(default_factory=list)
    charged: dict[str, tuple[int | None, str]] = field(default_factory=dict)
    """idempotency key → (budget_left, inputs digest) of its charge."""

    @property
    def left(self) -> int | None:
        """Elements left, if the cap is known."""
        return None if self.total is None else max(0, self.total - self.used)


# -------------------------------------------------------------------------------------------------- replay


class _Replay:
    """The state of one replay; `run()` does the checks in order and returns the report."""

    def __init__(self, run: Path, rerun: Path | None, executor: Executor | None, progress: Progress) -> None:
        self.run_dir = run
        self.rerun = rerun
        self.executor = executor
        self.progress = progress
        self.report = ReplayReport(str(run))
        self.inputs: list[Verdict] = []
        self.logs: list[Log] = []
        self.coordinator: Log | None = None
        self.nodes: dict[str, Log] = {}
        self.openings: list[Opening] = []
        self.by_key: dict[Key, Opening] = {}
        self.node_evals: dict[Key, list[dict[str, Any]]] = defaultdict(list)
        self.coord_evals: set[Key] = set()
        self.node_keys: dict[tuple[str, str], set[str]] = defaultdict(set)
        self.node_indexes: dict[tuple[str, str], set[str]] = defaultdict(set)
        self.budgets: dict[tuple[str, str], _Budget] = {}
        self.epochs: dict[str, tuple[dt.date, int]] = {}
        self.logged: dict[str, dict[str, tuple[str, dict[str, Any]]]] = defaultdict(dict)
        """epoch → kind → (where, data) of its matches_written, features_written, codes_issued entries."""
        self.last: dict[str, tuple[str, str, dict[str, Any]]] = {}
        """kind → (epoch, where, data) of the last such entry in the coordinator's log."""
        self.scenario: Scenario | None = None
        self.committed: dict[str, set[tuple[str, str]]] = defaultdict(set)
        """epoch → the (agency, partition) pairs whose risk tokens it committed."""
        self.service = ServiceIssuance()
        """What the code service's log binds (applications, their identity checks and codes)."""

    # ------------------------------------------------------------------------------------------ inputs

    def _input(self, item: str, status: Status, reason: str) -> None:
        self.inputs.append(Verdict("inputs", item, "input", status, reason))

    def load_inputs(self) -> tuple[Identities | None, bytes | None, Justifier]:
        """Scenario, identity keys, storage key, health records and applications (each gets a verdict)."""
        run = self.run_dir
        paths = PkiPaths(run)
        try:
            self.scenario = load_scenario(run)
            s = self.scenario
            self._input(
                "scenario.json",
                "ok",
                f"as_of {s.as_of}, window {s.window_days} days, "
                + (
                    "deterministic (secrets derived from its seed)"
                    if s.deterministic
                    else "secrets from the OS"
                ),
            )
        except InputError as exc:
            self._input("scenario.json", "fail", str(exc))
        identities = None
        try:
            identities = load_identities(paths)
            self._input(
                "pki/identities.json",
                "ok",
                f"root-signed keys of the coordinator and {len(identities.nodes)} nodes",
            )
        except (CryptoError, OSError, ValueError) as exc:
            self._input("pki/identities.json", "fail", f"unusable ({exc})")
        storage = None
        try:
            storage = load_storage_key(paths.coordinator_storage_key)
            self._input("pki/coordinator.storage.key", "ok", "opens the sealed query openings")
        except ValueError as exc:
            self._input("pki/coordinator.storage.key", "fail", str(exc))
        health = None
        try:
            health = load_health(run)
            self._input(
                "health/",
                "ok",
                f"{len(health.cases)} cases, {len(health.investigations)} investigation "
                f"records, {len(health.risk_regions)} risk regions",
            )
        except InputError as exc:
            self._input("health/", "fail", str(exc))
        identity_tokens = None
        try:
            applicants = appl.load_applicants(run)
            if applicants is not None:
                identity_tokens = set(appl.prepare(applicants).checked["token"])
                self._input("health/applicants.parquet", "ok", f"{len(applicants)} applications")
        except (OSError, ValueError) as exc:
            self._input("health/applicants.parquet", "fail", f"unusable ({exc})")
        justifier = Justifier(health, identity_tokens)
        justifier.declared = lambda token: self.service.declared(storage, token)
        return identities, storage, justifier

    # -------------------------------------------------------------------------------------------- logs

    def read_logs(self, identities: Identities | None) -> None:
        """Chain-check the coordinator's log and every node's log."""
        run = self.run_dir
        agencies = sorted(
            {p.parent.name for p in (run / "nodes").glob("*/audit.jsonl")}
            | (set(identities.nodes) if identities is not None else set())
        )
        self.coordinator = read_log(
            COORDINATOR_LOG,
            run / COORDINATOR_LOG,
            None if identities is None else identities.coordinator,
            witness_dir(run, "coordinator"),
        )
        self.logs.append(self.coordinator)
        self.service.log = read_service_log(run, None if identities is None else identities.coordinator)
        if self.service.log is not None:
            self.logs.append(self.service.log)
        for n, agency in enumerate(agencies, 1):
            key = None if identities is None else identities.nodes.get(agency)
            log = read_log(
                f"nodes/{agency}/audit.jsonl",
                run / "nodes" / agency / "audit.jsonl",
                key,
                witness_dir(run, f"nodes/{agency}"),
            )
            self.nodes[agency] = log
            self.logs.append(log)
            self.progress("logs", n, len(agencies))

    def epoch_window(self, epoch: str) -> tuple[dt.date, int] | None:
        """(as_of, window_days) of an epoch: as its start entry logged it, else from its name and the
        scenario (None when neither tells)."""
        if epoch in self.epochs:
            return self.epochs[epoch]
        try:
            as_of = dt.date.fromisoformat(epoch.split(".")[0])
        except ValueError:
            return None
        return as_of, self.scenario.window_days if self.scenario is not None else DEFAULT_WINDOW_DAYS

    # -------------------------------------------------------------------------------------- node logs

    def check_node_logs(self) -> None:
        """Partition keys, indexes, budgets and each Evaluate against its opening, in every node's log."""
        for agency, log in self.nodes.items():
            for _, entry, notes in log.items():
                data, kind = entry["data"], entry["kind"]
                pid = str(data.get("partition_id", ""))
                if kind == "partition_key_created":
                    self.node_keys[(agency, pid)].add(str(data.get("public_key")))
                elif kind == "index_built":
                    self.node_indexes[(agency, pid)].add(str(data.get("index_sha256")))
                elif kind == "budget_set":
                    self._budget_set(agency, pid, data, notes)
                elif kind == "budget_reset":
                    self._budget_reset(agency, pid, data, notes)
                elif kind == "evaluate":
                    self._node_evaluate(agency, pid, data, notes)

    def _budget_set(self, agency: str, pid: str, data: dict[str, Any], notes: Notes) -> None:
        budget = self.budgets.setdefault((agency, pid), _Budget())
        total, used = data.get("total"), data.get("used")
        if not isinstance(total, int) or not isinstance(used, int):
            notes.fail("budget_set without integer total and used")
            return
        if used != budget.used:
            problem = (
                f"the node's ledger had used {used} elements, but the log charged {budget.used} "
                "(charges missing from the log, or the budget was reset)"
            )
            notes.fail(problem)
            budget.problems.append(problem)
        budget.total, budget.used = total, used
        notes.ok(f"cap {total} elements, {used} used")

    def _budget_reset(self, agency: str, pid: str, data: dict[str, Any], notes: Notes) -> None:
        """A static partition's new epoch: its use goes back to 0, from the use the log charged."""
        budget = self.budgets.setdefault((agency, pid), _Budget())
        if data.get("used_before") != budget.used:
            notes.fail(f"reset from used {data.get('used_before')}, but the log charged {budget.used}")
        budget.used = 0
        notes.ok(f"epoch {data.get('epoch')}: use back to 0")

    def _node_evaluate(self, agency: str, pid: str, data: dict[str, Any], notes: Notes) -> None:
        outcome, count, left = data.get("outcome"), data.get("count"), data.get("budget_left")
        key, inputs = str(data.get("idempotency_key", "")), str(data.get("inputs_sha256", ""))
        budget = self.budgets.get((agency, pid), _Budget())
        if outcome == "refused":
            if left is not None and budget.left is not None and left != budget.left:
                notes.fail(
                    f"refused with budget_left {left}, but cap {budget.total} minus {budget.used} charged "
                    f"leaves {budget.left}"
                )
            notes.ok(f"refused ({data.get('status')}): nothing evaluated")
            opening = self.by_key.get((agency, pid, key))
            if opening is not None and opening.digest is not None and opening.digest != inputs:
                notes.fail("its inputs digest is not its opening's re-derived digest")
            return
        if not isinstance(count, int):
            notes.fail("evaluate without an element count")
            return
        budget = self.budgets.setdefault((agency, pid), budget)
        if outcome == "charged":
            self._charge(budget, key, inputs, count, left, notes)
        elif outcome == "replayed":
            original = budget.charged.get(key)
            if original is None:
                notes.fail("replays a request the log never charged")
            elif original != (left, inputs):
                notes.fail(
                    f"replay differs from its charge (budget_left {left} vs {original[0]}, or other inputs)"
                )
            else:
                notes.ok("retry answered from the stored response, not charged")
        else:
            notes.fail(f"unknown outcome {outcome!r}")
            return
        self.node_evals[(agency, pid, key)].append(data)
        opening = self.by_key.get((agency, pid, key))
        if opening is None:
            notes.fail("no opening: the coordinator cannot show what this query asked (hidden or deleted)")
        elif opening.digest is None:
            notes.fail(f"its opening {opening.name} does not re-derive")
        elif opening.digest != inputs:
            notes.fail(
                f"inputs digest {short(inputs)} is not its opening's re-derived {short(opening.digest)}"
            )
        elif opening.batch is not None and len(opening.batch.tokens) != count:
            notes.fail(f"{count} elements, its opening holds {len(opening.batch.tokens)}")
        else:
            notes.ok("inputs digest equals its re-derived opening")

    def _charge(self, budget: _Budget, key: str, inputs: str, count: int, left: Any, notes: Notes) -> None:
        budget.evaluations += 1
        if key and key in budget.charged:
            notes.fail("charged twice under one idempotency key")
        if budget.total is None:
            problem = "charged before the node logged a budget cap for the partition"
            notes.fail(problem)
            budget.problems.append(problem)
            budget.used += count
        else:
            before = budget.left
            budget.used += count
            if before is not None and count > before:
                problem = f"charged {count} elements with {before} left of cap {budget.total}"
                notes.fail(problem)
                budget.problems.append(problem)
            if left != budget.left:
                problem = (
                    f"logged budget_left {left}, but cap {budget.total} minus {budget.used} charged leaves "
                    f"{budget.left}"
                )
                notes.fail(problem)
                budget.problems.append(problem)
            else:
                notes.ok(f"{count} charged, {left} of {budget.total} left")
        budget.charged[key] = (left, inputs)

    # ------------------------------------------------------------------------------- coordinator log

    def check_coordinator_log(self, justifier: Justifier) -> None:
        """What each coordinator entry says, against the health records, the openings and the node logs."""
        log = self.coordinator
        if log is None:
            return
        for _, entry, _ in log.items():  # epochs first: later entries refer to them
            data = entry["data"]
            if entry["kind"] == "epoch_started":
                with contextlib.suppress(KeyError, ValueError, TypeError):  # failed below
                    self.epochs[str(data["epoch"])] = (
                        dt.date.fromisoformat(str(data["as_of"])),
                        int(data["window_days"]),
                    )
        for line, entry, notes in log.items():
            kind, data = entry["kind"], entry["data"]
            epoch = str(data.get("epoch", ""))
            where = f"line {line}"
            if kind == "epoch_started" and epoch in self.epochs:
                notes.ok(f"epoch {epoch}: as_of {data.get('as_of')}, window {data.get('window_days')} days")
            elif kind == "epoch_started":
                notes.fail("an epoch start without a usable epoch, as_of and window_days")
            elif kind == "risk_committed":
                self.committed[epoch].add((str(data.get("agency")), str(data.get("partition_id"))))
                self._risk_committed(justifier, epoch, data, notes)
            elif kind == "identities_committed":
                self._identities_committed(justifier, epoch, data, notes)
            elif kind == "evaluate":
                self._coordinator_evaluate(data, notes)
            elif kind == "index_streamed":
                self._index_streamed(data, notes)
            elif kind in PUBLISHED:
                self.logged[epoch][kind] = (where, data)
                self.last[kind] = (epoch, where, data)
                notes.ok("checked against the file under results")
            elif kind == "head":
                self._head(epoch, data, notes)
        self.check_service_log()

    def check_service_log(self) -> None:
        """The code service's entries: its identity checks' queries as the epochs' are checked; the
        applications it recorded, and the appeals filed and decided, gathered for the results
        (`audit.service`)."""
        log = self.service.log
        for line, entry, notes in log.items() if log is not None else ():
            kind, data = entry["kind"], entry["data"]
            if kind == "evaluate":
                self._coordinator_evaluate(data, notes)
            elif kind == "index_streamed":
                self._index_streamed(data, notes)
            elif kind == RECORDED:
                self.service.record(line, data, set(self.epochs), notes)
            elif kind == APPEAL_FILED:
                self.service.appeal_filed(line, data, notes)
            elif kind == APPEAL_DECIDED:
                self.service.appeal_decided(data, notes)
            elif kind == "head":
                notes.ok(f"closes the service's entries of epoch {data.get('epoch')} before it")
            else:
                notes.fail(f"an entry of kind {kind!r} the service does not write")

    def _index_streamed(self, data: dict[str, Any], notes: Notes) -> None:
        agency, pid = str(data.get("agency")), str(data.get("partition_id"))
        if str(data.get("index_digest")) in self.node_indexes.get((agency, pid), set()):
            notes.ok("the node logged building this index")
        else:
            notes.fail(
                f"the {agency} node never logged building index {short(data.get('index_digest'))} of {pid}"
            )

    def _risk_committed(self, justifier: Justifier, epoch: str, data: dict[str, Any], notes: Notes) -> None:
        span = self.epoch_window(epoch)
        risk = None if span is None else justifier.risk_set(*span)
        if risk is None:
            notes.fail("cannot recompute the risk set (health records or epoch unusable)")
            return
        expected = risk.partitions.get((str(data.get("agency")), str(data.get("partition_id"))), [])
        digest = tokens_digest(expected)
        if digest != data.get("tokens_digest") or len(expected) != data.get("count"):
            notes.fail(
                f"risk commitment ({data.get('count')} tokens, {short(data.get('tokens_digest'))}) is not "
                f"the risk set the health records give ({len(expected)} tokens, {short(digest)})"
            )
        else:
            notes.ok(f"{len(expected)} tokens, as the health records give")

    def _identities_committed(
        self, justifier: Justifier, epoch: str, data: dict[str, Any], notes: Notes
    ) -> None:
        tokens = justifier.identity_tokens
        if tokens is None:
            notes.fail("identity tokens committed, but the run has no application records")
            return
        span = self.epoch_window(epoch)
        if span is not None:  # the epoch counts only those who had applied by its date
            applied = appl.load_applicants(self.run_dir, span[0])
            tokens = set() if applied is None else set(appl.prepare(applied).checked["token"])
        digest = tokens_digest(tokens)
        if digest != data.get("tokens_digest") or len(tokens) != data.get("count"):
            notes.fail(
                f"identity commitment ({data.get('count')} tokens) is not the application records' "
                f"({len(tokens)} tokens, {short(digest)})"
            )
        else:
            notes.ok(f"{len(tokens)} identity tokens, as the application records give")

    def _coordinator_evaluate(self, data: dict[str, Any], notes: Notes) -> None:
        agency, pid = str(data.get("agency")), str(data.get("partition_id"))
        key = (agency, pid, str(data.get("idempotency_key")))
        self.coord_evals.add(key)
        opening = self.by_key.get(key)
        if opening is None or opening.batch is None:
            notes.fail("no opening for this query (hidden or deleted)")
        elif opening.digest is None:
            notes.fail(f"its opening {opening.name} does not re-derive")
        else:
            batch = opening.batch
            if data.get("inputs_digest") != opening.digest:
                notes.fail(
                    f"inputs digest {short(data.get('inputs_digest'))} is not its opening's re-derived "
                    f"{short(opening.digest)}"
                )
            if (
                data.get("count") != len(batch.tokens)
                or data.get("purpose") != batch.purpose
                or data.get("epoch") != batch.epoch
            ):
                notes.fail("count, purpose or epoch differ from its opening")
            if not notes.problems:
                notes.ok("inputs digest equals its re-derived opening")
        node = self.node_evals.get(key, [])
        if not node:
            notes.fail(f"the {agency} node logged no evaluation of this query")
        elif not any(n.get("inputs_sha256") == data.get("inputs_digest") for n in node):
            notes.fail(f"the {agency} node logged other inputs under this query's key")
        elif not any(n.get("budget_left") == data.get("budget_left") for n in node):
            notes.fail(f"budget_left {data.get('budget_left')} is not what the {agency} node logged")
        else:
            notes.ok(f"the {agency} node logged the same inputs")

    def _head(self, epoch: str, data: dict[str, Any], notes: Notes) -> None:
        logged = self.logged.get(epoch, {})
        for field_name, kind in (
            ("matches_digest", "matches_written"),
            ("codes_digest", "codes_issued"),
            ("summary_digest", "summary_written"),
        ):
            if field_name not in data:
                continue
            if kind not in logged:
                notes.fail(f"signs {field_name} but the epoch logged no {kind}")
            elif logged[kind][1].get("digest") != data[field_name]:
                notes.fail(f"{field_name} differs from the {kind} entry at {logged[kind][0]}")
        if not notes.problems:
            notes.ok(f"closes epoch {epoch}")

    # ----------------------------------------------------------------------------------------- openings

    def opening_verdicts(self, justifier: Justifier) -> list[Verdict]:
        """Per opening: re-derivation, both logs, the partition key, and what justifies each token."""
        out = []
        for opening in self.openings:
            batch, notes = opening.batch, opening.notes
            if batch is None:
                out.append(notes.verdict("openings", opening.name, "opening"))
                continue
            key = (batch.agency, batch.partition_id, batch.idempotency_key)
            if batch.answered:
                if key not in self.coord_evals:
                    notes.fail("answered, but the coordinator's log has no evaluate entry for it")
                if not self.node_evals.get(key):
                    notes.fail(f"answered, but the {batch.agency} node's log has no evaluation of it")
                if batch.public_key.hex() not in self.node_keys.get(
                    (batch.agency, batch.partition_id), set()
                ):
                    notes.fail("its partition key is not one the node logged creating")
            else:
                notes.warn("never answered (not sent, or refused)")
            span = self.epoch_window(batch.epoch)
            risk = None if span is None else justifier.risk_set(*span)
            behind: dict[str, int] = defaultdict(int)
            bad = []
            for token in batch.tokens:
                why = justifier.why_not(risk, batch.purpose, batch.agency, batch.partition_id, token)
                if why is not None:
                    bad.append(token)
                    self.report.unjustified.append(
                        {
                            "agency": batch.agency,
                            "partition_id": batch.partition_id,
                            "token": token,
                            "purpose": batch.purpose,
                            "epoch": batch.epoch,
                            "query": batch.idempotency_key,
                            "reason": why,
                        }
                    )
                    continue
                for case in justifier.cases_of(risk, batch.purpose, batch.agency, batch.partition_id, token):
                    behind["risk region" if case is None else case] += 1
            if bad:
                first = self.report.unjustified[-len(bad)]
                notes.fail(
                    f"query with no case behind it: {len(bad)} of {len(batch.tokens)} tokens unjustified "
                    f"({named(bad)}); {first['reason']}"
                )
            else:
                cases = sorted(k for k in behind if k not in ("risk region", "application"))
                what = [
                    f"cases {named(cases)}" if cases else "",
                    "a risk region" if "risk region" in behind else "",
                    "application records" if "application" in behind else "",
                ]
                notes.ok("every token justified by " + " and ".join(w for w in what if w))
            item = f"{batch.agency}/{batch.partition_id}/{batch.purpose} #{batch.number} ({batch.epoch})"
            out.append(notes.verdict("openings", item, "opening"))
        return out

    def risk_verdicts(self, justifier: Justifier) -> list[Verdict]:
        """Per epoch: the recomputed risk set, every partition of it committed and its tokens queried."""
        out = []
        asked = {
            (b.agency, b.partition_id, t)
            for o in self.openings
            if (b := o.batch) is not None
            for t in b.tokens
        }
        for epoch, span in sorted(self.epochs.items()):
            risk = justifier.risk_set(*span)
            notes = Notes()
            if risk is None:
                notes.fail(f"the health records give no risk set: {justifier.errors.get(span, 'unusable')}")
                out.append(notes.verdict("risk set", epoch, "risk set"))
                continue
            tokens = sum(len(v) for v in risk.partitions.values())
            notes.ok(f"{tokens} tokens in {len(risk.partitions)} partitions from the health records")
            missing = sorted(set(risk.partitions) - self.committed.get(epoch, set()))
            if missing:
                notes.fail(
                    f"{len(missing)} partitions of the risk set never committed: "
                    f"{named(f'{a} {p}' for a, p in missing)}"
                )
            unasked = [k for k in risk.cases if k not in asked and self.node_indexes.get(k[:2])]
            if unasked:
                notes.warn(
                    f"{len(unasked)} risk tokens in partitions the nodes serve were never queried: "
                    f"{named(t for _, _, t in unasked)}"
                )
            out.append(notes.verdict("risk set", epoch, "risk set"))
        return out

    def budget_verdicts(self) -> list[Verdict]:
        """Per partition: charges within the cap, budget_left consistent."""
        out = []
        for (agency, pid), budget in sorted(self.budgets.items()):
            notes = Notes()
            if budget.total is not None and budget.used > budget.total:
                notes.fail(f"over budget: {budget.used} elements charged, cap {budget.total}")
            for problem in dict.fromkeys(budget.problems):
                notes.fail(problem)
            notes.ok(
                f"{budget.used} of {budget.total} elements charged in {budget.evaluations} evaluations, "
                f"{budget.left} left"
            )
            out.append(notes.verdict("budgets", f"{agency}/{pid}", "budget"))
        return out

    # ------------------------------------------------------------------------------------------ results

    def result_verdicts(self, justifier: Justifier) -> list[Verdict]:
        """The published files against the digests the coordinator logged (`audit.results`)."""
        checks = ResultChecks(
            self.run_dir,
            self.logged,
            self.last,
            self.openings,
            self.epoch_window,
            self.progress,
            self.service,
            epoch_issue_times(self.coordinator),
        )
        return checks.verdicts(justifier)

    # -------------------------------------------------------------------------------------------- rerun

    def rerun_verdicts(self, other: Path) -> list[Verdict]:
        """Compare the run with a fresh re-run of its scenario (`audit.rerun.rerun_verdicts`)."""
        deterministic = self.scenario is not None and self.scenario.deterministic
        return rerun_verdicts(self.run_dir, other, deterministic, set(self.service.codes))

    # ---------------------------------------------------------------------------------------------- run

    def run(self) -> ReplayReport:
        """Do every check, in order, and return the report."""
        start = time.perf_counter()
        identities, storage, justifier = self.load_inputs()
        self.read_logs(identities)
        self.openings = read_openings(self.run_dir, storage, self.executor, self.progress)
        for opening in self.openings:
            if opening.batch is not None:
                b = opening.batch
                self.by_key[(b.agency, b.partition_id, b.idempotency_key)] = opening
        self.check_node_logs()
        self.check_coordinator_log(justifier)
        report = self.report
        report.verdicts += self.inputs
        for log in self.logs:
            report.verdicts += log.verdicts()
        report.verdicts += self.risk_verdicts(justifier)
        report.verdicts += self.opening_verdicts(justifier)
        report.verdicts += self.budget_verdicts()
        report.verdicts += self.result_verdicts(justifier)
        if self.rerun is not None:
            self.progress("rerun", 0, 1)
            report.verdicts += self.rerun_verdicts(self.rerun)
            self.progress("rerun", 1, 1)
        report.counts = {
            "log entries": sum(len(log.entries) for log in self.logs),
            "openings": len(self.openings),
            "tokens re-derived": sum(len(o.batch.tokens) for o in self.openings if o.digest and o.batch),
            "unjustified tokens": len(report.unjustified),
            "partitions budgeted": len(self.budgets),
        }
        report.seconds = time.perf_counter() - start
        return report


# ---------------------------------------------------------------------------------------------- public


def replay(
    run_dir: Path | str,
    *,
    rerun_dir: Path | str | None = None,
    executor: Executor | None = None,
    progress: Progress | None = None,
) -> ReplayReport:
    """Replay the run in `run_dir` as an auditor and return a verdict per item (see the module docstring).

    `rerun_dir` holds a fresh re-run of the same scenario to compare with (none: no comparison);
    `executor` re-derives openings in parallel.
    """
    run = Path(run_dir)
    return _Replay(
        run, None if rerun_dir is None else Path(rerun_dir), executor, progress or no_progress
    ).run()
