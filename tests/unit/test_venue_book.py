"""The venue agency's book over real SQLite and real files: registered ids do not collide with the
simulation's, check-ins are journaled and delivered once (a delivery interrupted after its batch was claimed
is completed with the same file), and the venue node's store reads what was delivered."""

from __future__ import annotations

import datetime as dt
import json
import sqlite3
import typing
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from nodes.startup import DATE_FILE, node_dir
from nodes.store import AgencyStore
from proto import ids
from proto import tokens as tk
from proto.schemas import SCHEMAS
from proto.tokens import VENUE_KINDS
from runctx.parquet import write_table
from service.commander.data import venue_counts
from service.venue.book import VenueBook, data_dir, local_now
from service.venue.forms import Kind

AS_OF = dt.date(2020, 2, 10)


def subject(n: int) -> str:
    body = f"41120219800101{n:03d}"
    return body + ids.check_char(body)


@pytest.fixture
def run(tmp_path: Path) -> Path:
    (tmp_path / "scenario.json").write_text(json.dumps({"as_of": AS_OF.isoformat(), "seed": 7}))
    simulated = (
        SCHEMAS["venues"]
        .empty_table()
        .from_pylist(
            [
                {
                    "venue_id": "market-411202-0001",
                    "kind": "market",
                    "name": "湖滨区市场1",
                    "region_code": "411202",
                    "cell_id": 5,
                }
            ],
            schema=SCHEMAS["venues"],
        )
    )
    write_table(data_dir(tmp_path) / "venues.parquet", simulated)
    return tmp_path


def test_the_form_offers_the_data_contracts_kinds() -> None:
    assert typing.get_args(Kind) == VENUE_KINDS


def test_registered_venues_join_the_simulations_in_venues_parquet(run: Path) -> None:
    book = VenueBook(run)
    first = book.register("建设路小区", "compound", "411202", 7, "建设路 1 号")
    second = book.register("湖滨市场", "market", "411202", 8, "")
    assert first.venue.venue_id == "compound-411202-v0001"
    assert second.venue.venue_id == "market-411202-v0001"
    rows = pq.read_table(data_dir(run) / "venues.parquet").to_pylist()
    assert [r["venue_id"] for r in rows] == [
        "market-411202-0001",
        "compound-411202-v0001",
        "market-411202-v0001",
    ]
    assert tk.venue_kind(first.venue.venue_id) == "compound"
    assert book.venue(second.venue.venue_id) == (second.venue, 8, "")
    assert book.gate(first.gate_key) is not None and book.gate("not-a-key") is None


def test_the_run_clock_is_the_simulated_day_at_the_local_time(run: Path) -> None:
    assert local_now(run).date() == AS_OF
    (node_dir(run, "venues")).mkdir(parents=True)
    (node_dir(run, "venues") / DATE_FILE).write_text("2020-02-12\n")
    assert local_now(run).date() == dt.date(2020, 2, 12)


def test_checkins_are_delivered_once_and_the_venue_node_reads_them(run: Path) -> None:
    book = VenueBook(run)
    venue = book.register("建设路小区", "compound", "411202", 7, "").venue
    at = dt.datetime.combine(AS_OF, dt.time(9, 25))
    book.check_in(subject(1), venue.venue_id, at)
    book.check_in(subject(2), venue.venue_id, at + dt.timedelta(minutes=5))
    (path,) = book.deliver()
    assert path == data_dir(run) / "checkins" / "day=2020-02-10" / "2020-02-10-service-1.parquet"
    assert book.deliver() == []  # nothing new
    delivered = path.read_bytes()

    # a delivery that claimed its batch and died before writing: the next one writes the same file
    path.unlink()
    with sqlite3.connect(run / "venues" / "venues.sqlite") as db:
        db.execute("UPDATE batches SET written = 0")
    assert book.deliver() == [path]
    assert path.read_bytes() == delivered

    store = AgencyStore(run, "venues", as_of=AS_OF)
    tokens = {
        (str(s), str(t))
        for _, frame in store.iter_partitions((AS_OF, AS_OF))
        for s, t in frame.itertuples(index=False)
    }
    hour = tk.venue_hour(venue.venue_id, dt.datetime(2020, 2, 10, 9))
    assert {(subject(1), hour), (subject(2), hour)} <= tokens
    assert store.unreadable == {}
    counts = venue_counts(run)  # what the commander sees: per kind, nothing more
    assert counts == {"day": "2020-02-10", "total": 2, "rows": [{"kind": "compound", "total": 2, "today": 2}]}


def test_a_delivery_is_read_only_from_its_delivery_date_on(run: Path) -> None:
    book = VenueBook(run)
    venue = book.register("湖滨医院", "hospital", "411202", 7, "").venue
    book.check_in(subject(3), venue.venue_id, dt.datetime.combine(AS_OF, dt.time(10, 0)))
    (node_dir(run, "venues")).mkdir(parents=True)
    (node_dir(run, "venues") / DATE_FILE).write_text("2020-02-11\n")  # delivered a day late
    (path,) = book.deliver()
    assert path.name == "2020-02-11-service-1.parquet"
    early = AgencyStore(run, "venues", as_of=AS_OF)
    late = AgencyStore(run, "venues", as_of=AS_OF + dt.timedelta(days=1))
    assert (early.good_rows, late.good_rows) == ({"checkins": 0}, {"checkins": 1})
    rows_early = sum(len(f) for _, f in early.iter_partitions((AS_OF, AS_OF)))
    rows_late = sum(len(f) for _, f in late.iter_partitions((AS_OF, AS_OF)))
    assert (rows_early, rows_late) == (0, 1)
