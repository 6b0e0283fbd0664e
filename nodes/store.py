"""An agency's own files, read as token partitions, with malformed rows counted by category and skipped.

`AgencyStore(run_dir, agency, as_of)` reads only `RUN/data/<agency>/`, and of a day-partitioned dataset
only the files delivered by `as_of` (`proto.layout`: `day=YYYY-MM-DD/<delivery date>-<n>.parquet`; a single
file of the same schema is read whole). Dated datasets are streamed row group by row group (the simulation
writes one file per day and delivery, a single file one row group per day): a record enters memory when its
row group is needed for a day of the window and leaves once its last day has been tokenised, so a stay that
crosses midnight (or a multi-night hotel stay) is carried into the next day's partition and nothing else is
kept.

A row is malformed when a token-relevant value is missing (`missing_value`), its subject id is not
17 digits and the right MOD 11-2 check character (`bad_subject_id`), a stay's end is not after its start
(`end_not_after_start`; also a check-in whose `leave` is not after its `at`, a declaration whose `to_date` is
before its `from_date`), a stay's cell is not in cells.parquet (`unknown_cell`), or a hotel stay has fewer
than one night (`bad_nights`); also when a value is out of its type's range (`out_of_range`), longer than
its limit (`too_long`) or a stay, hotel visit or check-in lasts more than 31 days (`visit_too_long`). Each
malformed row is counted once, under the first of these that applies (`proto.tokenize.CATEGORIES`). A file
that cannot be read as its schema (not Parquet, a column of the wrong type) is named in `unreadable` and
skipped; the rest is served. A good row that repeats an earlier one of its row group in every token column
is an exact duplicate: skipped (it adds no token) and counted per file in `duplicates`.
"""

from __future__ import annotations

import datetime as dt
import functools
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import NamedTuple

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from proto import ids, layout, tokenize
from proto import tokens as tk
from proto.layout import LayoutError
from proto.tokenize import CATEGORIES, DATASETS, MAX_ID_BYTES, MAX_NAME_CHARS, MAX_VISIT_DAYS, Dataset

_DAY = 86400
BODY_COLUMN = "subject_body"
"""The column the store adds to the rows it reads: each subject id's 17-digit body (see `ids.parse`)."""


Counts = dict[tuple[str, int], tuple[dict[str, int], int, int]]
"""(dataset, row group) → (malformed rows by category, good rows, exact duplicates skipped)."""


class StoreError(ValueError):
    """An agency's data directory cannot be read (unknown agency, missing file or column)."""


_INT32 = (-(2**31), 2**31 - 1)
_KINDS: dict[str, tuple[str, Callable[[pa.DataType], bool]]] = {
    "cell_id": ("an integer", lambda t: pa.types.is_integer(t) or pa.types.is_floating(t)),
    "start": ("a timestamp", pa.types.is_timestamp),
    "end": ("a timestamp", pa.types.is_timestamp),
    "service_date": ("a date", lambda t: pa.types.is_date32(t) or pa.types.is_timestamp(t)),
    "birth_date": ("a date", lambda t: pa.types.is_date32(t) or pa.types.is_timestamp(t)),
    "check_in": ("a date", lambda t: pa.types.is_date32(t) or pa.types.is_timestamp(t)),
    "from_date": ("a date", lambda t: pa.types.is_date32(t) or pa.types.is_timestamp(t)),
    "to_date": ("a date", lambda t: pa.types.is_date32(t) or pa.types.is_timestamp(t)),
    "at": ("a timestamp", pa.types.is_timestamp),
    "leave": ("a timestamp", pa.types.is_timestamp),
    "carriage": ("an integer", pa.types.is_integer),
    "nights": ("an integer", pa.types.is_integer),
}
"""What each non-string token column must hold (every other token column is a string)."""
_STRING: tuple[str, Callable[[pa.DataType], bool]] = (
    "a string", lambda t: pa.types.is_string(t) or pa.types.is_large_string(t)
)


def schema_problem(ds: Dataset, schema: pa.Schema) -> str | None:
    """Why a file's schema cannot be read as the dataset (a token column missing or of the wrong type)."""
    for col in ds.columns:
        if col not in schema.names:
            return f"missing column {col}"
        actual = schema.field(col).type
        what, ok = _KINDS.get(col, _STRING)
        if not ok(actual):
            return f"column {col} is {actual}, not {what}"
    return None


_SPAN_COLUMNS = {
    "stays": ("start", "end"),
    "tickets": ("service_date",),
    "hotel_stays": ("check_in", "nights"),
    "checkins": ("at",),
    "declarations": ("from_date", "to_date"),
}
"""The columns `AgencyStore._spans` reads, per dated dataset."""


class _Piece(NamedTuple):
    """One row group of one of a dataset's files: the unit the store reads."""

    path: Path
    file: pq.ParquetFile
    group: int


def _open_files(
    root: Path, ds: Dataset, as_of: dt.date | None, unreadable: dict[str, str]
) -> list[tuple[Path, pq.ParquetFile]]:
    """A dataset's files delivered by `as_of`, opened, each checked to hold the token columns with their
    types; a file that cannot be read as the schema is named in `unreadable` and skipped."""
    try:
        files = layout.dataset_files(root, ds.name, as_of)
    except (LayoutError, OSError) as exc:
        raise StoreError(f"{root.name}: {exc}") from None
    out = []
    for f in files:
        try:
            pf = pq.ParquetFile(f.path)
        except (OSError, pa.ArrowException) as exc:
            unreadable[str(f.path)] = f"not a readable Parquet file ({exc})"
            continue
        problem = schema_problem(ds, pf.schema_arrow)
        if problem is not None:
            unreadable[str(f.path)] = problem
            continue
        out.append((f.path, pf))
    return out


def repeated(table: pa.Table, columns: Sequence[str], among: np.ndarray) -> np.ndarray:
    """The rows of `among` that repeat an earlier row of `among` in every one of `columns` (the first of each
    set of equal rows is not marked)."""
    n = table.num_rows
    if n < 2:
        return np.zeros(n, dtype=bool)
    keyed = table.select(list(columns)).append_column("__row", pa.array(np.arange(n))).filter(pa.array(among))
    first = keyed.group_by(list(columns), use_threads=False).aggregate([("__row", "min")])["__row_min"]
    kept = np.zeros(n, dtype=bool)
    kept[first.to_numpy()] = True
    return among & ~kept


def _day_number(value: object) -> int:
    """A date or timestamp statistic as days since 1970-01-01."""
    return int(np.datetime64(value, "D").astype(np.int64))  # type: ignore[call-overload]


def _as_day_numbers(column: pa.ChunkedArray | pa.Array) -> np.ndarray:
    """A non-null date32 or timestamp column as int64 days since 1970-01-01."""
    if pa.types.is_timestamp(column.type):
        return column.cast(pa.timestamp("s"), safe=False).cast(pa.int64()).to_numpy() // _DAY
    return column.cast(pa.int32()).to_numpy().astype(np.int64)


class AgencyStore:
    """An agency's data files (RUN/data/<agency>/) as token partitions, skipping malformed rows."""

    def __init__(self, run_dir: str | Path, agency: str, as_of: dt.date | None = None) -> None:
        """Open the agency's files delivered by `as_of` (every file when None; see `proto.layout`); raises
        StoreError for an unknown agency, a missing file or column, or a file named outside the layout."""
        if agency not in DATASETS:
            raise StoreError(f"unknown agency {agency!r}; expected one of {sorted(DATASETS)}")
        self.agency = agency
        self.as_of = as_of
        self.root = Path(run_dir) / "data" / agency
        self.datasets = DATASETS[agency]
        self._pieces: dict[str, list[_Piece]] = {}
        self._schemas: dict[str, pa.Schema] = {}
        self.unreadable: dict[str, str] = {}
        """Files skipped because they cannot be read as their schema: path → why."""
        for ds in self.datasets:
            self._pieces[ds.name] = []
            skipped = len(self.unreadable)
            opened = _open_files(self.root, ds, as_of, self.unreadable)
            for path, pf in opened:
                self._pieces[ds.name].extend(_Piece(path, pf, g) for g in range(pf.num_row_groups))
                self._schemas.setdefault(ds.name, pa.schema([pf.schema_arrow.field(c) for c in ds.columns]))
            if not opened and len(self.unreadable) > skipped:  # every file of it skipped: not served
                del self._pieces[ds.name]
        self.datasets = tuple(ds for ds in self.datasets if ds.name in self._pieces)
        self._cells: pd.DataFrame | None = None
        self._counts: dict[tuple[str, int], dict[str, int]] = {}
        self._good: dict[tuple[str, int], int] = {}
        self._twice: dict[tuple[str, int], int] = {}

    # -- reference data -------------------------------------------------------------------------------

    def cells(self) -> pd.DataFrame:
        """The carrier's cells (cell_id, region_code, x_km, y_km); StoreError for other agencies."""
        if self.agency != "carrier":
            raise StoreError(f"{self.agency} has no cells file")
        if self._cells is None:
            path = self.root / "cells.parquet"
            if not path.is_file():
                raise StoreError(f"carrier: missing data file {path}")
            self._cells = self._read_cells(path)
        return self._cells

    def _read_cells(self, path: Path) -> pd.DataFrame:
        """cells.parquet with its unusable rows dropped (and named in `unreadable`): a cell id that is null,
        NaN or out of int32's range, or listed twice (every row of it: which region is meant is unknown). A
        file that cannot be read as its schema gives no cells."""
        empty = pd.DataFrame({"cell_id": pd.Series(dtype=np.int32), "region_code": pd.Series(dtype=object)})
        try:
            table = pq.read_table(path)
        except (OSError, pa.ArrowException) as exc:
            self.unreadable[str(path)] = f"not a readable Parquet file ({exc})"
            return empty
        problem = schema_problem(Dataset("cells", ("cell_id", "region_code"), None), table.schema)
        if problem is not None:
            self.unreadable[str(path)] = problem
            return empty
        cell = table["cell_id"].cast(pa.float64()).to_numpy(zero_copy_only=False)
        usable = np.isfinite(cell) & (cell >= _INT32[0]) & (cell <= _INT32[1]) & (np.floor(cell) == cell)
        ids_seen = pd.Series(cell)
        twice = ids_seen.duplicated(keep=False).to_numpy() & usable
        keep = usable & ~twice
        dropped = []
        if (~usable).any():
            dropped.append(f"{int((~usable).sum())} rows with a null, NaN or out-of-range cell_id")
        if twice.any():
            dropped.append(f"{int(twice.sum())} rows of {ids_seen[twice].nunique()} cell ids listed twice")
        if dropped:
            self.unreadable[str(path)] = "skipped " + " and ".join(dropped)
        frame = table.filter(pa.array(keep)).to_pandas()
        return frame.assign(cell_id=frame["cell_id"].astype(np.int32))

    # -- validation -------------------------------------------------------------------------------------

    def _validate(self, ds: Dataset, table: pa.Table) -> tuple[np.ndarray, np.ndarray, dict[str, int]]:
        """The good-row mask and subject bodies of one row group, and its malformed counts by category."""
        n = table.num_rows
        bad = np.zeros(n, dtype=bool)
        counts = dict.fromkeys(CATEGORIES, 0)

        def mark(category: str, mask: np.ndarray) -> None:
            new = mask & ~bad
            counts[category] += int(new.sum())
            bad[:] |= new

        def flags(mask: pa.ChunkedArray | pa.Array) -> np.ndarray:
            return np.asarray(pc.fill_null(mask, False).to_numpy(zero_copy_only=False), dtype=bool)

        missing = np.zeros(n, dtype=bool)
        for col in ds.required:
            missing |= table[col].is_null().to_numpy(zero_copy_only=False)
            if pa.types.is_floating(table[col].type):
                missing |= flags(pc.is_nan(table[col]))
        mark("missing_value", missing)
        valid, bodies = ids.parse(table["subject_id"])
        mark("bad_subject_id", ~valid)
        if "cell_id" in ds.columns:
            cell = table["cell_id"].cast(pa.float64())
            outside = pc.or_(pc.less(cell, _INT32[0]), pc.greater(cell, _INT32[1]))
            mark("out_of_range", flags(pc.or_(outside, pc.not_equal(pc.floor(cell), cell))))
        long = np.zeros(n, dtype=bool)
        for col in ds.columns:
            if col == "subject_id" or col in _KINDS:
                continue
            length = pc.utf8_length(table[col]) if col == "name" else pc.binary_length(table[col])
            long |= flags(pc.greater(length, MAX_NAME_CHARS if col == "name" else MAX_ID_BYTES))
        mark("too_long", long)
        if ds.name == "stays":
            mark("end_not_after_start", flags(pc.less_equal(table["end"], table["start"])))
            cell_ids = pa.array(self.cells()["cell_id"].to_numpy(np.float64))
            known = pc.is_in(table["cell_id"].cast(pa.float64()), value_set=cell_ids)
            mark("unknown_cell", ~flags(known))
            start = table["start"].cast(pa.timestamp("s"), safe=False).cast(pa.int64())
            end = table["end"].cast(pa.timestamp("s"), safe=False).cast(pa.int64())
            mark("visit_too_long", flags(pc.greater(pc.subtract(end, start), MAX_VISIT_DAYS * _DAY)))
        if ds.name == "hotel_stays":
            mark("bad_nights", flags(pc.less(table["nights"], 1)))
            mark("visit_too_long", flags(pc.greater(table["nights"], MAX_VISIT_DAYS)))
        if ds.name == "checkins":
            at = table["at"].cast(pa.timestamp("s"), safe=False).cast(pa.int64())
            leave = table["leave"].cast(pa.timestamp("s"), safe=False).cast(pa.int64())
            length = pc.subtract(leave, at)
            mark("end_not_after_start", flags(pc.less_equal(length, 0)))
            mark("visit_too_long", flags(pc.greater(length, MAX_VISIT_DAYS * _DAY)))
        if ds.name == "declarations":
            mark("end_not_after_start", flags(pc.less(table["to_date"], table["from_date"])))
        return ~bad, bodies, counts

    def _read(self, ds: Dataset, group: int, reaching: int | None = None) -> pa.Table:
        """One row group's token columns and subject bodies (`BODY_COLUMN`), validated, good rows only; its
        malformed counts are recorded.

        With `reaching` (a day), only the rows whose dates reach that day are validated and kept, and nothing
        is recorded: the group's own day reads it whole. Validation is row by row, so the rows kept are the
        same either way — a day's partition reads the day before for the few stays over midnight, and no
        longer checks the whole day again for them.
        """
        piece = self._pieces[ds.name][group]
        table = piece.file.read_row_group(piece.group, columns=list(ds.columns))
        if table.schema != self._schemas[ds.name]:
            try:
                table = table.cast(self._schemas[ds.name])
            except (pa.ArrowInvalid, pa.ArrowNotImplementedError) as exc:
                problem = f"{piece.path}: columns differ from the dataset's first file ({exc})"
                raise StoreError(problem) from None
        if reaching is not None:
            dated = functools.reduce(pc.and_, [pc.is_valid(table[c]) for c in _SPAN_COLUMNS[ds.name]])
            table = table.filter(dated)
            first, last = self._spans(ds, table)
            table = table.filter(pa.array((first <= reaching) & (last >= reaching)))
        good, bodies, counts = self._validate(ds, table)
        twice = repeated(table, ds.columns, good)
        good &= ~twice
        if reaching is None:
            self._counts[(ds.name, group)] = counts
            self._good[(ds.name, group)] = int(good.sum())
            self._twice[(ds.name, group)] = int(twice.sum())
        table = table.append_column(BODY_COLUMN, pa.array(bodies)).filter(pa.array(good))
        if "cell_id" in ds.columns and table["cell_id"].type != pa.int32():  # good rows are in range
            table = table.set_column(
                table.column_names.index("cell_id"), "cell_id", table["cell_id"].cast(pa.int32())
            )
        return table

    def _scan_all(self) -> None:
        """Validate every row group not yet read, so the counts cover the whole files."""
        for ds in self.datasets:
            for group in range(len(self._pieces[ds.name])):
                if (ds.name, group) not in self._counts:
                    self._read(ds, group)

    @property
    def malformed(self) -> dict[str, int]:
        """Malformed rows in the agency's files, by category (every category listed, zeros included)."""
        self._scan_all()
        total = dict.fromkeys(CATEGORIES, 0)
        for counts in self._counts.values():
            for category, n in counts.items():
                total[category] += n
        return total

    @property
    def malformed_by_dataset(self) -> dict[str, dict[str, int]]:
        """Malformed rows per dataset and category (every category listed, zeros included)."""
        self._scan_all()
        out = {ds.name: dict.fromkeys(CATEGORIES, 0) for ds in self.datasets}
        for (name, _), counts in self._counts.items():
            for category, n in counts.items():
                out[name][category] += n
        return out

    @property
    def good_rows(self) -> dict[str, int]:
        """Rows that passed validation, per dataset."""
        self._scan_all()
        out = {ds.name: 0 for ds in self.datasets}
        for (name, _), n in self._good.items():
            out[name] += n
        return out

    @property
    def duplicates(self) -> dict[str, int]:
        """Exact duplicate rows skipped, per file that has any."""
        self._scan_all()
        out: dict[str, int] = {}
        for (name, group), n in self._twice.items():
            if n:
                path = str(self._pieces[name][group].path)
                out[path] = out.get(path, 0) + n
        return out

    def counts(self) -> Counts:
        """The malformed, good and duplicate counts of every row group read so far."""
        return {key: (dict(n), self._good[key], self._twice[key]) for key, n in self._counts.items()}

    def merge_counts(self, counts: Counts) -> None:
        """Record row groups' counts measured elsewhere (a row group read twice is counted once)."""
        for key, (malformed, good, twice) in counts.items():
            self._counts[key] = dict(malformed)
            self._good[key] = good
            self._twice[key] = twice

    # -- row groups -------------------------------------------------------------------------------------

    def _dataset(self, name: str) -> Dataset:
        """The agency's dataset of that name."""
        return next(ds for ds in self.datasets if ds.name == name)

    def row_groups(self, dataset: str) -> int:
        """The number of row groups of a dataset's files delivered by `as_of` (numbered in file order)."""
        return len(self._pieces[dataset])

    def row_group_days(self, dataset: str) -> list[tuple[float, float]]:
        """First and last day (inclusive, days since 1970) each row group's records can contribute tokens
        to, by the file's statistics (unbounded where a statistic is missing); a dated dataset only."""
        ds = self._dataset(dataset)
        out = []
        for _, pf, g in self._pieces[dataset]:
            low = _stat(pf, g, str(ds.date_column), "min")
            first = float(_day_number(low)) if low is not None else float("-inf")
            last = float("inf")
            if ds.name == "stays":
                high = _stat(pf, g, "end", "max")
                if high is not None:
                    last = float(_day_number(high))
            elif ds.name == "hotel_stays":
                high, nights = _stat(pf, g, "check_in", "max"), _stat(pf, g, "nights", "max")
                if high is not None and nights is not None:
                    last = float(_day_number(high) + max(int(str(nights)), 1) - 1)
            elif ds.name == "checkins":
                high, leave = _stat(pf, g, "at", "max"), _stat(pf, g, "leave", "max")
                if high is not None:  # an hour assumed after `at` may cross midnight
                    last = float(_day_number(high) + 1)
                    if leave is not None:
                        last = max(last, float(_day_number(leave)))
            elif ds.name == "declarations":
                high = _stat(pf, g, "to_date", "max")
                if high is not None:
                    last = float(_day_number(high))
            else:
                high = _stat(pf, g, str(ds.date_column), "max")
                if high is not None:
                    last = float(_day_number(high))
            out.append((first, last))
        return out

    def read_day(self, dataset: str, groups: Sequence[int], day: int | None) -> pd.DataFrame:
        """One day's distinct (subject_id, token) rows of a dataset, every kind's partition together
        (`kind_partitions` splits them), from the given row groups only (all of them for a static dataset,
        whose `day` is None)."""
        ds = self._dataset(dataset)
        if day is None:
            return self._static(ds)
        starts = self.row_group_days(dataset)
        tables = [self._read(ds, g, day if starts[g][0] < day else None) for g in groups]
        if not tables:
            return _columns(tokenize.empty())
        table = pa.concat_tables(tables)
        del tables
        span_first, span_last = self._spans(ds, table)
        today = (span_first <= day) & (span_last >= day)
        if not today.any():
            return _columns(tokenize.empty())
        rows = records(table.filter(pa.array(today)))
        del table
        return self._day_tokens(ds, rows, day)

    # -- partitions -------------------------------------------------------------------------------------

    def partition_ids(self, window: tuple[dt.date, dt.date]) -> list[str]:
        """The partition ids iter_partitions yields for this window, in order (dataset, day, kind)."""
        first, last = window
        out = []
        for ds in self.datasets:
            if ds.date_column is None:
                out.extend(tk.dataset_partition_ids(ds.name, None))
            else:
                for i in range((last - first).days + 1):
                    out.extend(tk.dataset_partition_ids(ds.name, first + dt.timedelta(days=i)))
        return out

    def iter_partitions(self, window: tuple[dt.date, dt.date]) -> Iterator[tuple[str, pd.DataFrame]]:
        """Yield (partition_id, frame of distinct (subject_id, token)) per dataset, day and token kind of the
        window.

        `window` is (first_day, last_day), inclusive; static partitions are always included. Days with no
        records yield empty frames. Frames are sorted by (token, subject_id); columns are Categoricals.
        """
        first, last = window
        if last < first:
            raise StoreError(f"empty window {first} .. {last}")
        for ds in self.datasets:
            if ds.date_column is None:
                yield from kind_partitions(self._static(ds), ds.name, None)
            else:
                for day, frame in self._daily(ds, _day_number(first), _day_number(last)):
                    yield from kind_partitions(frame, ds.name, _date(day))

    def _static(self, ds: Dataset) -> pd.DataFrame:
        """The one partition of a static dataset (the population register)."""
        tables = [self._read(ds, g) for g in range(len(self._pieces[ds.name]))]
        if not tables:
            return _columns(tokenize.empty())
        frame = records(pa.concat_tables(tables))
        return _columns(tokenize.population_tokens(frame))

    def _spans(self, ds: Dataset, table: pa.Table) -> tuple[np.ndarray, np.ndarray]:
        """First and last day (days since 1970, inclusive) each good row contributes tokens to."""
        if ds.name == "stays":
            start = table["start"].cast(pa.timestamp("s"), safe=False).cast(pa.int64()).to_numpy()
            end = table["end"].cast(pa.timestamp("s"), safe=False).cast(pa.int64()).to_numpy()
            return start // _DAY, (end - 1) // _DAY
        first = _as_day_numbers(table[ds.date_column])
        if ds.name == "hotel_stays":
            return first, first + table["nights"].cast(pa.int64()).to_numpy() - 1
        if ds.name == "checkins":
            at = table["at"].cast(pa.timestamp("s"), safe=False).cast(pa.int64()).to_numpy()
            leave = table["leave"].cast(pa.timestamp("s"), safe=False).cast(pa.int64())
            end = pc.coalesce(leave, pa.array(at + tokenize.VENUE_DEFAULT_SECONDS)).to_numpy()
            return at // _DAY, np.maximum(end - 1, at) // _DAY
        if ds.name == "declarations":
            return first, _as_day_numbers(table["to_date"])
        return first, first

    def _day_tokens(self, ds: Dataset, rows: pd.DataFrame, day: int) -> pd.DataFrame:
        """The tokens of `day` (every kind) from the (validated) rows that reach it."""
        pids = tk.dataset_partition_ids(ds.name, _date(day))
        tokens = _TOKENIZERS[ds.name](self, rows, day)
        if len(tokens) and not set(tokens["partition_id"].cat.categories) <= set(pids):
            return _columns(tokens[tokens["partition_id"].isin(pids)].reset_index(drop=True))
        return tokens[["subject_id", "token"]]

    def _daily(self, ds: Dataset, first: int, last: int) -> Iterator[tuple[int, pd.DataFrame]]:
        """Stream a dated dataset's days first..last (each day's tokens of every kind), carrying rows that
        span days."""
        pending = sorted((low, g) for g, (low, _) in enumerate(self.row_group_days(ds.name)))
        buffer: pa.Table | None = None
        span_first = span_last = np.zeros(0, dtype=np.int64)
        for day in range(first, last + 1):
            while pending and pending[0][0] <= day:
                table = self._read(ds, pending.pop(0)[1])
                f, la = self._spans(ds, table)
                keep = la >= day
                table, f, la = table.filter(pa.array(keep)), f[keep], la[keep]
                buffer = table if buffer is None else pa.concat_tables([buffer, table])
                span_first, span_last = np.concatenate([span_first, f]), np.concatenate([span_last, la])
            if buffer is None or buffer.num_rows == 0:
                yield day, _columns(tokenize.empty())
                continue
            today = (span_first <= day) & (span_last >= day)
            yield day, self._day_tokens(ds, records(buffer.filter(pa.array(today))), day)
            done = span_last <= day
            if done.any():
                buffer = buffer.filter(pa.array(~done))
                span_first, span_last = span_first[~done], span_last[~done]


def records(table: pa.Table) -> pd.DataFrame:
    """Validated rows read by the store as a DataFrame, the subject ids a Categorical of the distinct ids.

    The categories come in ascending order, found from the subject bodies (`BODY_COLUMN`, dropped): valid ids
    have equal length and digits before the check character, so they sort as their bodies do.
    """
    codes, distinct = pd.factorize(table[BODY_COLUMN].to_numpy(), sort=True)
    first = np.empty(len(distinct), dtype=np.int64)
    first[codes] = np.arange(len(codes))  # any row of each subject
    subjects = pd.Index(table["subject_id"].take(pa.array(first)).to_pandas(), dtype="str")
    frame = table.drop_columns([BODY_COLUMN, "subject_id"]).to_pandas(date_as_object=False)
    dtype = pd.CategoricalDtype(subjects)
    subject = pd.Categorical.from_codes(codes.astype(np.int32), dtype=dtype, validate=False)
    frame.insert(0, "subject_id", subject)
    return frame


def _stat(pf: pq.ParquetFile, group: int, column: str, which: str) -> object:
    """A row group's min or max statistic of a column, or None when the file has none."""
    names = pf.schema_arrow.names
    if column not in names:
        return None
    stats = pf.metadata.row_group(group).column(names.index(column)).statistics
    if stats is None or not stats.has_min_max:
        return None
    return stats.min if which == "min" else stats.max


def kind_partitions(
    frame: pd.DataFrame, dataset: str, day: dt.date | None
) -> Iterator[tuple[str, pd.DataFrame]]:
    """Split one day's (subject_id, token) rows of a dataset into its kinds' partitions, in partition id
    order (an empty frame for a kind with no tokens)."""
    categories = frame["token"].cat.categories
    kind_of_category = np.array([str(t).split(tk.SEP, 1)[0] for t in categories], dtype=object)
    codes = frame["token"].cat.codes.to_numpy()
    kinds = kind_of_category[codes] if len(categories) else np.zeros(0, dtype=object)
    for pid in tk.dataset_partition_ids(dataset, day):
        kind, _ = tk.parse_partition_id(pid)
        yield pid, _columns(frame[kinds == kind].reset_index(drop=True))


def _date(day: int) -> dt.date:
    """Days since 1970-01-01 as a date."""
    return dt.date(1970, 1, 1) + dt.timedelta(days=int(day))


def _columns(frame: pd.DataFrame) -> pd.DataFrame:
    """The (subject_id, token) columns of a (filtered) token frame, unused categories dropped."""
    out = frame[["subject_id", "token"]]
    return out.assign(
        subject_id=out["subject_id"].cat.remove_unused_categories(),
        token=out["token"].cat.remove_unused_categories(),
    )


def _stays_day(store: AgencyStore, rows: pd.DataFrame, day: int) -> pd.DataFrame:
    """Tokens of the stays overlapping one day, clipped to that day."""
    lo = np.datetime64(day * _DAY, "s")
    hi = np.datetime64((day + 1) * _DAY, "s")
    start = rows["start"].to_numpy().astype("datetime64[s]")
    end = rows["end"].to_numpy().astype("datetime64[s]")
    clipped = rows.assign(start=np.maximum(start, lo), end=np.minimum(end, hi))
    return tokenize.stay_tokens(clipped, store.cells())


def _tickets_day(store: AgencyStore, rows: pd.DataFrame, day: int) -> pd.DataFrame:
    """Tokens of the tickets of one service date."""
    return tokenize.ticket_tokens(rows)


def _hotel_day(store: AgencyStore, rows: pd.DataFrame, day: int) -> pd.DataFrame:
    """Tokens of the one night `day` of each hotel stay covering it."""
    night = rows.assign(check_in=np.datetime64(day, "D"), nights=np.int16(1))
    return tokenize.hotel_tokens(night)


def _checkins_day(store: AgencyStore, rows: pd.DataFrame, day: int) -> pd.DataFrame:
    """Tokens of the check-ins reaching one day (those of other days are dropped by the caller)."""
    return tokenize.checkin_tokens(rows)


def _declarations_day(store: AgencyStore, rows: pd.DataFrame, day: int) -> pd.DataFrame:
    """Tokens of the one day `day` of each declaration covering it."""
    one = np.datetime64(day, "D")
    return tokenize.declaration_tokens(rows.assign(from_date=one, to_date=one))


_TOKENIZERS: dict[str, Callable[[AgencyStore, pd.DataFrame, int], pd.DataFrame]] = {
    "stays": _stays_day,
    "tickets": _tickets_day,
    "hotel_stays": _hotel_day,
    "checkins": _checkins_day,
    "declarations": _declarations_day,
}
