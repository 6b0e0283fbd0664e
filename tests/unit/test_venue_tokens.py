"""venue-hour and place-day tokens on hand-made rows: the tokeniser, the node's store and the oracle agree,
and malformed check-ins and declarations are counted by category."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pytest

from nodes.store import CATEGORIES, AgencyStore
from proto import ids, tokenize
from proto import tokens as tk
from proto.schemas import SCHEMAS
from runctx.parquet import write_table
from simulation.reference import _AgencyFiles

A = ids.from_int(41120219900101001)
B = ids.from_int(41120219850505002)
BAD = A[:17] + ("0" if A[17] != "0" else "1")
WINDOW = (dt.date(2020, 1, 18), dt.date(2020, 1, 20))


def _t(text: str | None) -> np.datetime64 | None:
    return None if text is None else np.datetime64(text, "s")


CHECKINS = [
    # subject, venue, at, leave
    (A, "market-411202-0001", "2020-01-18T08:55", "2020-01-18T10:05"),  # hour 09 only (08 and 10: 5 min)
    (B, "compound-411202-0001", "2020-01-18T23:30", None),  # an hour assumed: 23 and 00 of the 19th
    (A, "hospital-411202-0001", "2020-01-19T10:00", "2020-01-19T10:09"),  # 9 minutes: no hour
    (B, "hospital-411202-0001", "2020-01-20T14:50", None),  # 14 (10 min) and 15 (50 min)
    (BAD, "market-411202-0001", "2020-01-18T09:00", "2020-01-18T10:00"),  # bad_subject_id
    (A, None, "2020-01-18T09:00", "2020-01-18T10:00"),  # missing_value
    (A, "market-411202-0001", "2020-01-19T09:00", "2020-01-19T08:00"),  # end_not_after_start
    (B, "market-411202-0001", "2020-01-18T09:00", "2020-02-20T09:00"),  # visit_too_long (33 days)
]
EXPECTED = {
    "venue-hour@2020-01-18": {
        (A, "venue-hour|market-411202-0001|2020-01-18T09"),
        (B, "venue-hour|compound-411202-0001|2020-01-18T23"),
    },
    "venue-hour@2020-01-19": {(B, "venue-hour|compound-411202-0001|2020-01-19T00")},
    "venue-hour@2020-01-20": {
        (B, "venue-hour|hospital-411202-0001|2020-01-20T14"),
        (B, "venue-hour|hospital-411202-0001|2020-01-20T15"),
    },
}


def _checkins_table(rows: list[tuple[str, str | None, str, str | None]]) -> pa.Table:
    return pa.table(
        [
            pa.array([r[0] for r in rows], pa.string()),
            pa.array([r[1] for r in rows], pa.string()),
            pa.array([_t(r[2]) for r in rows], pa.timestamp("s")),
            pa.array([_t(r[3]) for r in rows], pa.timestamp("s")),
        ],
        schema=SCHEMAS["checkins"],
    )


def test_venue_hour_rule_on_hand_made_rows() -> None:
    good = pd.DataFrame(CHECKINS[:4], columns=["subject_id", "venue_id", "at", "leave"])
    good["at"] = pd.to_datetime(good["at"])
    good["leave"] = pd.to_datetime(good["leave"])
    frame = tokenize.checkin_tokens(good).astype(str)
    got: dict[str, set[tuple[str, str]]] = {}
    for subject, token, pid in frame.itertuples(index=False):
        got.setdefault(pid, set()).add((subject, token))
        assert tk.parse(token).partition_id == pid
    assert got == EXPECTED


def test_place_day_rule_on_hand_made_rows() -> None:
    rows = pd.DataFrame(
        {
            "subject_id": [A, B],
            "place_id": ["dwelling-H1", "workplace-7-0"],
            "from_date": [dt.date(2020, 1, 30), dt.date(2020, 2, 1)],
            "to_date": [dt.date(2020, 2, 1), dt.date(2020, 2, 1)],
        }
    )
    frame = tokenize.declaration_tokens(rows).astype(str)
    assert set(frame.itertuples(index=False, name=None)) == {
        (A, "place-day|dwelling-H1|2020-01-30", "place-day@2020-01-30"),
        (A, "place-day|dwelling-H1|2020-01-31", "place-day@2020-01-31"),
        (A, "place-day|dwelling-H1|2020-02-01", "place-day@2020-02-01"),
        (B, "place-day|workplace-7-0|2020-02-01", "place-day@2020-02-01"),
    }


def test_new_tokens_parse_and_name_their_agency() -> None:
    venue = tk.parse(tk.venue_hour("hospital-411202-0001", dt.datetime(2020, 1, 20, 14)))
    assert (venue.agency, venue.partition_id) == ("venues", "venue-hour@2020-01-20")
    place = tk.parse(tk.place_day("dwelling-H1", dt.date(2020, 1, 30)))
    assert (place.agency, place.partition_id) == ("police", "place-day@2020-01-30")
    assert tk.venue_kind("hospital-411202-0001") == "hospital"
    assert tk.venue_kind("shop-1") == "other"
    with pytest.raises(tk.TokenError, match="YYYY-MM-DDTHH"):
        tk.parse("venue-hour|v|2020-01-20T25")


@pytest.mark.parametrize("by_day", [True, False])
def test_node_store_and_oracle_read_checkins_alike(tmp_path: Path, by_day: bool) -> None:
    table = _checkins_table(CHECKINS)
    path = tmp_path / "data" / "venues"
    if by_day:
        day = table["at"].cast(pa.int64()).to_numpy() // 86400
        order = np.argsort(day, kind="stable")
        write_table(path / "checkins.parquet", table.take(order), row_groups=day[order])
    else:
        write_table(path / "checkins.parquet", table)
    store = AgencyStore(tmp_path, "venues")
    node = {
        pid: set(f.astype(str).itertuples(index=False, name=None)) for pid, f in store.iter_partitions(WINDOW)
    }
    assert node == EXPECTED
    expected_malformed = dict.fromkeys(CATEGORIES, 0) | {
        "bad_subject_id": 1,
        "missing_value": 1,
        "end_not_after_start": 1,
        "visit_too_long": 1,
    }
    assert store.malformed == expected_malformed
    oracle = _AgencyFiles(tmp_path, "venues", WINDOW[1])
    plain = {pid: set(f.itertuples(index=False, name=None)) for pid, f in oracle.partitions(WINDOW)}
    assert plain == EXPECTED
    assert oracle.malformed() == {"checkins": expected_malformed}
