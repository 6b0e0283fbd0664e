"""Day-partitioned agency data: the writer's deliveries (late rows in later files) and the node's reader,
which sees only the files delivered by its date, accepts a single file, and names a file outside the
layout."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from nodes import build
from nodes.startup import source_digest
from nodes.store import AgencyStore, StoreError
from proto import ids, layout
from proto.schemas import SCHEMAS
from runctx.parquet import write_table
from simulation.writer import DayPartitionedWriter
from tests.unit.test_store import by_dataset_day

A, B, C = (ids.from_int(41120219900101001 + 2 * i) for i in range(3))
DAY1, DAY2, DAY3 = dt.date(2020, 1, 20), dt.date(2020, 1, 21), dt.date(2020, 1, 22)
WINDOW = (DAY1, DAY3)


def stays(rows: list[tuple[str, int, str, str]]) -> pa.Table:
    """A stays table of (subject, cell, start, end)."""
    return pa.table(
        [
            pa.array([r[0] for r in rows], pa.string()),
            pa.array([r[1] for r in rows], pa.int32()),
            pa.array([np.datetime64(r[2], "s") for r in rows], pa.timestamp("s")),
            pa.array([np.datetime64(r[3], "s") for r in rows], pa.timestamp("s")),
        ],
        schema=SCHEMAS["stays"],
    )


ON_TIME_1 = [(A, 1, "2020-01-20T08:00", "2020-01-20T09:00"), (B, 1, "2020-01-20T08:00", "2020-01-20T09:00")]
LATE_1 = [(C, 1, "2020-01-20T08:00", "2020-01-20T09:00")]  # day 1's row, delivered on day 2
ON_TIME_2 = [(A, 1, "2020-01-21T10:00", "2020-01-21T11:00")]


def carrier(run: Path) -> Path:
    """RUN/data/carrier with a cell table and stays of two days, one row of day 1 delivered late."""
    root = run / "data" / "carrier"
    cells = pa.table(
        [
            pa.array([1], pa.int32()),
            pa.array(["411202"]),
            pa.array([0.0], pa.float32()),
            pa.array([0.0], pa.float32()),
        ],
        schema=SCHEMAS["cells"],
    )
    write_table(root / "cells.parquet", cells)
    for day, delivered, rows in ((DAY1, DAY1, ON_TIME_1), (DAY1, DAY2, LATE_1), (DAY2, DAY2, ON_TIME_2)):
        write_table(root / "stays" / layout.day_directory(day) / layout.delivery_name(delivered), stays(rows))
    return root


def partitions(run: Path, as_of: dt.date | None) -> dict[str, set[tuple[str, str]]]:
    """Every partition of the window as a set of (subject, token), read as of `as_of`."""
    return by_dataset_day(AgencyStore(run, "carrier", as_of).iter_partitions(WINDOW))


def test_a_node_reads_only_files_delivered_by_its_date(tmp_path: Path) -> None:
    carrier(tmp_path)
    hour = "cell-hour|1|2020-01-20T08"
    day1 = partitions(tmp_path, DAY1)
    assert day1["stays@2020-01-20"] >= {(A, hour), (B, hour)}
    assert (C, hour) not in day1["stays@2020-01-20"]  # late: not delivered yet
    assert not day1["stays@2020-01-21"]  # day 2's file is not delivered on day 1
    day2 = partitions(tmp_path, DAY2)
    assert (C, hour) in day2["stays@2020-01-20"]
    assert (A, "cell-hour|1|2020-01-21T10") in day2["stays@2020-01-21"]
    assert partitions(tmp_path, None) == day2 == partitions(tmp_path, DAY3)
    # what the node digests as its sources changes with the late file, and only with it
    assert source_digest(tmp_path, "carrier", DAY1) != source_digest(tmp_path, "carrier", DAY2)
    assert source_digest(tmp_path, "carrier", DAY2) == source_digest(tmp_path, "carrier", DAY3)


def test_a_day_partition_reads_only_that_days_files(tmp_path: Path) -> None:
    """The build plan names, for each day, the row groups of that day's files delivered by the date."""
    carrier(tmp_path)
    store = AgencyStore(tmp_path, "carrier", DAY2)
    jobs = {f"{j.dataset}@{j.date}": j for j in build.partition_jobs(store, WINDOW)}
    assert jobs["stays@2020-01-20"].partition_ids == ["cell-hour@2020-01-20", "region-day@2020-01-20"]
    days = store.row_group_days("stays")
    assert len(days) == 3  # three files of one row group each
    day1 = (DAY1 - dt.date(1970, 1, 1)).days
    assert len(jobs["stays@2020-01-20"].groups) == 2
    assert all(days[g] == (day1, day1) for g in jobs["stays@2020-01-20"].groups)
    assert len(jobs["stays@2020-01-21"].groups) == 1 and not jobs["stays@2020-01-22"].groups
    assert {j.as_of for j in jobs.values()} == {DAY2}
    worker = AgencyStore(tmp_path, "carrier", jobs["stays@2020-01-20"].as_of)
    rows = build.read_rows(worker, jobs["stays@2020-01-20"])
    assert set(rows["subject_id"].astype(str)) == {A, B, C}


def test_a_single_file_of_the_same_schema_is_read_whole(tmp_path: Path) -> None:
    partitioned = tmp_path / "partitioned"
    carrier(partitioned)
    single = tmp_path / "single"
    write_table(
        single / "data/carrier/cells.parquet", pq.read_table(partitioned / "data/carrier/cells.parquet")
    )
    write_table(single / "data/carrier/stays.parquet", stays(ON_TIME_1 + LATE_1 + ON_TIME_2))
    assert partitions(single, DAY1) == partitions(single, None) == partitions(partitioned, None)


def test_files_outside_the_layout_are_named(tmp_path: Path) -> None:
    root = carrier(tmp_path)
    stray = root / "stays" / layout.day_directory(DAY1) / "late-rows.parquet"
    write_table(stray, stays(LATE_1))
    with pytest.raises(StoreError, match=r"late-rows\.parquet.*named after its delivery date"):
        AgencyStore(tmp_path, "carrier", DAY2)
    stray.unlink()
    (root / "stays" / "_SUCCESS").write_text("")  # marker files are not data
    (root / "stays" / layout.day_directory(DAY1) / ".part-0.parquet.tmp").write_text("")
    assert AgencyStore(tmp_path, "carrier", DAY2).row_groups("stays") == 3
    (root / "stays" / "2020-01-23").mkdir()
    with pytest.raises(StoreError, match=r"2020-01-23: not a day partition"):
        AgencyStore(tmp_path, "carrier", DAY2)
    (root / "stays" / "2020-01-23").rmdir()
    (root / "stays" / "day=2020-13-01").mkdir()
    with pytest.raises(StoreError, match=r"day=2020-13-01.*not a date"):
        AgencyStore(tmp_path, "carrier")
    (root / "stays" / "day=2020-13-01").rmdir()
    write_table(root / "stays.parquet", stays(ON_TIME_1))
    with pytest.raises(StoreError, match=r"both stays\.parquet and stays/"):
        AgencyStore(tmp_path, "carrier")


def test_the_writer_delivers_late_rows_in_later_files(tmp_path: Path) -> None:
    rows = [(A, 1, f"2020-01-20T{h:02d}:00", f"2020-01-20T{h:02d}:30") for h in range(20)]
    table = stays(rows * 20)
    writer = DayPartitionedWriter(tmp_path, "stays", 0.3, last_delivery=DAY2)
    delivered = writer.write_day(DAY1, table, np.random.default_rng(5))
    directory = tmp_path / "data/carrier/stays/day=2020-01-20"
    names = sorted(p.name for p in directory.iterdir())
    assert names == ["2020-01-20-0.parquet", "2020-01-21-0.parquet"]  # two days late is after the last day
    counts = writer.counts()
    on_time = pq.read_table(directory / names[0]).num_rows
    late = pq.read_table(directory / names[1]).num_rows
    assert counts == {"rows": 400, "late": late, "undelivered": 400 - on_time - late}
    assert late > 0 and counts["undelivered"] > 0 and 0.15 < (late + counts["undelivered"]) / 400 < 0.45
    assert int(delivered.sum()) == on_time + late
    again = DayPartitionedWriter(tmp_path / "again", "stays", 0.3, last_delivery=DAY2)
    assert (again.write_day(DAY1, table, np.random.default_rng(5)) == delivered).all()
    with pytest.raises(ValueError, match="late_rate"):
        DayPartitionedWriter(tmp_path, "stays", 1.0, last_delivery=DAY2)
