"""The token grammar: builders, parsing, partitions."""

from __future__ import annotations

import datetime as dt

import pytest

from proto import tokens as tk

DAY = dt.date(2020, 1, 20)


@pytest.mark.parametrize(
    ("token", "kind", "day", "agency", "partition"),
    [
        (
            tk.cell_hour(10042, dt.datetime(2020, 1, 20, 9, 30)),
            "cell-hour",
            DAY,
            "carrier",
            "cell-hour@2020-01-20",
        ),
        (tk.region_day("411202", DAY), "region-day", DAY, "carrier", "region-day@2020-01-20"),
        (tk.trip("G1234", DAY), "trip", DAY, "transport", "trip@2020-01-20"),
        (tk.carriage("G1234", DAY, 7), "carriage", DAY, "transport", "carriage@2020-01-20"),
        (tk.household("411202-0000001"), "household", None, "police", "household@static"),
        (
            tk.identity("11010519491231002X", "张三", dt.date(1949, 12, 31)),
            "identity",
            None,
            "police",
            "identity@static",
        ),
        (tk.hotel_night("H4112020001", DAY), "hotel-night", DAY, "police", "hotel-night@2020-01-20"),
        (tk.room_night("H4112020001", "305", DAY), "room-night", DAY, "police", "room-night@2020-01-20"),
    ],
)
def test_build_and_parse(token: str, kind: str, day: dt.date | None, agency: str, partition: str) -> None:
    parsed = tk.parse(token)
    assert parsed.kind == kind
    assert parsed.day == day
    assert parsed.agency == agency
    assert parsed.partition_id == partition
    assert tk.SEP.join((parsed.kind, *parsed.fields)) == token


def test_exact_strings() -> None:
    assert tk.cell_hour(7, dt.datetime(2020, 1, 18, 0, 59)) == "cell-hour|7|2020-01-18T00"
    assert tk.carriage("G1", DAY, 3) == "carriage|G1|2020-01-20|3"
    assert tk.room_night("H1", "201", DAY) == "room-night|H1|201|2020-01-20"
    assert tk.identity("11010519491231002X", "李四", dt.date(1949, 12, 31)) == (
        "identity|11010519491231002X|李四|1949-12-31"
    )


@pytest.mark.parametrize(
    "bad",
    [
        "",
        "nope|1|2020-01-20",
        "cell-hour|1|2020-01-20",
        "cell-hour|1|2020-01-20T09|x",
        "trip|G1|2020-13-01",
        "household",
        "region-day|411202|yesterday",
    ],
)
def test_parse_rejects(bad: str) -> None:
    with pytest.raises(tk.TokenError):
        tk.parse(bad)


def test_partition_ids() -> None:
    assert tk.partition_id("cell-hour", DAY) == "cell-hour@2020-01-20"
    assert tk.partition_id("household", None) == "household@static"
    assert tk.parse_partition_id("cell-hour@2020-01-20") == ("cell-hour", DAY)
    assert tk.parse_partition_id("identity@static") == ("identity", None)
    assert tk.partition_dataset("room-night@2020-01-20") == "hotel_stays"
    assert tk.dataset_partition_ids("population", None) == ["household@static", "identity@static"]
    assert tk.dataset_partition_ids("stays", DAY) == ["cell-hour@2020-01-20", "region-day@2020-01-20"]
    for bad in ("stays", "@2020-01-01", "cell-hour@2020-02-30", "stays@2020-01-20", "identity@2020-01-20",
                "trip@static"):
        with pytest.raises(tk.TokenError):
            tk.parse_partition_id(bad)
