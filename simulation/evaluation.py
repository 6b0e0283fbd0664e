"""How well health codes match the epidemic's ground truth (simulation only): the codes a run issued, and
the colours any policy would give the same features (what-if), with trade-off plots over policy variants."""

from __future__ import annotations

import datetime as dt
import io
import json
import statistics
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import pyarrow.parquet as pq

FLAGGED = ("red", "yellow")


def infected_by(run_dir: Path, as_of: dt.date) -> set[str]:
    """Subjects infected on or before the end of `as_of`, from RUN/truth/infections.parquet."""
    truth = pq.read_table(run_dir / "truth" / "infections.parquet", columns=["subject_id", "infected_at"])
    frame = truth.to_pandas()
    cutoff = pd.Timestamp(as_of) + pd.Timedelta(days=1)
    return set(frame.loc[frame["infected_at"] < cutoff, "subject_id"])


def quarantine_days(until: pd.Series, first_day: dt.date) -> np.ndarray:
    """Days of quarantine from `first_day` through each `until` (its last day) inclusive; 0 when none."""
    last = pd.to_datetime(until)
    days = (last - pd.Timestamp(first_day)).dt.days + 1
    return days.fillna(0).clip(lower=0).to_numpy(dtype=np.int64)


def truth_metrics(run_dir: Path, codes: pd.DataFrame, as_of: dt.date) -> dict[str, Any]:
    """Sensitivity, specificity and quarantine burden of the issued codes against truth/infections.parquet.

    `codes` has one row per coded subject: `subject_id`, `color` and `quarantine_until` (date or null).
    Truly infected = infected on or before the end of `as_of`. Sensitivity: infected people coded red or
    yellow; specificity: uninfected people coded green; quarantine: person-days from the day after as_of
    (when the codes are issued) to each subject's quarantine end.
    """
    infected = infected_by(run_dir, as_of)
    is_infected = codes["subject_id"].isin(infected).to_numpy()
    flagged = codes["color"].isin(FLAGGED).to_numpy()
    days = quarantine_days(codes["quarantine_until"], as_of + dt.timedelta(days=1))
    n_inf, n_uninf = int(is_infected.sum()), int((~is_infected).sum())
    return {
        "coded_subjects": len(codes),
        "infected_coded": n_inf,
        "infected_flagged": int((is_infected & flagged).sum()),
        "sensitivity": float((is_infected & flagged).sum() / n_inf) if n_inf else None,
        "uninfected_coded": n_uninf,
        "uninfected_green": int((~is_infected & ~flagged).sum()),
        "specificity": float((~is_infected & ~flagged).sum() / n_uninf) if n_uninf else None,
        "quarantine_person_days": int(days[flagged].sum()),
        "infected_total": len(infected),
    }


@dataclass(frozen=True)
class RunTruth:
    """What a policy what-if needs from a run: its features, who was infected, and who could be coded."""

    run_dir: Path
    features: pd.DataFrame
    infected: set[str]
    population: int
    as_of: dt.date

    @property
    def issued_on(self) -> dt.date:
        """The day the codes are issued: the morning after the window's last day."""
        return self.as_of + dt.timedelta(days=1)

    @classmethod
    def load(cls, run_dir: Path, features: pd.DataFrame | None = None) -> RunTruth:
        """Read RUN/scenario.json, RUN/truth/infections.parquet and the run's features: `features` when given,
        else RUN/coordinator/features.parquet.

        The population is every resident and visitor of the scenario; everyone without features is green.
        """
        scenario = json.loads((run_dir / "scenario.json").read_text(encoding="utf-8"))
        as_of = dt.date.fromisoformat(str(scenario["as_of"]))
        if features is None:
            features = pq.read_table(run_dir / "coordinator" / "features.parquet").to_pandas()
        infected = infected_by(run_dir, as_of)
        people = int(scenario["persons"]) + int(scenario.get("visitors", 0))
        known = len(set(features["subject_id"]) | infected)
        return cls(run_dir, features, infected, max(people, known), as_of)


def _per_1000(caught: int, days: int) -> float | None:
    return round(1000 * caught / days, 2) if days else None


def policy_metrics(truth: RunTruth, colours: pd.DataFrame) -> dict[str, Any]:
    """A policy's colours for a run's features (columns subject_id, color, reasons, until) against the truth.

    Sensitivity: infected people coded red or yellow (over every infected person; `contact_sensitivity`
    leaves out the reported cases, whom any policy codes red). Specificity: uninfected people left green.
    Quarantine person-days run from the issuing day through each code's last quarantine day, on uninfected
    and on infected people. Per reason code, the same for the subjects whose colour carries that reason
    (a subject with several reasons counts under each).
    """
    at = truth.issued_on
    infected = colours["subject_id"].isin(truth.infected).to_numpy()
    flagged = colours["color"].isin(FLAGGED).to_numpy()
    days = np.where(flagged, quarantine_days(colours["until"], at), 0)
    cases = set(truth.features.loc[truth.features["is_case"].astype(bool), "subject_id"])
    is_case = colours["subject_id"].isin(cases).to_numpy()
    n_inf = len(truth.infected)
    n_uninf = truth.population - n_inf
    caught = int((infected & flagged).sum())
    contacts = len(truth.infected - cases)
    contacts_caught = int((infected & flagged & ~is_case).sum())
    uninfected_flagged = int((~infected & flagged).sum())
    counts = {c: int((colours["color"] == c).sum()) for c in ("red", "yellow")}
    per_reason: dict[str, dict[str, Any]] = {}
    reasons = colours["reasons"].tolist()
    for reason in dict.fromkeys(r for rs in reasons for r in rs):
        has = np.array([reason in rs for rs in reasons], dtype=bool) & flagged
        inf_days, uninf_days = int(days[has & infected].sum()), int(days[has & ~infected].sum())
        per_reason[reason] = {
            "subjects": int(has.sum()),
            "infected": int((has & infected).sum()),
            "quarantine_days_uninfected": uninf_days,
            "quarantine_days_infected": inf_days,
            "infected_per_1000_days": _per_1000(int((has & infected).sum()), inf_days + uninf_days),
        }
    total_days = int(days.sum())
    return {
        "population": truth.population,
        "green": truth.population - counts["red"] - counts["yellow"],
        **counts,
        "infected": n_inf,
        "infected_flagged": caught,
        "sensitivity": round(caught / n_inf, 4) if n_inf else None,
        "contact_sensitivity": round(contacts_caught / contacts, 4) if contacts else None,
        "uninfected_flagged": uninfected_flagged,
        "specificity": round((n_uninf - uninfected_flagged) / n_uninf, 4) if n_uninf else None,
        "quarantine_days_uninfected": int(days[~infected].sum()),
        "quarantine_days_infected": int(days[infected].sum()),
        "infected_per_1000_days": _per_1000(caught, total_days),
        "per_reason": per_reason,
    }


def summarise(values: Sequence[Any]) -> Any:
    """Median, min and max over runs of each number in a list of (nested) metrics dicts."""
    first = values[0]
    if isinstance(first, dict):
        keys = dict.fromkeys(k for v in values for k in v)
        return {k: summarise([v[k] for v in values if k in v]) for k in keys}
    numbers = [v for v in values if isinstance(v, int | float) and not isinstance(v, bool)]
    if not numbers:
        return None
    return {"median": statistics.median(numbers), "min": min(numbers), "max": max(numbers)}


def pareto_best(costs: Sequence[float], gains: Sequence[float]) -> list[bool]:
    """Which points no other point beats (no higher cost, no lower gain, and better in one of the two)."""
    return [
        not any(
            (c2 <= c and g2 >= g) and (c2 < c or g2 > g)
            for j, (c2, g2) in enumerate(zip(costs, gains, strict=True))
            if j != i
        )
        for i, (c, g) in enumerate(zip(costs, gains, strict=True))
    ]


def plot_tradeoff(labels: Sequence[str], costs: Sequence[float], gains: Sequence[float], title: str) -> bytes:
    """PNG of a ROC-like trade-off: quarantine person-days on the uninfected (x) against sensitivity (y),
    each policy labelled, the Pareto-best ones joined and marked."""
    best = pareto_best(costs, gains)
    fig, ax = plt.subplots(figsize=(7.5, 5.0))
    x, y = np.asarray(costs, dtype=float), np.asarray(gains, dtype=float)
    mask = np.asarray(best)
    ax.scatter(x[~mask], y[~mask], c="#9e9e9e", s=30, label="dominated")
    order = np.argsort(x[mask])
    ax.plot(x[mask][order], y[mask][order], "-o", c="#c62828", ms=6, label="Pareto-best")
    for label, cx, gy in zip(labels, x, y, strict=True):
        ax.annotate(label, (cx, gy), textcoords="offset points", xytext=(4, 4), fontsize=7)
    ax.set_xlabel("quarantine person-days imposed on uninfected people")
    ax.set_ylabel("sensitivity (infected coded red or yellow)")
    ax.set_title(title, fontsize=10)
    ax.grid(alpha=0.3)
    ax.legend(loc="lower right", fontsize=8)
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=120, bbox_inches="tight")
    plt.close(fig)
    return buf.getvalue()
