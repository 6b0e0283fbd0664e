"""AgencyStore on bad agency files: a file of the wrong column types is named and skipped, bad cells rows
are dropped and named, and oversized, out-of-range or absurd rows are counted by category and skipped —
never a crash, and the rest is served."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from nodes.store import CATEGORIES, AgencyStore
from proto import ids
from proto.schemas import SCHEMAS
from tests.unit.test_store import by_dataset_day

A = ids.from_int(41120219900101001)
B = ids.from_int(41120219850505002)
WINDOW = (dt.date(2020, 1, 18), dt.date(2020, 1, 20))


def stamp(text: str) -> np.datetime64:
    return np.datetime64(text, "s")


def write(run: Path, agency: str, name: str, table: pa.Table) -> Path:
    path = run / "data" / agency / f"{name}.parquet"
    path.parent.mkdir(parents=True, exist_ok=True)
    pq.write_table(table, path)
    return path


def cells(run: Path, cell_ids: pa.Array, regions: list[str]) -> Path:
    return write(run, "carrier", "cells", pa.table({"cell_id": cell_ids, "region_code": pa.array(regions)}))


def stays(run: Path, subjects: list[str], cell_ids: pa.Array, spans: list[tuple[str, str]]) -> Path:
    return write(run, "carrier", "stays", pa.table({
        "subject_id": pa.array(subjects),
        "cell_id": cell_ids,
        "start": pa.array([stamp(a) for a, _ in spans], pa.timestamp("s")),
        "end": pa.array([stamp(b) for _, b in spans], pa.timestamp("s")),
    }))


def population(run: Path, names: list[str], subjects: list[str] | None = None) -> Path:
    """The police's population file (and an empty declarations file: the police hold both)."""
    write(run, "police", "declarations", SCHEMAS["declarations"].empty_table())
    subjects = subjects or [A, B][: len(names)]
    return write(run, "police", "population", pa.table({
        "subject_id": pa.array(subjects),
        "name": pa.array(names),
        "birth_date": pa.array([dt.date(1990, 1, 1)] * len(names), pa.date32()),
        "household_id": pa.array([f"H{i}" for i in range(len(names))]),
    }))


def hotel(run: Path, subject_ids: pa.Array, nights: list[int]) -> Path:
    return write(run, "police", "hotel_stays", pa.table({
        "subject_id": subject_ids,
        "hotel_id": pa.array(["X1"] * len(nights)),
        "room": pa.array(["201"] * len(nights)),
        "check_in": pa.array([dt.date(2020, 1, 18)] * len(nights), pa.date32()),
        "nights": pa.array(nights, pa.int16()),
    }))


def served(store: AgencyStore) -> dict[str, int]:
    """Rows per dataset day, its kinds' partitions together."""
    return {pid: len(rows) for pid, rows in by_dataset_day(store.iter_partitions(WINDOW)).items()}


def test_wrong_column_types_name_the_file_and_serve_the_rest(tmp_path: Path) -> None:
    population(tmp_path, ["张三", "李四"])
    bad = hotel(tmp_path, pa.array([41120219900101001, 41120219850505002], pa.int64()), [1, 1])
    store = AgencyStore(tmp_path, "police")
    assert store.unreadable == {str(bad): "column subject_id is int64, not a string"}
    parts = served(store)
    assert parts["population@static"] > 0 and not any(p.startswith("hotel_stays@") for p in parts)

    cells(tmp_path, pa.array([1], pa.int32()), ["411202"])
    path = write(tmp_path, "carrier", "stays", pa.table({
        "subject_id": pa.array([A]), "cell_id": pa.array([1], pa.int32()),
        "start": pa.array(["2020-01-18 08:00"]), "end": pa.array([stamp("2020-01-18T09:00")]),
    }))
    carrier = AgencyStore(tmp_path, "carrier")
    assert carrier.unreadable == {str(path): "column start is string, not a timestamp"}
    assert served(carrier) == {}


def test_a_file_that_is_not_parquet_is_named_and_skipped(tmp_path: Path) -> None:
    population(tmp_path, ["张三"])
    path = tmp_path / "data" / "police" / "hotel_stays.parquet"
    path.write_bytes(b"not parquet at all")
    store = AgencyStore(tmp_path, "police")
    assert list(store.unreadable) == [str(path)]
    assert "not a readable Parquet file" in store.unreadable[str(path)]
    parts = served(store)
    assert "population@static" in parts and not any(p.startswith("hotel_stays@") for p in parts)


def test_bad_cells_rows_are_dropped_and_named(tmp_path: Path) -> None:
    path = cells(
        tmp_path,
        pa.array([1, 2, 2, float("nan"), 2.0**31, 3], pa.float64()),
        ["411202", "420100", "420101", "420102", "420103", "420104"],
    )
    spans = [("2020-01-18T08:00", "2020-01-18T09:00")] * 3
    stays(tmp_path, [A, A, B], pa.array([1, 2, 3], pa.int32()), spans)
    store = AgencyStore(tmp_path, "carrier")
    parts = served(store)
    assert store.unreadable == {
        str(path): "skipped 2 rows with a null, NaN or out-of-range cell_id and 2 rows of 1 cell ids "
        "listed twice"
    }
    assert store.malformed["unknown_cell"] == 1  # the stay in cell 2, which region is unknown
    assert parts["stays@2020-01-18"] == 2  # a cell-hour each: A in cell 1, B in cell 3


def test_out_of_range_cell_ids_are_counted_not_fatal(tmp_path: Path) -> None:
    cells(tmp_path, pa.array([1], pa.int32()), ["411202"])
    spans = [("2020-01-18T08:00", "2020-01-18T09:00")] * 4
    stays(tmp_path, [A, A, B, B], pa.array([1, 2**31, -(2**31) - 1, 1], pa.int64()), spans)
    store = AgencyStore(tmp_path, "carrier")
    assert served(store)["stays@2020-01-18"] == 2  # the two stays in cell 1, a cell-hour each
    assert store.malformed == dict.fromkeys(CATEGORIES, 0) | {"out_of_range": 2}

    stays(tmp_path, [A, A, B], pa.array([1.0, float("nan"), 1.5], pa.float64()), spans[:3])
    store = AgencyStore(tmp_path, "carrier")
    assert served(store)["stays@2020-01-18"] == 1  # a float column, its whole values read as cells
    assert store.malformed == dict.fromkeys(CATEGORIES, 0) | {"missing_value": 1, "out_of_range": 1}


def test_a_20_mb_name_is_one_malformed_row(tmp_path: Path) -> None:
    population(tmp_path, ["张三", "名" * (20 * 1024 * 1024 // 3)])
    hotel(tmp_path, pa.array([A, B]), [1, 1])
    store = AgencyStore(tmp_path, "police")
    parts = served(store)
    assert store.malformed["too_long"] == 1
    assert parts["population@static"] == 2  # A's household and identity tokens; B's row skipped
    assert parts["hotel_stays@2020-01-18"] > 0


def test_absurd_durations_are_malformed(tmp_path: Path) -> None:
    cells(tmp_path, pa.array([1], pa.int32()), ["411202"])
    stays(tmp_path, [A, B], pa.array([1, 1], pa.int32()),
          [("2020-01-18T08:00", "2020-01-18T09:00"), ("2020-01-18T08:00", "2021-01-18T09:00")])
    carrier = AgencyStore(tmp_path, "carrier")
    assert served(carrier)["stays@2020-01-19"] == 0  # B's year-long stay is not carried over
    assert carrier.malformed["visit_too_long"] == 1
    population(tmp_path, ["张三", "李四"])
    hotel(tmp_path, pa.array([A, B]), [2, 30_000])
    police = AgencyStore(tmp_path, "police")
    assert served(police)["hotel_stays@2020-01-19"] == 2  # A's second night (hotel-night and room-night)
    assert police.malformed["visit_too_long"] == 1


def test_exact_duplicate_rows_are_counted_by_file_and_skipped(tmp_path: Path) -> None:
    cells(tmp_path, pa.array([1, 2], pa.int32()), ["R1", "R2"])
    a, b, a_longer = (("2020-01-19T08:00", "2020-01-19T09:00"), ("2020-01-19T10:00", "2020-01-19T11:00"),
                      ("2020-01-19T08:00", "2020-01-19T09:30"))
    stays(tmp_path, [A, B, A], pa.array([1, 2, 1], pa.int32()), [a, b, a_longer])
    expected = served(AgencyStore(tmp_path, "carrier"))
    # A's first row three times, B's twice; a row differing only in its end is not a duplicate
    cell_ids = pa.array([1, 2, 1, 2, 1, 1], pa.int32())
    path = stays(tmp_path, [A, B, A, B, A, A], cell_ids, [a, b, a, b, a, a_longer])
    store = AgencyStore(tmp_path, "carrier")
    assert store.duplicates == {str(path): 3}
    assert store.good_rows == {"stays": 3}
    assert sum(store.malformed.values()) == 0
    assert served(store) == expected
