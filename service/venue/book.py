"""The venue agency's book (RUN/venues/venues.sqlite): the venues registered through the service and the
journal of check-ins scanned at them, and their delivery into the agency's data files.

Nothing is lost on a crash: a check-in is committed to the journal (SQLite WAL, synchronous=FULL) before the
visitor sees it accepted. `deliver` moves the journal into delivery files the venue node reads,
`RUN/data/venues/checkins/day=<day>/<delivery date>-service-<batch>.parquet`, in two steps that can each be
repeated: the pending check-ins are claimed as a numbered batch dated by the run's clock (one commit), then
every claimed batch not yet marked written is written (a pure function of its rows: the same name and bytes
on every attempt) and marked. A crash between the steps leaves a batch that the next delivery writes.

Registered venues get ids `<kind>-<county>-v<n>` (the simulation's are `<kind>-<county>-<n>`: no collision)
and are merged into RUN/data/venues/venues.parquet after each registration.
"""

from __future__ import annotations

import datetime as dt
import functools
import hashlib
import io
import re
import secrets
import sqlite3
import threading
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TypeVar

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from nodes.startup import date_source
from proto import layout
from proto.schemas import SCHEMAS
from runctx.files import write_atomic
from runctx.scenario import Scenario
from runctx.sqlite import immediate
from service.venue.keys import Venue, agency_dir

T = TypeVar("T")
LOCAL = dt.timezone(dt.timedelta(hours=8))
"""The data's local time (China Standard Time): agency timestamps are local and naive."""
REGISTERED_ID = re.compile(r"^[a-z]+-[0-9]{6}-v[0-9]+$")
SCHEMA = """
CREATE TABLE IF NOT EXISTS venues (
    venue_id TEXT PRIMARY KEY, kind TEXT NOT NULL, name TEXT NOT NULL, region_code TEXT NOT NULL,
    cell_id INTEGER NOT NULL, address TEXT NOT NULL, gate_key TEXT NOT NULL UNIQUE, created_at TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS checkins (
    seq INTEGER PRIMARY KEY, subject_id TEXT NOT NULL, venue_id TEXT NOT NULL, at TEXT NOT NULL, batch INTEGER
);
CREATE INDEX IF NOT EXISTS checkins_venue_at ON checkins (venue_id, at);
CREATE INDEX IF NOT EXISTS checkins_batch ON checkins (batch);
CREATE TABLE IF NOT EXISTS batches (
    batch INTEGER PRIMARY KEY, delivered TEXT NOT NULL, written INTEGER NOT NULL DEFAULT 0
);
"""


def data_dir(run: Path) -> Path:
    """RUN/data/venues/: the venue agency's data, as its node reads it."""
    return Path(run) / "data" / "venues"


def local_now(run: Path) -> dt.datetime:
    """Now on the run's clock, local, naive, to the minute: in a simulation run the venue agency's date (the
    run's clock RUN/nodes/venues/date, else the scenario's last epoch) at the wall clock's local time of day;
    else the wall clock."""
    now = dt.datetime.now(LOCAL).replace(tzinfo=None, second=0, microsecond=0)
    scenario = Scenario.read(run)
    if scenario is None or scenario.seed is None:
        return now
    day = date_source(run, "venues", "run")()
    return dt.datetime.combine(day if day is not None else scenario.epochs[-1], now.time())


@dataclass(frozen=True)
class Registered:
    """A venue just registered: what its QR names, where it is, and the secret of its gate page."""

    venue: Venue
    cell_id: int
    address: str
    gate_key: str


@dataclass(frozen=True)
class GateCounts:
    """A venue's check-ins today and in the last hour (on the run's clock)."""

    venue: Venue
    address: str
    today: int
    last_hour: int
    now: dt.datetime


def _hash(gate_key: str) -> str:
    return hashlib.sha256(gate_key.encode()).hexdigest()


def _locked(method: Callable[..., T]) -> Callable[..., T]:
    """Run a method under the book's lock: its one connection serves every thread of a worker."""

    @functools.wraps(method)
    def run(self: VenueBook, *args: object, **kwargs: object) -> T:
        with self.lock:
            return method(self, *args, **kwargs)

    return run


class VenueBook:
    """The venue agency's register and check-in journal for one run (one connection per instance, used
    under a lock by the worker's threads)."""

    def __init__(self, run: Path) -> None:
        self.run = Path(run)
        directory = agency_dir(self.run)
        directory.mkdir(parents=True, exist_ok=True)
        self.db = sqlite3.connect(
            directory / "venues.sqlite", timeout=30, isolation_level=None, check_same_thread=False
        )
        self.db.execute("PRAGMA journal_mode=WAL")
        self.db.execute("PRAGMA synchronous=FULL")
        self.db.executescript(SCHEMA)
        self.lock = threading.RLock()

    @_locked
    def close(self) -> None:
        """Close the connection."""
        self.db.close()

    # -- venues ------------------------------------------------------------------------------------------

    @_locked
    def register(self, name: str, kind: str, region_code: str, cell_id: int, address: str) -> Registered:
        """Register a venue under the next free id of its kind and county; venues.parquet is rewritten."""
        gate_key = secrets.token_urlsafe(18)
        with immediate(self.db):
            prefix = f"{kind}-{region_code}-v"
            (n,) = self.db.execute(
                "SELECT COUNT(*) FROM venues WHERE venue_id LIKE ? || '%'", (prefix,)
            ).fetchone()
            venue = Venue(f"{prefix}{n + 1:04d}", name, kind, region_code)
            created = dt.datetime.now(dt.UTC).isoformat(timespec="seconds")
            self.db.execute(
                "INSERT INTO venues VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                (venue.venue_id, kind, name, region_code, cell_id, address, _hash(gate_key), created),
            )
        self.publish_venues()
        return Registered(venue, cell_id, address, gate_key)

    @_locked
    def venue(self, venue_id: str) -> tuple[Venue, int, str] | None:
        """A registered venue, its cell and address (None when the id is not registered here)."""
        row = self.db.execute(
            "SELECT venue_id, name, kind, region_code, cell_id, address FROM venues WHERE venue_id = ?",
            (venue_id,),
        ).fetchone()
        return None if row is None else (Venue(*row[:4]), int(row[4]), str(row[5]))

    @_locked
    def publish_venues(self) -> None:
        """Write venues.parquet: the simulation's venues (every id not of the registered form) and every
        registered one, atomically (a pure function of both: repeating it after a crash is harmless)."""
        path = data_dir(self.run) / "venues.parquet"
        schema = SCHEMAS["venues"]
        if path.exists():
            existing = pq.read_table(path).cast(schema)
            ids = existing.column("venue_id").to_pylist()
            keep = np.array([REGISTERED_ID.match(str(v)) is None for v in ids], dtype=bool)
            existing = existing.filter(pa.array(keep))
        else:
            existing, keep = schema.empty_table(), np.zeros(0, dtype=bool)
        rows = self.db.execute(
            "SELECT venue_id, kind, name, region_code, cell_id FROM venues ORDER BY venue_id"
        ).fetchall()
        if len(keep) - int(keep.sum()) == len(rows):
            return  # already there (each registration publishes before it returns)
        mine = pa.Table.from_pylist([dict(zip(schema.names, r, strict=True)) for r in rows], schema=schema)
        write_atomic(path, _parquet(pa.concat_tables([existing, mine])))

    # -- check-ins ---------------------------------------------------------------------------------------

    @_locked
    def check_in(self, subject_id: str, venue_id: str, at: dt.datetime) -> None:
        """Journal one check-in (committed, synchronously, before returning)."""
        self.db.execute(
            "INSERT INTO checkins (subject_id, venue_id, at) VALUES (?, ?, ?)",
            (subject_id, venue_id, at.isoformat(timespec="minutes")),
        )

    @_locked
    def gate(self, gate_key: str) -> GateCounts | None:
        """The counts of the venue whose gate page `gate_key` opens (None for an unknown key)."""
        row = self.db.execute("SELECT venue_id FROM venues WHERE gate_key = ?", (_hash(gate_key),)).fetchone()
        if row is None:
            return None
        found = self.venue(str(row[0]))
        if found is None:
            return None
        venue, _, address = found
        now = local_now(self.run)
        start = dt.datetime.combine(now.date(), dt.time())
        today, last_hour = self.db.execute(
            "SELECT COUNT(*), COUNT(*) FILTER (WHERE at > ?) FROM checkins "
            "WHERE venue_id = ? AND at >= ? AND at < ?",
            (
                (now - dt.timedelta(hours=1)).isoformat(timespec="minutes"),
                venue.venue_id,
                start.isoformat(timespec="minutes"),
                (start + dt.timedelta(days=1)).isoformat(timespec="minutes"),
            ),
        ).fetchone()
        return GateCounts(venue, address, int(today), int(last_hour), now)

    # -- delivery ----------------------------------------------------------------------------------------

    @_locked
    def deliver(self) -> list[Path]:
        """Deliver the journal's pending check-ins to RUN/data/venues/checkins/ (see the module's note); the
        files written."""
        single = data_dir(self.run) / "checkins.parquet"
        if single.exists():
            raise RuntimeError(f"{single} holds every check-in in one file; deliveries need day partitions")
        delivered = local_now(self.run).date().isoformat()
        with immediate(self.db):
            if self.db.execute("SELECT 1 FROM checkins WHERE batch IS NULL LIMIT 1").fetchone():
                (batch,) = self.db.execute("SELECT COALESCE(MAX(batch), 0) + 1 FROM batches").fetchone()
                self.db.execute("INSERT INTO batches (batch, delivered) VALUES (?, ?)", (batch, delivered))
                self.db.execute("UPDATE checkins SET batch = ? WHERE batch IS NULL", (batch,))
        written: list[Path] = []
        with immediate(self.db):  # one writer of a batch's files at a time
            for batch, day in self.db.execute(
                "SELECT batch, delivered FROM batches WHERE written = 0 ORDER BY batch"
            ).fetchall():
                written += self._write_batch(int(batch), dt.date.fromisoformat(day))
                self.db.execute("UPDATE batches SET written = 1 WHERE batch = ?", (batch,))
        return written

    def _write_batch(self, batch: int, delivered: dt.date) -> list[Path]:
        """A batch's check-ins, one file per day they fall on, each written atomically."""
        rows = self.db.execute(
            "SELECT subject_id, venue_id, at FROM checkins WHERE batch = ? "
            "ORDER BY at, venue_id, subject_id, seq",
            (batch,),
        ).fetchall()
        by_day: dict[str, list[tuple[str, str, dt.datetime]]] = {}
        for subject, venue, at in rows:
            by_day.setdefault(at[:10], []).append((subject, venue, dt.datetime.fromisoformat(at)))
        schema = SCHEMAS["checkins"]
        out = []
        for day, items in sorted(by_day.items()):
            table = pa.table(
                {
                    "subject_id": [s for s, _, _ in items],
                    "venue_id": [v for _, v, _ in items],
                    "at": [a for _, _, a in items],
                    "leave": [None] * len(items),
                },
                schema=schema,
            )
            name = f"{delivered.isoformat()}-service-{batch}.parquet"  # a delivery's name (`proto.layout`)
            path = data_dir(self.run) / "checkins" / layout.day_directory(dt.date.fromisoformat(day)) / name
            write_atomic(path, _parquet(table))
            out.append(path)
        return out


def _parquet(table: pa.Table) -> bytes:
    """A table as Parquet bytes (zstd, statistics on: the node picks row groups by their days)."""
    sink = io.BytesIO()
    pq.write_table(table, sink, compression="zstd", write_statistics=True)
    return sink.getvalue()
