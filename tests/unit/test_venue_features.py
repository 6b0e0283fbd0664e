"""Venue-hour, hospital-hour, place-day and declared-symptoms features, and the default policy's colours for
them (reasons VENUE_HOUR, HOSPITAL_HOUR, SAME_PLACE, SYMPTOMS)."""

from __future__ import annotations

import datetime as dt

import pandas as pd

from coordinator.features import compute_features
from coordinator.policy import Policy
from proto.ids import from_int

A, B, C, E, S, X = (from_int(n) for n in (11, 22, 33, 55, 66, 44))
D = dt.date(2020, 2, 10)
CASES = pd.DataFrame(
    {
        "case_id": ["c1"],
        "subject_id": [X],
        "status": ["confirmed"],
        "onset_date": [D],
        "report_date": [D + dt.timedelta(days=2)],
    }
)
REGIONS = pd.DataFrame({"region_code": [], "level": [], "from_date": [], "to_date": []})
MATCHES = pd.DataFrame(
    [
        (A, "venues", "venue-hour|market-411202-0001|2020-02-10T09", "c1"),
        (A, "venues", "venue-hour|compound-411202-0003|2020-02-10T19", "c1"),
        (B, "venues", "venue-hour|hospital-411202-0001|2020-02-11T10", "c1"),
        (C, "police", "place-day|workplace-10001-0|2020-02-08", "c1"),
        (C, "police", "place-day|workplace-10001-0|2020-02-09", "c1"),
        (E, "police", "place-day|workplace-10001-0|2020-02-01", "c1"),
    ],
    columns=["subject_id", "agency", "token", "case_id"],
)
SYMPTOMS = pd.DataFrame({"subject_id": [S, E], "applied_on": [D + dt.timedelta(days=3)] * 2})


def test_venue_hours_split_by_kind_place_days_and_symptoms() -> None:
    f = compute_features(MATCHES, CASES, REGIONS, SYMPTOMS).set_index("subject_id")
    assert (f.loc[A, "shared_venue_hours"], f.loc[A, "shared_hospital_hours"]) == (2, 0)
    assert (f.loc[B, "shared_venue_hours"], f.loc[B, "shared_hospital_hours"]) == (0, 1)
    assert f.loc[C, "same_place_days"] == 2
    assert f.loc[C, "last_exposure"] == dt.date(2020, 2, 9)
    assert f.loc[S, "declared_symptoms"] == 1
    assert f.loc[S, "symptoms_on"] == D + dt.timedelta(days=3)
    assert pd.isna(f.loc[S, "last_exposure"])  # symptoms are dated apart from exposures
    assert f.loc[E, "last_exposure"] == dt.date(2020, 2, 1)
    assert f["declared_symptoms"].sum() == 2


def test_default_policy_colours_and_reasons() -> None:
    f = compute_features(MATCHES, CASES, REGIONS, SYMPTOMS).set_index("subject_id")
    policy = Policy.load()
    at = D + dt.timedelta(days=3)
    got = {who: policy.assess(f.loc[who].to_dict(), at) for who in (A, B, C, E, S)}
    assert (got[A].color, got[A].reasons) == ("yellow", ("VENUE_HOUR",))
    assert (got[B].color, got[B].reasons) == ("red", ("HOSPITAL_HOUR",))
    assert (got[C].color, got[C].reasons) == ("yellow", ("SAME_PLACE",))
    assert (got[S].color, got[S].reasons) == ("yellow", ("SYMPTOMS",))
    assert got[S].until == D + dt.timedelta(days=7)
    # E's place-day quarantine ended before E declared symptoms: they do not revive it
    assert (got[E].color, got[E].reasons) == ("yellow", ("SYMPTOMS",))
    assert got[E].until == D + dt.timedelta(days=7)
    frame = policy.assess_frame(f.reset_index(), at).set_index("subject_id")
    for who, one in got.items():
        assert (frame.loc[who, "color"], frame.loc[who, "reasons"], frame.loc[who, "until"]) == (
            one.color, one.reasons, one.until
        )
    assert policy.assess(f.loc[S].to_dict(), D + dt.timedelta(days=11)).color == "green"
