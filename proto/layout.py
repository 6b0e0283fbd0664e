"""How agency data lies on disk, and which of its files were delivered by a date.

A dataset that grows day by day is a Parquet directory partitioned by day, hive style:
`<dataset>/day=YYYY-MM-DD/<delivery>-<n>.parquet`, each file named after the date it was delivered (the
day's own date for rows on time, a later date for late rows). A static table — or a whole dataset written
at once — is one file, `<dataset>.parquet`. Names starting with `.` or `_` are not data (the usual
convention for temporary and marker files) and are passed over.
"""

from __future__ import annotations

import datetime as dt
import re
from dataclasses import dataclass
from pathlib import Path

DAY_PREFIX = "day="
_DELIVERY = re.compile(r"^(\d{4}-\d{2}-\d{2})-[^/]*\.parquet$")


class LayoutError(ValueError):
    """A dataset that is missing, or a file or directory whose name does not follow the layout."""


@dataclass(frozen=True, order=True)
class DataFile:
    """One file of a dataset: the day partition it belongs to and its delivery date (both None for a
    dataset held in a single file), and its path."""

    day: dt.date | None
    delivered: dt.date | None
    path: Path


def day_directory(day: dt.date) -> str:
    """The directory name of a day partition: `day=YYYY-MM-DD`."""
    return f"{DAY_PREFIX}{day.isoformat()}"


def delivery_name(delivered: dt.date, n: int = 0) -> str:
    """The name of the `n`-th file delivered on `delivered`: `YYYY-MM-DD-n.parquet`."""
    return f"{delivered.isoformat()}-{n}.parquet"


def _is_data(path: Path) -> bool:
    """False for hidden and marker files (`.tmp…`, `_SUCCESS`)."""
    return not path.name.startswith((".", "_"))


def _date(text: str, path: Path, what: str) -> dt.date:
    """An ISO date from part of a path's name (LayoutError naming the path otherwise)."""
    try:
        return dt.date.fromisoformat(text)
    except ValueError:
        raise LayoutError(f"{path}: {what} {text!r} is not a date (YYYY-MM-DD)") from None


def partition_day(directory: Path) -> dt.date:
    """The day of a `day=YYYY-MM-DD` directory (LayoutError naming it otherwise)."""
    if not directory.name.startswith(DAY_PREFIX):
        raise LayoutError(f"{directory}: not a day partition (expected a directory named day=YYYY-MM-DD)")
    return _date(directory.name[len(DAY_PREFIX) :], directory, "partition day")


def delivery_date(path: Path) -> dt.date:
    """The delivery date a partition file is named after (LayoutError naming the file otherwise)."""
    found = _DELIVERY.match(path.name)
    if found is None:
        raise LayoutError(
            f"{path}: a day partition's file must be named after its delivery date, YYYY-MM-DD-<n>.parquet"
        )
    return _date(found.group(1), path, "delivery date")


def partitioned_files(directory: Path, as_of: dt.date | None = None) -> list[DataFile]:
    """The files of a day-partitioned dataset delivered by `as_of` (all of them when None), sorted by day,
    then delivery date, then name. Raises LayoutError naming the first entry that does not fit the layout."""
    out = []
    for sub in sorted(p for p in directory.iterdir() if _is_data(p)):
        if not sub.is_dir():
            raise LayoutError(f"{sub}: not a day partition (expected a directory named day=YYYY-MM-DD)")
        day = partition_day(sub)
        for path in sorted(p for p in sub.iterdir() if _is_data(p)):
            delivered = delivery_date(path)
            if as_of is None or delivered <= as_of:
                out.append(DataFile(day, delivered, path))
    return sorted(out)


def dataset_files(agency_dir: Path, dataset: str, as_of: dt.date | None = None) -> list[DataFile]:
    """The files of one dataset of an agency, delivered by `as_of`: a single `<dataset>.parquet`, or the day
    partitions of the directory `<dataset>/` (see `partitioned_files`). LayoutError when neither exists, or
    both do."""
    single, directory = agency_dir / f"{dataset}.parquet", agency_dir / dataset
    if single.is_file() and directory.is_dir():
        raise LayoutError(f"{agency_dir}: both {single.name} and {directory.name}/ hold {dataset}; keep one")
    if single.is_file():
        return [DataFile(None, None, single)]
    if not directory.is_dir():
        raise LayoutError(f"missing data file {single} (or day-partitioned directory {directory}/)")
    return partitioned_files(directory, as_of)


def agency_files(agency_dir: Path, as_of: dt.date | None = None) -> list[Path]:
    """Every data file of an agency delivered by `as_of`: its single files and the files of its
    day-partitioned directories, in a stable order."""
    out: list[Path] = []
    for entry in sorted(p for p in agency_dir.iterdir() if _is_data(p)):
        if entry.is_file():
            out.append(entry)
        elif entry.is_dir():
            out.extend(f.path for f in partitioned_files(entry, as_of))
    return out
