"""The run report's policy comparison: the default (active) policy beside the 2020 rules on the tiny
hand-written run of the policy what-if, with the figures `healthpsi policy evaluate` gives."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import pytest

from coordinator.policy import DEFAULT_POLICY, Policy
from healthpsi.policy import evaluate_policy
from runner.report import POLICY_2020, policy_comparison
from simulation.evaluation import RunTruth
from tests.unit.test_policy_evaluate import write_run

AS_OF = dt.date(2020, 1, 31)
RULES_2020 = "2020 rules (2020-default-1)"


@pytest.fixture
def run(tmp_path: Path) -> Path:
    return write_run(tmp_path / "run")


def rows(run: Path, as_of: dt.date = AS_OF, active: str | None = None) -> dict[str, dict[str, object]]:
    features = RunTruth.load(run).features
    return {str(r["policy"]): r for r in policy_comparison(run, features, as_of, active)}


def test_the_2020_rules_as_worked_out_by_hand(run: Path) -> None:
    row = rows(run)[RULES_2020]
    assert (row["red"], row["yellow"], row["green"]) == (4, 1, 5)  # S1 S2 S3 S6 red, S4 yellow
    assert (row["infected caught"], row["infections missed"]) == (2, 2)  # S1 S2 caught, S5 S9 missed
    assert row["sensitivity"] == "50.0%"
    assert row["quarantine days, uninfected"] == 8 + 5 + 14  # S3, S4, S6
    assert row["quarantine days, infected"] == 13 + 13  # S1, S2


def test_the_active_policy_is_named_and_equals_policy_evaluate(run: Path) -> None:
    default = Policy.load()
    found = rows(run, active=default.version)
    active = f"active ({default.version})"
    assert list(found) == [active, RULES_2020]
    for path, label in ((DEFAULT_POLICY, active), (POLICY_2020, RULES_2020)):
        m = evaluate_policy("p", Policy.load(path), [RunTruth.load(run)])["runs"][0]
        row = found[label]
        assert (row["red"], row["yellow"], row["green"]) == (m["red"], m["yellow"], m["green"])
        assert row["infections missed"] == m["infected"] - m["infected_flagged"]
        assert row["quarantine days, uninfected"] == m["quarantine_days_uninfected"]
    assert list(rows(run, active="another-1")) == [f"default ({default.version})", RULES_2020]


def test_a_later_day_counts_quarantine_from_its_own_issue_day(run: Path) -> None:
    row = rows(run, AS_OF + dt.timedelta(days=2))[RULES_2020]
    # issued on 02-03: S1 and S2 red until 02-13 (11 days each); S3 until 02-08 (6), S4 until 02-05 (3),
    # S6 until 02-14 (12)
    assert row["quarantine days, infected"] == 11 + 11
    assert row["quarantine days, uninfected"] == 6 + 3 + 12
