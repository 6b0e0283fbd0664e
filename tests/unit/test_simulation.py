"""The simulation: reproducible, files exactly as the design's data contracts, a plausible epidemic."""

from __future__ import annotations

import base64
import datetime as dt
import hashlib
import json
import re
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from typer.testing import CliRunner

from coordinator.features import compute_features
from coordinator.policy import Policy
from healthpsi.cli import app
from nodes.store import AgencyStore
from proto import ids, tokenize
from proto import tokens as tk
from proto.schemas import SCHEMAS
from simulation.epidemic import ROUTES, without_nights_at_base
from simulation.mobility import HOME, HOSPITAL, HOTEL, WORK
from simulation.presets import PresetError, get_preset
from simulation.reference import reference_matches
from simulation.scenario import simulate

PERSONS = 20_000
FILES = {
    "data/carrier/stays": "stays",
    "data/carrier/cells.parquet": "cells",
    "data/transport/tickets": "tickets",
    "data/police/population.parquet": "population",
    "data/police/hotel_stays": "hotel_stays",
    "health/cases.parquet": "cases",
    "health/investigations.parquet": "investigations",
    "health/risk_regions.parquet": "risk_regions",
    "truth/infections.parquet": "infections",
}
WINDOW = (dt.date(2020, 1, 18), dt.date(2020, 1, 31))


def _digests(run: Path) -> dict[str, str]:
    return {
        str(p.relative_to(run)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(run.rglob("*"))
        if p.is_file() and "reference" not in p.parts
    }


@pytest.fixture(scope="module")
def run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("sim") / "run"
    simulate("city-20k", 7, out, persons=PERSONS)
    return out


@pytest.fixture(scope="module")
def scenario(run: Path) -> dict[str, object]:
    return json.loads((run / "scenario.json").read_text(encoding="utf-8"))


def test_same_seed_gives_byte_identical_files_and_another_seed_another_city(
    run: Path, tmp_path: Path
) -> None:
    again = tmp_path / "again"
    simulate("city-20k", 7, again, persons=PERSONS)
    assert _digests(again) == _digests(run)
    other = tmp_path / "other"
    simulate("city-20k", 8, other, persons=PERSONS)
    first, second = _digests(run), _digests(other)
    folders = {name.rsplit("/", 1)[0] for name in first}
    assert folders == {name.rsplit("/", 1)[0] for name in second}  # the same tables and day partitions
    assert {name for name in first if "day=" not in name} == {name for name in second if "day=" not in name}
    national = "health/risk_regions.parquet"  # the list of risk regions outside the city is every seed's
    assert all(first[name] != second[name] for name in first.keys() & second.keys() if name != national)


def test_scenario_json(scenario: dict[str, object]) -> None:
    assert scenario["preset"] == "city-20k"
    assert scenario["seed"] == 7
    assert scenario["persons"] == PERSONS
    assert scenario["as_of"] == "2020-01-31"
    assert scenario["window_days"] == 14
    assert scenario["malformed_rate"] == 0.001
    assert scenario["recall"] == 0.9
    counts = scenario["counts"]
    assert isinstance(counts, dict)
    for key in ("persons", "stays", "tickets", "hotel_stays", "cases", "infections", "investigation_tokens"):
        assert counts[key] > 0, key


@pytest.mark.parametrize(("path", "schema"), FILES.items())
def test_files_have_the_contract_schemas(run: Path, path: str, schema: str) -> None:
    files = sorted((run / path).rglob("*.parquet")) if (run / path).is_dir() else [run / path]
    assert files
    for file in files:
        metadata = pq.ParquetFile(file).metadata.metadata
        assert set(metadata) == {b"ARROW:schema"}  # no pandas metadata, nothing run-dependent
        stored = pa.ipc.read_schema(pa.py_buffer(base64.b64decode(metadata[b"ARROW:schema"])))
        assert stored.equals(SCHEMAS[schema]), stored
        # Parquet has no seconds unit: timestamp[s] columns read back as naive timestamp[ms], whole minutes
        read = pq.read_schema(file)
        for field in SCHEMAS[schema]:
            expected = pa.timestamp("ms") if pa.types.is_timestamp(field.type) else field.type
            assert read.field(field.name).type == expected, field.name


def _rows(path: Path) -> int:
    """Rows in a single file or in every file of a day-partitioned directory."""
    files = sorted(path.rglob("*.parquet")) if path.is_dir() else [path]
    return sum(pq.ParquetFile(f).metadata.num_rows for f in files)


def test_population_ids_names_households(run: Path, scenario: dict[str, object]) -> None:
    pop = pd.read_parquet(run / "data/police/population.parquet")
    assert len(pop) == PERSONS
    malformed = scenario["malformed"]["police/population"]  # type: ignore[index]
    valid = ids.valid_mask(pop["subject_id"])
    assert (~valid).sum() == malformed["bad_subject_id"] + pop["subject_id"].isna().sum()
    good = pop[valid & pop["birth_date"].notna()]
    assert good["subject_id"].is_unique
    born = pd.to_datetime(good["birth_date"]).dt.strftime("%Y%m%d")
    assert (good["subject_id"].str[6:14] == born).all()
    assert good["subject_id"].str[:2].isin(["41", "42", "61", "11"]).all()
    names = pop["name"].dropna()
    assert names.map(lambda n: re.fullmatch(r"[\u4e00-\u9fff]{2,3}", n) is not None).all()
    sizes = pop.groupby("household_id").size()
    assert sizes.min() >= 1 and sizes.max() <= 6
    assert 2.0 < sizes.mean() < 3.5


def test_stays_one_directory_per_day_sorted_files_named_by_delivery(run: Path) -> None:
    days = sorted((run / "data/carrier/stays").iterdir())
    assert [d.name for d in days] == [f"day={WINDOW[0] + dt.timedelta(days=g)}" for g in range(14)]
    for directory in days:
        day = dt.date.fromisoformat(directory.name[4:])
        files = sorted(directory.iterdir())
        delivered = [dt.date.fromisoformat(f.name[:10]) for f in files]
        assert delivered[0] == day and all(0 <= (d - day).days <= 2 for d in delivered)
        assert all(d <= WINDOW[1] for d in delivered)  # nothing delivered after the run's last day
        for f in files:
            t = pq.read_table(f, columns=["start", "end"]).to_pandas()
            start = t["start"].dropna()
            assert start.is_monotonic_increasing
            assert set(start.dt.date) == {day}
            assert (t["end"].dropna() <= pd.Timestamp("2020-02-01")).all()
    cells = pd.read_parquet(run / "data/carrier/cells.parquet")
    assert cells["cell_id"].is_unique
    assert {"420100", "411202"} <= set(cells["region_code"])


def test_malformed_rows_are_injected_reported_and_good_rows_kept(
    run: Path, scenario: dict[str, object]
) -> None:
    injected = scenario["malformed"]
    assert isinstance(injected, dict)
    stays = injected["carrier/stays"]
    assert all(
        stays[c] > 0 for c in ("bad_subject_id", "end_not_after_start", "unknown_cell", "missing_value")
    )
    total = sum(stays.values())
    rows = _rows(run / "data/carrier/stays")
    assert rows == scenario["counts"]["stays"]  # type: ignore[index]
    assert 0.0005 < total / rows < 0.002
    for agency in tk.AGENCIES:
        store = AgencyStore(run, agency)
        found = store.malformed_by_dataset
        for dataset, counts in found.items():
            expected = injected[f"{agency}/{dataset}"]
            assert {k: v for k, v in counts.items() if v} == {k: v for k, v in expected.items() if v}
            single = run / "data" / agency / f"{dataset}.parquet"
            n = _rows(single if single.is_file() else run / "data" / agency / dataset)
            assert store.good_rows[dataset] == n - sum(expected.values())


def test_malformed_rate_is_configurable(tmp_path: Path) -> None:
    clean = simulate("city-20k", 3, tmp_path / "clean", persons=500, malformed_rate=0.0)
    assert all(n == 0 for counts in clean["malformed"].values() for n in counts.values())  # type: ignore[union-attr]
    dirty = simulate("city-20k", 3, tmp_path / "dirty", persons=500, malformed_rate=0.05)
    stays = dirty["malformed"]["carrier/stays"]  # type: ignore[index]
    assert 0.03 < sum(stays.values()) / dirty["counts"]["stays"] < 0.07  # type: ignore[index]
    with pytest.raises(ValueError, match="malformed_rate"):
        simulate("city-20k", 3, tmp_path / "bad", persons=500, malformed_rate=1.5)


def test_epidemic_cases_investigations_regions_truth(run: Path) -> None:
    cases = pd.read_parquet(run / "health/cases.parquet")
    assert len(cases) >= 5
    assert set(cases["status"]) == {"confirmed", "suspected"}
    assert cases["case_id"].is_unique and cases["subject_id"].is_unique
    assert ids.valid_mask(cases["subject_id"]).all()
    assert (cases["onset_date"] <= cases["report_date"]).all()
    assert cases["report_date"].between(WINDOW[0], WINDOW[1]).all()

    inv = pd.read_parquet(run / "health/investigations.parquet")
    assert set(inv["case_id"]) <= set(cases["case_id"])
    assert inv["case_id"].nunique() > len(cases) // 2
    parsed = [tk.parse(t) for t in inv["token"]]
    assert all(p.day is None or WINDOW[0] <= p.day <= WINDOW[1] for p in parsed)
    kinds = {p.kind for p in parsed}
    assert {"cell-hour", "household", "trip", "carriage", "hotel-night", "room-night"} <= kinds
    assert "region-day" not in kinds

    regions = pd.read_parquet(run / "health/risk_regions.parquet")
    assert regions[regions["level"] == "high"]["region_code"].tolist() == ["420100"]
    medium = regions[regions["level"] == "medium"]
    assert {"410100", "110100"} <= set(medium["region_code"])  # outside regions with an outbreak
    assert (medium["from_date"] <= medium["to_date"]).all()

    truth = pd.read_parquet(run / "truth/infections.parquet")
    assert ids.valid_mask(truth["subject_id"]).all() and truth["subject_id"].is_unique
    seeds = truth["infector_id"].isna()
    assert seeds.sum() > 0 and (~seeds).sum() > 0
    assert set(truth["infector_id"].dropna()) <= set(truth["subject_id"])
    confirmed_infected = set(cases[cases["status"] == "confirmed"]["subject_id"]) - set(truth["subject_id"])
    assert not confirmed_infected


def test_investigations_skip_nights_at_base_and_hospital_hours(run: Path) -> None:
    """An interview lists where a case went: no cell-hours of its nights at its base (22:00 to 06:00, when
    nobody is anywhere else) nor of its hours in hospital once reported; its evenings are listed."""
    inv = pd.read_parquet(run / "health/investigations.parquet")
    cell_hours = inv[inv["token"].str.startswith("cell-hour|")]
    parts = cell_hours["token"].str.split("|")
    hour = parts.str[2].str[11:13].astype(int)
    assert not hour.between(1, 5).any()
    assert hour.between(18, 21).any() and hour.between(6, 9).any()

    # reported before the window's last day, a case is in hospital from its report day to the end: the
    # cell of its last stay, from the first stay there on its report day
    cases = pd.read_parquet(run / "health/cases.parquet")
    stays = pd.read_parquet(run / "data/carrier/stays").drop(columns="day").dropna().sort_values("start")
    hospital = stays.groupby("subject_id").tail(1)[["subject_id", "cell_id"]]
    admitted = stays.merge(hospital, on=["subject_id", "cell_id"]).merge(cases, on="subject_id")
    on_report_day = admitted["start"].dt.date == admitted["report_date"]
    admitted = admitted[on_report_day & (admitted["report_date"] < WINDOW[1])]
    admitted = admitted.groupby(["case_id", "cell_id"], as_index=False)["start"].min()
    assert len(admitted) > 0
    listed = set(zip(cell_hours["case_id"], parts.str[1].astype(int), parts.str[2], strict=True))
    for case in admitted.itertuples():
        hours = pd.date_range(case.start.ceil("h"), case.start.normalize() + pd.Timedelta(days=1), freq="h")
        named = {(case.case_id, int(case.cell_id), h.strftime("%Y-%m-%dT%H")) for h in hours}
        assert not named & listed, case.case_id


def test_without_nights_at_base() -> None:
    sid = str(ids.from_int(41120219900101001))
    frame = pd.DataFrame(
        {
            "subject_id": [sid] * 4,
            "cell_id": np.array([1, 2, 3, 4], dtype=np.int32),
            "start": pd.to_datetime(
                ["2020-01-20 18:00", "2020-01-20 21:00", "2020-01-20 23:00", "2020-01-21 05:50"]
            ),
            "end": pd.to_datetime(
                ["2020-01-21 08:00", "2020-01-20 23:30", "2020-01-21 05:00", "2020-01-21 06:10"]
            ),
            "kind": np.array([HOME, WORK, HOTEL, HOME], dtype=np.int8),
        }
    )
    out = without_nights_at_base(frame)
    assert list(out.columns) == list(frame.columns)
    assert out[["cell_id", "start", "end"]].astype(str).values.tolist() == [
        ["1", "2020-01-20 18:00:00", "2020-01-20 22:00:00"],
        ["1", "2020-01-21 06:00:00", "2020-01-21 08:00:00"],
        ["2", "2020-01-20 21:00:00", "2020-01-20 23:30:00"],  # out late: listed whole
        ["4", "2020-01-21 06:00:00", "2020-01-21 06:10:00"],  # the night in the hotel is gone
    ]
    cells = pd.DataFrame({"cell_id": np.arange(1, 5, dtype=np.int32), "region_code": ["411202"] * 4})
    tokens = set(tokenize.stay_tokens(out.drop(columns="kind"), cells)["token"].astype(str))
    home = {t for t in tokens if t.startswith("cell-hour|1|")}
    assert home == {f"cell-hour|1|2020-01-20T{h}" for h in (18, 19, 20, 21)} | {
        "cell-hour|1|2020-01-21T06",
        "cell-hour|1|2020-01-21T07",
    }
    assert "cell-hour|4|2020-01-21T06" in tokens  # ten minutes exactly
    assert without_nights_at_base(frame[frame["kind"] == WORK]).equals(frame[frame["kind"] == WORK])
    assert HOSPITAL not in (HOME, HOTEL)


def test_matches_in_every_agency(run: Path) -> None:
    matches = reference_matches(run)
    kinds = set(matches["token"].str.split("|").str[0])
    assert set(matches["agency"]) == set(tk.AGENCIES)
    assert {"cell-hour", "region-day", "household", "hotel-night", "venue-hour"} <= kinds
    cases = pd.read_parquet(run / "health/cases.parquet")
    own = matches.merge(cases, on=["case_id", "subject_id"])
    assert own.empty


def test_presets() -> None:
    assert get_preset("sanmenxia").persons == 2_400_000
    assert get_preset("city-240k", persons=1000).persons == 1000
    with pytest.raises(PresetError):
        get_preset("atlantis")
    with pytest.raises(PresetError):
        get_preset("city-20k", persons=5)


def test_simulate_command(tmp_path: Path) -> None:
    runner = CliRunner()
    help_text = runner.invoke(app, ["simulate", "--help"], env={"COLUMNS": "200"}).output
    assert "Example" in help_text and "healthpsi simulate --preset city-20k" in help_text
    result = runner.invoke(
        app,
        ["simulate", "--preset", "city-20k", "--seed", "2", "--out", str(tmp_path / "r"), "--persons", "400"],
        env={"COLUMNS": "200"},
    )
    assert result.exit_code == 0, result.output
    assert "cases" in result.output and (tmp_path / "r" / "scenario.json").is_file()
    bad = runner.invoke(app, ["simulate", "--preset", "atlantis", "--out", str(tmp_path / "x")])
    assert bad.exit_code != 0


# ------------------------------------------------------------------ the calibrated outbreak of city-20k

CITY_SEEDS = range(1, 9)


@pytest.fixture(scope="module")
def cities(
    run: Path, scenario: dict[str, object], tmp_path_factory: pytest.TempPathFactory
) -> dict[int, tuple[Path, dict[str, object]]]:
    """The city-20k preset itself for seeds 1 to 8 (seed 7 is the module's run): (run, scenario) by seed."""
    root = tmp_path_factory.mktemp("cities")
    out = {
        seed: (root / str(seed), simulate("city-20k", seed, root / str(seed)))
        for seed in CITY_SEEDS
        if seed != 7
    }
    return {**out, 7: (run, scenario)}


@pytest.mark.slow
def test_outbreak_is_a_real_city_early_outbreak(cities: dict[int, tuple[Path, dict[str, object]]]) -> None:
    """A handful of imported cases and their first local transmissions, by every route over the seeds."""
    cases = [scenario["counts"]["cases"] for _, scenario in cities.values()]  # type: ignore[index]
    assert all(3 <= n <= 40 for n in cases), cases
    assert 8 <= np.median(cases) <= 25, cases
    routes = {name: 0 for name in ROUTES}
    for _, scenario in cities.values():
        transmission = scenario["transmission"]
        assert isinstance(transmission, dict) and set(transmission) == set(ROUTES)
        assert transmission["seed"] >= 3
        for name, n in transmission.items():
            routes[name] += n
    # carriages transmit as rarely as trains did in 2020 (about 0.2 % of fellow passengers): none may show
    assert all(routes[name] > 0 for name in ("household", "cell-hours", "room-night")), routes


def test_observed_rates_are_what_tracing_would_measure(
    cities: dict[int, tuple[Path, dict[str, object]]],
) -> None:
    """scenario.json's observed rates add up, agree with the routes, and sit near the calibration targets."""
    settings = ("household", "room-night", "visit", "carriage", "hospital", "market", "cell-hours")
    pooled = dict.fromkeys(settings, (0, 0))
    for run, scenario in cities.values():
        observed, transmission = scenario["observed"], scenario["transmission"]
        assert isinstance(observed, dict) and isinstance(transmission, dict)
        attack = observed["secondary_attack_rate"]
        assert set(attack) == {*settings, "named close contacts", "all close contacts"}
        for name in settings:
            contacts, infected = attack[name]["contacts"], attack[name]["infected"]
            assert 0 <= infected <= contacts and infected <= transmission[name]
            pooled[name] = (pooled[name][0] + contacts, pooled[name][1] + infected)
        total = attack["all close contacts"]
        assert total["contacts"] == sum(attack[name]["contacts"] for name in settings)
        assert total["infected"] == sum(attack[name]["infected"] for name in settings)
        infections = pd.read_parquet(run / "truth/infections.parquet")
        assert total["infected"] <= int(infections["infector_id"].notna().sum())
        assert observed["index_cases"] <= scenario["counts"]["cases"]  # type: ignore[index]
    contacts, infected = pooled["household"]
    assert contacts > 50 and 0.04 < infected / contacts < 0.25, pooled  # Bi, Luo: 11.2 %, 10.3 %
    contacts, infected = pooled["cell-hours"]
    assert infected / contacts < 0.02, pooled  # sharing a cell is not a close contact's metre


def test_default_policy_codes_a_minority_of_the_city(
    cities: dict[int, tuple[Path, dict[str, object]]],
) -> None:
    """With the default policy most of city-20k stays green and most of the infected do not."""
    run, scenario = cities[7]
    matches = reference_matches(run)
    assert set(matches["agency"]) == set(tk.AGENCIES)
    cases = pd.read_parquet(run / "health/cases.parquet")
    features = compute_features(matches, cases, pd.read_parquet(run / "health/risk_regions.parquet"))
    issued = dt.date.fromisoformat(str(scenario["as_of"])) + dt.timedelta(days=1)  # the next morning
    colours = Policy.load().assess_frame(features, issued).set_index("subject_id")["color"]
    population = pd.read_parquet(run / "data/police/population.parquet").dropna(subset=["subject_id"])
    colour = colours.reindex(population["subject_id"].unique()).fillna("green")
    flagged = colour != "green"
    infected = colour.index.isin(pd.read_parquet(run / "truth/infections.parquet")["subject_id"])
    assert 0.03 < flagged.mean() < 0.25, flagged.mean()
    assert (~flagged[~infected]).mean() > 0.75  # specificity
    assert flagged[infected].mean() > 0.6  # sensitivity
