"""The coordinator's durable state: issued codes, epochs, refusals and revocations in SQLite (WAL mode).

Every write is idempotent — codes are keyed by a code id derived from (epoch, subject) and inserted with
INSERT OR IGNORE inside a transaction — so an epoch killed at any point and started again finishes with no
code issued twice.
"""

from __future__ import annotations

import dataclasses
import functools
import json
import sqlite3
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, NamedTuple

from crypto.codes import COLOURS
from runctx.sqlite import immediate

CACHE_KIB = 256 * 1024
"""SQLite page cache size (an upper bound: pages are allocated as they are read)."""
CHECKPOINT_PAGES = 100_000
"""WAL pages written before SQLite checkpoints them into the database."""
SCHEMA = """
CREATE TABLE IF NOT EXISTS epochs (
    epoch TEXT PRIMARY KEY,
    seq INTEGER NOT NULL UNIQUE,
    as_of TEXT NOT NULL,
    inputs_digest TEXT NOT NULL,
    started_at TEXT NOT NULL,
    finished_at TEXT,
    result TEXT
);
CREATE TABLE IF NOT EXISTS codes (
    code_id TEXT PRIMARY KEY,
    subject_id TEXT NOT NULL,
    color TEXT NOT NULL CHECK (color IN ('green', 'yellow', 'red')),
    reasons TEXT NOT NULL,
    issued_at TEXT NOT NULL,
    expires_at TEXT NOT NULL,
    payload TEXT NOT NULL,
    epoch TEXT NOT NULL REFERENCES epochs (epoch),
    UNIQUE (epoch, subject_id)
);
CREATE INDEX IF NOT EXISTS codes_subject ON codes (subject_id);
CREATE TABLE IF NOT EXISTS refusals (
    epoch TEXT NOT NULL REFERENCES epochs (epoch),
    subject_id TEXT NOT NULL,
    reason TEXT NOT NULL,
    PRIMARY KEY (epoch, subject_id)
);
CREATE TABLE IF NOT EXISTS revocations (
    code_id TEXT PRIMARY KEY REFERENCES codes (code_id),
    subject_id TEXT NOT NULL,
    epoch TEXT NOT NULL,
    reason TEXT NOT NULL,
    revoked_at TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS applications (
    application_id TEXT PRIMARY KEY,
    applicant_phone TEXT NOT NULL,
    relation TEXT NOT NULL CHECK (relation IN ('self', 'family')),
    subject_id TEXT NOT NULL,
    phone TEXT NOT NULL,
    symptoms TEXT NOT NULL,
    created_at TEXT NOT NULL,
    epoch TEXT NOT NULL REFERENCES epochs (epoch),
    status TEXT NOT NULL CHECK (status IN ('issued', 'refused')),
    reason TEXT,
    code_id TEXT REFERENCES codes (code_id)
);
CREATE INDEX IF NOT EXISTS applications_phone ON applications (applicant_phone);
CREATE TABLE IF NOT EXISTS appeals (
    appeal_id TEXT PRIMARY KEY,
    subject_id TEXT NOT NULL,
    code_id TEXT NOT NULL REFERENCES codes (code_id),
    reason TEXT NOT NULL,
    created_at TEXT NOT NULL,
    status TEXT NOT NULL DEFAULT 'open' CHECK (status IN ('open', 'upheld', 'rejected'))
);
CREATE INDEX IF NOT EXISTS appeals_code ON appeals (code_id);
"""


@functools.lru_cache(maxsize=1024)
def reasons_json(reasons: tuple[str, ...]) -> str:
    """A code's reasons as stored: a JSON list (memoised: an epoch has few distinct reason lists)."""
    return json.dumps(list(reasons))


class StoreError(RuntimeError):
    """The code store is unusable or inconsistent (e.g. an epoch id reused for different inputs)."""


class CodeRow(NamedTuple):
    """One issued code as stored: `reasons` is a tuple of reason codes, times are ISO 8601 UTC strings (a
    tuple: millions are made per epoch)."""

    code_id: str
    subject_id: str
    color: str
    reasons: tuple[str, ...]
    issued_at: str
    expires_at: str
    payload: str
    epoch: str


CodeFields = tuple[str, str, str, tuple[str, ...], str, str, str, str]
"""A code's fields in `CodeRow` order: a CodeRow, or a plain tuple where millions are made at once."""

_CODE_COLUMNS = "code_id, subject_id, color, reasons, issued_at, expires_at, payload, epoch"
"""The codes table's columns in `CodeRow` order."""


def _code_row(row: tuple[Any, ...]) -> CodeRow:
    """A CodeRow from a row selected as `_CODE_COLUMNS` (reasons stored as a JSON list)."""
    return CodeRow(row[0], row[1], row[2], tuple(json.loads(row[3])), row[4], row[5], row[6], row[7])


@dataclass(frozen=True)
class Application:
    """A citizen's application for a code (for themself or a family member) and its outcome."""

    application_id: str
    applicant_phone: str
    relation: str
    subject_id: str
    phone: str
    symptoms: tuple[str, ...]
    created_at: str
    epoch: str
    status: str
    """'issued' or 'refused'."""
    reason: str | None
    """Why it was refused (a refusal reason code), None when issued."""
    code_id: str | None


@dataclass(frozen=True)
class Appeal:
    """A citizen's appeal against a code's colour, with its reason in their words."""

    appeal_id: str
    subject_id: str
    code_id: str
    reason: str
    created_at: str
    status: str
    """'open', 'upheld' or 'rejected'."""


_APPLICATION_COLUMNS = (
    "application_id, applicant_phone, relation, subject_id, phone, symptoms, created_at, epoch, status, "
    "reason, code_id"
)


def _application(row: tuple[Any, ...]) -> Application:
    """An Application from a row selected as `_APPLICATION_COLUMNS` (symptoms stored as a JSON list)."""
    return Application(
        row[0], row[1], row[2], row[3], row[4], tuple(json.loads(row[5])),
        row[6], row[7], row[8], row[9], row[10],
    )


@dataclass(frozen=True)
class Revocation:
    """A revoked code, the epoch that revoked it and why."""

    code_id: str
    subject_id: str
    epoch: str
    reason: str
    revoked_at: str


class CodeStore:
    """`RUN/coordinator/codes.sqlite`: open (creating the schema), then read and write in transactions."""

    def __init__(self, path: Path | str) -> None:
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        try:
            self._db = sqlite3.connect(path, isolation_level=None, timeout=30.0)
            self._db.execute("PRAGMA journal_mode=WAL")
            self._db.execute("PRAGMA synchronous=NORMAL")
            self._db.execute("PRAGMA foreign_keys=ON")
            # Code ids are random, so each batch of codes touches pages all over the code_id index: a page
            # cache that holds the indexes and a checkpoint every ~400 MiB of WAL (not every 4 MiB) keep
            # that from rereading and rewriting the same pages batch after batch.
            self._db.execute(f"PRAGMA cache_size=-{CACHE_KIB}")
            self._db.execute(f"PRAGMA wal_autocheckpoint={CHECKPOINT_PAGES}")
            self._db.executescript(SCHEMA)
        except sqlite3.DatabaseError as exc:
            raise StoreError(f"code store {path}: {exc}") from exc
        self.path = path

    def close(self) -> None:
        """Close the database."""
        self._db.close()

    def __enter__(self) -> CodeStore:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _write(self, sql: str, rows: Iterable[tuple[Any, ...]]) -> int:
        """Run one statement over many rows in a single transaction; return the number of rows changed."""
        before = self._db.total_changes
        with immediate(self._db):
            self._db.executemany(sql, rows)
        return self._db.total_changes - before

    # -- epochs

    def begin_epoch(self, epoch: str, as_of: str, inputs_digest: str, started_at: str) -> tuple[int, str]:
        """Record an epoch, or find it again after a crash; return its sequence number (1, 2, ...) and the
        time it was first started."""
        with immediate(self._db):
            row = self._db.execute(
                "SELECT seq, inputs_digest, started_at FROM epochs WHERE epoch = ?", (epoch,)
            ).fetchone()
            if row is None:
                (seq,) = self._db.execute("SELECT COALESCE(MAX(seq), 0) + 1 FROM epochs").fetchone()
                self._db.execute(
                    "INSERT INTO epochs (epoch, seq, as_of, inputs_digest, started_at) "
                    "VALUES (?, ?, ?, ?, ?)",
                    (epoch, seq, as_of, inputs_digest, started_at),
                )
                row = (seq, inputs_digest, started_at)
            elif row[1] != inputs_digest:
                raise StoreError(
                    f"epoch {epoch} was started with different inputs ({row[1]} ≠ {inputs_digest})"
                )
        return int(row[0]), str(row[2])

    def finish_epoch(self, epoch: str, finished_at: str, result: dict[str, Any]) -> None:
        """Mark an epoch finished, with its result summary (JSON)."""
        self._write(
            "UPDATE epochs SET finished_at = ?, result = ? WHERE epoch = ?",
            [(finished_at, json.dumps(result, sort_keys=True), epoch)],
        )

    def epoch_finished(self, epoch: str) -> bool:
        """Whether an epoch ran to its end."""
        row = self._db.execute("SELECT finished_at FROM epochs WHERE epoch = ?", (epoch,)).fetchone()
        return row is not None and row[0] is not None

    def epoch_seq(self, epoch: str) -> int | None:
        """An epoch's sequence number, or None if it was never started."""
        row = self._db.execute("SELECT seq FROM epochs WHERE epoch = ?", (epoch,)).fetchone()
        return None if row is None else int(row[0])

    # -- codes

    def insert_codes(self, rows: Iterable[CodeFields]) -> int:
        """Store codes (CodeRows, or tuples in their field order) in one transaction, ignoring any already
        stored; return how many were new."""
        rows = list(rows)
        bad = [r[0] for r in rows if r[2] not in COLOURS]
        if bad:
            raise StoreError(f"codes {bad[:3]} have a colour outside {COLOURS}")
        return self._write(
            f"INSERT OR IGNORE INTO codes ({_CODE_COLUMNS}) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
            (
                (code, subject, color, reasons_json(reasons), issued, expires, payload, epoch)
                for code, subject, color, reasons, issued, expires, payload, epoch in rows
            ),
        )

    def issued_subjects(self, epoch: str) -> set[str]:
        """Subjects that already hold a code of this epoch."""
        return {r[0] for r in self._db.execute("SELECT subject_id FROM codes WHERE epoch = ?", (epoch,))}

    def codes(self, epoch: str | None = None) -> Iterator[CodeRow]:
        """Stored codes (of one epoch, or all), ordered by code id."""
        sql = f"SELECT {_CODE_COLUMNS} FROM codes"
        args: tuple[Any, ...] = ()
        if epoch is not None:
            sql, args = sql + " WHERE epoch = ?", (epoch,)
        for row in self._db.execute(sql + " ORDER BY code_id", args):
            yield _code_row(row)

    def code_lines(self, epoch: str, batch: int = 100_000) -> Iterator[list[str]]:
        """An epoch's codes as "code_id|subject_id|color|reasons|issued_at|expires_at|payload" lines (newline
        ended), ordered by code id, `batch` at a time (joined in SQLite: millions are hashed per epoch)."""
        cursor = self._db.execute(
            "SELECT code_id || '|' || subject_id || '|' || color || '|' || reasons || '|' || issued_at "
            "|| '|' || expires_at || '|' || payload || char(10) FROM codes WHERE epoch = ? ORDER BY code_id",
            (epoch,),
        )
        while rows := cursor.fetchmany(batch):
            yield [str(r[0]) for r in rows]

    def colour_counts(self, epoch: str) -> dict[str, int]:
        """How many codes of each colour an epoch issued (every colour listed)."""
        counts = dict.fromkeys(COLOURS, 0)
        for color, n in self._db.execute("SELECT color, COUNT(*) FROM codes WHERE epoch = ? GROUP BY color",
                                         (epoch,)):
            counts[str(color)] = int(n)
        return counts

    def first_codes(self, epoch: str, color: str, limit: int) -> list[CodeRow]:
        """An epoch's first `limit` codes of one colour, by code id."""
        sql = f"SELECT {_CODE_COLUMNS} FROM codes WHERE epoch = ? AND color = ? ORDER BY code_id LIMIT ?"
        return [_code_row(row) for row in self._db.execute(sql, (epoch, color, limit))]

    def count_codes(self, epoch: str | None = None) -> int:
        """Number of stored codes (of one epoch, or all)."""
        if epoch is None:
            return int(self._db.execute("SELECT COUNT(*) FROM codes").fetchone()[0])
        return int(self._db.execute("SELECT COUNT(*) FROM codes WHERE epoch = ?", (epoch,)).fetchone()[0])

    def previous_codes(self, epoch: str, valid_at: str) -> Iterator[tuple[str, str, str]]:
        """(subject_id, code_id, color) of each subject's latest code from an earlier epoch, if that code is
        still unexpired at `valid_at` (ISO 8601 UTC) and not revoked."""
        yield from self._db.execute(
            """
            SELECT subject_id, code_id, color FROM (
                SELECT c.subject_id, c.code_id, c.color, c.expires_at,
                       ROW_NUMBER() OVER (PARTITION BY c.subject_id ORDER BY e.seq DESC) AS rn
                FROM codes c JOIN epochs e ON e.epoch = c.epoch
                WHERE e.seq < (SELECT seq FROM epochs WHERE epoch = ?)
            )
            WHERE rn = 1 AND expires_at >= ? AND code_id NOT IN (SELECT code_id FROM revocations)
            ORDER BY subject_id
            """,
            (epoch, valid_at),
        )

    # -- refusals

    def insert_refusals(self, epoch: str, refusals: Iterable[tuple[str, str]]) -> int:
        """Record refused applicants (subject_id, reason) for an epoch; return how many were new."""
        return self._write(
            "INSERT OR IGNORE INTO refusals (epoch, subject_id, reason) VALUES (?, ?, ?)",
            ((epoch, s, r) for s, r in refusals),
        )

    def refusals(self, epoch: str) -> dict[str, str]:
        """Refused applicants of an epoch and the reason each was refused."""
        return dict(self._db.execute("SELECT subject_id, reason FROM refusals WHERE epoch = ?", (epoch,)))

    # -- revocations

    def revoke(self, revocations: Iterable[Revocation]) -> int:
        """Record revocations, ignoring codes already revoked; return how many were new."""
        return self._write(
            "INSERT OR IGNORE INTO revocations (code_id, subject_id, epoch, reason, revoked_at) "
            "VALUES (?, ?, ?, ?, ?)",
            ((r.code_id, r.subject_id, r.epoch, r.reason, r.revoked_at) for r in revocations),
        )

    def revoked(self, code_id: str) -> Revocation | None:
        """The revocation of a code, or None if it is not revoked."""
        row = self._db.execute(
            "SELECT code_id, subject_id, epoch, reason, revoked_at FROM revocations WHERE code_id = ?",
            (code_id,),
        ).fetchone()
        return None if row is None else Revocation(*row)

    def revocations(self) -> list[Revocation]:
        """Every revocation, ordered by code id."""
        rows = self._db.execute(
            "SELECT code_id, subject_id, epoch, reason, revoked_at FROM revocations ORDER BY code_id"
        )
        return [Revocation(*row) for row in rows]

    # -- the code service: latest epoch, single codes, applications, appeals

    def latest_epoch(self) -> tuple[str, dict[str, Any]] | None:
        """The latest finished epoch and its result summary, or None before the first epoch ends."""
        row = self._db.execute(
            "SELECT epoch, result FROM epochs WHERE finished_at IS NOT NULL ORDER BY seq DESC LIMIT 1"
        ).fetchone()
        return None if row is None else (str(row[0]), json.loads(row[1]))

    def code(self, code_id: str) -> CodeRow | None:
        """The code with this id, or None."""
        row = self._db.execute(f"SELECT {_CODE_COLUMNS} FROM codes WHERE code_id = ?", (code_id,)).fetchone()
        return None if row is None else _code_row(row)

    def record_applications(
        self,
        applications: Sequence[tuple[Application, CodeFields | None, tuple[str, str] | None]],
        before_commit: Callable[[list[tuple[Application, CodeRow | None]]], None] | None = None,
    ) -> list[CodeRow | None]:
        """Store applications in one transaction, each with its code (kept as it is when the subject already
        holds this epoch's code) or its refusal (subject id, reason); return each one's code of the epoch,
        or None for a refusal. `before_commit` sees the stored (application, code) pairs inside the
        transaction: when it raises, nothing is stored."""
        with immediate(self._db):
            stored_all: list[tuple[Application, CodeRow | None]] = []
            for application, code, refusal in applications:
                stored: CodeRow | None = None
                if code is not None:
                    if code[2] not in COLOURS:
                        raise StoreError(f"code {code[0]} has a colour outside {COLOURS}")
                    self._db.execute(
                        f"INSERT OR IGNORE INTO codes ({_CODE_COLUMNS}) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                        (*code[:3], reasons_json(code[3]), *code[4:]),
                    )
                    row = self._db.execute(
                        f"SELECT {_CODE_COLUMNS} FROM codes WHERE epoch = ? AND subject_id = ?",
                        (application.epoch, application.subject_id),
                    ).fetchone()
                    stored = _code_row(row)
                    application = dataclasses.replace(application, code_id=stored.code_id)
                if refusal is not None:
                    self._db.execute(
                        "INSERT OR IGNORE INTO refusals (epoch, subject_id, reason) VALUES (?, ?, ?)",
                        (application.epoch, *refusal),
                    )
                a = application
                self._db.execute(
                    f"INSERT INTO applications ({_APPLICATION_COLUMNS}) "
                    "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                    (
                        a.application_id, a.applicant_phone, a.relation, a.subject_id, a.phone,
                        json.dumps(list(a.symptoms)), a.created_at, a.epoch, a.status, a.reason, a.code_id,
                    ),
                )
                stored_all.append((application, stored))
            if before_commit is not None:
                before_commit(stored_all)
        return [code for _, code in stored_all]

    def applications(self) -> Iterator[Application]:
        """Every application, in id order."""
        rows = self._db.execute(f"SELECT {_APPLICATION_COLUMNS} FROM applications ORDER BY application_id")
        return (_application(row) for row in rows)

    def applications_of(self, phone: str) -> list[Application]:
        """The applications made from a phone, newest first."""
        rows = self._db.execute(
            f"SELECT {_APPLICATION_COLUMNS} FROM applications WHERE applicant_phone = ? "
            "ORDER BY created_at DESC, application_id",
            (phone,),
        )
        return [_application(row) for row in rows]

    def holds(self, phone: str, code_id: str) -> bool:
        """Whether an application made from this phone led to this code."""
        row = self._db.execute(
            "SELECT 1 FROM applications WHERE applicant_phone = ? AND code_id = ? LIMIT 1", (phone, code_id)
        ).fetchone()
        return row is not None

    def insert_appeal(self, appeal: Appeal) -> None:
        """Store an appeal against a code."""
        self._write(
            "INSERT INTO appeals (appeal_id, subject_id, code_id, reason, created_at, status) "
            "VALUES (?, ?, ?, ?, ?, ?)",
            [(appeal.appeal_id, appeal.subject_id, appeal.code_id, appeal.reason, appeal.created_at,
              appeal.status)],
        )

    def appeals(self, code_id: str | None = None) -> list[Appeal]:
        """Appeals (against one code, or all), oldest first."""
        sql = "SELECT appeal_id, subject_id, code_id, reason, created_at, status FROM appeals"
        args: tuple[Any, ...] = ()
        if code_id is not None:
            sql, args = sql + " WHERE code_id = ?", (code_id,)
        return [Appeal(*row) for row in self._db.execute(sql + " ORDER BY created_at, appeal_id", args)]
