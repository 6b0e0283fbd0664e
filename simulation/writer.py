"""The agency files of a simulated run, in the contract's schemas (`proto.schemas`, written byte for byte
reproducibly by `runctx.parquet`), and malformed rows injected on purpose.

Datasets that grow day by day (`DAY_PARTITIONED`) are directories partitioned by day (`proto.layout`): one
file per day and delivery, a share of each day's rows delivered a day or two late in a file of its own.
"""

from __future__ import annotations

import datetime as dt
import itertools
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pyarrow as pa

from proto import ids, layout
from proto.schemas import SCHEMAS
from runctx.parquet import write_table

DAY_PARTITIONED: dict[str, str] = {
    "stays": "carrier",
    "tickets": "transport",
    "hotel_stays": "police",
    "declarations": "police",
    "checkins": "venues",
}
"""The datasets written as day-partitioned directories, RUN/data/<agency>/<dataset>/day=…/, by agency
(each with its schema in `SCHEMAS`); every other table is a single file."""
LATE_DELAYS = (1, 2)
LATE_DELAY_WEIGHTS = (0.7, 0.3)
"""How late a late row is: one day after its day, or two."""
# malformed categories injected per dataset (as proto.tokenize.CATEGORIES names them)
MALFORMED: dict[str, tuple[str, ...]] = {
    "stays": ("bad_subject_id", "end_not_after_start", "unknown_cell", "missing_value"),
    "tickets": ("bad_subject_id", "missing_value"),
    "population": ("bad_subject_id", "missing_value"),
    "hotel_stays": ("bad_subject_id", "bad_nights", "missing_value"),
    "declarations": ("bad_subject_id", "end_not_after_start", "missing_value"),
    "checkins": ("bad_subject_id", "end_not_after_start", "missing_value"),
}
# the columns whose value the tokens need (a null there is a missing value)
REQUIRED: dict[str, tuple[str, ...]] = {
    "stays": ("subject_id", "cell_id", "start", "end"),
    "tickets": ("subject_id", "trip_id", "service_date", "carriage"),
    "population": ("subject_id", "name", "birth_date", "household_id"),
    "hotel_stays": ("subject_id", "hotel_id", "room", "check_in", "nights"),
    "declarations": ("subject_id", "place_id", "from_date", "to_date"),
    "checkins": ("subject_id", "venue_id", "at"),
}
UNKNOWN_CELL_BASE = 900_000_000


class DayPartitionedWriter:
    """One of `DAY_PARTITIONED`, written a day at a time: each day's rows go to `day=D/D-0.parquet`, except
    a share `late_rate` delivered one or two days later in `day=D/<delivery>-0.parquet`. Rows due after
    `last_delivery` (the run's last day) have not arrived by the end of the run and are not written."""

    def __init__(self, run_dir: Path, dataset: str, late_rate: float, last_delivery: dt.date) -> None:
        """Prepare RUN/data/<agency>/<dataset>/ (emptied of any earlier run's files of the dataset)."""
        if not 0.0 <= late_rate < 1.0:
            raise ValueError(f"late_rate must be in [0, 1), got {late_rate}")
        self.directory = run_dir / "data" / DAY_PARTITIONED[dataset] / dataset
        self.schema = SCHEMAS[dataset]
        self.late_rate, self.last_delivery = late_rate, last_delivery
        self.rows = self.late = self.undelivered = 0
        self.directory.with_name(f"{dataset}.parquet").unlink(missing_ok=True)
        if self.directory.is_dir():
            for old in self.directory.glob(f"{layout.DAY_PREFIX}*/*.parquet"):
                old.unlink()

    def write_day(self, day: dt.date, table: pa.Table, rng: np.random.Generator) -> np.ndarray:
        """Write one day's rows (in their order), choosing with `rng` which arrive late and by how much;
        returns which rows were delivered by the run's last day (written)."""
        late = rng.random(table.num_rows) < self.late_rate
        delay = np.where(late, rng.choice(LATE_DELAYS, size=table.num_rows, p=LATE_DELAY_WEIGHTS), 0)
        self.rows += table.num_rows
        delivered_mask = np.zeros(table.num_rows, dtype=bool)
        for d in np.unique(delay):
            delivered = day + dt.timedelta(days=int(d))
            if delivered > self.last_delivery:
                self.undelivered += int((delay == d).sum())
                continue
            part = table.filter(pa.array(delay == d))
            delivered_mask |= delay == d
            self.late += part.num_rows if d else 0
            write_table(self.directory / layout.day_directory(day) / layout.delivery_name(delivered), part)
        return delivered_mask

    def write_days(
        self, days: np.ndarray, table: pa.Table, rng: Callable[[int], np.random.Generator]
    ) -> np.ndarray:
        """Write a table sorted by `days` (days since 1970 per row), day by day, `rng(day)` for each;
        returns which rows were delivered by the run's last day."""
        delivered = np.zeros(table.num_rows, dtype=bool)
        if table.num_rows == 0:
            return delivered
        cuts = np.r_[0, np.nonzero(days[1:] != days[:-1])[0] + 1, table.num_rows]
        for a, b in itertools.pairwise(cuts):
            day = int(days[a])
            date = dt.date(1970, 1, 1) + dt.timedelta(days=day)
            delivered[a:b] = self.write_day(date, table.slice(a, b - a), rng(day))
        return delivered

    def counts(self) -> dict[str, int]:
        """Rows given, rows delivered late, rows not yet delivered by the end of the run."""
        return {"rows": self.rows, "late": self.late, "undelivered": self.undelivered}


def fixed_strings(values: np.ndarray, null: np.ndarray | None = None) -> pa.Array:
    """An Arrow string array from a fixed-width bytes array (e.g. S18 ids), without Python objects."""
    values = np.ascontiguousarray(values)
    n, width = len(values), values.dtype.itemsize
    offsets = pa.py_buffer((np.arange(n + 1, dtype=np.int64) * width).astype(np.int32).tobytes())
    data = pa.py_buffer(values.tobytes())
    validity = None
    if null is not None and null.any():
        validity = pa.py_buffer(np.packbits(~null, bitorder="little").tobytes())
    return pa.Array.from_buffers(pa.string(), n, [validity, offsets, data])


def timestamps(seconds: np.ndarray, null: np.ndarray | None = None) -> pa.Array:
    """timestamp[s] from int64 seconds since 1970 (naive local)."""
    return pa.array(
        np.asarray(seconds, dtype=np.int64).astype("datetime64[s]"), type=pa.timestamp("s"), mask=null
    )


def dates(day_numbers: np.ndarray, null: np.ndarray | None = None) -> pa.Array:
    """date32 from days since 1970."""
    return pa.array(np.asarray(day_numbers, dtype=np.int32), type=pa.int32(), mask=null).cast(pa.date32())


def strings(values: np.ndarray, null: np.ndarray | None = None) -> pa.Array:
    """string from an object or unicode array."""
    return pa.array(np.asarray(values, dtype=object), type=pa.string(), mask=null)


class Corruption:
    """Which rows of a batch to make malformed, and how: one category per chosen row."""

    def __init__(self, dataset: str, n: int, rate: float, rng: np.random.Generator) -> None:
        """Choose about `rate` of `n` rows and give each a category of the dataset."""
        self.dataset = dataset
        self.categories = MALFORMED[dataset]
        chosen = np.nonzero(rng.random(n) < rate)[0]
        self.category = np.full(n, -1, dtype=np.int64)
        self.category[chosen] = rng.integers(0, len(self.categories), len(chosen))
        self.missing_column = np.full(n, -1, dtype=np.int64)
        missing = self.rows("missing_value")
        self.missing_column[missing] = rng.integers(0, len(REQUIRED[dataset]), len(missing))
        self.rng = rng

    def rows(self, category: str) -> np.ndarray:
        """Rows given this category."""
        if category not in self.categories:
            return np.zeros(0, dtype=np.int64)
        return np.nonzero(self.category == self.categories.index(category))[0]

    def null(self, column: str) -> np.ndarray:
        """Null mask for a column (rows whose missing value is in this column)."""
        return self.missing_column == REQUIRED[self.dataset].index(column)

    def subject_ids(self, subject_ids: np.ndarray) -> np.ndarray:
        """The S18 ids with a wrong check character in the rows given `bad_subject_id`."""
        out = np.array(subject_ids, dtype="S18")
        rows = self.rows("bad_subject_id")
        if len(rows):
            raw = out.view(np.uint8).reshape(len(out), 18)
            check = np.frombuffer(ids.CHECK_CHARS.encode(), dtype=np.uint8)
            current = np.argmax(raw[rows, 17][:, None] == check[None, :], axis=1)
            raw[rows, 17] = check[(current + self.rng.integers(1, 11, len(rows))) % 11]
        return out

    def counts(self, among: np.ndarray | None = None) -> dict[str, int]:
        """Rows made malformed, by category (of the rows `among` selects, if given: a boolean mask)."""
        category = self.category if among is None else self.category[among]
        return {c: int((category == i).sum()) for i, c in enumerate(self.categories)}
