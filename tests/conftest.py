"""Fixtures shared by the service's API and browser tests: a small simulated run (`healthpsi run`, 1,500
persons) with an operator account, served by a real `healthpsi serve` process on a loopback port."""

from __future__ import annotations

import sqlite3
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from service.process import ServiceProcess

OPERATOR = "chen.wei"
OPERATOR_PASSWORD = "a-long-test-passphrase-7"
APPEAL_ID = "A-test-0001"
SCANS = [
    ("gate-east", "2020-01-31", "green", 40),
    ("gate-east", "2020-01-31", "red", 2),
    ("gate-west", "2020-01-30", "invalid", 1),
]


@dataclass(frozen=True)
class ServedRun:
    """A run, its operator's credentials, and the URL of the service serving it."""

    run: Path
    url: str
    user: str = OPERATOR
    password: str = OPERATOR_PASSWORD


def _healthpsi(*args: str, stdin: str | None = None) -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "healthpsi.cli", *args],
        input=stdin,
        capture_output=True,
        text=True,
        timeout=900,
    )
    if proc.returncode != 0:
        pytest.fail(f"healthpsi {' '.join(args)} exited {proc.returncode}:\n{proc.stdout}\n{proc.stderr}")


def _other_parties_files(run: Path) -> None:
    """What the citizen and verifier routers would have written: one open appeal, a few checkpoint scans."""
    with sqlite3.connect(run / "coordinator" / "codes.sqlite") as db:
        subject, code_id = db.execute(
            "SELECT subject_id, code_id FROM codes WHERE color = 'red' LIMIT 1"
        ).fetchone()
        db.execute(
            "CREATE TABLE IF NOT EXISTS appeals (appeal_id TEXT PRIMARY KEY, subject_id TEXT NOT NULL, "
            "code_id TEXT, reason TEXT NOT NULL, created_at TEXT NOT NULL, status TEXT NOT NULL)"
        )
        db.execute(
            "INSERT INTO appeals VALUES (?, ?, ?, ?, ?, 'open')",
            (APPEAL_ID, subject, code_id, "I was at home all week", "2020-02-01T08:00:00Z"),
        )
    with sqlite3.connect(run / "service" / "counts.sqlite") as db:
        db.execute(
            "CREATE TABLE scans (checkpoint TEXT, day TEXT, result TEXT, n INTEGER, "
            "PRIMARY KEY (checkpoint, day, result))"
        )
        db.executemany("INSERT INTO scans VALUES (?, ?, ?, ?)", SCANS)


@pytest.fixture(scope="session")
def served_run(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServedRun]:
    """`healthpsi run --preset city-20k --seed 3 --persons 1500`, an operator, and `healthpsi serve`."""
    run = tmp_path_factory.mktemp("service") / "run"
    _healthpsi("run", "--preset", "city-20k", "--seed", "3", "--persons", "1500", "--out", str(run))
    _healthpsi(
        "operator",
        "add",
        "--run",
        str(run),
        "--user",
        OPERATOR,
        "--password-stdin",
        stdin=OPERATOR_PASSWORD + "\n",
    )
    _other_parties_files(run)
    service = ServiceProcess(run, run / "service" / "serve.log").wait_ready()
    try:
        yield ServedRun(run=run, url=service.url)
    finally:
        service.stop()
