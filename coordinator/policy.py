"""The colour policy: ordered rules from a TOML file turn a subject's features into a colour and reasons.

A rule names a feature, a threshold (`min`, optional `max`), a colour, a quarantine in days and a reason
code. A rule is active at a date while that date is at most `quarantine_days` days after the subject's
last exposure (or, for a feature with a date of its own such as declared symptoms, after that date). A
subject takes the colour of the first active matching rule, with the reason codes of every active matching
rule of that colour; with none, it is green.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from coordinator.features import DATED_BY, FEATURE_NAMES
from crypto.codes import COLOURS

COLORS: tuple[str, ...] = COLOURS
"""Colours, from best to worst (those a health code can carry)."""
SEVERITY: dict[str, int] = {c: i for i, c in enumerate(COLORS)}
DEFAULT_POLICY = Path(__file__).resolve().parent / "policies" / "default.toml"
EPOCH = dt.date(1970, 1, 1)
NO_DATE = -(10**9)
"""A missing date, in days since `EPOCH`."""


class PolicyError(ValueError):
    """A policy file that cannot be used: unreadable TOML, an unknown feature or colour, a bad threshold."""


@dataclass(frozen=True)
class Rule:
    """One rule: `feature` within [min, max] → `color` for `quarantine_days` days, reason `reason`."""

    reason: str
    feature: str
    color: str
    quarantine_days: int
    min: float
    max: float | None = None

    @property
    def dated_by(self) -> str:
        """The features column that dates this rule: `last_exposure`, or its feature's own date."""
        return DATED_BY.get(self.feature, "last_exposure")

    def matches(self, value: float) -> bool:
        """True when a feature value lies within the rule's thresholds."""
        return value >= self.min and (self.max is None or value <= self.max)

    def active(self, last_exposure: dt.date | None, at: dt.date) -> bool:
        """True while `at` is within the quarantine after the last exposure (always, without a date)."""
        return last_exposure is None or (at - last_exposure).days <= self.quarantine_days


@dataclass(frozen=True)
class Assessment:
    """A colour at a date, the reason codes that produced it, and the last day it holds (None: green)."""

    color: str
    reasons: tuple[str, ...]
    until: dt.date | None


@dataclass(frozen=True)
class Policy:
    """An ordered list of rules and the policy version written into every code."""

    version: str
    rules: tuple[Rule, ...]

    @classmethod
    def load(cls, path: Path | str | None = None) -> Policy:
        """Read a policy TOML file (the default policy when path is None), checking every rule."""
        path = Path(path) if path is not None else DEFAULT_POLICY
        try:
            doc = tomllib.loads(path.read_text(encoding="utf-8"))
        except (OSError, tomllib.TOMLDecodeError) as exc:
            raise PolicyError(f"cannot read policy {path}: {exc}") from exc
        return cls.from_dict(doc, source=str(path))

    @classmethod
    def from_dict(cls, doc: Mapping[str, Any], source: str = "policy") -> Policy:
        """Build a policy from a parsed TOML document, checking every rule."""
        version = doc.get("version")
        if not isinstance(version, str) or not version:
            raise PolicyError(f"{source}: needs a non-empty string `version`")
        raw_rules = doc.get("rules")
        if not isinstance(raw_rules, list) or not raw_rules:
            raise PolicyError(f"{source}: needs at least one [[rules]] table")
        return cls(version=version, rules=tuple(_rule(r, i, source) for i, r in enumerate(raw_rules, 1)))

    @property
    def reasons(self) -> tuple[str, ...]:
        """The reason codes of the rules, in rule order, each once."""
        return tuple(dict.fromkeys(r.reason for r in self.rules))

    def varied(self, reason: str, **changes: float | int) -> Policy:
        """The policy with every rule of reason code `reason` changed (`min`, `max`, `quarantine_days`),
        its version naming the change (e.g. `2020-default-1+CELL_HOURS.min=3`)."""
        if reason not in self.reasons:
            raise PolicyError(f"no rule has reason {reason!r}; reasons: {', '.join(self.reasons)}")
        unknown = set(changes) - {"min", "max", "quarantine_days"}
        if unknown:
            raise PolicyError(f"cannot vary {sorted(unknown)}: only min, max and quarantine_days")
        rules = []
        for i, rule in enumerate(self.rules, 1):
            if rule.reason == reason:
                fields = {f.name: getattr(rule, f.name) for f in dataclasses.fields(rule)}
                rule = _rule({**fields, **changes}, i, self.version)
            rules.append(rule)
        label = ",".join(f"{reason}.{k}={v:g}" for k, v in changes.items())
        return Policy(version=f"{self.version}+{label}", rules=tuple(rules))

    def assess(self, features: Mapping[str, Any], at: dt.date) -> Assessment:
        """The colour of one subject (a mapping of feature values and their dates) at a date."""

        def since(rule: Rule) -> dt.date | None:
            day = features.get(rule.dated_by)
            return day if isinstance(day, dt.date) else None

        hits = [
            r for r in self.rules if r.matches(_number(features.get(r.feature))) and r.active(since(r), at)
        ]
        if not hits:
            return Assessment("green", (), None)
        color = hits[0].color
        chosen = [r for r in hits if r.color == color]
        ends = [day + dt.timedelta(days=r.quarantine_days) for r in chosen if (day := since(r)) is not None]
        return Assessment(color, tuple(r.reason for r in chosen), max(ends) if ends else None)

    def assess_frame(self, features: pd.DataFrame, at: dt.date) -> pd.DataFrame:
        """Colours at a date for a features frame: columns subject_id, color, reasons (tuple), until."""
        n = len(features)
        dates: dict[str, np.ndarray] = {}  # column -> days since 1970, or NO_DATE
        for column in {r.dated_by for r in self.rules}:
            days = features[column] if n and column in features.columns else [None] * n
            dates[column] = np.array(
                [(d - EPOCH).days if isinstance(d, dt.date) else NO_DATE for d in days], dtype=np.int64
            )
        today = (at - EPOCH).days
        color = np.full(n, "", dtype=object)
        hit_masks = []
        for rule in self.rules:
            values = features[rule.feature].to_numpy(dtype=float) if n else np.zeros(0)
            values = np.nan_to_num(values, nan=0.0)
            since = dates[rule.dated_by]  # a rule without a date is always active, as in `Rule.active`
            mask = (values >= rule.min) & ((since == NO_DATE) | (today - since <= rule.quarantine_days))
            if rule.max is not None:
                mask &= values <= rule.max
            hit_masks.append(mask)
            color = np.where((color == "") & mask, rule.color, color)
        color = np.where(color == "", "green", color)
        reasons: list[tuple[str, ...]] = [() for _ in range(n)]
        end = np.full(n, NO_DATE, dtype=np.int64)
        for rule, mask in zip(self.rules, hit_masks, strict=True):
            chosen = mask & (color == rule.color)
            for i in np.flatnonzero(chosen):
                reasons[i] = (*reasons[i], rule.reason)
            dated = chosen & (dates[rule.dated_by] != NO_DATE)
            end = np.where(dated, np.maximum(end, dates[rule.dated_by] + rule.quarantine_days), end)
        until = [EPOCH + dt.timedelta(days=int(e)) if e != NO_DATE else None for e in end]
        subjects = features["subject_id"].to_numpy()
        return pd.DataFrame({"subject_id": subjects, "color": color, "reasons": reasons, "until": until})


def worse(new: str, old: str) -> bool:
    """True when colour `new` is worse than colour `old`."""
    return SEVERITY[new] > SEVERITY[old]


def _number(value: Any) -> float:
    if value is None:
        return 0.0
    number = float(value)
    return 0.0 if np.isnan(number) else number


def _rule(raw: Any, index: int, source: str) -> Rule:
    where = f"{source}: rule {index}"
    if not isinstance(raw, Mapping):
        raise PolicyError(f"{where}: must be a table")
    unknown = set(raw) - {"reason", "feature", "color", "quarantine_days", "min", "max"}
    if unknown:
        raise PolicyError(f"{where}: unknown keys {sorted(unknown)}")
    reason, feature, color = raw.get("reason"), raw.get("feature"), raw.get("color")
    if not isinstance(reason, str) or not reason:
        raise PolicyError(f"{where}: needs a string `reason`")
    if feature not in FEATURE_NAMES:
        known = ", ".join(FEATURE_NAMES)
        raise PolicyError(f"{where} ({reason}): unknown feature {feature!r}; known: {known}")
    if color not in COLORS:
        raise PolicyError(f"{where} ({reason}): colour must be one of {COLORS}, got {color!r}")
    days = raw.get("quarantine_days")
    if isinstance(days, bool) or not isinstance(days, int) or days < 0:
        raise PolicyError(f"{where} ({reason}): `quarantine_days` must be an integer ≥ 0, got {days!r}")
    low, high = raw.get("min"), raw.get("max")
    if isinstance(low, bool) or not isinstance(low, int | float):
        raise PolicyError(f"{where} ({reason}): needs a numeric `min`, got {low!r}")
    if high is not None and (isinstance(high, bool) or not isinstance(high, int | float) or high < low):
        raise PolicyError(f"{where} ({reason}): `max` must be a number ≥ min, got {high!r}")
    return Rule(reason, feature, color, days, float(low), None if high is None else float(high))
