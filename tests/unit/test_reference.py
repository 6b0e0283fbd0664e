"""The risk-set rule and the plaintext oracle, on a tiny hand-built RUN whose matches are known."""

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

from healthpsi.cli import app
from proto import ids
from proto.risk import RiskSetError, risk_tokens, window
from proto.schemas import SCHEMAS
from runctx.parquet import write_table
from simulation.reference import ReferenceError, reference_matches

A, B, C, D, E = (ids.from_int(41120219900101001 + 2 * i) for i in range(5))
AS_OF = dt.date(2020, 1, 31)


def _table(name: str, columns: dict[str, list[object]]) -> pa.Table:
    schema = SCHEMAS[name]
    n = len(next(iter(columns.values())))
    return pa.table([pa.array(columns.get(f.name, [None] * n), f.type) for f in schema], schema=schema)


def ts(text: str) -> np.datetime64:
    return np.datetime64(text, "s")


def d(text: str) -> dt.date:
    return dt.date.fromisoformat(text)


@pytest.fixture()
def run(tmp_path: Path) -> Path:
    """A RUN with five people, two cases and one of every kind of match (and of non-match)."""
    (tmp_path / "scenario.json").write_text(
        json.dumps({"preset": "tiny", "seed": 1, "persons": 4, "as_of": AS_OF.isoformat(), "window_days": 14})
    )
    write_table(
        tmp_path / "data/carrier/cells.parquet",
        _table(
            "cells",
            {
                "cell_id": [1, 2, 3],
                "region_code": ["411202", "411202", "420100"],
                "x_km": [0, 1, 500],
                "y_km": [0, 0, 0],
            },
        ),
    )
    stays = [
        (A, 1, "2020-01-20T08:00", "2020-01-20T10:00"),
        (B, 1, "2020-01-20T09:50", "2020-01-20T12:00"),  # 10 minutes of A's 09h; and the 10h and 11h
        (C, 1, "2020-01-20T08:51", "2020-01-20T09:00"),  # 9 minutes: no cell-hour
        (B[:17] + ("1" if B[17] == "0" else "0"), 1, "2020-01-20T08:00", "2020-01-20T09:00"),  # malformed
        (D, 3, "2020-01-18T20:00", "2020-01-19T02:00"),  # high-risk region, 240 and 120 minutes
        (E, 3, "2020-01-17T23:00", "2020-01-18T01:59"),  # 119 minutes in the window: none
        (B, 2, "2020-01-21T10:00", "2020-01-21T12:00"),  # the medium-risk region's first day
    ]
    write_table(
        tmp_path / "data/carrier/stays.parquet",
        _table(
            "stays",
            {
                "subject_id": [s[0] for s in stays],
                "cell_id": [s[1] for s in stays],
                "start": [ts(s[2]) for s in stays],
                "end": [ts(s[3]) for s in stays],
            },
        ),
    )
    write_table(
        tmp_path / "data/transport/tickets.parquet",
        _table(
            "tickets",
            {
                "subject_id": [A, B, C],
                "trip_id": ["G123"] * 3,
                "service_date": [d("2020-01-19")] * 3,
                "carriage": [3, 3, 5],
                "seat": ["01A", "01B", "09C"],
                "origin": ["420100"] * 3,
                "destination": ["411202"] * 3,
                "depart": [ts("2020-01-19T08:00")] * 3,
                "arrive": [ts("2020-01-19T12:00")] * 3,
            },
        ),
    )
    write_table(
        tmp_path / "data/police/population.parquet",
        _table(
            "population",
            {
                "subject_id": [A, B, C, D],
                "name": ["张三", "李四", "王五", "赵六"],
                "birth_date": [d("1990-01-01"), d("1991-01-01"), d("1992-01-01"), d("1993-01-01")],
                "household_id": ["H1", "H1", "H2", "H3"],
            },
        ),
    )
    write_table(tmp_path / "data/police/declarations.parquet", SCHEMAS["declarations"].empty_table())
    write_table(tmp_path / "data/venues/checkins.parquet", SCHEMAS["checkins"].empty_table())
    write_table(
        tmp_path / "data/police/hotel_stays.parquet",
        _table(
            "hotel_stays",
            {
                "subject_id": [A, C, E],
                "hotel_id": ["X9", "X9", "X9"],
                "room": ["201", "305", "201"],
                "check_in": [d("2020-01-20"), d("2020-01-21"), d("2020-01-21")],
                "nights": [2, 1, 0],
            },
        ),
    )
    write_table(
        tmp_path / "health/cases.parquet",
        _table(
            "cases",
            {
                "case_id": ["C1", "C2"],
                "subject_id": [A, C],
                "status": ["confirmed", "suspected"],
                "onset_date": [d("2020-01-21"), d("2020-01-22")],
                "report_date": [d("2020-01-23"), d("2020-01-24")],
            },
        ),
    )
    inv = [
        ("C1", "cell-hour|1|2020-01-20T08"),
        ("C1", "cell-hour|1|2020-01-20T09"),
        ("C1", "cell-hour|1|2020-01-10T09"),  # outside the window
        ("C1", "trip|G123|2020-01-19"),
        ("C1", "carriage|G123|2020-01-19|3"),
        ("C1", "household|H1"),
        ("C1", "hotel-night|X9|2020-01-21"),
        ("C1", "room-night|X9|201|2020-01-21"),
        ("C1", f"identity|{D}|赵六|1993-01-01"),
        ("C2", "cell-hour|1|2020-01-20T10"),
        ("C2", "trip|G123|2020-01-19"),
    ]
    write_table(
        tmp_path / "health/investigations.parquet",
        _table(
            "investigations",
            {
                "case_id": [i[0] for i in inv],
                "token": [i[1] for i in inv],
                "recorded_on": [d("2020-01-23") if i[0] == "C1" else d("2020-01-24") for i in inv],
            },
        ),
    )
    write_table(
        tmp_path / "health/risk_regions.parquet",
        _table(
            "risk_regions",
            {
                "region_code": ["420100", "411202"],
                "level": ["high", "medium"],
                "from_date": [d("2019-12-01"), d("2020-01-21")],
                "to_date": [d("2020-01-31"), d("2020-01-31")],
            },
        ),
    )
    return tmp_path


EXPECTED = [
    (A, "transport", "trip|G123|2020-01-19", "C2"),
    (B, "carrier", "cell-hour|1|2020-01-20T09", "C1"),
    (B, "carrier", "cell-hour|1|2020-01-20T10", "C2"),
    (B, "carrier", "region-day|411202|2020-01-21", None),
    (B, "police", "household|H1", "C1"),
    (B, "transport", "carriage|G123|2020-01-19|3", "C1"),
    (B, "transport", "trip|G123|2020-01-19", "C1"),
    (B, "transport", "trip|G123|2020-01-19", "C2"),
    (C, "police", "hotel-night|X9|2020-01-21", "C1"),
    (C, "transport", "trip|G123|2020-01-19", "C1"),
    (D, "carrier", "region-day|420100|2020-01-18", None),
    (D, "carrier", "region-day|420100|2020-01-19", None),
    (D, "police", f"identity|{D}|赵六|1993-01-01", "C1"),
]


def test_oracle_on_a_known_run(run: Path) -> None:
    matches = reference_matches(run)
    got = [tuple(None if pd.isna(v) else v for v in row) for row in matches.itertuples(index=False)]
    assert got == sorted(EXPECTED, key=lambda r: (r[0], r[1], r[2], r[3] or "\uffff"))
    table = pq.read_table(run / "reference" / "matches.parquet")
    assert table.schema.equals(SCHEMAS["matches"])
    assert table.to_pylist()[3] == {
        "subject_id": B,
        "agency": "carrier",
        "token": "region-day|411202|2020-01-21",
        "case_id": None,
    }


def test_reference_command(run: Path) -> None:
    result = CliRunner().invoke(app, ["reference", "--run", str(run)], env={"COLUMNS": "200"})
    assert result.exit_code == 0, result.output
    assert "13" in result.output and "bad_subject_id 1" in result.output and "bad_nights 1" in result.output
    assert (run / "reference" / "matches.parquet").is_file()
    missing = CliRunner().invoke(app, ["reference", "--run", str(run / "nowhere")], env={"COLUMNS": "200"})
    assert missing.exit_code == 2
    assert "does not exist" in missing.output and "healthpsi simulate" in missing.output


def test_missing_scenario(tmp_path: Path) -> None:
    with pytest.raises(ReferenceError, match=r"scenario\.json"):
        reference_matches(tmp_path)


def test_risk_tokens_window_static_and_regions(run: Path) -> None:
    cases = pd.read_parquet(run / "health/cases.parquet")
    inv = pd.read_parquet(run / "health/investigations.parquet")
    regions = pd.read_parquet(run / "health/risk_regions.parquet")
    risk = risk_tokens(inv, regions, cases, AS_OF, 14)
    assert list(risk.columns) == ["token", "case_id", "case_subject_id", "partition_id", "agency", "kind"]
    assert "cell-hour|1|2020-01-10T09" not in set(risk.token)
    assert window(AS_OF, 14) == (d("2020-01-18"), AS_OF)
    region = risk[risk.kind == "region-day"]
    assert region.case_id.isna().all() and region.case_subject_id.isna().all()
    assert len(region[region.token.str.contains("420100")]) == 14
    assert len(region[region.token.str.contains("411202")]) == 11
    household = risk[risk.token == "household|H1"].iloc[0]
    assert (household.case_id, household.case_subject_id, household.partition_id, household.agency) == (
        "C1",
        A,
        "household@static",
        "police",
    )
    assert len(risk[risk.token == "trip|G123|2020-01-19"]) == 2
    rows = list(zip(risk.partition_id, risk.token, risk.case_id.fillna("\uffff"), strict=True))
    assert rows == sorted(rows)
    shorter = risk_tokens(inv, regions, cases, AS_OF, 3)
    assert set(shorter.kind) == {"region-day", "household", "identity"}  # static tokens name no day


def test_risk_tokens_rejects_bad_records(run: Path) -> None:
    cases = pd.read_parquet(run / "health/cases.parquet")
    regions = pd.read_parquet(run / "health/risk_regions.parquet")
    with pytest.raises(RiskSetError, match="unknown case"):
        risk_tokens(pd.DataFrame({"case_id": ["C9"], "token": ["household|H1"]}), regions, cases, AS_OF, 14)
    with pytest.raises(RiskSetError, match="malformed"):
        risk_tokens(pd.DataFrame({"case_id": ["C1"], "token": ["cell-hour|1"]}), regions, cases, AS_OF, 14)
    with pytest.raises(RiskSetError, match="window_days"):
        risk_tokens(pd.DataFrame({"case_id": [], "token": []}), regions, cases, AS_OF, 0)
