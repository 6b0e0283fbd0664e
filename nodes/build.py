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
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd

from nodes import index as idx
from nodes.keys import PartitionKey
from nodes.store import AgencyStore, Counts
from proto import tokens as tk

_EPOCH = dt.date(1970, 1, 1)


@dataclass(frozen=True)
class PartitionJob:
    """One partition to build: its dataset, the row groups that can hold its records, and its day."""

    partition_id: str
    dataset: str
    groups: tuple[int, ...]
    day: int | None
    """Days since 1970-01-01; None for a static dataset (every row group)."""
    as_of: dt.date | None = None
    """The node's date: the row groups are numbered over the files delivered by then."""


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
    key: PartitionKey | None = None
    """The key the partition's index is under, bound to its rows (None for an empty partition)."""
    fresh: bool = False
    """Whether that key is the fresh one (the partition is new or its rows changed)."""


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


def partition_jobs(store: AgencyStore, window: tuple[dt.date, dt.date]) -> list[PartitionJob]:
    """The build jobs of a window, in the order of `AgencyStore.partition_ids`."""
    first, last = ((d - _EPOCH).days for d in window)
    jobs = []
    for ds in store.datasets:
        if ds.date_column is None:
            groups = tuple(range(store.row_groups(ds.name)))
            jobs.append(PartitionJob(tk.partition_id(ds.name, None), ds.name, groups, None, store.as_of))
            continue
        days = store.row_group_days(ds.name)
        for day in range(first, last + 1):
            reach = tuple(g for g, (low, high) in enumerate(days) if low <= day <= high)
            date = _EPOCH + dt.timedelta(days=day)
            jobs.append(PartitionJob(tk.partition_id(ds.name, date), ds.name, reach, day, store.as_of))
    return jobs


def read_partition(store: AgencyStore, job: PartitionJob) -> pd.DataFrame:
    """A partition's distinct (subject_id, token) rows, as `AgencyStore.iter_partitions` yields them.

    Reads only the job's row groups (their malformed counts are recorded in `store`).
    """
    return store.read_partition(job.dataset, job.groups, job.day)


def build_partition(
    run_dir: str,
    agency: str,
    job: PartitionJob,
    index_dir: str,
    current: PartitionKey | None,
    fresh: PartitionKey | None,
    previous: str | None = None,
) -> BuildOutcome:
    """Worker: tokenise one partition and write its index, under `current` when that key is bound to these
    rows (reused as is when `previous`, the metadata of the index on disk, was built from them), else under
    `fresh` bound to them now; KeyReuseError when only a key bound to other rows is given."""
    started = time.perf_counter()
    store = AgencyStore(run_dir, agency, job.as_of)
    rows = read_partition(store, job)
    counts = store.counts()
    tokenised = time.perf_counter()
    if rows.empty:
        return BuildOutcome(job.partition_id, 0, None, None, False, counts, tokenised - started, 0.0)
    n_rows = len(rows)
    groups = idx.group_rows(rows)
    del rows  # only the grouped rows are needed from here on
    fingerprint = groups.digest()
    if current is not None and current.rows_digest == fingerprint:
        key = current
        if previous is not None:
            try:
                old = idx.IndexMeta.from_json(previous)
            except idx.IndexFileError:
                old = None
            if old is not None and old.rows_digest == fingerprint and old.public_key == key.pk:
                return BuildOutcome(
                    job.partition_id, n_rows, fingerprint, None, True, counts, tokenised - started,
                    time.perf_counter() - tokenised, key=key,
                )
    elif fresh is not None:
        key = dataclasses.replace(fresh, rows_digest=fingerprint)
    elif current is not None:
        key = current
    else:
        raise ValueError(f"{job.partition_id}: no key to build with")
    key.check_seals(fingerprint)
    meta, offsets = idx.build_index(Path(index_dir), job.partition_id, key.sk, key.pk, groups)
    return BuildOutcome(
        job.partition_id, n_rows, fingerprint, meta.to_json(), False, counts, tokenised - started,
        time.perf_counter() - tokenised, offsets.tobytes(), key=key, fresh=key is not current,
    )
