"""Exposure features per subject, computed from the coordinator's matches and its own health records.

One row per subject with any match, plus every case. Counts are of distinct matched tokens; the shared
cell-hours are counted per case and the largest count over cases is kept.
"""

from __future__ import annotations

import datetime as dt

import numpy as np
import pandas as pd
import pyarrow as pa

from proto import tokens as tk

# Feature name -> the token kind it counts (None: not a token count).
COUNTED_KINDS: dict[str, str] = {
    "same_carriage": "carriage",
    "same_trip": "trip",
    "same_room_night": "room-night",
    "same_hotel_night": "hotel-night",
    "same_household": "household",
    "same_place_days": "place-day",
}
COUNT_FEATURES: tuple[str, ...] = (
    "shared_cell_hours",
    *COUNTED_KINDS,
    "high_risk_region_days",
    "medium_risk_region_days",
    "shared_venue_hours",
    "shared_hospital_hours",
    "declared_symptoms",
)
FEATURE_NAMES: tuple[str, ...] = ("is_case", *COUNT_FEATURES)
"""Every feature a policy rule may test (numeric; `is_case` counts as 0/1)."""
DATED_BY: dict[str, str] = {"declared_symptoms": "symptoms_on"}
"""Features dated by a column of their own rather than `last_exposure`: a rule on them runs from that date
(symptoms declared today do not revive an exposure whose quarantine is over)."""

SCHEMA = pa.schema(
    [
        ("subject_id", pa.string()),
        ("is_case", pa.bool_()),
        ("case_status", pa.string()),
        *[(name, pa.int32()) for name in COUNT_FEATURES],
        ("last_exposure", pa.date32()),
        ("symptoms_on", pa.date32()),
    ]
)
"""Schema of RUN/coordinator/features.parquet."""


def token_kind_and_day(token_list: pd.Series) -> pd.DataFrame:
    """Kind and day (a `datetime.date`, or None for static tokens) of each distinct token given."""
    distinct = pd.Series(pd.unique(token_list), dtype=object)
    parsed = [tk.parse(t) for t in distinct]
    return pd.DataFrame(
        {
            "token": distinct,
            "kind": [p.kind for p in parsed],
            "day": [p.day for p in parsed],
        }
    )


def region_levels(region_tokens: pd.Series, risk_regions: pd.DataFrame) -> pd.Series:
    """The risk level ("high" or "medium") of each region-day token, taking the higher when both apply."""
    regions = risk_regions.assign(
        from_date=pd.to_datetime(risk_regions["from_date"]).dt.date,
        to_date=pd.to_datetime(risk_regions["to_date"]).dt.date,
    )
    spans: dict[str, list[tuple[dt.date, dt.date, str]]] = {}
    for code, first, last, level in zip(
        regions["region_code"], regions["from_date"], regions["to_date"], regions["level"], strict=True
    ):
        spans.setdefault(str(code), []).append((first, last, str(level)))
    levels: dict[str, str | None] = {}
    for token in pd.unique(region_tokens):
        parsed = tk.parse(token)
        day = parsed.day
        hit = {lvl for first, last, lvl in spans.get(parsed.fields[0], ()) if day and first <= day <= last}
        levels[token] = "high" if "high" in hit else "medium" if "medium" in hit else None
    return region_tokens.map(levels).astype(object)


def compute_features(
    matches: pd.DataFrame,
    cases: pd.DataFrame,
    risk_regions: pd.DataFrame,
    symptoms: pd.DataFrame | None = None,
) -> pd.DataFrame:
    """Features per subject (see SCHEMA) from matches (subject_id, agency, token, case_id), the cases and
    the applicants who declared symptoms (`symptoms`: subject_id, applied_on).

    The last exposure is the latest day of any matched token; a household contact's exposure lasts until
    the case's report date, and a case's own date is its report date. A declaration of symptoms is dated
    apart (`symptoms_on`, the latest application declaring some). Shared venue-hours are split by the
    venue's kind: hours at a hospital count apart.
    """
    symptoms = symptoms if symptoms is not None else pd.DataFrame({"subject_id": [], "applied_on": []})
    symptoms = symptoms.assign(applied_on=pd.to_datetime(symptoms["applied_on"]).dt.date)
    cases = cases.assign(report_date=pd.to_datetime(cases["report_date"]).dt.date)
    m = matches.merge(token_kind_and_day(matches["token"]), on="token", how="left")
    case_report = dict(zip(cases["case_id"], cases["report_date"], strict=True))
    household = m["kind"] == "household"
    m.loc[household, "day"] = m.loc[household, "case_id"].map(case_report)

    subjects = pd.Index(
        sorted(set(m["subject_id"]) | set(cases["subject_id"]) | set(symptoms["subject_id"])),
        name="subject_id",
    )
    out = pd.DataFrame(index=subjects)

    cell = m[m["kind"] == "cell-hour"]
    per_case = cell.groupby(["subject_id", "case_id"])["token"].nunique()
    out["shared_cell_hours"] = per_case.groupby(level="subject_id").max()
    for feature, kind in COUNTED_KINDS.items():
        out[feature] = m[m["kind"] == kind].groupby("subject_id")["token"].nunique()
    region = m[m["kind"] == "region-day"].drop_duplicates(["subject_id", "token"])
    level = region_levels(region["token"], risk_regions) if len(region) else pd.Series(dtype=object)
    out["high_risk_region_days"] = region[level == "high"].groupby("subject_id")["token"].nunique()
    out["medium_risk_region_days"] = region[level == "medium"].groupby("subject_id")["token"].nunique()
    venue = m[m["kind"] == "venue-hour"]
    at_hospital = np.array([tk.venue_kind(tk.parse(t).fields[0]) == "hospital" for t in venue["token"]], bool)
    out["shared_venue_hours"] = venue[~at_hospital].groupby("subject_id")["token"].nunique()
    out["shared_hospital_hours"] = venue[at_hospital].groupby("subject_id")["token"].nunique()
    out["declared_symptoms"] = symptoms.groupby("subject_id").size().clip(upper=1)
    for feature in COUNT_FEATURES:
        out[feature] = out[feature].fillna(0).astype(np.int32)

    status = cases.assign(rank=(cases["status"] == "confirmed").astype(int)).sort_values(
        ["subject_id", "rank", "report_date"]
    )
    last_status = status.groupby("subject_id").last()
    out["is_case"] = out.index.isin(last_status.index)
    out["case_status"] = last_status["status"].reindex(out.index).astype(object)
    out["case_status"] = out["case_status"].where(out["case_status"].notna(), None)

    days = pd.concat(
        [
            m[["subject_id", "day"]].dropna(),
            cases[["subject_id", "report_date"]].rename(columns={"report_date": "day"}),
        ]
    )
    # as datetime64 (a grouped max of date objects would run in Python), then dates again
    latest = pd.Series(np.array(days["day"].tolist(), dtype="datetime64[D]"), index=days.index)
    last = latest.groupby(days["subject_id"]).max().dt.date
    out["last_exposure"] = last.reindex(out.index)
    out["symptoms_on"] = symptoms.groupby("subject_id")["applied_on"].max().reindex(out.index)
    out = out.reset_index()
    return out[[f.name for f in SCHEMA]]


def features_table(features: pd.DataFrame) -> pa.Table:
    """The features frame as an Arrow table with the published schema."""
    frame = features.copy()
    for column in ("last_exposure", "symptoms_on"):
        frame[column] = [d if isinstance(d, dt.date) else None for d in frame[column]]
    return pa.Table.from_pandas(frame, schema=SCHEMA, preserve_index=False)
