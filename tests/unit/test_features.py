"""Exposure features from matches: counts per kind, max cell-hours over cases, region levels, dates."""

from __future__ import annotations

import datetime as dt

import pandas as pd
import pyarrow as pa
import pytest

from coordinator.features import SCHEMA, compute_features, features_table, region_levels
from proto.ids import from_int

A, B, C, X, Y = (from_int(n) for n in (11, 22, 33, 44, 55))
D = dt.date(2020, 2, 10)

CASES = pd.DataFrame(
    {
        "case_id": ["c1", "c2", "c3"],
        "subject_id": [X, Y, Y],
        "status": ["confirmed", "suspected", "confirmed"],
        "onset_date": [D, D, D],
        "report_date": [D + dt.timedelta(days=2), D + dt.timedelta(days=1), D + dt.timedelta(days=4)],
    }
)
REGIONS = pd.DataFrame(
    {
        "region_code": ["R1", "R1", "R2"],
        "level": ["medium", "high", "medium"],
        "from_date": [D, D + dt.timedelta(days=3), D],
        "to_date": [D + dt.timedelta(days=5), D + dt.timedelta(days=5), D + dt.timedelta(days=5)],
    }
)


def day(n: int) -> str:
    """The date n days after D, ISO."""
    return (D + dt.timedelta(days=n)).isoformat()


def matches(rows: list[tuple[str, str, str, str | None]]) -> pd.DataFrame:
    """A matches frame from (subject_id, agency, token, case_id) tuples."""
    return pd.DataFrame(rows, columns=["subject_id", "agency", "token", "case_id"])


def features_of(rows: list[tuple[str, str, str, str | None]]) -> pd.DataFrame:
    """compute_features over the given matches and the fixed cases and regions, indexed by subject."""
    return compute_features(matches(rows), CASES, REGIONS).set_index("subject_id")


def test_cell_hours_are_max_over_cases() -> None:
    f = features_of(
        [
            (A, "carrier", f"cell-hour|1|{day(0)}T08", "c1"),
            (A, "carrier", f"cell-hour|1|{day(0)}T09", "c1"),
            (A, "carrier", f"cell-hour|2|{day(1)}T10", "c2"),
            (B, "carrier", f"cell-hour|2|{day(1)}T10", "c2"),
            (B, "carrier", f"cell-hour|2|{day(1)}T11", "c3"),
        ]
    )
    assert f.loc[A, "shared_cell_hours"] == 2
    assert f.loc[B, "shared_cell_hours"] == 1


@pytest.mark.parametrize(
    ("token", "feature"),
    [
        (f"carriage|G1|{day(1)}|3", "same_carriage"),
        (f"trip|G1|{day(1)}", "same_trip"),
        (f"room-night|H1|101|{day(1)}", "same_room_night"),
        (f"hotel-night|H1|{day(1)}", "same_hotel_night"),
        ("household|HH1", "same_household"),
    ],
)
def test_each_kind_counts_distinct_tokens(token: str, feature: str) -> None:
    f = features_of([(A, "x", token, "c1"), (A, "x", token, "c3")])
    assert f.loc[A, feature] == 1
    others = [n for n in SCHEMA.names if n.startswith("same_") and n != feature]
    assert (f.loc[A, others] == 0).all()


def test_region_days_by_level_high_wins() -> None:
    f = features_of(
        [
            (A, "carrier", f"region-day|R1|{day(1)}", None),
            (A, "carrier", f"region-day|R1|{day(4)}", None),
            (A, "carrier", f"region-day|R2|{day(4)}", None),
        ]
    )
    assert f.loc[A, "high_risk_region_days"] == 1
    assert f.loc[A, "medium_risk_region_days"] == 2


def test_region_levels_outside_interval_is_none() -> None:
    levels = region_levels(pd.Series([f"region-day|R2|{day(9)}", f"region-day|R9|{day(1)}"]), REGIONS)
    assert list(levels) == [None, None]


def test_last_exposure_is_latest_token_day_and_household_uses_report_date() -> None:
    f = features_of(
        [
            (A, "carrier", f"cell-hour|1|{day(0)}T08", "c1"),
            (A, "transport", f"trip|G1|{day(3)}", "c1"),
            (B, "police", "household|HH1", "c1"),
        ]
    )
    assert f.loc[A, "last_exposure"] == D + dt.timedelta(days=3)
    assert f.loc[B, "last_exposure"] == D + dt.timedelta(days=2)


def test_cases_are_included_with_status_and_report_date() -> None:
    f = features_of([(A, "transport", f"trip|G1|{day(1)}", "c1")])
    assert set(f.index) == {A, X, Y}
    assert bool(f.loc[X, "is_case"]) and f.loc[X, "case_status"] == "confirmed"
    assert f.loc[Y, "case_status"] == "confirmed"  # confirmed wins over an earlier suspicion
    assert f.loc[Y, "last_exposure"] == D + dt.timedelta(days=4)
    assert not f.loc[A, "is_case"] and f.loc[A, "case_status"] is None


def test_no_matches_gives_the_cases_only() -> None:
    f = compute_features(matches([]), CASES, REGIONS)
    assert sorted(f["subject_id"]) == sorted({X, Y})
    assert (f["shared_cell_hours"] == 0).all()


def test_table_has_the_published_schema() -> None:
    f = compute_features(matches([(A, "transport", f"trip|G1|{day(1)}", "c1")]), CASES, REGIONS)
    table = features_table(f)
    assert table.schema == SCHEMA
    assert table.column("last_exposure").type == pa.date32()
    assert table.num_rows == 3
