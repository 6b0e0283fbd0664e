"""Checking applicants' identities one small batch at a time, as the code service needs them: each
declaration's `identity` token is blinded, evaluated by the police node's population partition (verifiable
OPRF, one Evaluate call per batch, one budget element per new token), its tag looked up in the police index
and its label opened — the epoch's own matching code, run over a batch instead of a file of applicants.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from coordinator import applicants as appl
from coordinator.matching import IndexCache, Matcher, OpeningStore, Query
from coordinator.sealing import storage_key
from coordinator.transport import NodeTransport
from crypto.pki import PkiPaths, load_identities
from proto import tokens as tk

POLICE = "police"


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


class IdentityChecker:
    """Asks the police node whether declarations are in its population register, over PSI.

    Query openings are sealed into the coordinator's openings store before they are sent, answers are
    recorded after their proof verifies, and the index comes from the coordinator's cache: a token asked
    before (by an epoch or an earlier batch) is answered again without a new charge.
    """

    def __init__(
        self,
        run_dir: Path,
        transports: Mapping[str, NodeTransport],
        *,
        epoch: str,
        as_of: dt.date,
        window_days: int,
    ) -> None:
        run = Path(run_dir)
        self.transports = dict(transports)
        self.epoch = epoch
        self.as_of = as_of
        self.window_days = window_days
        self.identities = load_identities(PkiPaths(run))
        self.openings = OpeningStore(run / "coordinator" / "openings", storage_key(run))
        self.cache = IndexCache(run / "coordinator" / "cache")

    def check(self, declarations: Sequence[Declaration]) -> list[bool]:
        """For each declaration, whether the register holds a person with that id, name and birth date
        (MatchingError and its kinds when the node cannot answer safely)."""
        if not declarations:
            return []
        tokens = [d.token for d in declarations]
        partition = tk.parse(tokens[0]).partition_id
        matcher = Matcher(
            self.epoch,
            self.transports,
            self.identities,
            self.openings,
            self.cache,
            as_of=self.as_of.isoformat(),
            window_days=self.window_days,
            blind_rng=lambda agency, partition_id: None,
        )
        found = matcher.run([Query(POLICE, partition, appl.PURPOSE, tuple(sorted(set(tokens))))])
        register = found.get((POLICE, partition), {})
        return [d.subject_id in register.get(d.token, ()) for d in declarations]
