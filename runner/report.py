"""The report of a simulated run: what the epoch did, what it found, and how that compares with the truth."""

from __future__ import annotations

import contextlib
import dataclasses
import datetime as dt
import json
import sqlite3
from pathlib import Path
from typing import Any

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import pyarrow.parquet as pq

from coordinator.policy import DEFAULT_POLICY, Policy
from coordinator.report import COLOURS, figure_png, plot_codes_by_colour, plot_exposures_per_day, write_report
from proto.tokens import KINDS
from simulation.evaluation import RunTruth, infected_by, policy_metrics, truth_metrics

POLICY_2020 = DEFAULT_POLICY.parent / "2020.toml"
"""The 2020-style rules (≥ 2 shared cell-hours with a case → red for 14 days), kept for comparison."""


def matches_by_kind(matches: pd.DataFrame) -> pd.DataFrame:
    """Matches per agency and token kind (columns agency, kind, matches, subjects)."""
    kinds = matches.assign(kind=matches["token"].str.split("|", n=1).str[0])
    grouped = kinds.groupby(["agency", "kind"]).agg(
        matches=("token", "size"), subjects=("subject_id", "nunique")
    )
    return grouped.reset_index()


def exposures_per_day(matches: pd.DataFrame) -> pd.DataFrame:
    """Matched exposures per token day and agency (columns day, agency, n); static tokens left out."""
    fields = matches["token"].str.split("|")
    kind = fields.str[0]
    day = pd.Series(pd.NA, index=matches.index, dtype="string")
    for name, (_, _, position) in KINDS.items():
        chosen = kind == name
        if position is not None and chosen.any():
            day[chosen] = fields[chosen].str[position].str.slice(0, 10)
    dated = matches.assign(day=day).dropna(subset=["day"])
    return dated.groupby(["day", "agency"]).size().rename("n").reset_index()


def latest_codes(run_dir: Path) -> pd.DataFrame:
    """The last epoch's codes (subject_id, color, issued_at) from RUN/coordinator/codes.sqlite."""
    with contextlib.closing(sqlite3.connect(run_dir / "coordinator" / "codes.sqlite")) as db:
        return pd.read_sql_query(
            "SELECT subject_id, color, issued_at FROM codes WHERE epoch = "
            "(SELECT epoch FROM epochs ORDER BY seq DESC LIMIT 1)",
            db,
        )


def plot_risk_map(run_dir: Path, matches: pd.DataFrame, city_regions: set[str]) -> bytes:
    """The city's cells (outside regions left out), coloured by their matched cell-hour exposures."""
    cells = pq.read_table(run_dir / "data" / "carrier" / "cells.parquet").to_pandas()
    cells = cells[cells["region_code"].isin(city_regions)]
    hours = matches.loc[matches["token"].str.startswith("cell-hour|"), "token"]
    per_cell = hours.str.split("|").str[1].astype("int64").value_counts()
    exposure = cells["cell_id"].map(per_cell).fillna(0).to_numpy()
    fig, ax = plt.subplots(figsize=(6.5, 5.5))
    quiet = exposure == 0
    ax.scatter(cells["x_km"][quiet], cells["y_km"][quiet], s=16, c="#d9d9d9", marker="s", linewidths=0)
    points = ax.scatter(
        cells["x_km"][~quiet],
        cells["y_km"][~quiet],
        s=16,
        c=np.log10(exposure[~quiet]),
        cmap="inferno_r",
        marker="s",
        linewidths=0,
    )
    fig.colorbar(points, ax=ax, label="log10 matched cell-hour exposures")
    ax.set_aspect("equal")
    ax.set_xlabel("km")
    ax.set_ylabel("km")
    ax.set_title("City cells by risk (grey: no exposure)")
    return figure_png(fig)


def city_regions(scenario: dict[str, Any]) -> set[str]:
    """Region codes of the simulated city itself (not the outside regions travellers come from)."""
    return {code for code, region in scenario.get("regions", {}).items() if not region.get("outside")}


METRIC_TEXT = {
    "coded_subjects": "people with a code",
    "infected_coded": "infected people with a code",
    "infected_flagged": "infected people coded red or yellow",
    "sensitivity": "sensitivity",
    "uninfected_coded": "uninfected people with a code",
    "uninfected_green": "uninfected people coded green",
    "specificity": "specificity",
    "quarantine_person_days": "quarantine person-days imposed",
    "infected_total": "infected in the window (truth)",
}
"""How the report names each truth metric."""


def _percent(value: float | None) -> str:
    """A share as a percentage with one decimal, or n/a."""
    return "n/a" if value is None else f"{value:.1%}"


def _metric(name: str, value: Any) -> str:
    """A truth metric as the report prints it: shares as percentages, counts with thousands separators."""
    if name in ("sensitivity", "specificity"):
        return _percent(value)
    return "n/a" if value is None else f"{value:,}"


def _verified(verified: dict[str, int]) -> str:
    """The offline verification sample in words."""
    checked, valid = verified.get("checked", 0), verified.get("valid", 0)
    return f"{valid:,} of {checked:,} valid" if checked else "none checked"


def _exits(exit_codes: dict[str, int]) -> str:
    """The nodes' exit codes in words."""
    bad = {agency: code for agency, code in exit_codes.items() if code != 0}
    if not bad:
        return f"yes: {', '.join(exit_codes)} exited 0"
    return "NO: " + ", ".join(f"{agency} exited {code}" for agency, code in bad.items())


def _day_row(day: dict[str, Any]) -> dict[str, Any]:
    """A report row for one day of a multi-day run."""
    return {
        "as of": day["as_of"],
        **{c: day["colours"].get(c, 0) for c in COLOURS},
        "matches": day["matches"],
        "revoked": day["revoked"],
        "tokens queried": day["queried"],
        "answers reused": day["reused_answers"],
        "indexes downloaded / cached": f"{day['indexes_downloaded']} / {day['indexes_cached']}",
        "equals plaintext join": "yes" if day["reference_equal"] else "NO",
    }


def policy_comparison(
    run_dir: Path, features: pd.DataFrame, as_of: dt.date, active_version: str | None = None
) -> list[dict[str, Any]]:
    """The default policy beside the 2020 rules on the same features, against the simulation's truth (as
    `healthpsi policy evaluate` computes it): codes by colour, infections caught and missed, and quarantine
    person-days imposed on uninfected and on infected people. A policy whose version is `active_version`
    (the one the epoch logged) is named the active one."""
    truth = dataclasses.replace(
        RunTruth.load(run_dir), features=features, infected=infected_by(run_dir, as_of), as_of=as_of
    )
    rows = []
    for name, policy in (("default", Policy.load()), ("2020 rules", Policy.load(POLICY_2020))):
        role = "active" if policy.version == active_version else name
        m = policy_metrics(truth, policy.assess_frame(features, truth.issued_on))
        rows.append({
            "policy": f"{role} ({policy.version})",
            **{c: m[c] for c in COLOURS},
            "infected caught": m["infected_flagged"],
            "infections missed": m["infected"] - m["infected_flagged"],
            "sensitivity": _percent(m["sensitivity"]),
            "quarantine days, uninfected": m["quarantine_days_uninfected"],
            "quarantine days, infected": m["quarantine_days_infected"],
            "caught per 1,000 quarantine days": m["infected_per_1000_days"],
        })
    return rows


def build_report(run_dir: Path, summary: dict[str, Any]) -> Path:
    """Write RUN/report.json and RUN/report.html for a finished run; return the HTML path."""
    scenario = json.loads((run_dir / "scenario.json").read_text())
    epoch = summary["epoch"] or {}
    # the latest epoch's date: the features and codes read below are that day's in a run of several days
    as_of = dt.date.fromisoformat(epoch.get("as_of") or scenario["as_of"])
    matches = pq.read_table(run_dir / "coordinator" / "matches.parquet").to_pandas()
    features = pq.read_table(run_dir / "coordinator" / "features.parquet").to_pandas()
    codes = latest_codes(run_dir)
    colours = features.pipe(Policy.load().assess_frame, as_of)[["subject_id", "until"]]
    codes = codes.merge(colours, on="subject_id", how="left").rename(columns={"until": "quarantine_until"})
    metrics = truth_metrics(run_dir, codes, as_of)
    comparison = policy_comparison(run_dir, features, as_of, epoch.get("policy_version"))
    colour_counts = {c: int((codes["color"] == c).sum()) for c in COLOURS}
    by_kind = matches_by_kind(matches)
    stage_bytes = {name: int(n) for name, n in epoch.get("bytes", {}).items() if name != "total"}
    stage_rows = [
        {
            "stage": name,
            "seconds": round(float(sec), 3),
            "bytes on the wire": sum(stage_bytes.values()) if name == "total" else stage_bytes.get(name, 0),
        }
        for name, sec in epoch.get("seconds", {}).items()
    ]
    figures = {
        "codes": plot_codes_by_colour(colour_counts),
        "exposures": plot_exposures_per_day(exposures_per_day(matches)),
        "map": plot_risk_map(run_dir, matches, city_regions(scenario)),
    }
    report = {
        "title": f"healthpsi run — {scenario['preset']}, seed {scenario['seed']}",
        "subtitle": f"{scenario['persons']:,} persons · window ending {as_of} · {run_dir} · "
        + ("deterministic: every secret derived from the seed (for the auditor's re-run)"
           if scenario.get("deterministic") else "every secret from the OS"),
        "cards": [
            {"label": "persons", "value": int(scenario["persons"])},
            {"label": "codes issued", "value": len(codes)},
            *({"label": c, "value": n, "class": c} for c, n in colour_counts.items()),
            {"label": "matches", "value": len(matches)},
            {"label": "sensitivity", "value": _percent(metrics["sensitivity"])},
            {"label": "specificity", "value": _percent(metrics["specificity"])},
        ],
        "sections": [
            {
                "title": "Health codes",
                "figures": ["codes"],
                "rows": [
                    {"colour": c, "codes": n, "share": _percent(n / max(1, len(codes)))}
                    for c, n in colour_counts.items()
                ],
            },
            {
                "title": "Against the ground truth",
                "text": (
                    "Truly infected = infected by the end of the window (simulation truth). "
                    "Sensitivity: infected people with a red or yellow code. "
                    "Specificity: uninfected people with a green code."
                ),
                "rows": [
                    {"measure": METRIC_TEXT.get(k, k.replace("_", " ")), "value": _metric(k, v)}
                    for k, v in metrics.items()
                ],
            },
            {
                "title": "The active policy against the 2020 rules (same features, simulation truth)",
                "text": (
                    "What each policy would give the same matched features on the day of issue, measured "
                    "against who was really infected by the end of the window. Quarantine days run from the "
                    "day of issue through each code's last quarantine day. "
                    "`healthpsi policy evaluate` gives the same figures for any policy file."
                ),
                "rows": comparison,
            },
            {"title": "Matches per agency and token kind", "rows": by_kind.to_dict("records")},
            {"title": "Exposures per day", "figures": ["exposures"]},
            {"title": "Where the exposures were", "figures": ["map"]},
            *(
                [{"title": "Day by day (codes by colour, matches, revocations, queried vs reused)",
                  "rows": [_day_row(d) for d in summary["days"]]}]
                if len(summary.get("days", [])) > 1 else []
            ),
            {"title": "Epoch stages (time and bytes on the wire)", "rows": stage_rows},
            {
                "title": "Run steps",
                "rows": [{"step": k, "seconds": round(float(v), 3)} for k, v in summary["steps"].items()],
            },
            {
                "title": "Query budget per node",
                "rows": [
                    {"node": agency, **{k.replace("_", " "): v for k, v in b.items()}}
                    for agency, b in summary["budgets"].items()
                ],
            },
            {
                "title": "Checks",
                "rows": [
                    {
                        "check": "private matches equal the plaintext join",
                        "result": "yes, row for row" if summary["reference_equal"] else "NO",
                    },
                    {"check": "sample of codes verified offline", "result": _verified(summary["verified"])},
                    {"check": "nodes stopped cleanly", "result": _exits(summary["node_exit_codes"])},
                    {"check": "memory", "result": "one partition's records at a time in each step"},
                ],
            },
        ],
        "metrics": metrics,
        "colours": colour_counts,
        "matches_by_kind": by_kind.to_dict("records"),
        "policy_comparison": comparison,
        "summary": summary,
    }
    return write_report(run_dir, report, figures)
