"""The canonical tokeniser: the design's rules at their edges, and agreement with a plain reading of them."""

from __future__ import annotations

import datetime as dt

import numpy as np
import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from proto import ids, tokenize
from proto import tokens as tk

A = ids.from_int(41120219900101001)
B = ids.from_int(41120219850505002)
CELLS = pd.DataFrame(
    {"cell_id": np.array([1, 2, 3], dtype=np.int32), "region_code": ["411202", "411202", "420100"]}
)


def ts(text: str) -> np.datetime64:
    return np.datetime64(text, "s")


def stays(*rows: tuple[str, int, str, str]) -> pd.DataFrame:
    return pd.DataFrame(
        {
            "subject_id": [r[0] for r in rows],
            "cell_id": np.array([r[1] for r in rows], dtype=np.int32),
            "start": np.array([ts(r[2]) for r in rows]),
            "end": np.array([ts(r[3]) for r in rows]),
        }
    )


def pairs(frame: pd.DataFrame) -> set[tuple[str, str]]:
    return set(zip(frame["subject_id"].astype(str), frame["token"].astype(str), strict=True))


def cell_hours(frame: pd.DataFrame) -> list[str]:
    return sorted(t for t in frame["token"].astype(str) if t.startswith("cell-hour"))


def test_ten_minutes_exactly_counts_nine_does_not() -> None:
    out = tokenize.stay_tokens(stays((A, 1, "2020-01-20T08:50", "2020-01-20T09:09")), CELLS)
    # 10 minutes in 08h, 9 minutes in 09h
    assert cell_hours(out) == ["cell-hour|1|2020-01-20T08"]
    out = tokenize.stay_tokens(stays((A, 1, "2020-01-20T08:51", "2020-01-20T09:00")), CELLS)
    assert cell_hours(out) == []


def test_seconds_count_toward_the_ten_minutes() -> None:
    out = tokenize.stay_tokens(stays((A, 1, "2020-01-20T08:50:01", "2020-01-20T09:00")), CELLS)
    assert cell_hours(out) == []


def test_stay_across_hours_and_midnight() -> None:
    out = tokenize.stay_tokens(stays((A, 2, "2020-01-20T22:30", "2020-01-21T01:05")), CELLS)
    assert cell_hours(out) == [
        "cell-hour|2|2020-01-20T22",
        "cell-hour|2|2020-01-20T23",
        "cell-hour|2|2020-01-21T00",
    ]
    parts = dict(zip(out["token"].astype(str), out["partition_id"].astype(str), strict=True))
    assert parts["cell-hour|2|2020-01-20T23"] == "cell-hour@2020-01-20"
    assert parts["cell-hour|2|2020-01-21T00"] == "cell-hour@2020-01-21"
    # 90 minutes on the 20th, 65 on the 21st: no region-day either side
    assert not any(t.startswith("region-day") for t in parts)


def test_region_day_at_120_minutes_exactly_summed_over_cells_of_the_region() -> None:
    out = tokenize.stay_tokens(
        stays((A, 1, "2020-01-20T08:00", "2020-01-20T09:00"), (A, 2, "2020-01-20T15:00", "2020-01-20T16:00")),
        CELLS,
    )
    assert "region-day|411202|2020-01-20" in set(out["token"].astype(str))
    out = tokenize.stay_tokens(
        stays((A, 1, "2020-01-20T08:00", "2020-01-20T09:00"), (A, 2, "2020-01-20T15:00", "2020-01-20T15:59")),
        CELLS,
    )
    assert "region-day|411202|2020-01-20" not in set(out["token"].astype(str))


def test_region_day_split_at_midnight() -> None:
    out = tokenize.stay_tokens(stays((B, 3, "2020-01-18T22:00", "2020-01-19T02:00")), CELLS)
    region = {t for t in out["token"].astype(str) if t.startswith("region-day")}
    assert region == {"region-day|420100|2020-01-18", "region-day|420100|2020-01-19"}
    out = tokenize.stay_tokens(stays((B, 3, "2020-01-18T22:01", "2020-01-19T01:59")), CELLS)
    assert not any(t.startswith("region-day") for t in out["token"].astype(str))


def test_unknown_cell_counts_toward_no_region_and_bad_interval_yields_nothing() -> None:
    out = tokenize.stay_tokens(stays((A, 99, "2020-01-20T08:00", "2020-01-20T12:00")), CELLS)
    assert not any(t.startswith("region-day") for t in out["token"].astype(str))
    out = tokenize.stay_tokens(stays((A, 1, "2020-01-20T12:00", "2020-01-20T08:00")), CELLS)
    assert len(out) == 0


def test_output_is_distinct_sorted_and_categorical() -> None:
    out = tokenize.stay_tokens(
        stays(
            (B, 1, "2020-01-20T08:00", "2020-01-20T08:30"),
            (A, 1, "2020-01-20T08:00", "2020-01-20T08:45"),
            (A, 1, "2020-01-20T08:45", "2020-01-20T09:30"),
        ),
        CELLS,
    )
    assert list(out.columns) == ["subject_id", "token", "partition_id"]
    assert all(isinstance(out[c].dtype, pd.CategoricalDtype) for c in out.columns)
    rows = list(zip(*(out[c].astype(str) for c in ("partition_id", "token", "subject_id")), strict=True))
    assert rows == sorted(set(rows))
    assert pairs(out) == {
        (A, "cell-hour|1|2020-01-20T08"),
        (B, "cell-hour|1|2020-01-20T08"),
        (A, "cell-hour|1|2020-01-20T09"),
    }


_WORDS = st.text(alphabet=st.sampled_from("aAzZ09|-é€𝄞 "), max_size=4)


@settings(max_examples=150, deadline=None)
@given(st.lists(st.tuples(_WORDS, _WORDS, st.sampled_from(["p@1", "p@2", "q"])), max_size=30), st.booleans())
def test_assemble_matches_a_plain_sort(rows: list[tuple[str, str, str]], distinct: bool) -> None:
    if distinct:
        rows = list({(s, t): (s, t, p) for s, t, p in rows}.values())
    partition = {t: p for _, t, p in rows}  # one partition per token
    subjects = [*sorted({s for s, _, _ in rows}, reverse=True), "unused"]
    tokens = [*sorted({t for _, t, _ in rows}, reverse=True), "unused"]
    out = tokenize.assemble(
        np.array([subjects.index(s) for s, _, _ in rows], dtype=np.int64),
        np.array(subjects, dtype=object),
        np.array([tokens.index(t) for _, t, _ in rows], dtype=np.int64),
        np.array(tokens, dtype=object),
        np.array([partition.get(t, "z") for t in tokens], dtype=object),
        distinct=distinct,
    )
    got = list(zip(*(out[c].astype(str) for c in ("partition_id", "token", "subject_id")), strict=True))
    assert got == sorted({(partition[t], t, s) for s, t, _ in rows})
    for column in ("subject_id", "partition_id"):
        assert list(out[column].cat.categories) == sorted(set(out[column].astype(str)))
    by_partition = sorted({t for _, t, _ in rows}, key=lambda t: (partition[t], t))
    assert list(out["token"].cat.categories) == by_partition


def _naive_stay_tokens(frame: pd.DataFrame) -> set[tuple[str, str]]:
    """The design's rules read literally, one stay and one hour at a time."""
    region = dict(zip(CELLS["cell_id"], CELLS["region_code"], strict=True))
    out: set[tuple[str, str]] = set()
    seconds: dict[tuple[str, str, dt.date], float] = {}
    for sid, cell, s, e in zip(frame.subject_id, frame.cell_id, frame.start, frame.end, strict=True):
        s, e = pd.Timestamp(s).to_pydatetime(), pd.Timestamp(e).to_pydatetime()
        hour = s.replace(minute=0, second=0)
        while hour < e:
            if min(e, hour + dt.timedelta(hours=1)) - max(s, hour) >= dt.timedelta(minutes=10):
                out.add((sid, tk.cell_hour(int(cell), hour)))
            hour += dt.timedelta(hours=1)
        day = dt.datetime.combine(s.date(), dt.time())
        while day < e and int(cell) in region:
            key = (sid, region[int(cell)], day.date())
            seconds[key] = (
                seconds.get(key, 0) + (min(e, day + dt.timedelta(days=1)) - max(s, day)).total_seconds()
            )
            day += dt.timedelta(days=1)
    out |= {(sid, tk.region_day(r, d)) for (sid, r, d), sec in seconds.items() if sec >= 7200}
    return out


SETTINGS = [(tokenize.CHUNK_STAYS, tokenize.DENSE_TABLE_LIMIT), (37, tokenize.DENSE_TABLE_LIMIT), (37, 1)]


@pytest.mark.parametrize(("chunk", "table"), SETTINGS)
def test_agrees_with_a_literal_reading_on_random_stays(
    chunk: int, table: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(tokenize, "CHUNK_STAYS", chunk)  # stays taken in many chunks
    monkeypatch.setattr(tokenize, "DENSE_TABLE_LIMIT", table)  # token ids by hashing instead of a table
    rng = np.random.default_rng(3)
    n = 400
    start = ts("2020-01-18T00:00") + rng.integers(0, 3 * 86400, n).astype("timedelta64[s]")
    frame = pd.DataFrame(
        {
            "subject_id": rng.choice([A, B], n),
            "cell_id": rng.choice(np.array([1, 2, 3, 7], dtype=np.int32), n),
            "start": start,
            "end": start + rng.integers(1, 30 * 3600, n).astype("timedelta64[s]"),
        }
    )
    assert pairs(tokenize.stay_tokens(frame, CELLS)) == _naive_stay_tokens(frame)


def test_ticket_tokens() -> None:
    tickets = pd.DataFrame(
        {
            "subject_id": [A, B],
            "trip_id": ["G1234", "G1234"],
            "service_date": [dt.date(2020, 1, 19), dt.date(2020, 1, 19)],
            "carriage": np.array([3, 5], dtype=np.int16),
        }
    )
    out = tokenize.ticket_tokens(tickets)
    assert pairs(out) == {
        (A, "trip|G1234|2020-01-19"),
        (B, "trip|G1234|2020-01-19"),
        (A, "carriage|G1234|2020-01-19|3"),
        (B, "carriage|G1234|2020-01-19|5"),
    }
    assert set(out["partition_id"].astype(str)) == {"trip@2020-01-19", "carriage@2020-01-19"}


def test_multi_night_hotel_stay_and_nights_below_one() -> None:
    hotel = pd.DataFrame(
        {
            "subject_id": [A, B, B],
            "hotel_id": ["H1", "H1", "H2"],
            "room": ["201", "305", "101"],
            "check_in": [dt.date(2020, 1, 30), dt.date(2020, 1, 31), dt.date(2020, 1, 31)],
            "nights": np.array([3, 1, 0], dtype=np.int16),
        }
    )
    out = tokenize.hotel_tokens(hotel)
    nights = sorted(t for s, t in pairs(out) if s == A)
    assert nights == [
        "hotel-night|H1|2020-01-30",
        "hotel-night|H1|2020-01-31",
        "hotel-night|H1|2020-02-01",
        "room-night|H1|201|2020-01-30",
        "room-night|H1|201|2020-01-31",
        "room-night|H1|201|2020-02-01",
    ]
    assert {t for s, t in pairs(out) if s == B} == {
        "hotel-night|H1|2020-01-31",
        "room-night|H1|305|2020-01-31",
    }
    assert "room-night@2020-02-01" in set(out["partition_id"].astype(str))


def test_population_tokens() -> None:
    population = pd.DataFrame(
        {
            "subject_id": [A, B],
            "name": ["张三", "李小红"],
            "birth_date": [dt.date(1990, 1, 1), dt.date(1985, 5, 5)],
            "household_id": ["411202-0000001", "411202-0000001"],
        }
    )
    out = tokenize.population_tokens(population)
    assert pairs(out) == {
        (A, "household|411202-0000001"),
        (B, "household|411202-0000001"),
        (A, f"identity|{A}|张三|1990-01-01"),
        (B, f"identity|{B}|李小红|1985-05-05"),
    }
    assert set(out["partition_id"].astype(str)) == {"household@static", "identity@static"}


@pytest.mark.parametrize("func", [tokenize.ticket_tokens, tokenize.hotel_tokens, tokenize.population_tokens])
def test_empty_inputs(func: object) -> None:
    out = func(pd.DataFrame())  # type: ignore[operator]
    assert len(out) == 0 and list(out.columns) == ["subject_id", "token", "partition_id"]
    assert len(tokenize.stay_tokens(pd.DataFrame(), CELLS)) == 0
