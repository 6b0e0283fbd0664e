"""Hosts' declarations as deliveries to the police agency's data, RUN/data/police/declarations/: one file per
declaration, named after its delivery date (`day=D/<delivery date>-<n>.parquet`, D the earliest `from_date`
of its rows, so every row of a day partition starts on or after its day, as the readers assume). A file is
written under a hidden name, flushed to disk and then linked to its final name, which fails rather than
replaces when the name is taken: a crash leaves either the whole file or none of it (at most a hidden
temporary file, which no reader looks at).
"""

from __future__ import annotations

import datetime as dt
import os
import secrets
from dataclasses import dataclass
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

from nodes.startup import date_source
from proto import layout
from proto.schemas import SCHEMAS
from runctx.parquet import write_table
from runctx.scenario import Scenario
from service.host.forms import DeclarationRequest

AGENCY = "police"
DATASET = "declarations"
MAX_NAME_TRIES = 1000


class DeliveryError(RuntimeError):
    """The declarations cannot be delivered (the dataset is held in a single file, or the disk refused)."""


@dataclass(frozen=True)
class Declared:
    """One row of a host's declarations, as delivered."""

    place_id: str
    subject_id: str
    role: str
    from_date: dt.date
    to_date: dt.date
    delivered: dt.date


def police_dir(run: Path) -> Path:
    """RUN/data/police: the police agency's data, which the host app writes to."""
    return run / "data" / AGENCY


def run_date(run: Path) -> dt.date:
    """The date deliveries are made on: the police agency's date (the run's clock RUN/nodes/police/date in a
    simulation, the wall clock otherwise), or, in a simulation no node has moved yet, its last epoch's."""
    today = date_source(run, AGENCY)()
    return today if today is not None else Scenario.load(run).epochs[-1]


def table_of(request: DeclarationRequest, declared_by: str) -> pa.Table:
    """The declaration's rows in the contract's schema (place_id, subject_id, role, from_date, to_date,
    declared_by)."""
    people = request.people
    return pa.table(
        {
            "place_id": [request.place_id] * len(people),
            "subject_id": [p.subject_id for p in people],
            "role": [p.role for p in people],
            "from_date": [p.from_date for p in people],
            "to_date": [p.to_date for p in people],
            "declared_by": [declared_by] * len(people),
        },
        schema=SCHEMAS[DATASET],
    )


def deliver(run: Path, table: pa.Table, delivered: dt.date) -> Path:
    """Write the rows as one new delivery file of the police declarations dataset, whole or not at all; its
    path."""
    root = police_dir(run)
    if (root / f"{DATASET}.parquet").is_file():
        raise DeliveryError(
            f"{root / DATASET}.parquet holds the declarations in a single file; hosts' deliveries need the "
            f"day-partitioned directory {root / DATASET}/"
        )
    first = min(table["from_date"].to_pylist())
    partition = root / DATASET / layout.day_directory(first)
    partition.mkdir(parents=True, exist_ok=True)
    temporary = partition / f".host-{secrets.token_hex(8)}.parquet.tmp"
    try:
        write_table(temporary, table)
        _fsync(temporary)
        for n in range(MAX_NAME_TRIES):
            final = partition / layout.delivery_name(delivered, n)
            try:
                os.link(temporary, final)
            except FileExistsError:
                continue
            _fsync(partition)
            _fsync(partition.parent)
            return final
        raise DeliveryError(f"{partition}: {MAX_NAME_TRIES} deliveries on {delivered} already")
    except OSError as exc:
        raise DeliveryError(f"{partition}: cannot write the delivery ({exc.strerror or exc})") from None
    finally:
        temporary.unlink(missing_ok=True)


def _fsync(path: Path) -> None:
    """Flush a file's or a directory's entries to disk."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def declared_by(run: Path, host: str, limit: int = 500) -> list[Declared]:
    """The declarations `host` made (its `declared_by`), newest delivery first, at most `limit`; files that
    cannot be read are passed over, as the police node passes over them."""
    try:
        files = layout.dataset_files(police_dir(run), DATASET)
    except (layout.LayoutError, OSError):
        return []
    out: list[Declared] = []
    for f in sorted(files, key=lambda f: (f.delivered or dt.date.min, f.path.name), reverse=True):
        try:
            rows = pq.read_table(f.path, filters=[("declared_by", "=", host)]).to_pylist()
        except (OSError, pa.ArrowException):
            continue
        delivered = f.delivered or dt.date.min
        for r in rows:
            if None in (r["place_id"], r["subject_id"], r["from_date"], r["to_date"]):
                continue
            out.append(
                Declared(r["place_id"], r["subject_id"], r["role"], r["from_date"], r["to_date"], delivered)
            )
            if len(out) >= limit:
                return out
    return out
