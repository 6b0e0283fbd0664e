"""AgencyStore: agency files to partitions, one day at a time, malformed rows counted and skipped."""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pytest

from nodes.store import BODY_COLUMN, CATEGORIES, AgencyStore, StoreError, records
from proto import ids
from proto import tokens as tk
from proto.schemas import SCHEMAS
from runctx.parquet import write_table

A = ids.from_int(41120219900101001)
B = ids.from_int(41120219850505002)
BAD = A[:17] + ("0" if A[17] != "0" else "1")
WINDOW = (dt.date(2020, 1, 18), dt.date(2020, 1, 20))


def _stays_table(rows: list[tuple[str | None, int | None, str | None, str | None]]) -> pa.Table:
    def stamp(text: str | None) -> np.datetime64 | None:
        return None if text is None else np.datetime64(text, "s")

    return pa.table(
        [
            pa.array([r[0] for r in rows], pa.string()),
            pa.array([r[1] for r in rows], pa.int32()),
            pa.array([stamp(r[2]) for r in rows], pa.timestamp("s")),
            pa.array([stamp(r[3]) for r in rows], pa.timestamp("s")),
        ],
        schema=SCHEMAS["stays"],
    )


def _carrier(
    run: Path, rows: list[tuple[str | None, int | None, str | None, str | None]], by_day: bool
) -> None:
    cells = pa.table(
        [
            pa.array([1, 2], pa.int32()),
            pa.array(["411202", "420100"]),
            pa.array([0.0, 1.0], pa.float32()),
            pa.array([0.0, 0.0], pa.float32()),
        ],
        schema=SCHEMAS["cells"],
    )
    write_table(run / "data" / "carrier" / "cells.parquet", cells)
    table = _stays_table(rows)
    day = None
    if by_day:
        start = table["start"].cast(pa.int64()).fill_null(0).to_numpy() // 86400
        table = table.take(np.argsort(start, kind="stable"))
        day = np.sort(start)
    write_table(run / "data" / "carrier" / "stays.parquet", table, row_groups=day)


ROWS: list[tuple[str | None, int | None, str | None, str | None]] = [
    (A, 1, "2020-01-17T22:00", "2020-01-18T00:30"),  # before the window, into its first day
    (A, 1, "2020-01-18T08:00", "2020-01-18T09:00"),
    (B, 2, "2020-01-18T23:00", "2020-01-20T01:00"),  # across two midnights
    (A, 1, "2020-01-20T10:00", "2020-01-20T12:00"),
    (A, 1, "2020-01-21T10:00", "2020-01-21T12:00"),  # after the window
    (BAD, 1, "2020-01-18T08:00", "2020-01-18T09:00"),  # bad_subject_id
    (A, 1, "2020-01-18T09:00", "2020-01-18T09:00"),  # end_not_after_start
    (A, 7, "2020-01-19T09:00", "2020-01-19T10:00"),  # unknown_cell
    (A, None, "2020-01-19T09:00", "2020-01-19T10:00"),  # missing_value
    (BAD, 7, None, "2020-01-19T10:00"),  # missing_value first of all
]


def by_dataset_day(partitions: Iterable[tuple[str, pd.DataFrame]]) -> dict[str, set[tuple[str, str]]]:
    """Kind partitions as (subject, token) sets merged by "<dataset>@<day>", after checking that each holds
    tokens of its own kind only and that the kinds of a dataset day come together."""
    out: dict[str, set[tuple[str, str]]] = {}
    for pid, f in partitions:
        kind, day = tk.parse_partition_id(pid)
        rows = set(zip(f["subject_id"].astype(str), f["token"].astype(str), strict=True))
        assert all(token.startswith(kind + tk.SEP) for _, token in rows), pid
        out.setdefault(f"{tk.partition_dataset(pid)}@{day or tk.STATIC}", set()).update(rows)
    return out


def _partitions(store: AgencyStore) -> dict[str, set[tuple[str, str]]]:
    return by_dataset_day(store.iter_partitions(WINDOW))


def test_each_kind_is_its_own_partition(tmp_path: Path) -> None:
    _carrier(tmp_path, ROWS, True)
    store = AgencyStore(tmp_path, "carrier")
    days = ("2020-01-18", "2020-01-19", "2020-01-20")
    kinds = ("cell-hour", "region-day")
    assert store.partition_ids(WINDOW) == [f"{kind}@{day}" for day in days for kind in kinds]
    parts = dict(store.iter_partitions(WINDOW))
    assert list(parts) == store.partition_ids(WINDOW)
    assert set(parts["region-day@2020-01-19"]["token"].astype(str)) == {"region-day|420100|2020-01-19"}
    assert len(parts["region-day@2020-01-18"]) == 0 and len(parts["cell-hour@2020-01-18"]) == 3


@pytest.mark.parametrize("by_day", [True, False])
def test_carrier_partitions_carry_stays_across_midnight(tmp_path: Path, by_day: bool) -> None:
    _carrier(tmp_path, ROWS, by_day)
    store = AgencyStore(tmp_path, "carrier")
    parts = _partitions(store)
    assert list(parts) == ["stays@2020-01-18", "stays@2020-01-19", "stays@2020-01-20"]
    assert parts["stays@2020-01-18"] == {
        (A, "cell-hour|1|2020-01-18T00"),
        (A, "cell-hour|1|2020-01-18T08"),
        (B, "cell-hour|2|2020-01-18T23"),
    }
    assert parts["stays@2020-01-19"] == {(B, f"cell-hour|2|2020-01-19T{h:02d}") for h in range(24)} | {
        (B, "region-day|420100|2020-01-19")
    }
    assert parts["stays@2020-01-20"] == {
        (B, "cell-hour|2|2020-01-20T00"),
        (A, "cell-hour|1|2020-01-20T10"),
        (A, "cell-hour|1|2020-01-20T11"),
        (A, "region-day|411202|2020-01-20"),
    }
    assert store.malformed == dict.fromkeys(CATEGORIES, 0) | {
        "missing_value": 2,
        "bad_subject_id": 1,
        "end_not_after_start": 1,
        "unknown_cell": 1,
    }
    assert store.good_rows == {"stays": len(ROWS) - 5}


def test_empty_days_yield_empty_frames(tmp_path: Path) -> None:
    _carrier(tmp_path, [(A, 1, "2020-01-19T08:00", "2020-01-19T09:00")], by_day=True)
    frames = dict(AgencyStore(tmp_path, "carrier").iter_partitions(WINDOW))
    assert [len(f) for f in frames.values()] == [0, 0, 1, 0, 0, 0]  # cell-hour, region-day per day
    assert all(list(f.columns) == ["subject_id", "token"] for f in frames.values())


def test_malformed_counts_cover_rows_outside_the_window(tmp_path: Path) -> None:
    _carrier(tmp_path, [(BAD, 1, "2020-02-19T08:00", "2020-02-19T09:00")], by_day=True)
    store = AgencyStore(tmp_path, "carrier")
    assert all(len(f) == 0 for _, f in store.iter_partitions(WINDOW))
    assert store.malformed["bad_subject_id"] == 1
    assert store.malformed_by_dataset["stays"]["bad_subject_id"] == 1


def test_police_hotel_nights_and_population(tmp_path: Path) -> None:
    population = pa.table(
        [
            pa.array([A, B, BAD]),
            pa.array(["张三", "李四", "王五"]),
            pa.array([dt.date(1990, 1, 1), dt.date(1985, 5, 5), None], pa.date32()),
            pa.array(["H1", "H1", "H2"]),
            pa.array(["13500000001", None, "13900000003"]),
        ],
        schema=SCHEMAS["population"],
    )
    hotel = pa.table(
        [
            pa.array([A, B, B]),
            pa.array(["X1", "X1", "X1"]),
            pa.array(["201", "305", "101"]),
            pa.array([dt.date(2020, 1, 17), dt.date(2020, 1, 19), dt.date(2020, 1, 19)], pa.date32()),
            pa.array([3, 1, 0], pa.int16()),
        ],
        schema=SCHEMAS["hotel_stays"],
    )
    write_table(tmp_path / "data" / "police" / "population.parquet", population)
    write_table(
        tmp_path / "data" / "police" / "hotel_stays.parquet", hotel, row_groups=np.array([17, 19, 19])
    )
    declarations = pa.table(
        [
            pa.array(["P1", "P1", "P2"]),
            pa.array([A, B, B]),
            pa.array(["tenant", "tenant", "employee"]),
            pa.array([dt.date(2020, 1, 10), dt.date(2020, 1, 19), dt.date(2020, 1, 19)], pa.date32()),
            pa.array([dt.date(2020, 1, 18), dt.date(2020, 3, 1), dt.date(2020, 1, 18)], pa.date32()),
            pa.array(["L", "L", "E"]),
        ],
        schema=SCHEMAS["declarations"],
    )
    write_table(tmp_path / "data" / "police" / "declarations.parquet", declarations)
    store = AgencyStore(tmp_path, "police")
    parts = _partitions(store)
    assert next(iter(parts)) == "population@static"
    assert parts["declarations@2020-01-18"] == {(A, "place-day|P1|2020-01-18")}
    assert parts["declarations@2020-01-19"] == {(B, "place-day|P1|2020-01-19")}
    assert parts["declarations@2020-01-20"] == {(B, "place-day|P1|2020-01-20")}
    assert parts["population@static"] == {
        (A, "household|H1"),
        (B, "household|H1"),
        (A, f"identity|{A}|张三|1990-01-01"),
        (B, f"identity|{B}|李四|1985-05-05"),
    }
    assert parts["hotel_stays@2020-01-18"] == {
        (A, "hotel-night|X1|2020-01-18"),
        (A, "room-night|X1|201|2020-01-18"),
    }
    assert parts["hotel_stays@2020-01-19"] == {
        (A, "hotel-night|X1|2020-01-19"),
        (A, "room-night|X1|201|2020-01-19"),
        (B, "hotel-night|X1|2020-01-19"),
        (B, "room-night|X1|305|2020-01-19"),
    }
    assert parts["hotel_stays@2020-01-20"] == set()
    assert store.malformed == dict.fromkeys(CATEGORIES, 0) | {
        "missing_value": 1,
        "bad_nights": 1,
        "end_not_after_start": 1,
    }
    assert store.malformed_by_dataset["declarations"]["end_not_after_start"] == 1


def test_unreadable_agency_data(tmp_path: Path) -> None:
    with pytest.raises(StoreError, match="unknown agency"):
        AgencyStore(tmp_path, "bank")
    with pytest.raises(StoreError, match="missing data file"):
        AgencyStore(tmp_path, "transport")
    write_table(
        tmp_path / "data" / "transport" / "tickets.parquet",
        pa.table({"subject_id": pa.array([A]), "trip_id": pa.array(["G1"])}),
    )
    store = AgencyStore(tmp_path, "transport")  # a file without a token column is named and skipped
    path = str(tmp_path / "data" / "transport" / "tickets.parquet")
    assert store.unreadable == {path: "missing column service_date"}
    assert store.partition_ids(WINDOW) == [] and list(store.iter_partitions(WINDOW)) == []


def test_tickets_by_service_date(tmp_path: Path) -> None:
    tickets = pd.DataFrame(
        {
            "subject_id": [A, B, BAD],
            "trip_id": ["G1", "G1", "G1"],
            "service_date": [dt.date(2020, 1, 19)] * 3,
            "carriage": np.array([3, 3, 3], np.int16),
            "seat": ["01A", "01B", "01C"],
            "origin": ["420100"] * 3,
            "destination": ["411202"] * 3,
            "depart": [np.datetime64("2020-01-19T08:00", "s")] * 3,
            "arrive": [np.datetime64("2020-01-19T12:00", "s")] * 3,
        }
    )
    write_table(
        tmp_path / "data" / "transport" / "tickets.parquet",
        pa.Table.from_pandas(tickets, schema=SCHEMAS["tickets"], preserve_index=False),
    )
    store = AgencyStore(tmp_path, "transport")
    parts = _partitions(store)
    assert parts["tickets@2020-01-19"] == {
        (A, "trip|G1|2020-01-19"),
        (B, "trip|G1|2020-01-19"),
        (A, "carriage|G1|2020-01-19|3"),
        (B, "carriage|G1|2020-01-19|3"),
    }
    assert store.malformed["bad_subject_id"] == 1


def test_records_give_the_subject_ids_as_a_sorted_categorical() -> None:
    rng = np.random.default_rng(4)
    bodies = rng.integers(10**16, 10**17 - 1, 50)[rng.integers(0, 50, 400)]
    subject = ids.from_bodies(bodies)
    table = pa.table({"subject_id": pa.array(subject, pa.string()), "n": np.arange(400), BODY_COLUMN: bodies})
    frame = records(table)
    assert list(frame.columns) == ["subject_id", "n"]
    assert frame["subject_id"].astype(str).tolist() == list(subject)
    assert list(frame["subject_id"].cat.categories) == sorted(set(subject))
    assert frame["n"].tolist() == list(range(400))
