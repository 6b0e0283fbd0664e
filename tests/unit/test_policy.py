"""The 2020 colour policy (policies/2020.toml, the default until the graded one): one test per rule, per
threshold boundary and per quarantine boundary; the policy file's checks."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import pandas as pd
import pytest

from coordinator.features import FEATURE_NAMES
from coordinator.policy import DEFAULT_POLICY, Policy, PolicyError, worse

AT = dt.date(2020, 2, 20)
EXPOSED = AT - dt.timedelta(days=3)
POLICY = Policy.load(DEFAULT_POLICY.parent / "2020.toml")


def subject(**features: object) -> dict[str, object]:
    """A features row with everything zero but the given values, last exposed three days ago."""
    row: dict[str, object] = {name: 0 for name in FEATURE_NAMES}
    row["is_case"] = False
    row["last_exposure"] = EXPOSED
    row.update(features)
    return row


def check(row: dict[str, object], color: str, reasons: tuple[str, ...], at: dt.date = AT) -> None:
    """Assess one row both ways (scalar and frame) and check the colour and reasons agree."""
    one = POLICY.assess(row, at)
    assert (one.color, one.reasons) == (color, reasons)
    frame = POLICY.assess_frame(pd.DataFrame([{"subject_id": "x", **row}]), at)
    assert (frame.loc[0, "color"], frame.loc[0, "reasons"]) == (color, reasons)
    assert frame.loc[0, "until"] == one.until


@pytest.mark.parametrize(
    ("features", "color", "reasons"),
    [
        ({"is_case": True}, "red", ("CASE",)),
        ({"same_household": 1}, "red", ("HOUSEHOLD",)),
        ({"same_carriage": 1}, "red", ("SAME_CARRIAGE",)),
        ({"same_room_night": 1}, "red", ("SAME_ROOM",)),
        ({"shared_cell_hours": 2}, "red", ("CELL_HOURS",)),
        ({"high_risk_region_days": 1}, "red", ("HIGH_RISK_REGION",)),
        ({"same_trip": 1}, "yellow", ("SAME_TRIP",)),
        ({"same_hotel_night": 1}, "yellow", ("SAME_HOTEL",)),
        ({"shared_cell_hours": 1}, "yellow", ("CELL_HOUR",)),
        ({"medium_risk_region_days": 1}, "yellow", ("MEDIUM_RISK_REGION",)),
    ],
)
def test_each_rule(features: dict[str, object], color: str, reasons: tuple[str, ...]) -> None:
    check(subject(**features), color, reasons)


def test_no_feature_is_green() -> None:
    check(subject(), "green", ())
    assert POLICY.assess(subject(), AT).until is None


@pytest.mark.parametrize(
    "feature",
    [
        "same_household",
        "same_carriage",
        "same_room_night",
        "same_trip",
        "same_hotel_night",
        "high_risk_region_days",
        "medium_risk_region_days",
    ],
)
def test_count_threshold_boundary_at_one(feature: str) -> None:
    check(subject(**{feature: 0}), "green", ())
    assert POLICY.assess(subject(**{feature: 1}), AT).color != "green"


def test_cell_hours_boundaries() -> None:
    check(subject(shared_cell_hours=0), "green", ())
    check(subject(shared_cell_hours=1), "yellow", ("CELL_HOUR",))
    check(subject(shared_cell_hours=2), "red", ("CELL_HOURS",))
    check(subject(shared_cell_hours=40), "red", ("CELL_HOURS",))


def test_red_wins_and_collects_every_red_reason() -> None:
    row = subject(same_household=1, same_carriage=2, same_trip=1, medium_risk_region_days=3)
    check(row, "red", ("HOUSEHOLD", "SAME_CARRIAGE"))


def test_several_yellow_reasons() -> None:
    check(subject(same_trip=1, same_hotel_night=2), "yellow", ("SAME_TRIP", "SAME_HOTEL"))


@pytest.mark.parametrize(("days", "color"), [(14, "red"), (15, "green")])
def test_red_quarantine_boundary(days: int, color: str) -> None:
    row = subject(same_carriage=1, last_exposure=AT - dt.timedelta(days=days))
    check(row, color, ("SAME_CARRIAGE",) if color == "red" else ())


@pytest.mark.parametrize(("days", "color"), [(7, "yellow"), (8, "green")])
def test_yellow_quarantine_boundary(days: int, color: str) -> None:
    row = subject(same_trip=1, last_exposure=AT - dt.timedelta(days=days))
    check(row, color, ("SAME_TRIP",) if color == "yellow" else ())


def test_case_quarantine_boundary() -> None:
    row = subject(is_case=True, last_exposure=AT - dt.timedelta(days=14))
    check(row, "red", ("CASE",))
    check(row, "green", (), at=AT + dt.timedelta(days=1))


def test_until_is_last_quarantine_day() -> None:
    assert POLICY.assess(subject(same_carriage=1), AT).until == EXPOSED + dt.timedelta(days=14)
    assert POLICY.assess(subject(same_trip=1), AT).until == EXPOSED + dt.timedelta(days=7)


def test_frame_of_many_subjects_keeps_order() -> None:
    rows = [subject(), subject(same_trip=1), subject(same_carriage=1)]
    frame = pd.DataFrame([{"subject_id": str(i), **r} for i, r in enumerate(rows)])
    out = POLICY.assess_frame(frame, AT)
    assert list(out["subject_id"]) == ["0", "1", "2"]
    assert list(out["color"]) == ["green", "yellow", "red"]


def test_worse() -> None:
    assert worse("red", "yellow") and worse("yellow", "green")
    assert not worse("green", "red") and not worse("red", "red")


def test_policies_have_a_version() -> None:
    assert POLICY.version and Policy.load().version


def rule_text(**fields: object) -> str:
    """A one-rule policy document with the given rule fields (a valid rule unless overridden)."""
    rule: dict[str, object] = {
        "reason": "X",
        "feature": "same_trip",
        "min": 1,
        "color": "red",
        "quarantine_days": 1,
    }
    rule.update(fields)
    body = "\n".join(f"{k} = {v!r}".replace("'", '"') for k, v in rule.items() if v is not None)
    return f'version = "v"\n[[rules]]\n{body}\n'


@pytest.mark.parametrize(
    ("text", "message"),
    [
        (rule_text(feature="nope"), "unknown feature"),
        (rule_text(color="blue"), "colour"),
        (rule_text(quarantine_days=-1), "quarantine_days"),
        (rule_text(min=None), "min"),
        (rule_text(min=2, max=1), "max"),
        (rule_text(extra=1), "unknown keys"),
        ("[[rules]]\nreason='X'", "version"),
        ('version = "v"', "rules"),
        ("version = ", "cannot read"),
    ],
)
def test_bad_policy_files_are_named(tmp_path: Path, text: str, message: str) -> None:
    path = tmp_path / "p.toml"
    path.write_text(text)
    with pytest.raises(PolicyError, match=message):
        Policy.load(path)


def test_valid_rule_text_loads(tmp_path: Path) -> None:
    path = tmp_path / "p.toml"
    path.write_text(rule_text())
    assert Policy.load(path).rules[0].reason == "X"


GRADED = Policy.load()


@pytest.mark.parametrize(
    ("hours", "color", "reasons", "days"),
    [
        (0, "green", (), None),
        (1, "yellow", ("CELL_HOUR",), 5),
        (2, "yellow", ("CELL_HOURS",), 9),
        (5, "yellow", ("CELL_HOURS",), 9),
        (6, "red", ("LONG_CELL_HOURS",), 11),
        (24, "red", ("LONG_CELL_HOURS",), 11),
        (25, "yellow", ("SAME_CELL_DAYS",), 5),
    ],
)
def test_default_policy_grades_cell_hours(
    hours: int, color: str, reasons: tuple[str, ...], days: int | None
) -> None:
    verdict = GRADED.assess(subject(shared_cell_hours=hours), AT)
    assert (verdict.color, verdict.reasons) == (color, reasons)
    assert verdict.until == (None if days is None else EXPOSED + dt.timedelta(days=days))


def test_default_policy_keeps_close_contacts_red_for_14_days() -> None:
    for feature in ("is_case", "same_household", "same_room_night", "same_carriage", "high_risk_region_days"):
        verdict = GRADED.assess(subject(**{feature: 1}), AT)
        assert verdict.color == "red" and verdict.until == EXPOSED + dt.timedelta(days=14), feature
    assert GRADED.assess(subject(medium_risk_region_days=2), AT).until == EXPOSED + dt.timedelta(days=3)


def test_default_policy_long_contact_ends_after_11_days() -> None:
    row = subject(shared_cell_hours=8, last_exposure=AT - dt.timedelta(days=11))
    assert GRADED.assess(row, AT).color == "red"
    assert GRADED.assess(row, AT + dt.timedelta(days=1)).color == "green"
