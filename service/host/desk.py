"""The host desk: what the host pages and API do — who a signed-in phone declares as, the identity check of
every declared person against the police register before anything is written, the delivery, the host's past
declarations, and the limits on how often a host may ask — independent of HTTP."""

from __future__ import annotations

import contextlib
import sqlite3
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from runctx.sqlite import immediate
from service.host import deliveries
from service.host.deliveries import Declared
from service.host.forms import DeclarationRequest, place_kind
from service.host.register import RegisterCache
from service.settings import ServiceSettings

ROWS_LIMIT = (300, 3600.0)
"""At most 300 people checked for one host per hour."""
REFUSED_LIMIT = (10, 3600.0)
"""At most 10 refused declarations per host per hour (what probing the register by guessing names makes)."""
SCHEMA = """
CREATE TABLE IF NOT EXISTS host_checks (
    phone TEXT NOT NULL,
    at REAL NOT NULL,
    people INTEGER NOT NULL,
    refused INTEGER NOT NULL
);
CREATE INDEX IF NOT EXISTS host_checks_phone ON host_checks (phone, at);
"""


class HostError(Exception):
    """A request the desk refuses: `status`, a short machine-readable `reason`, and the rows at fault."""

    def __init__(
        self,
        status: int,
        reason: str,
        message: str,
        rows: tuple[int, ...] = (),
        retry_after: int | None = None,
    ) -> None:
        super().__init__(message)
        self.status = status
        self.reason = reason
        self.rows = rows
        self.retry_after = retry_after


@dataclass(frozen=True)
class Delivery:
    """A declaration delivered: where its file lies and how many people it names."""

    path: Path
    people: int
    delivered: str


class HostDesk:
    """One worker's host desk over a run: the police register and the limits' database."""

    def __init__(self, settings: ServiceSettings) -> None:
        self.run = settings.run
        self.state_dir = settings.state_dir
        self.register = RegisterCache(deliveries.police_dir(self.run) / "population.parquet")

    @contextlib.contextmanager
    def _limits(self) -> Iterator[sqlite3.Connection]:
        """RUN/service/host.sqlite inside BEGIN IMMEDIATE (one writer across workers): counts only."""
        self.state_dir.mkdir(parents=True, exist_ok=True)
        db = sqlite3.connect(self.state_dir / "host.sqlite", isolation_level=None, timeout=30.0)
        with contextlib.closing(db):
            db.execute("PRAGMA journal_mode=WAL")
            db.executescript(SCHEMA)
            with immediate(db):
                yield db

    def host_of(self, phone: str) -> str:
        """The id number of the registered person whose phone signed in (HostError 403 when the register
        has none, 409 when several people share the phone)."""
        holders = self.register.get().holders(phone)
        if not holders:
            raise HostError(
                403,
                "NOT_REGISTERED",
                "no one in the police register has this phone; a host declares under their registered phone",
            )
        if len(holders) > 1:
            raise HostError(409, "SHARED_PHONE", "several people in the police register share this phone")
        return holders[0]

    def today(self) -> str:
        """The run's date, ISO (what the declaration dates are bounded around and deliveries named after)."""
        return deliveries.run_date(self.run).isoformat()

    def declare(
        self, phone: str, host: str, request: DeclarationRequest, now: float | None = None
    ) -> Delivery:
        """Check every declared person against the register, then deliver all rows in one file; HostError
        (422) naming each row whose id number and name disagree with the register, and writing nothing, or
        (429) when the host asked too often."""
        now = time.time() if now is None else now
        with self._limits() as db:
            _check_limits(db, phone, len(request.people), now)
        register = self.register.get()
        if place_kind(request.place_id) == "dwelling":
            household = request.place_id.removeprefix("dwelling-")
            if household not in register.households:
                self._count(phone, 0, now, refused=True)
                raise HostError(
                    422, "UNKNOWN_PLACE", f"place_id: no household {household} in the police register"
                )
        wrong = tuple(
            row for row, p in enumerate(request.people, 1) if not register.agrees(p.subject_id, p.name)
        )
        self._count(phone, len(request.people), now, refused=bool(wrong))
        if wrong:
            named = "; ".join(
                f"row {row}: ID number {request.people[row - 1].subject_id} and name "
                f"{request.people[row - 1].name} do not agree with the police register"
                for row in wrong
            )
            raise HostError(422, "IDENTITY_MISMATCH", f"{named} (nothing was declared)", rows=wrong)
        delivered = deliveries.run_date(self.run)
        try:
            path = deliveries.deliver(self.run, deliveries.table_of(request, host), delivered)
        except deliveries.DeliveryError as exc:
            raise HostError(503, "UNAVAILABLE", str(exc)) from None
        return Delivery(path, len(request.people), delivered.isoformat())

    def _count(self, phone: str, people: int, now: float, refused: bool) -> None:
        with self._limits() as db:
            db.execute("DELETE FROM host_checks WHERE at <= ?", (now - max(ROWS_LIMIT[1], REFUSED_LIMIT[1]),))
            db.execute(
                "INSERT INTO host_checks (phone, at, people, refused) VALUES (?, ?, ?, ?)",
                (phone, now, people, int(refused)),
            )

    def declarations(self, host: str) -> list[Declared]:
        """The declarations this host made, newest delivery first."""
        return deliveries.declared_by(self.run, host)


def _check_limits(db: sqlite3.Connection, phone: str, people: int, now: float) -> None:
    """HostError (429) when checking `people` more would pass a limit of the phone's last hour."""
    for column, (limit, window), what, adding in (
        ("people", ROWS_LIMIT, "people checked", people),
        ("refused", REFUSED_LIMIT, "refused declarations", 1),
    ):
        used, first = db.execute(
            f"SELECT COALESCE(SUM({column}), 0), MIN(at) FROM host_checks "
            f"WHERE phone = ? AND at > ? AND {column} > 0",
            (phone, now - window),
        ).fetchone()
        if used + adding > limit:
            wait = int((first or now) + window - now) + 1
            raise HostError(
                429,
                "RATE_LIMITED",
                f"too many {what}: {limit} per {int(window // 60)} minutes; try again in {wait} s",
                retry_after=wait,
            )


def desk_of(settings: ServiceSettings, state: Any) -> HostDesk:
    """The worker's host desk, made on first use and kept on the application's state."""
    desk = getattr(state, "host_desk", None)
    if desk is None:
        desk = HostDesk(settings)
        state.host_desk = desk
    return desk
