"""Operator accounts (argon2id hashes), server-side sessions and failed-login limits in
RUN/service/operators.sqlite, shared by every worker process of the service."""

from __future__ import annotations

import contextlib
import hashlib
import re
import secrets
import sqlite3
import time
from collections.abc import Iterator
from pathlib import Path

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError

SCHEMA = """
CREATE TABLE IF NOT EXISTS operators (
    user TEXT PRIMARY KEY,
    hash TEXT NOT NULL,
    created_at INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS sessions (
    token_hash TEXT PRIMARY KEY,
    user TEXT NOT NULL REFERENCES operators (user) ON DELETE CASCADE,
    expires_at INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS failures (
    key TEXT NOT NULL,
    at INTEGER NOT NULL
);
CREATE INDEX IF NOT EXISTS failures_key ON failures (key, at);
"""

USER_PATTERN = re.compile(r"^[A-Za-z0-9._-]{1,64}$")
MIN_PASSWORD = 10
MAX_PASSWORD = 256
FAILURE_WINDOW = 15 * 60
"""Seconds over which failed logins are counted."""
MAX_FAILURES_PER_USER = 5
MAX_FAILURES_PER_ADDRESS = 20

_hasher = PasswordHasher()  # argon2id with the library's recommended parameters
_DUMMY_HASH = _hasher.hash(secrets.token_hex(16))
"""Verified against when the user is unknown, so a wrong user takes as long as a wrong password."""


class AccountError(ValueError):
    """An operator name or password the store refuses; the message says why."""


class TooManyFailures(Exception):
    """Too many failed logins for this user or address in the last FAILURE_WINDOW seconds."""


def _token_hash(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


class OperatorStore:
    """The operators database of one run; each call opens its own short connection (safe across workers)."""

    def __init__(self, state_dir: Path) -> None:
        self.path = state_dir / "operators.sqlite"
        state_dir.mkdir(parents=True, exist_ok=True)
        with self._db() as db:
            db.executescript(SCHEMA)

    @contextlib.contextmanager
    def _db(self) -> Iterator[sqlite3.Connection]:
        db = sqlite3.connect(self.path, timeout=10, isolation_level=None)
        try:
            db.execute("PRAGMA journal_mode=WAL")
            db.execute("PRAGMA foreign_keys=ON")
            yield db
        finally:
            db.close()

    def add(self, user: str, password: str) -> None:
        """Create operator `user` (or replace its password) with an argon2id hash of `password`."""
        if not USER_PATTERN.match(user):
            raise AccountError(f"operator name {user!r}: 1–64 letters, digits, '.', '_' or '-'")
        if not MIN_PASSWORD <= len(password) <= MAX_PASSWORD:
            raise AccountError(f"password must be {MIN_PASSWORD} to {MAX_PASSWORD} characters")
        with self._db() as db:
            db.execute(
                "INSERT INTO operators (user, hash, created_at) VALUES (?, ?, ?) "
                "ON CONFLICT (user) DO UPDATE SET hash = excluded.hash",
                (user, _hasher.hash(password), int(time.time())),
            )
            db.execute("DELETE FROM sessions WHERE user = ?", (user,))

    def remove(self, user: str) -> bool:
        """Delete operator `user` and its sessions; False when there was none."""
        with self._db() as db:
            db.execute("DELETE FROM sessions WHERE user = ?", (user,))
            return db.execute("DELETE FROM operators WHERE user = ?", (user,)).rowcount > 0

    def users(self) -> list[str]:
        """Every operator's name."""
        with self._db() as db:
            return [row[0] for row in db.execute("SELECT user FROM operators ORDER BY user")]

    def stored_hash(self, user: str) -> str | None:
        """The stored hash of `user`'s password (None when there is no such operator)."""
        with self._db() as db:
            row = db.execute("SELECT hash FROM operators WHERE user = ?", (user,)).fetchone()
        return None if row is None else str(row[0])

    def login(self, user: str, password: str, address: str, max_age: int) -> str | None:
        """A new session token when `password` is `user`'s, else None (and the failure counted).

        Raises TooManyFailures, before checking anything, once the user or the address is over its limit.
        """
        now = int(time.time())
        keys = (f"user:{user}", f"addr:{address}")
        with self._db() as db:
            db.execute("DELETE FROM failures WHERE at < ?", (now - FAILURE_WINDOW,))
            counts = [
                db.execute("SELECT count(*) FROM failures WHERE key = ?", (key,)).fetchone()[0]
                for key in keys
            ]
            if counts[0] >= MAX_FAILURES_PER_USER or counts[1] >= MAX_FAILURES_PER_ADDRESS:
                raise TooManyFailures
            row = db.execute("SELECT hash FROM operators WHERE user = ?", (user,)).fetchone()
        ok = False
        try:
            ok = _hasher.verify(row[0] if row else _DUMMY_HASH, password) and row is not None
        except (VerificationError, InvalidHashError):
            ok = False
        with self._db() as db:
            if not ok:
                db.executemany("INSERT INTO failures (key, at) VALUES (?, ?)", [(k, now) for k in keys])
                return None
            if _hasher.check_needs_rehash(row[0]):
                db.execute("UPDATE operators SET hash = ? WHERE user = ?", (_hasher.hash(password), user))
            token = secrets.token_urlsafe(32)
            db.execute("DELETE FROM sessions WHERE expires_at < ?", (now,))
            db.execute(
                "INSERT INTO sessions (token_hash, user, expires_at) VALUES (?, ?, ?)",
                (_token_hash(token), user, now + max_age),
            )
            db.execute("DELETE FROM failures WHERE key = ?", (keys[0],))
            return token

    def session_user(self, token: str) -> str | None:
        """The operator a live session token belongs to (None when unknown or expired)."""
        with self._db() as db:
            row = db.execute(
                "SELECT user FROM sessions WHERE token_hash = ? AND expires_at >= ?",
                (_token_hash(token), int(time.time())),
            ).fetchone()
        return None if row is None else str(row[0])

    def logout(self, token: str) -> None:
        """End the session `token` (the cookie alone no longer logs anyone in)."""
        with self._db() as db:
            db.execute("DELETE FROM sessions WHERE token_hash = ?", (_token_hash(token),))
