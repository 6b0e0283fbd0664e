"""Build jobs: tokenise one dataset day from the agency's files and build the index of each of its token
kinds' partitions, in a worker.

A node's expensive work is per dataset and day: read the row groups that hold the day's records, validate
and tokenise them (every kind at once), then, per kind's partition, one OPRF evaluation per distinct token
and one sealed label each, under that partition's own key. `partition_jobs` plans that work from the
files' row-group statistics alone (no record is read), and `build_partition` — a top-level function whose
arguments are paths, row-group numbers and the partitions' keys — does one job from start to finish. An
executor (a local process pool or a Dask cluster) runs the jobs side by side; each worker holds one dataset
day's records at a time and sends back only the index metadata, the malformed-row counts of the row groups
it read, and its timings. Workers read the agency's files and write the index files themselves, so they need
the node's state directory (on one machine, or a shared filesystem for a Dask cluster).

A record that spans midnight belongs to the partitions of both days: the row group of its start day is
read for the next day's partition too (the row group's statistics say which days it can reach).
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import time
from collections.abc import Mapping
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
    """One dataset day to build: its dataset, the row groups that can hold its records, and its day; it
    yields one partition per token kind of the dataset (`partition_ids`)."""

    dataset: str
    groups: tuple[int, ...]
    day: int | None
    """Days since 1970-01-01; None for a static dataset (every row group)."""
    as_of: dt.date | None = None
    """The node's date: the row groups are numbered over the files delivered by then."""

    @property
    def date(self) -> dt.date | None:
        """The job's day as a date (None: static)."""
        return None if self.day is None else _EPOCH + dt.timedelta(days=self.day)

    @property
    def partition_ids(self) -> list[str]:
        """The partitions this job builds, one per token kind, sorted."""
        return tk.dataset_partition_ids(self.dataset, self.date)


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
    """Malformed and good rows of the row groups read (carried by a job's first outcome only)."""
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
            jobs.append(PartitionJob(ds.name, groups, None, store.as_of))
            continue
        days = store.row_group_days(ds.name)
        for day in range(first, last + 1):
            reach = tuple(g for g, (low, high) in enumerate(days) if low <= day <= high)
            jobs.append(PartitionJob(ds.name, reach, day, store.as_of))
    return jobs


def read_rows(store: AgencyStore, job: PartitionJob) -> pd.DataFrame:
    """A job's distinct (subject_id, token) rows, every kind together, as `AgencyStore.iter_partitions`
    yields them split by kind. Reads only the job's row groups (their malformed counts are recorded in
    `store`)."""
    return store.read_day(job.dataset, job.groups, job.day)


def build_partition(
    run_dir: str,
    agency: str,
    job: PartitionJob,
    index_dir: str,
    current: Mapping[str, PartitionKey | None],
    fresh: Mapping[str, PartitionKey | None],
    previous: Mapping[str, str | None] | None = None,
) -> list[BuildOutcome]:
    """Worker: tokenise one dataset day and write the index of each of its kinds' partitions (outcomes in
    `job.partition_ids` order). A partition's index is built under `current[pid]` when that key is bound to
    its rows (reused as is when `previous[pid]`, the metadata of the index on disk, was built from them),
    else under `fresh[pid]` bound to them now; KeyReuseError when only a key bound to other rows is given."""
    started = time.perf_counter()
    store = AgencyStore(run_dir, agency, job.as_of)
    rows = read_rows(store, job)
    counts = store.counts()
    grouped = idx.group_rows(rows) if not rows.empty else None
    del rows  # only the grouped rows are needed from here on
    tokenised = time.perf_counter()
    by_kind = idx.split_kinds(grouped) if grouped is not None else {}
    outcomes = []
    for pid in job.partition_ids:
        kind, _ = tk.parse_partition_id(pid)
        groups = by_kind.get(kind)
        at = time.perf_counter()
        if groups is None:
            outcome = BuildOutcome(pid, 0, None, None, False, {}, 0.0, 0.0)
        else:
            outcome = _build_one(pid, groups, index_dir, current.get(pid), fresh.get(pid),
                                 (previous or {}).get(pid))
        outcomes.append(dataclasses.replace(outcome, index_seconds=time.perf_counter() - at))
    if outcomes:
        outcomes[0] = dataclasses.replace(outcomes[0], counts=counts, tokenise_seconds=tokenised - started)
    return outcomes


def _build_one(
    pid: str,
    groups: idx.Groups,
    index_dir: str,
    current: PartitionKey | None,
    fresh: PartitionKey | None,
    previous: str | None,
) -> BuildOutcome:
    """One partition of a job: its index reused, or written under its current or a fresh key."""
    n_rows = len(groups.bodies)
    fingerprint = groups.digest()
    if current is not None and current.rows_digest == fingerprint:
        key = current
        if previous is not None:
            try:
                old = idx.IndexMeta.from_json(previous)
            except idx.IndexFileError:
                old = None
            if old is not None and old.rows_digest == fingerprint and old.public_key == key.pk:
                return BuildOutcome(pid, n_rows, fingerprint, None, True, {}, 0.0, 0.0, key=key)
    elif fresh is not None:
        key = dataclasses.replace(fresh, rows_digest=fingerprint)
    elif current is not None:
        key = current
    else:
        raise ValueError(f"{pid}: no key to build with")
    key.check_seals(fingerprint)
    meta, offsets = idx.build_index(Path(index_dir), pid, key.sk, key.pk, groups)
    return BuildOutcome(
        pid, n_rows, fingerprint, meta.to_json(), False, {}, 0.0, 0.0, offsets.tobytes(), key=key,
        fresh=key is not current,
    )
