"""Anonymous counts the service keeps in RUN/service/counts.sqlite: checkpoint scans by result and day
(read by the commander dashboard) and co-travel checks by day — counts only, never what was scanned
or asked."""

from __future__ import annotations

import datetime as dt
import sqlite3
from pathlib import Path

SCHEMA = """
CREATE TABLE IF NOT EXISTS scans (
    checkpoint TEXT NOT NULL, day TEXT NOT NULL, result TEXT NOT NULL, n INTEGER NOT NULL,
    PRIMARY KEY (checkpoint, day, result)
);
CREATE TABLE IF NOT EXISTS cotravel_checks (day TEXT PRIMARY KEY, n INTEGER NOT NULL);
"""


def _connect(state_dir: Path) -> sqlite3.Connection:
    """The counts database (created on first use, WAL so that readers never block the service)."""
    state_dir.mkdir(parents=True, exist_ok=True)
    db = sqlite3.connect(state_dir / "counts.sqlite", timeout=10)
    db.execute("PRAGMA journal_mode=WAL")
    db.executescript(SCHEMA)
    return db


def today() -> str:
    """The service's day (UTC) under which counts are kept."""
    return dt.datetime.now(dt.UTC).date().isoformat()


def add_scan(state_dir: Path, checkpoint: str, result: str) -> None:
    """Count one scan at `checkpoint` with `result` (green, yellow, red or invalid) today."""
    with _connect(state_dir) as db:
        db.execute(
            "INSERT INTO scans (checkpoint, day, result, n) VALUES (?, ?, ?, 1) "
            "ON CONFLICT (checkpoint, day, result) DO UPDATE SET n = n + 1",
            (checkpoint, today(), result),
        )


def add_cotravel_check(state_dir: Path) -> None:
    """Count one co-travel check today."""
    with _connect(state_dir) as db:
        db.execute(
            "INSERT INTO cotravel_checks (day, n) VALUES (?, 1) ON CONFLICT (day) DO UPDATE SET n = n + 1",
            (today(),),
        )
