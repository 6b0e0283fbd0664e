"""The oracle as of each epoch date, on a tiny hand-made two-day RUN whose answer per day is worked out by
hand: only health records known by the date, only agency rows delivered by it, the 14 days ending on it."""

from __future__ import annotations

import datetime as dt
import json
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from typer.testing import CliRunner

from coordinator.risk import Health, build_risk_set
from healthpsi.cli import app
from proto import ids, layout
from proto.schemas import SCHEMAS
from runctx.parquet import write_table
from simulation.reference import compute_reference, epoch_dates

A, B, C, D, E = (ids.from_int(41120219900101001 + 2 * i) for i in range(5))
JAN31, FEB1 = dt.date(2020, 1, 31), dt.date(2020, 2, 1)


def table(name: str, columns: dict[str, list[object]]) -> pa.Table:
    """A table of a contract schema; columns not given are null."""
    n = len(next(iter(columns.values())))
    schema = SCHEMAS[name]
    return pa.table([pa.array(columns.get(f.name, [None] * n), f.type) for f in schema], schema=schema)


def stay_file(run: Path, day: dt.date, delivered: dt.date, rows: list[tuple[str, str, str]]) -> None:
    """One delivery of carrier stays (subject, start, end) at cell 1, for `day`."""
    path = run / "data/carrier/stays" / layout.day_directory(day) / layout.delivery_name(delivered)
    write_table(
        path,
        table(
            "stays",
            {
                "subject_id": [r[0] for r in rows],
                "cell_id": [1] * len(rows),
                "start": [np.datetime64(r[1], "s") for r in rows],
                "end": [np.datetime64(r[2], "s") for r in rows],
            },
        ),
    )


@pytest.fixture()
def run(tmp_path: Path) -> Path:
    """Two epochs, 2020-01-31 and 2020-02-01. Case C1 (subject A) is reported on the 31st; case C2 (subject
    D) on 1 February. One of C1's investigation tokens, its household, is recorded only on 1 February;
    C's stay of the 31st is delivered a day late; a risk region is listed on 1 February."""
    scenario = {
        "preset": "tiny",
        "seed": 1,
        "persons": 5,
        "as_of": "2020-01-31",
        "days": 2,
        "window_days": 14,
    }
    (tmp_path / "scenario.json").write_text(json.dumps(scenario))
    write_table(
        tmp_path / "data/carrier/cells.parquet",
        table("cells", {"cell_id": [1], "region_code": ["411202"], "x_km": [0.0], "y_km": [0.0]}),
    )
    stay_file(
        tmp_path, dt.date(2020, 1, 18), dt.date(2020, 1, 18), [(B, "2020-01-18T09:00", "2020-01-18T10:00")]
    )
    stay_file(
        tmp_path,
        JAN31,
        JAN31,
        [(A, "2020-01-31T09:00", "2020-01-31T10:00"), (B, "2020-01-31T09:00", "2020-01-31T10:00")],
    )
    stay_file(tmp_path, JAN31, FEB1, [(C, "2020-01-31T09:00", "2020-01-31T10:00")])  # late
    stay_file(
        tmp_path,
        FEB1,
        FEB1,
        [(B, "2020-02-01T12:00", "2020-02-01T13:00"), (E, "2020-02-01T08:00", "2020-02-01T11:00")],
    )
    write_table(tmp_path / "data/transport/tickets.parquet", SCHEMAS["tickets"].empty_table())
    write_table(tmp_path / "data/police/hotel_stays.parquet", SCHEMAS["hotel_stays"].empty_table())
    write_table(tmp_path / "data/police/declarations.parquet", SCHEMAS["declarations"].empty_table())
    write_table(tmp_path / "data/venues/checkins.parquet", SCHEMAS["checkins"].empty_table())
    write_table(
        tmp_path / "data/police/population.parquet",
        table(
            "population",
            {
                "subject_id": [A, B],
                "name": ["张三", "李四"],
                "birth_date": [dt.date(1990, 1, 1), dt.date(1991, 1, 1)],
                "household_id": ["H1", "H1"],
            },
        ),
    )
    write_table(
        tmp_path / "health/cases.parquet",
        table(
            "cases",
            {
                "case_id": ["C1", "C2"],
                "subject_id": [A, D],
                "status": ["confirmed", "confirmed"],
                "onset_date": [dt.date(2020, 1, 29), dt.date(2020, 1, 30)],
                "report_date": [JAN31, FEB1],
            },
        ),
    )
    inv = [
        ("C1", "cell-hour|1|2020-01-31T09", JAN31),
        ("C1", "cell-hour|1|2020-01-18T09", JAN31),  # in the window of the 31st only
        ("C1", "household|H1", FEB1),  # recorded a day later
        ("C2", "cell-hour|1|2020-02-01T12", FEB1),
    ]
    write_table(
        tmp_path / "health/investigations.parquet",
        table(
            "investigations",
            {
                "case_id": [i[0] for i in inv],
                "token": [i[1] for i in inv],
                "recorded_on": [i[2] for i in inv],
            },
        ),
    )
    write_table(
        tmp_path / "health/risk_regions.parquet",
        table(
            "risk_regions",
            {"region_code": ["411202"], "level": ["medium"], "from_date": [FEB1], "to_date": [FEB1]},
        ),
    )
    return tmp_path


JAN31_MATCHES = [
    (B, "carrier", "cell-hour|1|2020-01-18T09", "C1"),
    (B, "carrier", "cell-hour|1|2020-01-31T09", "C1"),
]
FEB1_MATCHES = [
    (B, "carrier", "cell-hour|1|2020-01-31T09", "C1"),
    (B, "carrier", "cell-hour|1|2020-02-01T12", "C2"),
    (B, "police", "household|H1", "C1"),
    (C, "carrier", "cell-hour|1|2020-01-31T09", "C1"),  # delivered on 1 February
    (E, "carrier", "region-day|411202|2020-02-01", None),  # 180 minutes in the region listed that day
]


def rows(frame: pa.Table) -> list[tuple[object, ...]]:
    """A matches table as tuples."""
    return [tuple(r.values()) for r in frame.to_pylist()]


def test_the_oracle_of_each_day_uses_what_was_known_that_day(run: Path) -> None:
    assert epoch_dates(run) == [JAN31, FEB1]
    assert rows(compute_reference(run, as_of=JAN31).table) == JAN31_MATCHES
    assert rows(compute_reference(run).table) == JAN31_MATCHES  # the scenario's first epoch by default
    assert rows(compute_reference(run, as_of=FEB1).table) == FEB1_MATCHES


def test_the_coordinators_risk_set_is_the_days_own(run: Path) -> None:
    health = Health(
        *(pd.read_parquet(run / f"health/{n}.parquet") for n in ("cases", "investigations", "risk_regions"))
    )
    jan31 = build_risk_set(health, JAN31, 14).rows
    assert sorted(jan31["token"]) == ["cell-hour|1|2020-01-18T09", "cell-hour|1|2020-01-31T09"]
    feb1 = build_risk_set(health, FEB1, 14).rows
    assert set(feb1["case_id"].dropna()) == {"C1", "C2"}
    assert "household|H1" in set(feb1["token"]) and "cell-hour|1|2020-01-18T09" not in set(feb1["token"])


def test_reference_command_writes_each_epoch_and_the_latest(run: Path) -> None:
    result = CliRunner().invoke(app, ["reference", "--run", str(run)], env={"COLUMNS": "200"})
    assert result.exit_code == 0, result.output
    epochs = run / "reference" / "epochs"
    assert sorted(p.name for p in epochs.iterdir()) == ["2020-01-31", "2020-02-01"]
    assert rows(pq.read_table(epochs / "2020-01-31" / "matches.parquet")) == JAN31_MATCHES
    assert rows(pq.read_table(epochs / "2020-02-01" / "matches.parquet")) == FEB1_MATCHES
    assert rows(pq.read_table(run / "reference" / "matches.parquet")) == FEB1_MATCHES

    one = CliRunner().invoke(app, ["reference", "--run", str(run), "--as-of", "2020-01-31"])
    assert one.exit_code == 0, one.output
    assert rows(pq.read_table(run / "reference" / "matches.parquet")) == JAN31_MATCHES
    bad = CliRunner().invoke(app, ["reference", "--run", str(run), "--as-of", "31/01/2020"])
    assert bad.exit_code == 2 and "--as-of" in bad.output
