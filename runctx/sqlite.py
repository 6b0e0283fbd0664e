"""SQLite writes shared by every party that keeps state in SQLite: one writer at a time across processes."""

from __future__ import annotations

import contextlib
import sqlite3
from collections.abc import Iterator


@contextlib.contextmanager
def immediate(db: sqlite3.Connection) -> Iterator[sqlite3.Connection]:
    """`db` (in autocommit mode, `isolation_level=None`) inside BEGIN IMMEDIATE, which takes the write lock
    at once: committed when the block ends, rolled back when it or the commit raises."""
    db.execute("BEGIN IMMEDIATE")
    try:
        yield db
        db.execute("COMMIT")
    except BaseException:
        if db.in_transaction:
            db.execute("ROLLBACK")
        raise
