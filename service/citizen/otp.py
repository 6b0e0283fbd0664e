"""Phone one-time codes: sent through the simulation's SMS gateway (RUN/service/sms-outbox.jsonl), valid
for five minutes, single-use, a few wrong tries at most, and rate-limited per phone and per client
address. The state is in SQLite (RUN/service/citizen.sqlite), so every worker process agrees on it.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import fcntl
import hashlib
import hmac
import json
import secrets
import sqlite3
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from starlette.requests import Request

from runctx.sqlite import immediate

OTP_TTL = 300.0
"""Seconds a one-time code stays valid."""
OTP_DIGITS = 6
MAX_TRIES = 5
"""Wrong codes accepted before the code is void."""
PHONE_LIMIT = (3, 600.0)
"""At most 3 codes sent to one phone per 10 minutes."""
ADDRESS_LIMIT = (20, 3600.0)
"""At most 20 codes requested from one client address per hour."""
SCHEMA = """
CREATE TABLE IF NOT EXISTS otp (
    phone TEXT PRIMARY KEY,
    digest TEXT NOT NULL,
    expires_at REAL NOT NULL,
    tries INTEGER NOT NULL DEFAULT 0
);
CREATE TABLE IF NOT EXISTS sends (
    key TEXT NOT NULL,
    at REAL NOT NULL
);
CREATE INDEX IF NOT EXISTS sends_key ON sends (key, at);
"""


class OtpError(Exception):
    """A one-time code that cannot be sent or accepted; `reason` is a short machine-readable code."""

    def __init__(self, reason: str, message: str, status: int, retry_after: int | None = None) -> None:
        super().__init__(message)
        self.reason = reason
        self.status = status
        self.retry_after = retry_after


@dataclass(frozen=True)
class OtpBox:
    """The one-time codes of a service: its state database, the SMS outbox and the key codes are hashed
    under (so the database alone does not give them away)."""

    state_dir: Path
    key: bytes

    @property
    def outbox(self) -> Path:
        """The SMS gateway's outbox: one JSON line {phone, code, at} per message."""
        return self.state_dir / "sms-outbox.jsonl"

    def _connect(self) -> sqlite3.Connection:
        self.state_dir.mkdir(parents=True, exist_ok=True)
        db = sqlite3.connect(self.state_dir / "citizen.sqlite", isolation_level=None, timeout=30.0)
        db.execute("PRAGMA journal_mode=WAL")
        db.executescript(SCHEMA)
        return db

    @contextlib.contextmanager
    def _transaction(self) -> Iterator[sqlite3.Connection]:
        """A connection inside BEGIN IMMEDIATE (one writer across workers), closed when the block ends."""
        with contextlib.closing(self._connect()) as db, immediate(db):
            yield db

    def _digest(self, phone: str, code: str) -> str:
        return hmac.digest(self.key, f"otp|{phone}|{code}".encode(), hashlib.sha256).hex()

    def send(self, phone: str, address: str, now: float | None = None) -> None:
        """Make a fresh code for `phone` (replacing any earlier one) and put it in the SMS outbox;
        OtpError (429) when the phone or the client address asked too often."""
        now = time.time() if now is None else now
        code = f"{secrets.randbelow(10**OTP_DIGITS):0{OTP_DIGITS}d}"
        with self._transaction() as db:
            for key, (limit, window), what in (
                (f"phone:{phone}", PHONE_LIMIT, "this phone"),
                (f"address:{address}", ADDRESS_LIMIT, "this address"),
            ):
                sent = db.execute(
                    "SELECT COUNT(*), MIN(at) FROM sends WHERE key = ? AND at > ?", (key, now - window)
                ).fetchone()
                if sent[0] >= limit:
                    wait = int(sent[1] + window - now) + 1
                    raise OtpError(
                        "RATE_LIMITED",
                        f"too many one-time codes for {what}: {limit} per {int(window // 60)} minutes; "
                        f"try again in {wait} s",
                        429,
                        retry_after=wait,
                    )
            db.execute("DELETE FROM sends WHERE at <= ?", (now - max(PHONE_LIMIT[1], ADDRESS_LIMIT[1]),))
            db.executemany(
                "INSERT INTO sends (key, at) VALUES (?, ?)",
                [(f"phone:{phone}", now), (f"address:{address}", now)],
            )
            db.execute(
                "INSERT OR REPLACE INTO otp (phone, digest, expires_at, tries) VALUES (?, ?, ?, 0)",
                (phone, self._digest(phone, code), now + OTP_TTL),
            )
            self._deliver(phone, code, now)

    def _deliver(self, phone: str, code: str, now: float) -> None:
        """Append the message to the outbox under an exclusive lock (workers append to the same file)."""
        at = dt.datetime.fromtimestamp(now, dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
        line = json.dumps({"phone": phone, "code": code, "at": at}) + "\n"
        with self.outbox.open("a", encoding="utf-8") as out:
            fcntl.flock(out, fcntl.LOCK_EX)
            out.write(line)
            out.flush()

    def accept(self, phone: str, code: str, now: float | None = None) -> None:
        """Use up the phone's code if `code` is it; OtpError (401) when it is wrong, expired, used or
        tried too often."""
        now = time.time() if now is None else now
        with self._transaction() as db:
            outcome = self._try(db, phone, code, now)
        if outcome is not None:
            raise outcome

    def _try(self, db: sqlite3.Connection, phone: str, code: str, now: float) -> OtpError | None:
        """Check a code inside the caller's transaction: None when it is right (and now used up)."""
        row = db.execute("SELECT digest, expires_at, tries FROM otp WHERE phone = ?", (phone,)).fetchone()
        if row is None:
            return OtpError("NO_CODE", "no one-time code is pending for this phone (used or never sent)", 401)
        if row[1] <= now:
            db.execute("DELETE FROM otp WHERE phone = ?", (phone,))
            return OtpError("EXPIRED", "the one-time code has expired; ask for a new one", 401)
        if not hmac.compare_digest(row[0], self._digest(phone, code)):
            if row[2] + 1 >= MAX_TRIES:
                db.execute("DELETE FROM otp WHERE phone = ?", (phone,))
                return OtpError("TOO_MANY_TRIES", "too many wrong codes; ask for a new one", 401)
            db.execute("UPDATE otp SET tries = tries + 1 WHERE phone = ?", (phone,))
            return OtpError("WRONG_CODE", "wrong one-time code", 401)
        db.execute("DELETE FROM otp WHERE phone = ?", (phone,))
        return None


def otp_box(request: Request) -> OtpBox:
    """The worker's one-time codes (the citizen's and the host's sign-in share them, and their limits), made
    on first use and kept on the application's state."""
    state = request.app.state
    box = getattr(state, "citizen_otp", None)
    if box is None:
        box = OtpBox(state.settings.state_dir, state.settings.secret_key())
        state.citizen_otp = box
    return box


def client_address(request: Request) -> str:
    """The client address a request's one-time code is limited by."""
    return request.client.host if request.client else "unknown"
