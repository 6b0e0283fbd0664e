"""`healthpsi policy evaluate` and `sweep` on a tiny hand-written run whose figures are worked out by hand."""

from __future__ import annotations

import datetime as dt
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from typer.testing import CliRunner

from coordinator.features import SCHEMA, features_table
from coordinator.policy import DEFAULT_POLICY, Policy, PolicyError
from healthpsi.cli import app
from healthpsi.policy import evaluate_policy
from proto.schemas import SCHEMAS
from simulation.evaluation import RunTruth, pareto_best, summarise

POLICY_2020 = DEFAULT_POLICY.parent / "2020.toml"
D = dt.date
# subject: features (the rest zero), last exposure; the codes are issued on 2020-02-01
SUBJECTS = {
    "S1": ({"is_case": True}, D(2020, 1, 30)),  # red CASE until 02-13: 13 days
    "S2": ({"same_household": 1}, D(2020, 1, 30)),  # red HOUSEHOLD until 02-13: 13 days
    "S3": ({"shared_cell_hours": 3}, D(2020, 1, 25)),  # red CELL_HOURS until 02-08: 8 days
    "S4": ({"shared_cell_hours": 1}, D(2020, 1, 29)),  # yellow CELL_HOUR until 02-05: 5 days
    "S5": ({"same_trip": 1}, D(2020, 1, 20)),  # yellow for 7 days, over: green
    "S6": ({"shared_cell_hours": 2}, D(2020, 1, 31)),  # red CELL_HOURS until 02-14: 14 days
}
INFECTED = ("S1", "S2", "S5", "S9")  # S9 has no features: green
PERSONS = 10
GRADED = """
version = "graded"
[[rules]]
reason = "CASE"
feature = "is_case"
min = 1
color = "red"
quarantine_days = 14
[[rules]]
reason = "CELL_HOURS"
feature = "shared_cell_hours"
min = 3
color = "yellow"
quarantine_days = 7
"""


def write_run(run: Path) -> Path:
    """The three files a what-if reads: scenario.json, coordinator/features.parquet, truth/infections."""
    (run / "coordinator").mkdir(parents=True)
    (run / "truth").mkdir()
    (run / "scenario.json").write_text(json.dumps({"as_of": "2020-01-31", "persons": PERSONS, "visitors": 0}))
    rows = []
    for subject, (features, last) in SUBJECTS.items():
        row: dict[str, object] = {f.name: 0 for f in SCHEMA if f.name not in ("subject_id", "last_exposure")}
        row.update(is_case=False, case_status=None, subject_id=subject, last_exposure=last)
        row.update(features)
        rows.append(row)
    pq.write_table(features_table(pd.DataFrame(rows)), run / "coordinator" / "features.parquet")
    truth = pa.table(
        {
            "subject_id": list(INFECTED),
            "infected_at": pa.array([dt.datetime(2020, 1, 20, 8)] * len(INFECTED), pa.timestamp("s")),
            "infector_id": [None, "S1", "S1", "S1"],
        },
        schema=SCHEMAS["infections"],
    )
    pq.write_table(truth, run / "truth" / "infections.parquet")
    return run


@pytest.fixture
def run(tmp_path: Path) -> Path:
    return write_run(tmp_path / "run")


def metrics(run: Path, policy: Policy) -> dict[str, object]:
    return evaluate_policy("p", policy, [RunTruth.load(run)])["runs"][0]


def test_2020_rules_on_the_tiny_run(run: Path) -> None:
    m = metrics(run, Policy.load(POLICY_2020))
    assert m["issued_on"] == "2020-02-01"
    assert (m["red"], m["yellow"], m["green"], m["population"]) == (4, 1, 5, 10)  # S1 S2 S3 S6; S4
    assert (m["infected"], m["infected_flagged"], m["sensitivity"]) == (4, 2, 0.5)  # S1, S2
    assert m["contact_sensitivity"] == round(1 / 3, 4)  # S2 of S2, S5, S9
    assert (m["uninfected_flagged"], m["specificity"]) == (3, 0.5)  # S3 S4 S6 of six uninfected
    assert m["quarantine_days_uninfected"] == 8 + 5 + 14
    assert m["quarantine_days_infected"] == 13 + 13
    assert m["infected_per_1000_days"] == round(1000 * 2 / 53, 2)
    per_reason = m["per_reason"]
    assert isinstance(per_reason, dict)
    assert per_reason["CELL_HOURS"] == {
        "subjects": 2,
        "infected": 0,
        "quarantine_days_uninfected": 22,
        "quarantine_days_infected": 0,
        "infected_per_1000_days": 0.0,
    }
    assert per_reason["CASE"]["infected_per_1000_days"] == round(1000 / 13, 2)
    assert per_reason["CELL_HOUR"]["quarantine_days_uninfected"] == 5
    assert set(per_reason) == {"CASE", "HOUSEHOLD", "CELL_HOURS", "CELL_HOUR"}


def test_a_graded_policy_on_the_tiny_run(tmp_path: Path, run: Path) -> None:
    path = tmp_path / "graded.toml"
    path.write_text(GRADED)
    m = metrics(run, Policy.load(path))
    # S1 red 13 days; S3 (3 cell-hours, exposed 7 days before) yellow until 02-01: 1 day; the rest green
    assert (m["red"], m["yellow"], m["infected_flagged"], m["sensitivity"]) == (1, 1, 1, 0.25)
    assert (m["quarantine_days_uninfected"], m["quarantine_days_infected"]) == (1, 13)


def test_median_and_range_over_runs(tmp_path: Path, run: Path) -> None:
    other = shutil.copytree(run, tmp_path / "other")
    frame = pq.read_table(other / "truth" / "infections.parquet").slice(0, 1)  # only S1 infected
    pq.write_table(frame, other / "truth" / "infections.parquet")
    result = evaluate_policy("p", Policy.load(POLICY_2020), [RunTruth.load(run), RunTruth.load(other)])
    sens = result["summary"]["sensitivity"]
    assert sens == {"median": (0.5 + 1.0) / 2, "min": 0.5, "max": 1.0}
    assert result["summary"]["per_reason"]["HOUSEHOLD"]["infected"] == {"median": 0.5, "min": 0, "max": 1}


def test_summarise_and_pareto() -> None:
    assert summarise([{"a": 1, "b": None}, {"a": 3, "b": None}]) == {
        "a": {"median": 2, "min": 1, "max": 3},
        "b": None,
    }
    # (cost, gain): (1, .5) and (3, .9) are best; (2, .4) is beaten by (1, .5); (3, .8) by (3, .9)
    assert pareto_best([1, 2, 3, 3], [0.5, 0.4, 0.9, 0.8]) == [True, False, True, False]


def test_varied_policy_changes_only_the_named_rule() -> None:
    base = Policy.load(POLICY_2020)
    varied = base.varied("CELL_HOURS", min=4, quarantine_days=10)
    changed = [r for r in varied.rules if r.reason == "CELL_HOURS"]
    assert [(r.min, r.quarantine_days) for r in changed] == [(4.0, 10)]
    assert [r for r in varied.rules if r.reason != "CELL_HOURS"] == [
        r for r in base.rules if r.reason != "CELL_HOURS"
    ]
    assert varied.version == f"{base.version}+CELL_HOURS.min=4,CELL_HOURS.quarantine_days=10"
    with pytest.raises(PolicyError, match="no rule has reason"):
        base.varied("NOPE", min=1)
    with pytest.raises(PolicyError, match="max"):
        base.varied("CELL_HOUR", min=2)  # its max is 1


def cli(*args: str) -> subprocess.CompletedProcess[str]:
    """`healthpsi policy ...` as a separate process, as a person would run it."""
    return subprocess.run(
        [sys.executable, "-m", "healthpsi.cli", "policy", *args],
        capture_output=True,
        text=True,
        timeout=300,
        env={**os.environ, "COLUMNS": "200", "NO_COLOR": "1"},
    )


def invoke(*args: str) -> tuple[int, str]:
    """`healthpsi policy ...` in this process: exit code and output (stdout and stderr)."""
    result = CliRunner().invoke(app, ["policy", *args], env={"COLUMNS": "200", "NO_COLOR": "1"})
    return result.exit_code, result.output


def test_cli_evaluate_json_and_a_bad_option(tmp_path: Path, run: Path) -> None:
    done = cli(
        "evaluate", "--run", str(run), "--policy", str(POLICY_2020), "--policy", str(DEFAULT_POLICY), "--json"
    )
    assert done.returncode == 0, done.stderr
    report = json.loads(done.stdout)
    assert report["runs"] == [str(run)]
    assert [p["policy"] for p in report["policies"]] == [str(POLICY_2020), str(DEFAULT_POLICY)]
    first = report["policies"][0]
    assert {"policy", "version", "runs", "summary"} == set(first)
    assert first["runs"][0]["quarantine_days_uninfected"] == 27
    assert first["summary"]["sensitivity"] == {"median": 0.5, "min": 0.5, "max": 0.5}

    missing = cli("evaluate", "--run", str(tmp_path / "nowhere"))
    assert missing.returncode == 2 and "--run" in missing.stderr and "scenario.json" in missing.stderr


def test_cli_evaluate_tables_and_bad_policy(tmp_path: Path, run: Path) -> None:
    code, output = invoke("evaluate", "--run", str(run), "--run", str(run))
    assert code == 0 and "sensitivity" in output and "by reason" in output
    assert "50.0% (50.0%–50.0%)" in output  # median (range) over the two runs
    bad = tmp_path / "bad.toml"
    bad.write_text('version = "v"\n[[rules]]\nreason = "X"\nfeature = "nope"\nmin = 1\ncolor = "red"\n')
    code, output = invoke("evaluate", "--run", str(run), "--policy", str(bad))
    assert code == 2 and "--policy" in output and "unknown feature" in output


def test_cli_sweep_draws_the_curve_and_marks_the_best(tmp_path: Path, run: Path) -> None:
    png = tmp_path / "sweep.png"
    args = ("sweep", "--run", str(run), "--policy", str(POLICY_2020), "--rule", "CELL_HOURS")
    code, output = invoke(*args, "--min", "2..4", "--out", str(png), "--json")
    assert code == 0, output
    variants = json.loads(output)["variants"]
    assert [v["policy"] for v in variants] == [f"CELL_HOURS.min={m}" for m in (2, 3, 4)]
    # min 2: S3 and S6 red (22 days on the uninfected); min 3: S3 only (8); min 4: neither, same sensitivity
    costs = [v["summary"]["quarantine_days_uninfected"]["median"] for v in variants]
    assert costs == [27, 13, 5]
    assert [v["pareto_best"] for v in variants] == [False, False, True]
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"

    code, output = invoke(*args, "--min", "2,3", "--quarantine-days", "7..8", "--json")
    assert code == 0 and len(json.loads(output)["variants"]) == 4
    code, output = invoke(*args, "--min", "3")
    assert code == 0 and "★" in output

    for extra, option in (
        (("--min", "x..3"), "--min"),
        (("--min", "2..3", "--min", "1"), "--min"),
        (("--min", "2", "--out", str(tmp_path / "a.jpg")), "--out"),
        ((), "--min"),
    ):
        code, output = invoke(*args, *extra)
        assert code == 2 and option in output, (extra, output)
    code, output = invoke("sweep", "--run", str(run), "--rule", "NOPE", "--min", "1")
    assert code == 2 and "--rule" in output and "NOPE" in output
