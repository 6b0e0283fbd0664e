"""`runctx.sqlite.immediate`: one write transaction, committed at the end of its block, rolled back when the
block or the commit itself fails, so a long-lived connection is never left inside a transaction."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest

from runctx.sqlite import immediate


def _open(path: Path) -> sqlite3.Connection:
    db = sqlite3.connect(path, isolation_level=None)
    db.execute("PRAGMA foreign_keys = ON")
    db.executescript(
        "CREATE TABLE IF NOT EXISTS parent (id INTEGER PRIMARY KEY);"
        "CREATE TABLE IF NOT EXISTS child (id INTEGER, parent INTEGER "
        "REFERENCES parent(id) DEFERRABLE INITIALLY DEFERRED);"
    )
    return db


def _count(path: Path, table: str) -> int:
    with sqlite3.connect(path) as other:
        return int(other.execute(f"SELECT COUNT(*) FROM {table}").fetchone()[0])


def test_the_block_commits(tmp_path: Path) -> None:
    db = _open(tmp_path / "s.sqlite")
    with immediate(db):
        db.execute("INSERT INTO parent VALUES (1)")
    assert not db.in_transaction and _count(tmp_path / "s.sqlite", "parent") == 1


def test_an_error_in_the_block_rolls_back(tmp_path: Path) -> None:
    db = _open(tmp_path / "s.sqlite")
    with pytest.raises(ValueError), immediate(db):
        db.execute("INSERT INTO parent VALUES (1)")
        raise ValueError("refused")
    assert not db.in_transaction and _count(tmp_path / "s.sqlite", "parent") == 0


def test_a_failed_commit_rolls_back_and_the_connection_writes_again(tmp_path: Path) -> None:
    db = _open(tmp_path / "s.sqlite")
    with pytest.raises(sqlite3.IntegrityError), immediate(db):
        db.execute("INSERT INTO parent VALUES (1)")
        db.execute("INSERT INTO child VALUES (1, 99)")  # a deferred foreign key: COMMIT refuses it
    assert not db.in_transaction and _count(tmp_path / "s.sqlite", "parent") == 0
    with immediate(db):
        db.execute("INSERT INTO parent VALUES (2)")
    assert _count(tmp_path / "s.sqlite", "parent") == 1
