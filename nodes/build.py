"""Per-partition build jobs: tokenise one partition from the agency's files and build its index, in a worker.

A node's expensive work is per partition (dataset × day): read the row groups that hold the partition's
records, validate and tokenise them, then one OPRF evaluation per distinct token and one sealed label each.
`partition_jobs` plans that work from the files' row-group statistics alone (no record is read), and
`build_partition` — a top-level function whose arguments are paths, row-group numbers and the partition's
key — does one partition from start to finish. An executor (a local process pool or a Dask cluster) runs
the jobs side by side; each worker holds one partition's records at a time and sends back only the index
metadata, the malformed-row counts of the row groups it read, and its timings. Workers read the agency's
files and write the index files themselves, so they need the node's state directory (on one machine, or a
shared filesystem for a Dask cluster).

A record that spans midnight belongs to the partitions of both days: the row group of its start day is
read for the next day's partition too (the row group's statistics say which days it can reach).
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd
import pyarrow as pa

from nodes import index as idx
from nodes import tokenize
from nodes.store import _TOKENIZERS, AgencyStore, Dataset, _columns, _day_number, records
from proto import tokens as tk

_DAY = 86400
Counts = dict[tuple[str, int], tuple[dict[str, int], int]]
"""(dataset, row group) → (malformed rows by category, good rows)."""


@dataclass(frozen=True)
class PartitionJob:
    """One partition to build: its dataset, the row groups that can hold its records, and its day."""

    partition_id: str
    dataset: str
    groups: tuple[int, ...]
    day: int | None
    """Days since 1970-01-01; None for a static dataset (every row group)."""


@dataclass(frozen=True)
class BuildOutcome:
    """What a build job did for one partition (small: it travels back from the worker)."""

    partition_id: str
    rows: int
    """Distinct (subject, token) rows of the partition; 0 for an empty partition (no index)."""
    fingerprint: bytes | None
    meta: str | None
    """The new index's metadata (JSON) when built; None when empty or when the existing index was reused."""
    reused: bool
    counts: Counts
    tokenise_seconds: float
    index_seconds: float
    offsets: bytes = b""
    """The new index's entry offsets (int64, native order), so the node need not parse the file for them."""


@dataclass
class BuildStats:
    """A node's index build, summed over its partitions (seconds are worker time, not wall time)."""

    partitions: int = 0
    built: int = 0
    reused: int = 0
    empty: int = 0
    rows: int = 0
    entries: int = 0
    index_bytes: int = 0
    tokenise_seconds: float = 0.0
    index_seconds: float = 0.0
    wall_seconds: float = 0.0
    workers: str = "in-process"

    def add(self, outcome: BuildOutcome, meta: idx.IndexMeta | None) -> None:
        """Account one partition's outcome."""
        self.partitions += 1
        self.rows += outcome.rows
        self.tokenise_seconds += outcome.tokenise_seconds
        self.index_seconds += outcome.index_seconds
        if outcome.fingerprint is None:
            self.empty += 1
        elif outcome.reused:
            self.reused += 1
        else:
            self.built += 1
        if meta is not None:
            self.entries += meta.entry_count
            self.index_bytes += meta.index_bytes

    def to_json(self) -> dict[str, Any]:
        """The stats as a JSON-ready dict."""
        return dataclasses.asdict(self)


@dataclass
class _GroupDays:
    """First and last day (inclusive, days since 1970) a row group's records can contribute tokens to."""

    group: int
    first: float
    last: float = field(default=float("inf"))


def _stat(pf: Any, group: int, column: str, which: str) -> Any:
    """A row group's min or max statistic of a column, or None when the file has none."""
    names = pf.schema_arrow.names
    if column not in names:
        return None
    stats = pf.metadata.row_group(group).column(names.index(column)).statistics
    if stats is None or not stats.has_min_max:
        return None
    return stats.min if which == "min" else stats.max


def _group_days(store: AgencyStore, ds: Dataset) -> list[_GroupDays]:
    """Each row group's day range by the file's statistics (unbounded where a statistic is missing)."""
    pf = store._files[ds.name]
    out = []
    for g in range(pf.num_row_groups):
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
                last = float(_day_number(high) + max(int(nights), 1) - 1)
        else:
            high = _stat(pf, g, str(ds.date_column), "max")
            if high is not None:
                last = float(_day_number(high))
        out.append(_GroupDays(g, first, last))
    return out


def partition_jobs(store: AgencyStore, window: tuple[dt.date, dt.date]) -> list[PartitionJob]:
    """The build jobs of a window, in the order of `AgencyStore.partition_ids`."""
    first, last = window
    jobs = []
    for ds in store.datasets:
        groups = tuple(range(store._files[ds.name].num_row_groups))
        if ds.date_column is None:
            jobs.append(PartitionJob(tk.partition_id(ds.name, None), ds.name, groups, None))
            continue
        days = _group_days(store, ds)
        for day in range(_day_number(first), _day_number(last) + 1):
            reach = tuple(d.group for d in days if d.first <= day <= d.last)
            date = dt.date(1970, 1, 1) + dt.timedelta(days=day)
            jobs.append(PartitionJob(tk.partition_id(ds.name, date), ds.name, reach, day))
    return jobs


def read_partition(store: AgencyStore, job: PartitionJob) -> pd.DataFrame:
    """A partition's distinct (subject_id, token) rows, as `AgencyStore.iter_partitions` yields them.

    Reads only the job's row groups (their malformed counts are recorded in `store`).
    """
    ds = next(d for d in store.datasets if d.name == job.dataset)
    if job.day is None:
        return store._static(ds)
    tables = [store._read(ds, g) for g in job.groups]
    if not tables:
        return _columns(tokenize.empty())
    table = pa.concat_tables(tables)
    span_first, span_last = store._spans(ds, table)
    today = (span_first <= job.day) & (span_last >= job.day)
    if not today.any():
        return _columns(tokenize.empty())
    rows = records(table.filter(pa.array(today)))
    del table
    tokens = _TOKENIZERS[ds.name](store, rows, job.day)
    del rows
    if len(tokens) and list(tokens["partition_id"].cat.categories) != [job.partition_id]:
        return _columns(tokens[tokens["partition_id"] == job.partition_id].reset_index(drop=True))
    return tokens[["subject_id", "token"]]


def group_counts(store: AgencyStore) -> Counts:
    """The malformed and good counts of every row group `store` has read."""
    return {key: (dict(counts), store._good[key]) for key, counts in store._counts.items()}


def merge_counts(store: AgencyStore, counts: Counts) -> None:
    """Record row groups' counts measured elsewhere (a row group read twice is counted once)."""
    for key, (malformed, good) in counts.items():
        store._counts[key] = dict(malformed)
        store._good[key] = good


def build_partition(
    run_dir: str,
    agency: str,
    job: PartitionJob,
    index_dir: str,
    sk: bytes,
    pk: bytes,
    previous: str | None = None,
) -> BuildOutcome:
    """Worker: tokenise one partition and write its index (unless `previous`, the metadata of the index on
    disk, was built from the same rows under the same key)."""
    started = time.perf_counter()
    store = AgencyStore(run_dir, agency)
    rows = read_partition(store, job)
    counts = group_counts(store)
    tokenised = time.perf_counter()
    if rows.empty:
        return BuildOutcome(job.partition_id, 0, None, None, False, counts, tokenised - started, 0.0)
    fingerprint = idx.rows_digest(rows)
    if previous is not None:
        try:
            old = idx.IndexMeta.from_json(previous)
        except idx.IndexFileError:
            old = None
        if old is not None and old.rows_digest == fingerprint and old.public_key == pk:
            return BuildOutcome(
                job.partition_id, len(rows), fingerprint, None, True, counts, tokenised - started,
                time.perf_counter() - tokenised,
            )
    meta, offsets = idx.build_index_with_offsets(Path(index_dir), job.partition_id, sk, pk, rows, None,
                                                 fingerprint)
    return BuildOutcome(
        job.partition_id, len(rows), fingerprint, meta.to_json(), False, counts, tokenised - started,
        time.perf_counter() - tokenised, offsets.tobytes(),
    )

