"""Hosts' deliveries to the police declarations dataset: new names never replace a file, nothing half-written
is left behind, the layout's readers find the rows; and the form's date bounds around the run's date."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import pyarrow.parquet as pq
import pytest
from pydantic import ValidationError

from proto import layout
from proto.ids import check_char
from proto.schemas import SCHEMAS
from runctx.parquet import write_table
from service.host import forms
from service.host.deliveries import DeliveryError, declared_by, deliver, table_of

TODAY = dt.date(2020, 1, 31)


def declaration(*starts: str) -> forms.DeclarationRequest:
    """A tenancy declaration of one person per first day, each to 2020-06-30, checked as of TODAY."""
    bodies = [f"4112021986071{2100 + i}" for i in range(len(starts))]
    people = [
        {
            "subject_id": b + check_char(b),
            "name": "许莉",
            "role": "tenant",
            "from_date": s,
            "to_date": "2020-06-30",
        }
        for b, s in zip(bodies, starts, strict=True)
    ]
    return forms.parse({"place_id": "dwelling-411202-0000006", "people": people}, TODAY)


def test_deliveries_on_one_day_take_new_names_and_leave_no_temporary_file(tmp_path: Path) -> None:
    existing = tmp_path / "data" / "police" / "declarations" / "day=2020-01-20" / "2020-01-31-0.parquet"
    write_table(existing, SCHEMAS["declarations"].empty_table())
    before = existing.read_bytes()
    first = deliver(tmp_path, table_of(declaration("2020-01-25", "2020-01-20"), "host-1"), TODAY)
    second = deliver(tmp_path, table_of(declaration("2020-01-20"), "host-2"), TODAY)
    assert (first.name, second.name) == ("2020-01-31-1.parquet", "2020-01-31-2.parquet")
    assert first.parent == existing.parent  # the partition of the earliest from_date
    assert existing.read_bytes() == before
    assert sorted(p.name for p in existing.parent.iterdir()) == [existing.name, first.name, second.name]
    files = layout.dataset_files(tmp_path / "data" / "police", "declarations", TODAY)
    assert [f.path for f in files] == [existing, first, second]
    assert (
        layout.dataset_files(tmp_path / "data" / "police", "declarations", TODAY - dt.timedelta(days=1)) == []
    )
    assert pq.read_table(first).num_rows == 2
    assert [d.from_date for d in declared_by(tmp_path, "host-1")] == [
        dt.date(2020, 1, 25),
        dt.date(2020, 1, 20),
    ]
    assert declared_by(tmp_path, "nobody") == []


def test_a_dataset_held_in_one_file_is_not_appended_to(tmp_path: Path) -> None:
    single = tmp_path / "data" / "police" / "declarations.parquet"
    write_table(single, SCHEMAS["declarations"].empty_table())
    with pytest.raises(DeliveryError, match="single file"):
        deliver(tmp_path, table_of(declaration("2020-01-20"), "host"), TODAY)
    assert not (tmp_path / "data" / "police" / "declarations").exists()


@pytest.mark.parametrize(
    ("start", "ok"),
    [("2019-01-30", True), ("2019-01-29", False), ("2020-03-02", True), ("2020-03-03", False)],
)
def test_first_days_are_bounded_around_the_runs_date(start: str, ok: bool) -> None:
    if ok:
        assert declaration(start).people[0].from_date == dt.date.fromisoformat(start)
    else:
        with pytest.raises(ValidationError, match="from_date: must lie between 2019-01-30 and 2020-03-02"):
            declaration(start)
