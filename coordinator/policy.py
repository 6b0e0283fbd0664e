"""The colour policy: ordered rules from a TOML file turn a subject's features into a colour and reasons.

A rule names a feature, a threshold (`min`, optional `max`), a colour, a quarantine in days and a reason
code. A rule is active at a date while that date is at most `quarantine_days` days after the subject's
last exposure. A subject takes the colour of the first active matching rule, with the reason codes of every
active matching rule of that colour; with none, it is green.
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

from coordinator.features import FEATURE_NAMES
from crypto.codes import COLOURS

COLORS: tuple[str, ...] = COLOURS
"""Colours, from best to worst (those a health code can carry)."""
SEVERITY: dict[str, int] = {c: i for i, c in enumerate(COLORS)}
DEFAULT_POLICY = Path(__file__).resolve().parent / "policies" / "default.toml"


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
        """The colour of one subject (a mapping of feature values and `last_exposure`) at a date."""
        last = features.get("last_exposure")
        last = last if isinstance(last, dt.date) else None
        hits = [r for r in self.rules if r.matches(_number(features.get(r.feature))) and r.active(last, at)]
        if not hits:
            return Assessment("green", (), None)
        color = hits[0].color
        chosen = [r for r in hits if r.color == color]
        until = None if last is None else last + dt.timedelta(days=max(r.quarantine_days for r in chosen))
        return Assessment(color, tuple(r.reason for r in chosen), until)

    def assess_frame(self, features: pd.DataFrame, at: dt.date) -> pd.DataFrame:
        """Colours at a date for a features frame: columns subject_id, color, reasons (tuple), until."""
        n = len(features)
        last = features["last_exposure"] if n else pd.Series(dtype=object)
        age = np.array([(at - d).days if isinstance(d, dt.date) else -(10**9) for d in last], dtype=np.int64)
        color = np.full(n, "", dtype=object)
        hit_masks = []
        for rule in self.rules:
            values = features[rule.feature].to_numpy(dtype=float) if n else np.zeros(0)
            values = np.nan_to_num(values, nan=0.0)
            mask = (values >= rule.min) & (age <= rule.quarantine_days)
            if rule.max is not None:
                mask &= values <= rule.max
            hit_masks.append(mask)
            color = np.where((color == "") & mask, rule.color, color)
        color = np.where(color == "", "green", color)
        reasons: list[tuple[str, ...]] = [() for _ in range(n)]
        quarantine = np.full(n, -1, dtype=np.int64)
        for rule, mask in zip(self.rules, hit_masks, strict=True):
            chosen = mask & (color == rule.color)
            for i in np.flatnonzero(chosen):
                reasons[i] = (*reasons[i], rule.reason)
            quarantine = np.where(chosen, np.maximum(quarantine, rule.quarantine_days), quarantine)
        until = [
            d + dt.timedelta(days=int(q)) if q >= 0 and isinstance(d, dt.date) else None
            for d, q in zip(last, quarantine, strict=True)
        ]
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
