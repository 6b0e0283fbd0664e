"""Checking applicants' identities one small batch at a time, as the code service needs them: each
declaration's `identity` token is blinded, evaluated by the police node's population partition (verifiable
OPRF, one Evaluate call per batch, one budget element per new token), its tag looked up in the police index
and its label opened — the epoch's own matching code, run over a batch instead of a file of applicants.
"""

from __future__ import annotations

import datetime as dt
import secrets
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from coordinator import applicants as appl
from coordinator.errors import MatchingError
from coordinator.index_cache import IndexCache
from coordinator.matching import AuditSink, Matcher
from coordinator.openings import Batch, OpeningStore, Query
from coordinator.sealing import read_sealed_json, storage_key
from coordinator.transport import NodeTransport
from proto import tokens as tk
from proto.errors import ProtocolError
from proto.healthpsi.v1 import node_pb2
from runctx.pki import PkiPaths, load_identities

POLICE = "police"
MANIFEST_SECONDS = 60.0
"""Checks reuse the police node's verified manifest this long (one fetch per check cost as much as the
check's Evaluate call)."""


class IdentityCheckError(RuntimeError):
    """The police node could not answer safely (down, over budget, a proof or index that does not verify)."""


@dataclass(frozen=True)
class Declaration:
    """Who an applicant says a person is: id, name and birth date (already checked for form)."""

    subject_id: str
    name: str
    birth_date: dt.date

    @property
    def token(self) -> str:
        """The declaration's identity token."""
        return tk.identity(self.subject_id, self.name, self.birth_date)


@dataclass(frozen=True)
class Checked:
    """The outcome of one identity check: its label (the epoch of its queries) and one answer per
    declaration."""

    label: str
    known: list[bool]


class AnsweredOpenings(OpeningStore):
    """The coordinator's openings store as the identity checks see it: each answered batch is read (and
    unsealed) once, and a check is shown only the answered batches holding a token it asks about — so
    those are answered again without a new charge, and the Matcher does not finalize every batch ever
    recorded for the partition. Batches still unanswered (in flight in another worker) are left alone."""

    def __init__(self, directory: Path, key: bytes) -> None:
        super().__init__(directory, key)
        self._read: dict[Path, Batch] = {}
        self._by_token: dict[str, list[Batch]] = {}
        self.wanted: frozenset[str] = frozenset()

    def batches(self, agency: str, partition_id: str) -> list[Batch]:
        """The answered batches of the partition that hold a wanted token."""
        directory = self.directory / agency / partition_id
        for query in sorted(directory.glob("*.query")) if directory.is_dir() else []:
            answer = query.with_suffix(".answer")
            if query in self._read or not answer.exists():
                continue
            batch = Batch.from_records(read_sealed_json(self.key, query), read_sealed_json(self.key, answer))
            self._read[query] = batch
            for token in batch.tokens:
                self._by_token.setdefault(token, []).append(batch)
        found = {
            id(b): b
            for token in self.wanted
            for b in self._by_token.get(token, ())
            if (b.agency, b.partition_id) == (agency, partition_id)
        }
        return sorted(found.values(), key=lambda b: (b.epoch, b.purpose, b.number))


class IdentityChecker:
    """Asks the police node whether declarations are in its population register, over PSI.

    Query openings are sealed into the coordinator's openings store before they are sent, answers are
    recorded after their proof verifies, and the index comes from the coordinator's cache: a token asked
    before (by an epoch or an earlier batch) is answered again without a new charge. `audit` receives each
    check's `evaluate` and `index_streamed` entries, with the check's label as their epoch.
    """

    def __init__(
        self,
        run_dir: Path,
        transports: Mapping[str, NodeTransport],
        *,
        epoch: str,
        as_of: dt.date,
        window_days: int,
        audit: AuditSink | None = None,
    ) -> None:
        run = Path(run_dir)
        self.audit = audit
        self.transports = dict(transports)
        self.epoch = epoch
        self.as_of = as_of
        self.window_days = window_days
        self.identities = load_identities(PkiPaths(run))
        self.openings = AnsweredOpenings(run / "coordinator" / "openings", storage_key(run))
        self.cache = IndexCache(run / "coordinator" / "cache")
        self._manifests: tuple[float, dict[str, node_pb2.Manifest]] = (0.0, {})

    def check(self, declarations: Sequence[Declaration]) -> Checked:
        """For each declaration, whether the register holds a person with that id, name and birth date
        (IdentityCheckError when the node cannot answer safely), under the check's label."""
        if not declarations:
            return Checked("", [])
        tokens = [d.token for d in declarations]
        partition = tk.parse(tokens[0]).partition_id
        self.openings.wanted = frozenset(tokens)
        # each check is its own batch series: numbered from 0 under a label of its own within the epoch
        label = f"{self.epoch}/identity/{secrets.token_hex(6)}"
        sink = self.audit

        def audit(event: str, **fields: Any) -> None:
            if sink is not None:
                sink(event, **fields, epoch=label)

        fetched_at, manifests = self._manifests
        reuse = time.monotonic() - fetched_at < MANIFEST_SECONDS
        matcher = Matcher(
            label,
            self.transports,
            self.identities,
            self.openings,
            self.cache,
            as_of=self.as_of.isoformat(),
            window_days=self.window_days,
            blind_rng=lambda agency, partition_id: None,
            manifests=manifests if reuse else None,
            audit=audit,
        )
        try:
            found = matcher.run([Query(POLICE, partition, appl.PURPOSE, tuple(sorted(set(tokens))))])
        except (MatchingError, ProtocolError) as exc:
            self._manifests = (0.0, {})  # a node restarted with new keys, say: fetch its manifest again
            raise IdentityCheckError(str(exc)) from exc
        if not reuse:
            self._manifests = (time.monotonic(), matcher.manifests)
        register = found.get((POLICE, partition), {})
        return Checked(label, [d.subject_id in register.get(d.token, ()) for d in declarations])
