"""Why a queried token is justified: the risk set the health records give for an epoch's window, a case
investigation record, a risk region or an application record.
"""

from __future__ import annotations

import datetime as dt
from collections import defaultdict
from collections.abc import Callable
from dataclasses import dataclass

import pandas as pd

from audit.verdicts import named
from coordinator import applicants as appl
from coordinator.risk import (
    Health,
)
from proto import tokens as tk
from proto.risk import RiskSetError, risk_tokens, window


@dataclass
class RiskSet:
    """The risk set the health records give for one epoch's window."""

    as_of: dt.date
    window_days: int
    cases: dict[tuple[str, str, str], list[str | None]]
    """(agency, partition, token) → the cases behind it (None: a risk region)."""
    partitions: dict[tuple[str, str], list[str]]
    """(agency, partition) → its sorted distinct tokens."""

    @property
    def window(self) -> tuple[dt.date, dt.date]:
        """First and last day of the window."""
        return window(self.as_of, self.window_days)


class Justifier:
    """Says why each queried token is justified — a case investigation record, a risk region or an
    application record — or why nothing justifies it."""

    def __init__(self, health: Health | None, identity_tokens: set[str] | None) -> None:
        self.health = health
        self.identity_tokens = identity_tokens
        self.declared: Callable[[str], bool] = lambda token: False
        """Whether an application the code service logged declared an identity token."""
        self._sets: dict[tuple[dt.date, int], RiskSet | None] = {}
        self.errors: dict[tuple[dt.date, int], str] = {}
        inv = health.investigations if health is not None else pd.DataFrame(columns=["case_id", "token"])
        self._investigated: dict[str, list[str]] = defaultdict(list)
        for case_id, token in zip(inv["case_id"].astype(str), inv["token"].astype(str), strict=True):
            self._investigated[token].append(case_id)

    def risk_set(self, as_of: dt.date, window_days: int) -> RiskSet | None:
        """The risk set of a window (None when the health records cannot give one; see `errors`)."""
        key = (as_of, window_days)
        if key not in self._sets:
            self._sets[key] = self._build(as_of, window_days)
        return self._sets[key]

    def _build(self, as_of: dt.date, window_days: int) -> RiskSet | None:
        if self.health is None:
            return None
        h = self.health
        try:
            rows = risk_tokens(h.investigations, h.risk_regions, h.cases, as_of, window_days)
        except RiskSetError as exc:
            self.errors[(as_of, window_days)] = str(exc)
            return None
        cases: dict[tuple[str, str, str], list[str | None]] = defaultdict(list)
        parts: dict[tuple[str, str], set[str]] = defaultdict(set)
        for agency, pid, token, case_id in zip(
            rows["agency"], rows["partition_id"], rows["token"], rows["case_id"], strict=True
        ):
            cases[(agency, pid, token)].append(
                None if case_id is None or case_id != case_id else str(case_id)
            )
            parts[(agency, pid)].add(token)
        return RiskSet(as_of, window_days, dict(cases), {k: sorted(v) for k, v in parts.items()})

    def why_not(self, risk: RiskSet | None, purpose: str, agency: str, pid: str, token: str) -> str | None:
        """None if the token is justified for this query, else why not."""
        try:
            parsed = tk.parse(token)
        except tk.TokenError as exc:
            return f"not a canonical token ({exc})"
        if (parsed.agency, parsed.partition_id) != (agency, pid):
            return f"belongs to {parsed.agency} {parsed.partition_id}, yet was asked of {agency} {pid}"
        if purpose == appl.PURPOSE:
            if parsed.kind != "identity":
                return f"a {parsed.kind} token in an identity query"
            if token in (self.identity_tokens or ()) or self.declared(token):
                return None
            if self.identity_tokens is None:
                return "identity query, but neither an applicants file nor the service's log declares it"
            return "no application record (the applicants file or the service's log) declares this identity"
        if purpose != "risk":
            return f"unknown query purpose {purpose!r}"
        if risk is None:
            return "no risk set: the health records are unusable"
        if (agency, pid, token) in risk.cases:
            return None
        first, last = risk.window
        if token in self._investigated:
            return (
                f"investigated for case {named(self._investigated[token])}, but its day {parsed.day} lies "
                f"outside the window {first}..{last}"
            )
        if parsed.kind == "region-day":
            return f"no risk region {parsed.fields[0]} covers {parsed.day} within the window {first}..{last}"
        return "no case investigation record or risk region names it"

    def cases_of(
        self, risk: RiskSet | None, purpose: str, agency: str, pid: str, token: str
    ) -> list[str | None]:
        """The cases (None: a region, "application": an applicant) behind a justified token."""
        if purpose == appl.PURPOSE:
            return ["application"]
        return [] if risk is None else risk.cases.get((agency, pid, token), [])
