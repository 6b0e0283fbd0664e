"""`simulate --days 3`: the window and two more days, data as it arrives (a few percent of rows late), health
records dated by when they became known, and applicants as the design's schema has them."""

from __future__ import annotations

import datetime as dt
import json
from pathlib import Path

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from typer.testing import CliRunner

from healthpsi.cli import app
from nodes.store import AgencyStore
from proto import layout
from simulation.reference import compute_reference

AS_OF, LAST = dt.date(2020, 1, 31), dt.date(2020, 2, 2)
FIRST = dt.date(2020, 1, 18)
DATASETS = {"carrier": "stays", "transport": "tickets", "police": "hotel_stays", "venues": "checkins"}


@pytest.fixture(scope="module")
def run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("days") / "run"
    cmd = [
        "simulate",
        "--preset",
        "city-20k",
        "--seed",
        "5",
        "--persons",
        "1500",
        "--days",
        "3",
        "--out",
        str(out),
    ]
    result = CliRunner().invoke(app, cmd, env={"COLUMNS": "200"})
    assert result.exit_code == 0, result.output
    assert "late carrier/stays" in result.output
    return out


@pytest.fixture(scope="module")
def scenario(run: Path) -> dict[str, object]:
    return json.loads((run / "scenario.json").read_text(encoding="utf-8"))


def test_scenario_names_the_epochs_and_the_late_rows(scenario: dict[str, object]) -> None:
    assert (scenario["as_of"], scenario["days"], scenario["window_days"]) == ("2020-01-31", 3, 14)
    assert scenario["late_rate"] == 0.03
    late = scenario["late"]
    assert isinstance(late, dict) and set(late) == {
        "carrier/stays",
        "transport/tickets",
        "police/hotel_stays",
        "police/declarations",
        "venues/checkins",
    }
    stays = late["carrier/stays"]
    assert 0.015 < (stays["late"] + stays["undelivered"]) / stays["rows"] < 0.05


def test_agency_data_is_partitioned_by_day_and_a_few_percent_arrive_late(
    run: Path, scenario: dict[str, object]
) -> None:
    for agency, name in DATASETS.items():
        assert not (run / "data" / agency / f"{name}.parquet").exists()
        files = layout.dataset_files(run / "data" / agency, name)
        assert files and all(f.delivered is not None and f.day is not None for f in files)
        assert all(f.day <= f.delivered <= LAST for f in files)  # type: ignore[operator]
        assert all((f.delivered - f.day).days <= 2 for f in files)  # type: ignore[operator]
    stays = layout.dataset_files(run / "data/carrier", "stays")
    assert {f.day for f in stays} == {FIRST + dt.timedelta(days=i) for i in range(16)}
    rows = {f.path: pq.ParquetFile(f.path).metadata.num_rows for f in stays}
    late = sum(n for f in stays if f.delivered != f.day for n in [rows[f.path]])
    assert late == scenario["late"]["carrier/stays"]["late"]  # type: ignore[index]
    assert 0.01 < late / sum(rows.values()) < 0.05
    assert {(f.delivered - f.day).days for f in stays} == {0, 1, 2}  # type: ignore[operator]


def test_a_node_on_each_day_sees_more_of_the_data(run: Path) -> None:
    seen = [AgencyStore(run, "carrier", AS_OF + dt.timedelta(days=i)).good_rows["stays"] for i in range(3)]
    assert seen[0] < seen[1] < seen[2]


def test_health_records_carry_when_they_became_known(run: Path) -> None:
    cases = pd.read_parquet(run / "health/cases.parquet")
    assert (cases["report_date"] <= LAST).all() and (cases["report_date"] >= FIRST).all()
    inv = pd.read_parquet(run / "health/investigations.parquet").merge(cases, on="case_id")
    assert (inv["recorded_on"] >= inv["report_date"]).all() and (inv["recorded_on"] <= LAST).all()
    assert (inv["recorded_on"] > inv["report_date"]).any()
    regions = pd.read_parquet(run / "health/risk_regions.parquet")
    assert (regions["to_date"] <= LAST).all() and (regions["from_date"] <= regions["to_date"]).all()
    assert (regions["to_date"] == LAST).any()


def test_applicants_have_the_designs_schema_and_apply_day_by_day(run: Path) -> None:
    schema = pq.read_schema(run / "health/applicants.parquet")
    assert schema.names == [
        "subject_id",
        "name",
        "birth_date",
        "phone",
        "applied_on",
        "symptoms",
        "applied_by",
    ]
    assert schema.field("applied_on").type == pa.date32()
    assert schema.field("symptoms").type == pa.list_(pa.string())
    applicants = pd.read_parquet(run / "health/applicants.parquet")
    assert applicants["subject_id"].is_unique
    assert applicants["applied_on"].between(AS_OF - dt.timedelta(days=6), LAST).all()
    assert (applicants["applied_on"] > AS_OF).any() and (applicants["applied_on"] <= AS_OF).mean() > 0.7
    assert applicants["phone"].str.fullmatch(r"1\d{10}").all()
    by_family = applicants[applicants["applied_by"].notna()]
    assert len(by_family) > 0
    population = pd.read_parquet(run / "data/police/population.parquet").set_index("subject_id")
    applier = population.loc[by_family["applied_by"]]
    assert (applier["phone"].to_numpy() == by_family["phone"].to_numpy()).all()
    assert (
        applier["household_id"].to_numpy() == population.loc[by_family["subject_id"], "household_id"]
    ).all()
    declared = applicants["symptoms"].map(len) > 0
    assert 0 < declared.sum() < 0.1 * len(applicants)


def test_the_oracle_changes_from_day_to_day(run: Path) -> None:
    answers = [compute_reference(run, as_of=AS_OF + dt.timedelta(days=i)).table for i in range(3)]
    assert all(a.num_rows > 0 for a in answers)
    assert answers[0].to_pylist() != answers[1].to_pylist() != answers[2].to_pylist()
